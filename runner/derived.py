"""Derived files (the exported graph, the int8 graph, the fp32 reference): one cache, one
rule for all (``cached``).

Each is named by what it was made from (``key_of``) and written with a facts file beside
it (``X.onnx`` and ``X.json``) that records the sha256 of its bytes and of the facts
themselves, facts last, so a file in the cache with its facts is complete. On reading, a
file whose bytes or facts no longer match (bits flipped, another graph copied in its
place, a figure edited), whose facts are missing or
unreadable, or whose contents are not what its reader expects is never used: it is built
again from its sources, and a mismatch is said in one line on stderr. Derived files cost
seconds to rebuild; a wrong result given silently costs the comparison.
"""

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, TypeVar

from runner.files import atomic

T = TypeVar("T")
UNREADABLE = (OSError, ValueError, KeyError, TypeError, EOFError)


def facts_path(path: Path) -> Path:
    return path.with_suffix(".json")


def read_checked(path: Path) -> Optional[tuple[bytes, dict[str, Any]]]:
    """``path``'s bytes and facts if both are there and the bytes match the recorded
    sha256; None otherwise (absent, incomplete, unreadable or altered: build it again)."""
    if not (path.is_file() and facts_path(path).is_file()):
        return None  # absent, or not a file (a pipe's read would wait for ever)
    try:
        facts = json.loads(facts_path(path).read_text())
        data = path.read_bytes()
        recorded, recorded_facts = facts["sha256"], facts["facts_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a cache written before its facts were digested too: built again
    if hashlib.sha256(data).hexdigest() != recorded or _digest(facts) != recorded_facts:
        print(
            f"note: {path} or its facts do not match the sha256 recorded in "
            f"{facts_path(path).name} (altered or replaced): built again",
            file=sys.stderr,
            flush=True,
        )
        return None
    return data, facts


def write_checked(path: Path, data: bytes, facts: Optional[dict[str, Any]] = None) -> None:
    """Write ``data`` to ``path`` and its facts (``facts`` and the sha256) beside it, each
    whole, the facts last."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic(path) as tmp:
        tmp.write_bytes(data)
    recorded = {**(facts or {}), "sha256": hashlib.sha256(data).hexdigest()}
    recorded["facts_sha256"] = _digest(recorded)
    with atomic(facts_path(path)) as tmp:
        tmp.write_text(json.dumps(recorded, sort_keys=True))


def _digest(facts: dict[str, Any]) -> str:
    """The facts' own sha256 (all but itself): a flipped digit of ``flops_per_image`` made
    every GFLOP/s 27 % low with no word."""
    kept = {key: value for key, value in facts.items() if key != "facts_sha256"}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


def key_of(*parts: object) -> str:
    """What a derived file was made from, as 16 hex digits of sha256: its name's key."""
    return hashlib.sha256("\x00".join(map(str, parts)).encode()).hexdigest()[:16]


def cached(
    path: Path, build: Callable[[], tuple[bytes, dict[str, Any]]], read: Callable[..., T]
) -> T:
    """The derived file at ``path`` as ``read(data, facts)`` gives it; built by ``build``
    (its bytes and facts), written and read where it is absent, altered, or not what
    ``read`` expects (``read`` raises): a derived file costs seconds to build again."""
    found = read_checked(path)
    if found is not None:
        try:
            return read(*found)
        except UNREADABLE:
            pass
    data, facts = build()
    write_checked(path, data, facts)
    return read(data, facts)
