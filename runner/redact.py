"""Credentials never leave the machine in a run's record: a tracking URI such as
``http://user:secret@host`` is logged as ``http://***@host``, and a value whose key looks
secret (password, token, secret, API key) as ``***``. Applied to params, tags, the run
name, the summary and the config files logged as artifacts."""

import re
from typing import Any

USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
SECRET = r"passw|secret|token|api[_-]?key|credential"
SECRET_KEY = re.compile(SECRET, re.IGNORECASE)
SECRET_OVERRIDE = re.compile(rf"([\w.+~]*(?:{SECRET})[\w.]*=)\S+", re.IGNORECASE)
HIDDEN = "***"


def redact(text: str) -> str:
    """``text`` with the userinfo of every URL in it hidden, and the value of every
    ``key=value`` whose key looks secret (a Hydra override)."""
    return SECRET_OVERRIDE.sub(rf"\1{HIDDEN}", USERINFO.sub(f"{HIDDEN}@", text))


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
