"""A tracking URI's user name and password never reach a file, a param, a tag or the console.

They are taken out of the URI where it enters (an ``mlflow.tracking_uri=`` or
``hydra.job.env_set.MLFLOW_TRACKING_URI=`` override on the command line,
``MLFLOW_TRACKING_URI``, a command's ``--tracking-uri``; a database's ``?user=&password=``
query too), before Hydra writes
its files or any library prints the URI, and travel by the environment, which every process
of the run inherits: a server's as MLflow's own ``MLFLOW_TRACKING_USERNAME`` and
``MLFLOW_TRACKING_PASSWORD``, a database's (which MLflow can take only inside its URI) in
``GRIDBENCH_TRACKING_USERINFO``, put back only where the store is opened.

A userinfo must be percent-encoded where RFC 3986 says (``@ / ? #``, and no spaces):
otherwise a client reads part of the password as the host and sends the credentials there.
Such a URI is refused in one line that shows none of it.
"""

import os
import re
from typing import Optional
from urllib.parse import unquote

from runner.errors import InputError

USERNAME, PASSWORD = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
USERINFO = "GRIDBENCH_TRACKING_USERINFO"
SERVERS = ("http", "https", "databricks")  # MLflow sends their credentials as basic auth
URI_KEY = "mlflow.tracking_uri"
ENV_SET_URI = "hydra.job.env_set.MLFLOW_TRACKING_URI"  # Hydra's way to set it for the job
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def split_userinfo(uri: str, what: str = URI_KEY) -> tuple[str, Optional[str]]:
    """``uri`` without its userinfo, and the userinfo as written (None where it has none).
    Raises InputError, naming ``what`` but none of the URI, where it is not encoded."""
    scheme, sep, rest = uri.partition("://")
    if not sep or rest.startswith("/") or "@" not in rest:
        return uri, None  # no authority (sqlite:////path), or no userinfo
    userinfo, _, place = rest.rpartition("@")
    unencoded = sorted({c for c in userinfo if c in "@/?#" or c.isspace()})
    if unencoded or _BAD_ESCAPE.search(userinfo):
        shown = " ".join(repr(c) for c in unencoded) or "a '%' that starts no escape"
        raise InputError(
            f"{what}: its user name or password holds {shown} unencoded, so part of it would "
            "be read as the host: percent-encode it ('@' as %40, '/' as %2F, '?' as %3F, "
            "'#' as %23, ' ' as %20, '%' as %25), or give the URI without them and set "
            f"{USERNAME} and {PASSWORD}"
        )
    return f"{scheme}://{place}", userinfo


def adopt(uri: str, what: str = URI_KEY) -> str:
    """``uri`` without its credentials, which go to this process's environment: its
    userinfo, or a database's ``user=`` and ``password=`` in its query (libpq's form)."""
    clean, userinfo = split_userinfo(uri, what)
    clean, in_query = _query_credentials(clean)  # with a user named before the @ or not
    if in_query is not None:
        user, _, password = in_query.partition(":")
        named = (userinfo or "").partition(":")[0]
        userinfo = f"{user or named}:{password}"
    if userinfo is None:
        return uri
    if clean.partition("://")[0].lower() in SERVERS:
        user, _, password = userinfo.partition(":")
        os.environ[USERNAME] = unquote(user)
        os.environ[PASSWORD] = unquote(password)
    else:
        os.environ[USERINFO] = userinfo
    return clean


def _query_credentials(uri: str) -> tuple[str, Optional[str]]:
    """A database URI without the ``user`` and ``password`` of its query, and them as a
    userinfo (``with_userinfo`` puts it back where the store is opened); None where its
    query has no password."""
    from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.scheme.lower() in SERVERS or not parts.query:
        return uri, None
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    found = {key: value for key, value in pairs if key in ("user", "password")}
    if "password" not in found:
        return uri, None
    kept = urlencode([(key, value) for key, value in pairs if key not in found])
    userinfo = f"{quote(found.get('user', ''), safe='')}:{quote(found['password'], safe='')}"
    return urlunsplit(parts._replace(query=kept)), userinfo


def adopt_from_environment() -> None:
    """``MLFLOW_TRACKING_URI`` without its credentials, for this process and its children."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        os.environ["MLFLOW_TRACKING_URI"] = adopt(uri, "MLFLOW_TRACKING_URI")


def adopt_from_overrides(overrides: list[str]) -> list[str]:
    """Hydra overrides with the tracking URI's credentials taken out (``+``, ``++`` and
    quotes allowed), so that Hydra's files and the run's record never hold them."""
    cleaned = []
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and key.lstrip("+~") in (URI_KEY, ENV_SET_URI):
            quote = value[0] if value[:1] in ("'", '"') and value[-1:] == value[:1] else ""
            inner = value[1:-1] if quote else value
            override = f"{key}={quote}{adopt(inner)}{quote}"
        cleaned.append(override)
    return cleaned


def with_userinfo(uri: str) -> str:
    """A database store's URI with the userinfo taken from it put back, to open it."""
    userinfo = os.environ.get(USERINFO)
    scheme, sep, rest = uri.partition("://")
    if not userinfo or not sep or scheme.lower() in SERVERS or rest.startswith("/"):
        return uri
    if "@" in rest.partition("/")[0]:
        return uri  # it names its own
    return f"{scheme}://{userinfo}@{rest}"
