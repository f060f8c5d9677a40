"""A shared tracking server for real: PostgreSQL behind ``mlflow server`` with basic auth.

Two "machines" log the hardware preset to it, ``runner.compare`` reads them back, and a
run without credentials is refused before any work. ``.ci/run`` starts PostgreSQL; where
nothing answers on 127.0.0.1:5432 the fixture runs the same script (``.ci/postgres``).
"""

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import psycopg2
import pytest

from runner import REPO_ROOT
from runner.compare import main as compare_main
from runner.export import main as export_main
from runner.result_file import read as read_file
from tests.conftest import run_app, start_mlflow_server
from tests.test_compare import COMPARISONS, TINY

ROLE = "postgresql://gridbench:gridbench@127.0.0.1:5432"
ADMIN_PASSWORD = secrets.token_hex(12)


def _connect(database="postgres"):
    connection = psycopg2.connect(f"{ROLE}/{database}", connect_timeout=5)
    connection.autocommit = True
    return connection


def _execute(statement):
    connection = _connect()
    try:
        connection.cursor().execute(statement)
    finally:
        connection.close()


def postgres_or_skip(script: Path = REPO_ROOT / ".ci" / "postgres") -> None:
    """PostgreSQL on 127.0.0.1:5432, started by ``script`` where none answers; where it
    cannot start (no Debian packages, no root: a contributor's laptop) the tests that need
    it are skipped in one line naming what to install, but never under ``CI=true``."""
    try:
        _connect().close()
        return
    except psycopg2.OperationalError:
        pass
    started = subprocess.run([script], capture_output=True, text=True)
    if started.returncode and os.environ.get("CI") != "true":
        why = (started.stderr or started.stdout).strip().splitlines()[-1:] or ["no output"]
        pytest.skip(
            f"no PostgreSQL on 127.0.0.1:5432 and .ci/postgres could not start one "
            f"({why[0]}): install PostgreSQL (Debian: apt-get install postgresql) to run "
            "the shared-server tests; under CI=true they fail instead"
        )
    assert started.returncode == 0, started.stdout + started.stderr


@pytest.fixture(scope="module")
def database():
    postgres_or_skip()
    name = f"gridbench_{secrets.token_hex(4)}"
    _execute(f"CREATE DATABASE {name}")
    yield f"{ROLE}/{name}".replace("postgresql://", "postgresql+psycopg2://")
    _execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="module")
def server_home(tmp_path_factory):
    """The server's directory: its users, its log, and the artifacts it stores."""
    return tmp_path_factory.mktemp("server")


@pytest.fixture(scope="module")
def server(database, server_home):
    """``mlflow server --app-name basic-auth`` on 127.0.0.1, its runs in PostgreSQL."""
    home = server_home
    config = home / "basic_auth.ini"
    config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{home / 'users.db'}\nadmin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 60\n"  # scrypt costs 84 ms of the server per request
    )
    secrets_env = {"MLFLOW_AUTH_CONFIG_PATH": str(config),
                   "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
                   "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}  # fmt: skip
    process, url = start_mlflow_server(
        database, home, "--app-name", "basic-auth", "--artifacts-destination",
        str(home / "artifacts"), env=secrets_env,
    )  # fmt: skip
    try:
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def credentials(user="admin", password=None):
    return {"MLFLOW_TRACKING_USERNAME": user,
            "MLFLOW_TRACKING_PASSWORD": password or ADMIN_PASSWORD}  # fmt: skip


def test_without_credentials_a_run_ends_before_any_work(server, tmp_path):
    done = run_app(tmp_path, "grid.rows=2", "grid.columns=2", env={"MLFLOW_TRACKING_URI": server})
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error: MLflow tracking store")
    assert "401" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "summary.json").exists()
    assert "Total Runtime" not in done.stdout


