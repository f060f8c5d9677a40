"""Sweeps (``-m``): one MLflow parent run per sweep, the jobs' runs nested under it, and
the report at the end. Hydra calls this in the launching process (``conf/config.yaml``
registers it); jobs, which may run in other processes, find the parent's id in a file in
the sweep directory.
"""

import atexit
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from runner.analysis.sweep_report import (
    PARENT_FILE,
    STORE_FILE,
    console_table,
    description,
    records_from_dir,
    rows,
    write_report,
)
from runner.errors import InputError, RunnerError, one_line
from runner.redact import redact
from runner.result_file import read_sweep

FAILURES_FILE = "failures.txt"


def sweep_dir_of_job() -> Optional[Path]:
    """The sweep directory when the current job is part of a multirun, else None."""
    hydra = HydraConfig.get()
    return Path(hydra.sweep.dir) if hydra.mode == RunMode.MULTIRUN else None


def parent_of_job() -> Optional[str]:
    """The MLflow parent run of the current job's sweep, if it has one."""
    sweep_dir = sweep_dir_of_job()
    marker = sweep_dir / PARENT_FILE if sweep_dir else None
    return marker.read_text().strip() if marker and marker.exists() else None


CLAIMS_DIR = ".configurations"


def earlier_job_alike(cfg: DictConfig) -> Optional[str]:
    """In a sweep, the job that already runs this job's configuration, if one does; else
    None, and the configuration is this job's. Sequential mode runs one process whatever
    ``threads`` says, so ``mode=sequential,parallel threads=1,2`` would time it twice: the
    second is skipped. A claim is a file made with O_EXCL, so jobs side by side agree."""
    import hashlib
    import json

    from runner.config import flatten
    from runner.settings import workers_used

    sweep_dir = sweep_dir_of_job()
    if sweep_dir is None:
        return None
    settings = {**flatten(cfg), "threads": workers_used(cfg)}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    claims = sweep_dir / CLAIMS_DIR
    claims.mkdir(parents=True, exist_ok=True)
    claim = claims / digest.hexdigest()[:16]
    job = str(HydraConfig.get().job.num)
    try:
        with claim.open("x") as handle:
            handle.write(job)
        return None
    except FileExistsError:
        return claim.read_text().strip() or "?"


_ABSENT = object()


def job_configs(config: DictConfig) -> Iterator[tuple[list[str], DictConfig]]:
    """Each job's overrides and config: the sweep's own config (its fixed overrides applied)
    with the job's swept settings set, where they are plain settings (as a sweep's are);
    else composed as the basic sweeper composes it (80 ms a job: 12 s for the preset)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    loader = GlobalHydra.instance().config_loader()
    parser = OverridesParser.create(config_loader=loader)
    task = list(config.hydra.overrides.task)
    fixed = set(task)  # applied to ``config`` already
    params = [f"{key}={value}" for key, value in (config.hydra.sweeper.get("params") or {}).items()]
    jobs = BasicSweeper.split_arguments(parser.parse_overrides([*params, *task]), None)[0]
    jobs += also_jobs(jobs, list(config.hydra.sweeper.get("also") or []))
    parsed = {line: parser.parse_overrides([line])[0] for job in jobs for line in job}
    base = config.copy()
    with open_dict(base):
        del base["hydra"]  # what a job's task function gets
    for overrides in jobs:
        swept = [parsed[line] for line in overrides if line not in fixed]
        plain = all(
            not o.is_add()
            and not o.is_delete()
            and OmegaConf.select(base, o.key_or_group, default=_ABSENT) is not _ABSENT
            for o in swept
        )
        if plain:
            job = base.copy()
            for override in swept:
                OmegaConf.update(job, override.key_or_group, override.value(), merge=True)
        else:
            job = loader.load_sweep_config(config, overrides)
            with open_dict(job):
                del job["hydra"]
        yield overrides, job


def also_jobs(jobs: list[list[str]], also: list[str]) -> list[list[str]]:
    """The sweeper's ``also`` jobs, run after the grid: each line (``key=value ...``) is
    the first job's overrides with those keys set (added where the job has none): the
    hardware preset's peak search runs at one configuration, not at every combination."""
    if not jobs:
        return []
    extra = []
    for line in also:
        given = {_key_of(item): item for item in line.split()}
        job = [given.pop(_key_of(item), item) for item in jobs[0]]
        extra.append(job + list(given.values()))
    return extra


