"""MLflow's side of tracking: the store, and a run's begin, results and end.

Runs where MLflow is imported: in the tracking helper for a job (``runner.tracking.helper``),
in the launching process for a sweep's parent run, in ``runner.sync``. Imports
nothing heavy itself (MLflow only inside the functions), so the helper starts fast.
"""

import gc
import getpass
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from runner import REPO_ROOT
from runner.credentials import adopt, adopt_from_environment, with_userinfo
from runner.errors import InputError, RunnerError, one_line
from runner.files import check_writable
from runner.phases import begin

if TYPE_CHECKING:  # the helper imports this module first thing: nothing it does not use
    from runner.settings import RunConfig

OUTPUTS = REPO_ROOT / "outputs"
DEFAULT_URI = f"sqlite:///{OUTPUTS / 'mlflow.db'}"
ARTIFACT_ROOT = OUTPUTS / "mlartifacts"
LOCK_S = 60.0  # a store's first use holds its lock for seconds: longer is a stuck process
# An unreachable server should fail in seconds, not after minutes of retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def tracking_uri(configured: Optional[str]) -> str:
    """``MLFLOW_TRACKING_URI`` wins over the config's, which wins over the SQLite default."""
    return normalized(os.environ.get("MLFLOW_TRACKING_URI") or configured or DEFAULT_URI)


def normalized(uri: str) -> str:
    """One spelling of a store: the scheme in lower case, and SQLite without its driver
    (``SQLITE:///x.db`` and ``sqlite+pysqlite:///x.db`` are ``sqlite:///x.db``), so that
    every check of a SQLite file sees it (those spellings went past them, into another
    program's database)."""
    scheme, colon, rest = uri.partition(":")
    if not colon:
        return uri
    scheme = scheme.lower()
    return ("sqlite" if scheme.partition("+")[0] == "sqlite" else scheme) + colon + rest


def run_name(run: "RunConfig") -> str:
    """What ran, as the runs list shows it: ``sequential-t1-b256-onnxruntime-int8-50x100``
    (the workers that ran: sequential mode uses one, whatever ``threads`` says), and a
    served run's scenario after it (``-server-500qps``, ``-server-peak``,
    ``-single_stream``)."""
    from runner.settings import workers_used

    scenario = "" if run.scenario == "offline" else f"-{run.scenario}"
    if run.scenario == "server":
        scenario += "-peak" if run.server.qps == "auto" else f"-{float(run.server.qps):g}qps"
    return (f"{run.mode}-t{workers_used(run)}-b{run.batch_size}-{run.backend}-{run.precision}-"
            f"{run.grid.rows}x{run.grid.columns}{scenario}")  # fmt: skip


def run_params(run: "RunConfig") -> dict[str, Any]:
    """The run's params: its settings as dotted keys, ``threads`` the workers that ran
    (the value a sequential run ignored is not a setting it used), credentials hidden."""
    from runner.redact import redacted
    from runner.settings import params_of

    return redacted(params_of(run))


def artifact_location(uri: str) -> Optional[str]:
    """Beside a SQLite store (outputs/mlartifacts for the default), never in the cwd.

    A tracking server (http, https, databricks) keeps its own artifact root.
    """
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    if uri.split("://")[0] in ("http", "https", "databricks"):
        return None
    return ARTIFACT_ROOT.as_uri()


UI = "http://127.0.0.1:5000"  # where ``mlflow ui`` serves a store that is not a server


def run_link(uri: str, experiment_id: str, run_id: Optional[str] = None) -> str:
    """The run's page (or the experiment's runs) in MLflow's UI, on its *Runs* view: MLflow
    3.17 opens an experiment on its GenAI overview without ``workflowType``. A server's own
    address, without credentials; any other store's ``mlflow ui``."""
    from urllib.parse import urlsplit

    base = UI
    if uri.startswith(("http://", "https://")):
        parts = urlsplit(uri)
        base = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path.rstrip('/')}"
    page = f"runs/{run_id}" if run_id else "runs"
    return f"{base}/#/experiments/{experiment_id}/{page}?workflowType=machine_learning"


