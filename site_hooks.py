"""mkdocs hooks (``mkdocs.yml``): BENCHMARKS.md is read at the repository root and, through
the symlink ``docs/benchmarks.md``, as a page of the site; its links into ``docs/`` are
right at the root and are made right on the site here."""

import re

DOCS_LINK = re.compile(r"\]\(docs/([^)]+)\)")


def on_page_markdown(markdown: str, page, **_: object) -> str:
    """``[text](docs/x.md)`` on the benchmarks page becomes ``[text](x.md)``."""
    if page.file.src_uri != "benchmarks.md":
        return markdown
    return DOCS_LINK.sub(r"](\1)", markdown)