def _key_of(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def check_every_job(config: DictConfig) -> None:
    """Refuse a sweep with a job whose config is bad before the first job runs: ``-m
    batch_size=1,0`` ran job 0 and then failed; the hardware preset with ``grid.rows=0``
    launched 192 jobs for 144 errors. A pair a backend cannot run is skipped, not refused,
    as the job would skip it."""
    from runner.config import UnsupportedPair, validate
    from runner.tracking.store import check_place, tracking_uri

    places: set[str] = set()
    for number, (overrides, job) in enumerate(job_configs(config)):
        try:
            validate(job)
            uri = tracking_uri(job.mlflow.tracking_uri)
            if job.mlflow.enabled and uri not in places:
                check_place(uri)
                places.add(uri)
        except UnsupportedPair:
            continue
        except InputError as error:
            raise InputError(
                f"job {number} of the sweep ({redact(' '.join(overrides))}): {error}; "
                "no job was run"
            )


def record_failure(sweep_dir: Path, job: str, message: str) -> None:
    """One line per failed job; appends of a short line are atomic across processes."""
    with (sweep_dir / FAILURES_FILE).open("a") as handle:
        handle.write(f"job {job}: {message}\n")


def _release_joblib_workers() -> None:
    """The joblib launcher leaves its worker processes idle for loky's 300 s, and the
    command waited for them before it could exit: end them with the sweep."""
    loky = sys.modules.get("joblib.externals.loky")
    if loky is not None:
        loky.get_reusable_executor().shutdown(wait=True, kill_workers=True)


def _measure_ceilings(config: DictConfig) -> None:
    """This machine's ceilings, for its jobs' rooflines (``runner.ceilings``): measured
    once per machine and software, here, before any job or MLflow, so that nothing runs
    beside the measurement. A launcher that sends jobs elsewhere measures nothing here."""
    from runner.ceilings import CACHE, ceilings, measured
    from runner.execution.devices import available_cores

    if not any(name in str(config.hydra.launcher.get("_target_", ""))
               for name in ("BasicLauncher", "Joblib")):  # fmt: skip
        return
    cores = available_cores()
    if measured(CACHE, cores) is None:
        print("Measuring this machine's ceilings, once (python -m runner.ceilings)",
              flush=True)  # fmt: skip
        ceilings(CACHE, cores)


class SweepTracking(Callback):
    """Opens the parent run, closes it with the sweep's status, writes the report."""

    def __init__(self) -> None:
        self.client: Any = None
        self.parent_id: Optional[str] = None
        self.title = "sweep"
        self.link = ""  # the parent run's page in MLflow's UI
        self.preflight = ""  # what the look before the first job saw, where it was busy
        self.last_round: Optional[int] = None  # the round of this process's last job

    def _look(self, config: DictConfig) -> str:
        """``runner.execution.load.preflight``: "" where the machine was quiet, else the
        line that said how busy it stayed."""
        from runner.execution.load import preflight

        said: list[str] = []

        def say(line: str) -> None:
            said.append(line)
            print(line, flush=True)

        seen = preflight(config.preflight.wait_s, config.preflight.look_s, say)
        return said[-1] if seen.busy else ""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Hydra turns a callback's exception into a warning and goes on: a bad job or a
        store that cannot be used ends the sweep here, in one line, before any job."""
        try:
            # the preset's 145 jobs take seconds to check: the sweep never starts silent
            print("Checking every job of the sweep, then the machine, before the first job",
                  flush=True)  # fmt: skip
            check_every_job(config)  # before any job, any file and any MLflow run
            # a folder that cannot be made is said before a busy machine is waited on
            Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
            self.preflight = self._look(config)
            _measure_ceilings(config)
            self._open_parent(config)
        except RunnerError as error:
            print(f"error: {redact(one_line(error, 2000))}", file=sys.stderr, flush=True)
            sys.exit(error.exit_code)
        except OSError as error:  # the sweep dir cannot be made (a read-only file system)
            where = error.filename or config.hydra.sweep.dir
            print(f"error: {where}: {error.strerror or error}", file=sys.stderr, flush=True)
            sys.exit(2)

    def _open_parent(self, config: DictConfig) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        forget_earlier_sweep(sweep_dir)
        self.title = short_title(sweep_dir, list(config.hydra.overrides.task))
        if not config.mlflow.enabled:
            return
        from runner.tracking.store import open_store, run_link, tracking_uri

        uri = tracking_uri(config.mlflow.tracking_uri)
        self.client, experiment_id = open_store(uri, config.mlflow.experiment)
        run = self.client.create_run(  # not the active run: jobs here open their own
            experiment_id,
            run_name=self.title,
            tags={
                "sweep_dir": str(sweep_dir),
                "sweep": redact(" ".join(config.hydra.overrides.task)),
            },  # fmt: skip
        )
        self.parent_id = run.info.run_id
        if self.preflight:
            self.client.set_tag(self.parent_id, "preflight", self.preflight[:5000])
        self.link = run_link(uri, experiment_id, self.parent_id)
        (sweep_dir / PARENT_FILE).write_text(self.parent_id + "\n")
        (sweep_dir / STORE_FILE).write_text(redact(uri) + "\n")  # for `runner.report DIR`
        atexit.register(self._finish, "KILLED")  # the sweep ended early (Ctrl-C, a crash)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A sweep's new round starts with the pre-flight's look (the first job's was
        before the sweep): a round is the unit of the scores, so it should start quiet."""
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            return
        if self.last_round is not None and config.round != self.last_round:
            self._look(config)
        self.last_round = config.round

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        failures = sweep_dir / FAILURES_FILE
        failed = failures.read_text().splitlines() if failures.exists() else []
        try:
            if self.parent_id:
                records = read_sweep(self.client, self.parent_id)
            else:
                records = records_from_dir(sweep_dir)
            table = rows(records) if records else []
            written = write_report(sweep_dir, records, self.title, table)
            if self.parent_id:
                for path in written:
                    self.client.log_artifact(self.parent_id, str(path))
                if written:
                    self._describe_parent(table, list(config.hydra.overrides.task))
        except Exception as error:  # Hydra would only warn and exit 0: say it, exit 1
            self._finish("FAILED")
            cause = f"{type(error).__name__}: {one_line(error, 300)}"
            print(f"error: the sweep report could not be made: {cause}", file=sys.stderr,
                  flush=True)  # fmt: skip
            sys.exit(1)
        self._finish("FAILED" if failed else "FINISHED")
        _release_joblib_workers()
        if written:
            width = shutil.get_terminal_size().columns
            print("\n".join(console_table(table, width)), flush=True)
            print(f"Sweep report: {sweep_dir / 'report.md'}", flush=True)
            _print_scores(records, sweep_dir)
        if self.link:
            print(f"MLflow: {self.link}", flush=True)  # the parent run: the report, its jobs
        if failed:
            message = f"error: {len(failed)} job(s) of the sweep failed, see {failures}"
            print(message, file=sys.stderr, flush=True)
            sys.exit(1)

    def _describe_parent(self, table: list[dict[str, Any]], overrides: list[str]) -> None:
        """The parent run as a person lands on it: the report's table as its description,
        its headline figures as metrics (rounded as people read them: the best throughput,
        the largest speedup), what it swept as params."""
        self.client.set_tag(self.parent_id, "mlflow.note.content", description(table, self.title))
        speedups = [row["speedup"] for row in table if row["speedup"] is not None]
        headline = {"configurations": len(table),
                    "throughput_ips_max": round(max(row["throughput_ips"] for row in table)),
                    **({"speedup_max": round(max(speedups), 3)} if speedups else {})}  # fmt: skip
        for name, value in headline.items():
            self.client.log_metric(self.parent_id, name, float(value))
        swept = dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o)
        for key, value in swept.items():
            if not key.startswith(NOT_MEASURED):
                self.client.log_param(self.parent_id, key, redact(value)[:6000])

    def _finish(self, status: str) -> None:
        if self.parent_id:
            parent_id, self.parent_id = self.parent_id, None
            self.client.set_terminated(parent_id, status)