def check_place(uri: str) -> None:
    """Refuse a SQLite store in a directory that is not there or takes no files (its lock
    and the database are files), a path that is a directory, and a file that is not an
    MLflow store: bad input, found without importing MLflow, so the main process reports it
    before the work."""
    if not uri.startswith("sqlite:///"):
        return
    database = Path(uri.removeprefix("sqlite:///"))
    if not database.parent.is_dir():
        raise InputError(f"MLflow tracking store {uri}: no such directory {database.parent}")
    check_writable(database.parent, f"MLflow tracking store {uri}: directory")
    check_ours(uri)


# tables only MLflow's schema has (a half-made store has one of them): not "runs", which
# another program's database had, and was then written into
MLFLOW_TABLES = {"alembic_version", "experiments"}


def check_ours(uri: str) -> None:
    """A SQLite file that holds tables, none of them MLflow's, belongs to another program:
    MLflow would add its 50 tables to it. Refused before anything is written to it."""
    database = Path(uri.removeprefix("sqlite:///"))
    if database.is_dir():
        raise InputError(f"MLflow tracking store {uri}: {database} is a directory")
    if not database.is_file() or database.stat().st_size == 0:
        return
    try:  # a lock another process holds is waited on, as MLflow's own writes wait
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=LOCK_S)) as db:
            tables = {row[0] for row in db.execute("select name from sqlite_master")}
    except sqlite3.OperationalError as error:
        if "locked" not in str(error):
            raise InputError(f"MLflow tracking store {uri}: {database} cannot be read ({error})")
        raise RunnerError(f"MLflow tracking store {uri}: another process held it locked for "
                          f"{LOCK_S:g} s")  # fmt: skip
    except sqlite3.DatabaseError as error:
        raise InputError(f"MLflow tracking store {uri}: {database} is not a SQLite database "
                         f"({error})")  # fmt: skip
    mlflows = tables & MLFLOW_TABLES or any(t.startswith("_alembic_tmp_") for t in tables)
    if tables and not mlflows:
        shown = ", ".join(sorted(tables)[:3]) + (", ..." if len(tables) > 3 else "")
        raise InputError(
            f"MLflow tracking store {uri}: {database} is another program's database (tables "
            f"{shown}); nothing was written to it: name another file"
        )


def command_uri(given: Optional[str]) -> str:
    """The store a command (compare, report) reads: ``--tracking-uri``, else
    ``MLFLOW_TRACKING_URI``, else the project's; credentials taken out, the scheme checked."""
    adopt_from_environment()
    if given:
        uri, source = adopt(given, "--tracking-uri"), "--tracking-uri"
    else:
        uri, source = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI, "MLFLOW_TRACKING_URI"
    if not known_scheme(uri):
        raise InputError(f"{source} {uri}: {URI_HINT}")
    return normalized(uri)


URI_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")
URI_HINT = f"the scheme must be one of {', '.join(URI_SCHEMES)}"


def known_scheme(uri: str) -> bool:
    return uri.partition(":")[0].partition("+")[0].lower() in URI_SCHEMES


def reading_client(uri: str) -> Any:
    """A client on an existing store, for commands that read it: a SQLite file that is not
    there or not MLflow's is refused before MLflow could create or migrate it."""
    if uri.startswith("sqlite:///"):
        if not Path(uri.removeprefix("sqlite:///")).exists():
            raise InputError(f"no tracking store at {uri}")
        check_ours(uri)
    reachable(uri)
    return _mlflow().MlflowClient(with_userinfo(uri))


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialise first use of a SQLite store: jobs starting together must not both create
    its tables or the experiment. Other stores handle their own concurrency."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    check_place(uri)
    database = Path(uri.removeprefix("sqlite:///"))
    from filelock import FileLock, Timeout  # flock on Unix, LockFileEx on Windows

    lock = FileLock(f"{database}.lock", timeout=LOCK_S)
    begin("store_lock")  # for a test to find the helper at the lock
    try:
        lock.acquire()
    except Timeout:
        raise RunnerError(
            f"MLflow tracking store {uri}: its lock {lock.lock_file} was held by another "
            f"process for {LOCK_S:.0f} s"
        )
    except OSError as error:
        raise InputError(f"MLflow tracking store {uri} cannot be written: {error.strerror}")
    try:
        yield
    finally:
        lock.release()