def test_two_machines_log_to_the_server_and_compare_reads_them_back(
    server, server_home, tmp_path, monkeypatch
):
    # the credentials in the URI, as a user may give them: they travel by the environment
    with_password = server.replace("http://", f"http://admin:{ADMIN_PASSWORD}@")
    done = run_app(tmp_path, "+experiment=hardware", *TINY, "threads=1", "backend=onnxruntime",
                   "precision=fp32", "machine.name=a,b", f"mlflow.tracking_uri={with_password}",
                   multirun=True, env={"MLFLOW_TRACKING_URI": ""})  # fmt: skip
    assert done.returncode == 0, done.stderr  # two "machines" in one sweep: one start-up
    assert ADMIN_PASSWORD not in done.stdout + done.stderr  # MLflow's "View run at" lines too
    for written in (tmp_path / "sweep").rglob("*"):
        assert not written.is_file() or ADMIN_PASSWORD.encode() not in written.read_bytes()
    for key, value in credentials().items():
        monkeypatch.setenv(key, value)
    # artifacts go through the server to its own store, never to this machine's outputs/
    client = mlflow.MlflowClient(tracking_uri=server)
    experiment = client.get_experiment_by_name("gridbench")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    run = client.search_runs([experiment.experiment_id], "tags.machine = 'b'")[0]
    summary = client.download_artifacts(run.info.run_id, "summary.json", str(tmp_path))
    stored = list((server_home / "artifacts").rglob(f"{run.info.run_id}/**/summary.json"))
    assert len(stored) == 1 and stored[0].read_bytes() == Path(summary).read_bytes()
    assert not list(tmp_path.rglob("mlruns")) and not list(tmp_path.rglob("mlartifacts"))
    out = tmp_path / "compare"
    assert compare_main(["--tracking-uri", server, "--baseline", "a", "--out", str(out)]) == 0
    markdown = (out / "compare.md").read_text()
    assert "| configuration | A | B | B vs A | p |" in markdown
    assert "Machines: A = `a` (the baseline), B = `b`." in markdown
    throughput = markdown.split("## Other figures")[0]  # then a table a figure, alike
    (row,) = [line for line in throughput.splitlines() if line.startswith("| sequential")]
    assert row.count(" (2x2)") == 2  # each machine: two runs of two passes
    table = markdown.split("### Per core")[1].split("###")[0]
    (per_core,) = [line for line in table.splitlines() if line.startswith("| sequential")]
    assert per_core.count(" (2x1)") == 2  # each run's figure, through the server and back
    (logged,) = client.search_runs([experiment.experiment_id], COMPARISONS)  # beside the runs
    assert logged.data.tags["baseline"] == "a" and logged.data.tags["experiment"] == "gridbench"
    exported = tmp_path / "server.json"  # a file made to be shared: nothing secret in it
    assert export_main(["--tracking-uri", with_password, "--out", str(exported)]) == 0
    assert ADMIN_PASSWORD not in exported.read_text() and len(read_file(exported)[1]) == 4
    for job in client.search_runs([experiment.experiment_id], "tags.mode = 'sequential'"):
        assert ADMIN_PASSWORD not in str(job.data.tags) + str(job.data.params)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    assert compare_main(["--tracking-uri", server, "--out", str(tmp_path / "no")]) == 1
    assert not (tmp_path / "no").exists()


def test_without_postgresql_the_server_tests_skip_in_one_line_but_not_under_ci(
    tmp_path, monkeypatch
):
    """Nothing on the port (a port where nothing listens) and a start script that fails, as
    on a laptop without Debian's packages: a skip naming what to install; under CI=true a
    failure."""
    monkeypatch.setattr(sys.modules[__name__], "ROLE", "postgresql://gridbench:x@127.0.0.1:9")
    script = tmp_path / "postgres"
    script.write_text("#!/bin/sh\necho 'initdb: command not found' >&2\nexit 1\n")
    script.chmod(0o755)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install postgresql") as skipped:
        postgres_or_skip(script)
    assert "initdb: command not found" in str(skipped.value)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(AssertionError, match="initdb"):
        postgres_or_skip(script)