def forget_earlier_sweep(sweep_dir: Path) -> None:
    """A sweep directory given again (``hydra.sweep.dir=``) loses what the earlier sweep
    left that would speak for this one: its failures (the sweep would fail on them) and
    its claimed configurations (jobs would be skipped as run)."""
    (sweep_dir / FAILURES_FILE).unlink(missing_ok=True)
    shutil.rmtree(sweep_dir / CLAIMS_DIR, ignore_errors=True)


NOT_MEASURED = ("hydra.", "mlflow.", "preflight.")  # where and how, not what: out of the title


def short_title(sweep_dir: Path, overrides: list[str], width: int = 80) -> str:
    """``sweep 14-02-11: mode=sequential,parallel threads=1,2``: what was swept, without
    where it was recorded or written, or how it started (``NOT_MEASURED``), cut at
    ``width``."""
    shown = [o for o in overrides if not o.lstrip("+~").startswith(NOT_MEASURED)]
    title = f"sweep {sweep_dir.name}: {redact(' '.join(shown)) or '(no overrides)'}"
    return title if len(title) <= width else title[: width - 1] + "…"


def _print_scores(records: list, sweep_dir: Path) -> None:
    """The sweep's single- and multi-core scores beside every reference machine's (the
    hardware preset's last lines), also kept as ``scores.md``; a reference file that cannot
    be read is said, the sweep's results stand."""
    from runner import result_file
    from runner.analysis.comparison import beside_references
    from runner.analysis.scores import quotable

    try:
        references = [(f"{p}", result_file.read(p)[1]) for p in result_file.reference_files()]
        lines = beside_references(records, "this sweep", references)
    except RunnerError as error:
        print(f"note: no scores: {one_line(error, 300)}", flush=True)
        return
    if len(lines) == 1:  # no score: one line says why
        print(lines[0], flush=True)
    elif lines:
        lines += ["", quotable(records)]
        text = "\n".join(["Scores beside the reference machines (references/):", "", *lines])
        (sweep_dir / "scores.md").write_text(text + "\n")
        print(text, flush=True)
