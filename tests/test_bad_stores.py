"""Stores and files that are not what they should be: another program's SQLite file, a
folder, a file that is no database, a read-only store, a summary that is not one. Each is
one line and an exit status, in the app and in compare, report and sync, and nothing is
written to a file that is not ours."""

import logging
import sqlite3

import pytest

from runner.compare import main as compare_main
from runner.errors import InputError, RunnerError
from runner.report import main as report_main
from runner.sync import main as sync_main
from runner.tracking.store import check_place, open_store
from tests.conftest import copy_store, free_port


def one_line(capsys) -> str:
    (line,) = capsys.readouterr().err.strip().splitlines()
    return line


@pytest.fixture
def foreign(tmp_path):
    """Another program's SQLite file, one table of its own."""
    database = tmp_path / "theirs.db"
    with sqlite3.connect(database) as db:
        db.execute("create table foo (a integer)")
    return database


@pytest.mark.parametrize("spelling", ["sqlite", "SQLITE", "sqlite+pysqlite"])
def test_another_programs_database_is_refused_before_anything_is_written(foreign, spelling):
    """MLflow added its 50 tables to it. ``check_place`` runs in the app's main process
    before the work (``bench/promises.py`` runs the app on such a file), and sees the file
    however the URI spells SQLite; the helper's warm-up leaves it alone too."""
    from runner.tracking.store import normalized, warm

    before = foreign.read_bytes()
    uri = normalized(f"{spelling}:///{foreign}")
    warm(f"{spelling}:///{foreign}")
    assert foreign.read_bytes() == before
    with pytest.raises(InputError) as refused:
        check_place(uri)
    assert str(refused.value) == (
        f"MLflow tracking store {uri}: {foreign} is another program's database (tables foo); "
        "nothing was written to it: name another file"
    )
    with pytest.raises(InputError, match="another program's database"):
        open_store(uri, "gridbench")  # the helper's way in, the same refusal
    assert foreign.read_bytes() == before


def test_a_database_with_a_table_named_runs_is_not_taken_for_mlflows(tmp_path):
    """One name of MLflow's schema is not MLflow's schema: refused, left as it was."""
    database = tmp_path / "app.db"
    with sqlite3.connect(database) as db:
        db.execute("create table runs (a integer)")
    before = database.read_bytes()
    with pytest.raises(InputError, match="another program's database .tables runs."):
        check_place(f"sqlite:///{database}")
    assert database.read_bytes() == before


@pytest.mark.parametrize("command", ["compare", "report"])
def test_the_commands_refuse_another_programs_database_and_leave_it(
    tmp_path, foreign, capsys, command
):
    before = foreign.read_bytes()
    uri = f"sqlite:///{foreign}"
    arguments = ["--tracking-uri", uri, "--out", str(tmp_path / "out")]
    main = {"compare": compare_main, "report": report_main}[command]
    assert main(["some-run-id", *arguments] if command == "report" else arguments) == 2
    assert "is another program's database (tables foo)" in one_line(capsys)
    assert foreign.read_bytes() == before and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "make, status, message",
    [
        (lambda p: p.write_text("not a database, a text file of more than a hundred bytes " * 3),
         2, "is not a SQLite database"),
        (lambda p: p.mkdir(), 2, "is a directory"),
        (lambda p: None, 2, "no tracking store at"),
    ],
    ids=["text", "folder", "none"],
)  # fmt: skip
def test_compare_with_a_store_that_is_no_store_is_one_line(tmp_path, capsys, make, status,
                                                           message):  # fmt: skip
    store = tmp_path / "mlflow.db"
    make(store)
    arguments = ["--tracking-uri", f"sqlite:///{store}", "--out", str(tmp_path / "out")]
    assert compare_main(arguments) == status
    assert message in one_line(capsys)


def test_a_folder_as_the_store_is_bad_input_found_without_mlflow(tmp_path):
    """Found after the work before; ``check_place`` runs in the main process before it (a
    sweep's case runs the app: test_sweep's ``a-folder-as-the-store``)."""
    (tmp_path / "store").mkdir()
    uri = f"sqlite:///{tmp_path / 'store'}"
    with pytest.raises(InputError, match=f"^MLflow tracking store {uri}: .* is a directory$"):
        check_place(uri)


