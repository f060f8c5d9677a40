"""The README is a few screens with both commands in its first; every page of the docs
opens with a command that runs (``mkdocs build --strict`` in CI checks links and nav)."""

import re

import yaml

from runner import REPO_ROOT

COMMANDS = ("pip install -r requirements.txt && python -m runner",
            "pip install -r requirements-dev.txt && python -m pytest -q")  # fmt: skip


def test_the_readme_is_short_and_opens_with_both_commands():
    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150
    first_screen = "\n".join(lines[:40])
    assert all(command in first_screen for command in COMMANDS)


def test_every_page_is_in_the_site_and_opens_with_a_command():
    site = yaml.safe_load((REPO_ROOT / "mkdocs.yml").read_text())
    listed = {page for entry in site["nav"] for page in entry.values()}
    pages = {path.name for path in (REPO_ROOT / "docs").glob("*.md")}
    assert listed == pages
    for name in pages - {"index.md", "benchmarks.md"}:
        text = (REPO_ROOT / "docs" / name).read_text()
        assert re.match(r"# .+\n\n```bash\n\S", text), name