def open_store(uri: str, experiment: str) -> tuple[Any, str]:
    """A client on the store at ``uri`` and the id of ``experiment``, created if needed.

    Any failure is reported in one line before work starts.
    """
    mlflow = _mlflow()
    try:
        reachable(uri)
        with _store_lock(uri):
            if uri.startswith("sqlite:///"):
                check_ours(uri)
            _create_sqlite_store(uri)  # before any client: a client creates the store itself
            client = mlflow.MlflowClient(with_userinfo(uri))
            found = client.get_experiment_by_name(experiment)
            if found is None:
                return client, client.create_experiment(experiment, artifact_location(uri))
        return client, found.experiment_id
    except RunnerError:
        raise
    except Exception as error:
        advice = _sqlite_advice(uri, str(error))
        problem = one_line(error, 300)
        raise RunnerError(f"MLflow tracking store {uri} cannot be used: {problem}{advice}")


DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
REACH_S = 5.0  # a database that takes no connection in this long is down


def reachable(uri: str) -> None:
    """A database store's server takes a connection, or RunnerError in seconds: MLflow
    retries a refused connection ten times with a doubling sleep (110 s before its line)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    default = DATABASE_PORTS.get(parts.scheme.partition("+")[0].lower())
    if default is None or not parts.hostname:
        return  # a server (MLflow's own timeout), a file, or a local socket
    try:
        port = parts.port or default
    except ValueError:
        return  # a port MLflow will refuse in its own words
    try:
        socket.create_connection((parts.hostname, port), timeout=REACH_S).close()
    except OSError as error:
        raise RunnerError(f"MLflow tracking store {uri} cannot be reached at "
                          f"{parts.hostname}:{port}: {error.strerror or error}")  # fmt: skip


def warm(uri: str) -> None:
    """Import MLflow and open the store at ``uri`` if it exists, before a run asks for it
    (MLflow keeps one store object per URI). A store not there yet is left alone: creating
    one is a write, for a run that starts. Failures are left for ``open_store`` to report."""
    mlflow = _mlflow()
    uri = normalized(uri)
    if not uri.startswith(("sqlite:///", "http://", "https://")):
        return  # a file store's client would create its directory
    if uri.startswith("sqlite:///"):
        if not Path(uri.removeprefix("sqlite:///")).is_file():
            return
        try:
            check_ours(uri)  # MLflow would add its tables to another program's database
        except InputError:
            return  # the run refuses it in one line
    with suppress(Exception), _store_lock(uri):
        mlflow.MlflowClient(with_userinfo(uri))


def _mlflow() -> Any:
    """MLflow, its chatter about migrations and the like kept out of the run's console.

    Imported with the cyclic garbage collector paused: the import's 148,000 new objects set
    off 400 collections that free next to nothing, 8 % of its 1.5 s (BENCHMARKS.md)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        import mlflow
    finally:
        if collecting:
            gc.enable()

    for noisy in ("mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # its SQL errors come back to us as exceptions, told in one line; not as tracebacks
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    return mlflow


def _create_sqlite_store(uri: str) -> None:
    """Create and migrate a new SQLite store in a file beside it, then rename it into place:
    an interrupted first run leaves no half-migrated store behind. Called under the lock."""
    if not uri.startswith("sqlite:///"):
        return
    database = Path(uri.removeprefix("sqlite:///"))
    if database.is_file() and database.stat().st_size > 0:
        return
    import mlflow

    begin("store")
    creating = database.with_name(f".{database.name}.{os.getpid()}.creating")
    try:
        mlflow.MlflowClient(f"sqlite:///{creating}").search_experiments(max_results=1)
        os.replace(creating, database)
    finally:
        creating.unlink(missing_ok=True)


def _sqlite_advice(uri: str, error: str = "") -> str:
    """What to do with a SQLite store MLflow refuses: delete it only if it holds no runs."""
    database = Path(uri.removeprefix("sqlite:///"))
    if not uri.startswith("sqlite:///") or not database.is_file():
        return ""
    writable = os.access(database, os.W_OK) and os.access(database.parent, os.W_OK)
    if "readonly database" in error or not writable:
        return "; it cannot be written (a read-only file, folder or file system)"
    try:
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("select name from sqlite_master")}
            runs = db.execute("select count(*) from runs").fetchone()[0] if "runs" in tables else 0
    except sqlite3.Error:
        return ""
    if runs == 0:
        return f"; it holds no runs (left half-created?): delete {database} and run again"
    return f"; it holds {runs} run(s): upgrade it with `mlflow db upgrade {uri}`"