def test_a_read_only_store_is_one_line_with_the_right_advice(blank_store, tmp_path, caplog):
    """SQLite treats a file whose write version (header byte 18) is above 2 as read-only,
    whoever runs: a read-only store without root's privileges in the way. MLflow logged two
    SQLAlchemy tracebacks (89 lines) before our line, and we advised deleting the store."""
    uri = copy_store(blank_store, tmp_path)
    database = tmp_path / "mlflow.db"
    header = bytearray(database.read_bytes())
    header[18] = 3
    database.write_bytes(bytes(header))
    with caplog.at_level(logging.DEBUG), pytest.raises(RunnerError) as refused:
        open_store(uri, "gridbench")
    assert str(refused.value).endswith(
        "; it cannot be written (a read-only file, folder or file system)"
    )
    assert "delete" not in str(refused.value)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize("text", ['{"items": 4, "runtimes', "[1, 2]", '{"items": 4}'])
def test_a_summary_that_is_not_one_is_one_line(tmp_path, capsys, text):
    """A truncated or list-shaped summary.json: tracebacks from report and sync."""
    job = tmp_path / "sweep" / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text("mode: sequential\n")
    (job / "summary.json").write_text(text)
    assert report_main([str(tmp_path / "sweep")]) == 2
    assert f"{job / 'summary.json'}" in one_line(capsys)
    assert sync_main([str(job)]) == 2
    assert one_line(capsys).startswith(f"error: {job / 'summary.json'} ")
    assert not list((tmp_path / "sweep").glob("report.*"))


def test_report_against_a_server_that_is_not_there_is_an_outage(tmp_path, capsys):
    """It exited 2, as for bad input; a server that does not answer is an outage: 1."""
    uri = f"http://127.0.0.1:{free_port()}"
    assert report_main(["0123abcd", "--tracking-uri", uri, "--out", str(tmp_path / "o")]) == 1
    assert one_line(capsys).startswith(f"error: no MLflow run 0123abcd in {uri}: ")
    assert not (tmp_path / "o").exists()


def test_a_refused_run_leaves_a_users_folder_as_it_was(tmp_path, foreign):
    """``hydra.run.dir`` pointed at a user's folder holding a summary.json and a mask.png,
    the store refused: exit 2, and both files and the folder stay (they were deleted)."""
    from tests.conftest import run_app

    mine = tmp_path / "run"
    mine.mkdir()
    for name in ("summary.json", "mask.png"):
        (mine / name).write_text(f"the user's own {name}")
    done = run_app(tmp_path, "grid.rows=2", "grid.columns=2",
                   env={"MLFLOW_TRACKING_URI": f"sqlite:///{foreign}"})  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "another program's database" in done.stderr
    for name in ("summary.json", "mask.png"):
        assert (mine / name).read_text() == f"the user's own {name}"


@pytest.mark.parametrize("uri", ["postgresql+psycopg2://127.0.0.1:9/db", "mysql://127.0.0.1:9/db"])
def test_a_database_that_refuses_connections_is_one_line_not_minutes_of_retries(uri, capsys):
    """MLflow retried a refused connection ten times with a doubling sleep: 110 s before
    its line. A database store's server is asked once first (run, compare, export)."""
    with pytest.raises(RunnerError, match="cannot be reached at 127.0.0.1:9: Connection refused"):
        open_store(uri, "gridbench")
    assert compare_main(["--tracking-uri", uri, "--no-log"]) == 1
    assert "cannot be reached at 127.0.0.1:9" in one_line(capsys)


def test_a_store_another_process_holds_locked_is_waited_on_and_named_locked(
    blank_store, tmp_path, monkeypatch
):
    """It was "not a SQLite database (database is locked)", exit 2, at once."""
    from runner.tracking import store

    uri = copy_store(blank_store, tmp_path)
    monkeypatch.setattr(store, "LOCK_S", 0.2)
    holder = sqlite3.connect(uri.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("begin exclusive")
    try:
        with pytest.raises(RunnerError, match="another process held it locked for 0.2 s") as held:
            check_place(uri)
        assert not isinstance(held.value, InputError)  # an outage, exit 1: not bad input
    finally:
        holder.execute("rollback")
        holder.close()
    check_place(uri)  # let go: ours again
