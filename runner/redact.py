"""Credentials never leave the machine in a run's record: a tracking URI such as
``http://user:secret@host`` is logged as ``http://***@host``, and a value whose key looks
secret (password, token, secret, API key) as ``***``. Applied to params, tags, the run
name, the summary, the config files logged as artifacts and every error line: a second
guard behind ``runner.credentials``, which takes them out where they enter.

A password may hold ``@``, ``/``, ``:``, ``#``, ``,``, ``=`` or a space (clients take the
last ``@`` of the authority as the end of the userinfo), so a URL here runs from its
``scheme://`` to the next URL or the end of the line, and everything up to its last ``@``
is hidden: too much rather than a piece of a password that works."""

import re
from typing import Any

URL = re.compile(
    r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)(?P<rest>[^\n]*?)(?=[\s,]*\b[a-z][a-z0-9+.-]*://|\n|$)",
    re.IGNORECASE,
)
SECRET = r"passw|secret|token|api[_-]?key|credential"
SECRET_KEY = re.compile(SECRET, re.IGNORECASE)
SECRET_OVERRIDE = re.compile(rf"([\w.+~]*(?:{SECRET})[\w.]*=)\S+", re.IGNORECASE)
# a server or proxy that echoes the request puts its header in the error line
AUTHORIZATION = re.compile(
    r"((?:Authorization|auth)['\"]?\s*[:=]\s*['\"]?(?:Basic|Bearer|Token)\s+)[^\s'\",}]+",
    re.IGNORECASE,
)
# an address given without a scheme (``ray.address=ann:PW@host:port``): all to its last @
SCHEMELESS_ADDRESS = re.compile(r"((?:address|uri|url)=)(?![^\s]*://)[^\s]*@", re.IGNORECASE)
HIDDEN = "***"


def redact(text: str) -> str:
    """``text`` with the userinfo of every URL in it hidden, and the value of every
    ``key=value`` whose key looks secret (a Hydra override)."""
    text = AUTHORIZATION.sub(rf"\1{HIDDEN}", SCHEMELESS_ADDRESS.sub(rf"\1{HIDDEN}@", text))
    return SECRET_OVERRIDE.sub(rf"\1{HIDDEN}", URL.sub(_hide_userinfo, text))


def _hide_userinfo(url: re.Match) -> str:
    rest = url["rest"]
    if "@" not in rest:
        return url[0]
    return f"{url['scheme']}{HIDDEN}@{rest.rpartition('@')[2]}"


def redact_yaml(text: str) -> str:
    """A YAML document (Hydra's config.yaml, overrides.yaml) fit to be logged."""
    import yaml

    document = yaml.safe_load(text)
    clean = redacted(document) if isinstance(document, dict) else _clean("", document)
    return yaml.safe_dump(clean, sort_keys=False)


def redacted(values: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``values`` (nested dicts too) fit to be logged."""
    return {key: _clean(key, value) for key, value in values.items()}


def _clean(key: str, value: Any) -> Any:
    if SECRET_KEY.search(str(key)):
        return HIDDEN
    if isinstance(value, dict):
        return redacted(value)
    if isinstance(value, list):
        return [_clean(key, item) for item in value]
    return redact(value) if isinstance(value, str) else value