def begin_run(
    uri: str,
    experiment: str,
    name: str,
    tags: dict[str, str],
    params: dict[str, Any],
    start_ms: Optional[int] = None,
) -> tuple[Any, str, str]:
    """Open the store and create a run in it with ``tags`` and ``params``; the client, the
    run's id and its experiment's. ``tags`` may name a parent (``mlflow.parentRunId``) and
    the command that ran (``mlflow.source.name``); the user and the source type are added
    here."""
    from mlflow.entities import Param

    client, experiment_id = open_store(uri, experiment)
    try:
        tags = {"mlflow.user": _user(), "mlflow.source.type": "LOCAL", **tags}
        run = client.create_run(experiment_id, start_time=start_ms, run_name=name, tags=tags)
        run_id = run.info.run_id
    except Exception as error:
        raise RunnerError(f"MLflow run cannot be started: {one_line(error, 300)}")
    try:
        client.log_batch(run_id, params=[Param(key, str(value)) for key, value in params.items()])
    except Exception as error:
        end_run(client, run_id, "FAILED", one_line(error))
        raise RunnerError(f"MLflow run cannot be started: {one_line(error, 300)}")
    return client, run_id, experiment_id


def _user() -> str:
    """The login name; the uid where it has none (a container's), "unknown" where neither
    the environment nor the OS says (getpass asks ``os.getuid``, which Windows lacks)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError, AttributeError):
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def write_results(client: Any, run_id: str, results: dict[str, Any]) -> None:
    """Log what ``runner.tracking.record.results`` gathered from a finished run: the summary
    as ``summary.json``, metrics (each repeat's runtime a step of ``repeat_runtime_s``, a
    peak search's rates and latencies a step each of theirs) and
    tags in one batch, the pictures and the Hydra config as artifacts."""
    from mlflow.entities import Metric, RunTag

    begin("logging")
    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, 0) for key, value in results["metrics"].items()]
    metrics += [
        Metric("repeat_runtime_s", seconds, now, step)
        for step, seconds in enumerate(results["repeats"])
    ]
    metrics += [  # a peak search's rates, a step each
        Metric(key, value, now, step)
        for key, values in results.get("histories", {}).items()
        for step, value in enumerate(values)
    ]
    tags = [RunTag(key, value) for key, value in results["tags"].items()]
    client.log_dict(run_id, results["summary"], "summary.json")
    client.log_batch(run_id, metrics=metrics, tags=tags)
    for path in results["artifacts"]:
        client.log_artifact(run_id, path)
    for name, text in results["texts"].items():
        client.log_text(run_id, text, name)
    if "dataset" in results:
        log_dataset(client, run_id, results["dataset"])


def log_dataset(client: Any, run_id: str, facts: dict[str, Any]) -> None:
    """The split a run classified, as its input dataset (the runs table's *Dataset*)."""
    import json

    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(
        name=facts["name"],
        digest=facts["digest"],
        source_type="local",
        source=json.dumps({"uri": facts["source"]}),
        profile=json.dumps({"num_rows": facts["rows"]}),
    )
    context = InputTag("mlflow.data.context", "inference")
    client.log_inputs(run_id, datasets=[DatasetInput(dataset, [context])])


def end_run(client: Any, run_id: str, status: str, error: Optional[str] = None) -> None:
    """End the run as ``status`` (FINISHED, FAILED, KILLED), with the cause as its ``error``
    tag when it failed."""
    if error is not None:
        client.set_tag(run_id, "error", error)
    client.set_terminated(run_id, status)
