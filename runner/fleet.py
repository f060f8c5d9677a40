"""``python -m runner.fleet [--address ADDR] [--nodes all|one-per-kind|ID,...] [OVERRIDE ...]``:
the hardware preset (or the experiment the overrides name) on every chosen node of a Ray
cluster, then one comparison of them all beside the reference machines.

Each node runs the whole sweep alone (one Ray task pinned to it that holds all its CPUs),
nodes side by side, without MLflow; it sends back its jobs' records as a result file
(``runner.result_file``), which lands in ``outputs/fleet/<date>/``, is synced into the
local store and compared
(``compare.md`` there). A node's kind is its machine tag: the node's label
``gridbench.machine`` where it has one, else the tag its hardware gives
(``python -m runner.machine``). Without ``--address`` the fleet is this machine alone, on
an embedded Ray: for trying it. The Phoronix Test Suite's Phoromatic does the same for its
test profiles on a fleet of systems.
"""

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from runner import REPO_ROOT
from runner.errors import (
    CommandParser,
    InputError,
    RunnerError,
    Stop,
    last_line,
    one_line,
)

MACHINE_LABEL = "gridbench.machine"  # a node's label that names its machine tag
ASK_S = 120.0  # a node's first task (a worker to start, the package to unpack): bounded
PRESET = "+experiment=hardware"
# what a node needs of the repository to run a sweep, sent where it lacks it: the package,
# its configs and sweeper, the weights and the data (64 MB)
SHIPPED_EXCLUDES = [".git", "outputs", "site", "tests", "bench", "docs", "references", "*.pyc"]
LAUNCHER = ("from runner.children import die_with_parent; die_with_parent(); import runpy; "
            "runpy.run_module('runner', run_name='__main__', alter_sys=True)")  # fmt: skip


@dataclass
class Node:
    node_id: str
    machine: str  # its tag: its runs' ``machine``
    cpus: int
    here: bool  # on this host: the repository is there, nothing is shipped

    @property
    def name(self) -> str:
        return f"{self.machine} ({self.node_id[:8]})"


def main(argv: Optional[list[str]] = None) -> int:
    parser = CommandParser("runner.fleet", __doc__)
    parser.add_argument("--address", help="the cluster's (host:port); none: this machine alone")
    parser.add_argument("--nodes", default="all", metavar="all|one-per-kind|ID,ID...",
                        help="which nodes: every one (default), one of each machine tag, or "
                        "these node IDs, comma-separated (8 hex digits or more each)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="default: outputs/fleet/<date>")
    parser.add_argument("--tracking-uri", help="the store the nodes' runs are synced into")
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDE",
                        help=f"the sweep's Hydra overrides (default: {PRESET})")  # fmt: skip
    return parser.run(argv, _fleet)


def sweep_overrides(given: list[str]) -> list[str]:
    """The preset unless the overrides name an experiment of their own."""
    if any(item.startswith("+experiment=") for item in given):
        return list(given)
    return [PRESET, *given]


def check_sweep(overrides: list[str]) -> None:
    """Every job of the sweep checked here as the sweep would check it on a node (this
    machine's cores standing in for each node's): a bad override is one line and exit 2
    before any node starts."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from hydra.types import RunMode

    from runner.config import register
    from runner.sweep import check_every_job

    register()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        try:
            config = loader.load_configuration("config", overrides, RunMode.MULTIRUN)
        except HydraException as error:
            raise InputError(f"the sweep's overrides: {one_line(error, 300)}")
        check_every_job(config)


def chosen_nodes(alive: list[dict[str, Any]], wanted: list[str], tags: dict[str, str],
                 this_host: str) -> list[Node]:  # fmt: skip
    """The nodes ``--nodes`` names, of the cluster's ``alive`` ones that have CPUs."""
    nodes = [
        Node(
            found["NodeID"],
            tags[found["NodeID"]],
            int(found["Resources"]["CPU"]),
            found.get("NodeManagerAddress") == this_host,
        )  # fmt: skip
        for found in alive
        if found.get("Alive") and found.get("Resources", {}).get("CPU", 0) >= 1
    ]
    if not nodes:
        raise InputError("the cluster has no node with a CPU to measure")
    if wanted == ["all"]:
        return nodes
    if wanted == ["one-per-kind"]:
        return list({node.machine: node for node in reversed(nodes)}.values())[::-1]
    picked = []
    for given in wanted:
        matches = [n for n in nodes if len(given) >= 8 and n.node_id.startswith(given)]
        if len(matches) != 1:
            known = ", ".join(node.node_id[:8] for node in nodes)
            raise InputError(f"--nodes {given}: no such node with CPUs (nodes: {known})")
        picked.append(matches[0])
    return picked


def measure(overrides: list[str], machine: str, repo: Optional[str]) -> dict[str, Any]:
    """On a node, in a Ray task: the sweep in a process of its own (which dies with the
    task), its jobs' summaries made a result file (the node needs no store: the driver
    syncs the file into its own); the file's bytes, or why not."""
    import os
    import subprocess
    import tempfile

    from runner import result_file
    from runner.analysis.sweep_report import records_from_dir

    root = repo or os.getcwd()  # shipped: the task starts in the unpacked repository
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="gridbench-fleet-") as scratch:
        sweep_dir, path = Path(scratch) / "sweep", Path(scratch) / "runs.json.gz"
        sweep = [sys.executable, "-c", LAUNCHER, "-m", *overrides, f"machine.name={machine}",
                 "mlflow.enabled=false", f"hydra.sweep.dir={sweep_dir}"]  # fmt: skip
        done = subprocess.run(sweep, cwd=root, capture_output=True, text=True)
        if done.returncode != 0:
            return {"error": last_line(done.stderr) or f"exit {done.returncode}"}
        records = records_from_dir(sweep_dir)
        if not records:
            return {"error": "its sweep completed no job"}
        result_file.write(path, records, result_file.made_now(f"the fleet's node {machine}"))
        data = path.read_bytes()
    return {"file": data, "seconds": time.time() - started}


def _tag_of_this_node() -> str:
    from runner.machine import fingerprint, machine_name

    return machine_name(fingerprint())


def _fleet(args: argparse.Namespace) -> int:
    overrides = sweep_overrides(args.overrides)
    check_sweep(overrides)
    wanted = [given.strip() for given in args.nodes.split(",") if given.strip()]
    if not wanted:  # bad input, said before Ray starts (it measured no node and said 0)
        raise InputError(f"--nodes {args.nodes!r} names no node: give all, one-per-kind "
                         "or node ids")  # fmt: skip
    import ray

    _connect(args.address)
    try:
        nodes = chosen_nodes(ray.nodes(), wanted, _tags(ray), _this_host(ray))
        out = _out_dir(args.out)
        print(f"Fleet: {len(nodes)} node(s), the sweep `{' '.join(overrides)}` on each; "
              f"results in {out}", flush=True)  # fmt: skip
        arrived, failed = _run_on(ray, nodes, overrides, out)
    finally:
        ray.shutdown()
    return _conclude(arrived, failed, out, args.tracking_uri)


def _connect(address: Optional[str]) -> None:
    """The cluster joined as ``mode=ray`` joins it (or this machine's every core)."""
    from runner.execution.devices import available_cores
    from runner.execution.ray_mode import connect

    if address and "@" in address:  # never echoed: it may hold a password
        raise InputError("--address takes the head's host:port; Ray takes no user or password")
    try:
        connect(address, available_cores())
    except ConnectionError as error:  # nothing answers there
        raise RunnerError(f"--address {address}: {error}")
    _quiet_raylet_deaths()


def _quiet_raylet_deaths() -> None:
    """A node's death reaches the driver as a page of its raylet's log on stdout; the
    fleet says it in one line of its own (its row), so Ray's page is left out. (Ray's
    printer is private: where it is not found, the page stays.)"""
    from ray._private import worker

    printer = getattr(worker, "print_to_stdstream", None)
    if printer is None:
        return

    def printed(data: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        if data.get("pid") != "raylet":
            printer(data, *args, **kwargs)

    worker.print_to_stdstream = printed


def _this_host(ray: Any) -> str:
    return ray.util.get_node_ip_address()


def _pinned(node_id: str) -> Any:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)


def _tags(ray: Any) -> dict[str, str]:
    """Each alive node's machine tag: its label, else asked of the node itself."""
    tags, asked = {}, {}
    probe = ray.remote(num_cpus=0)(_tag_of_this_node)
    for found in ray.nodes():
        if not found.get("Alive"):
            continue
        label = (found.get("Labels") or {}).get(MACHINE_LABEL)
        if label:
            tags[found["NodeID"]] = label
        else:
            strategy = _pinned(found["NodeID"])
            asked[found["NodeID"]] = probe.options(scheduling_strategy=strategy).remote()
    for node_id, reference in asked.items():
        try:
            tags[node_id] = ray.get(reference, timeout=ASK_S)
        except Exception as error:  # a node that cannot run a task cannot run a sweep
            raise RunnerError(f"node {node_id[:8]} did not say its machine within {ASK_S:g} s "
                              f"({type(error).__name__})")  # fmt: skip
    return tags


def _out_dir(given: Optional[Path]) -> Path:
    from runner.files import output_dir

    return output_dir(given or REPO_ROOT / "outputs" / "fleet" / time.strftime("%Y-%m-%d_%H-%M-%S"))


def _run_on(ray: Any, nodes: list[Node], overrides: list[str],
            out: Path) -> tuple[list[Path], dict[str, str]]:  # fmt: skip
    """Every node's sweep at once, each pinned to its node; the files that arrived and why
    the others did not. A stop cancels every node's work and keeps what arrived."""
    from runner.files import atomic

    task = ray.remote(max_retries=0)(measure)
    pending = {}
    for node in nodes:
        env = None if node.here else {"working_dir": str(REPO_ROOT), "excludes": SHIPPED_EXCLUDES}
        reference = task.options(
            num_cpus=node.cpus, scheduling_strategy=_pinned(node.node_id), runtime_env=env
        ).remote(  # fmt: skip
            overrides, node.machine, str(REPO_ROOT) if node.here else None
        )
        pending[reference] = node
        print(f"{node.name}: running on {node.cpus} CPU(s)", flush=True)
    arrived: list[Path] = []
    failed: dict[str, str] = {}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for reference in done:
                node = pending.pop(reference)
                try:
                    answer = ray.get(reference)
                except Exception as error:  # the node died, or its worker did
                    answer = {"error": _why(error)}
                if "error" in answer:
                    failed[node.name] = one_line(answer["error"], 300)
                    print(f"{node.name}: failed: {failed[node.name]}", flush=True)
                    continue
                path = out / f"{node.machine}-{node.node_id[:8]}.json.gz"
                with atomic(path) as tmp:
                    tmp.write_bytes(answer["file"])
                arrived.append(path)
                print(f"{node.name}: done in {answer['seconds']:.0f} s "
                      f"[{len(arrived) + len(failed)}/{len(nodes)} nodes]", flush=True)  # fmt: skip
    except Stop:
        for reference in pending:
            ray.cancel(reference, force=True)
        print(f"stopped: {len(arrived)} node(s) had sent their results ({out})", file=sys.stderr,
              flush=True)  # fmt: skip
        raise
    return arrived, failed


def _why(error: Exception) -> str:
    """Ray's error in a few words: its first sentence (a node's death comes with a page)."""
    cause = getattr(error, "cause", None) or error
    return f"{type(error).__name__}: {str(cause).split('. ')[0].split(chr(10))[-1]}"


def _conclude(arrived: list[Path], failed: dict[str, str], out: Path,
              tracking_uri: Optional[str]) -> int:  # fmt: skip
    """The arrived files synced into the store and compared; exit 1 if a node failed."""
    from runner import compare, result_file
    from runner.tracking.backfill import import_records

    for path in arrived:
        records = result_file.read(path)[1]
        new = import_records(records, tracking_uri, "gridbench", path.name)
        print(f"{path.name}: {new} run(s) synced into the store", flush=True)
    if arrived:
        first = result_file.read(arrived[0])[1][0].machine  # the fleet's, not a reference
        compared = compare.main([*map(str, arrived), "--references", "--baseline", first,
                                 "--out", str(out), "--no-log"])  # fmt: skip
        if compared != 0:
            return compared
    for name, why in failed.items():
        print(f"error: node {name} failed: {why}", file=sys.stderr, flush=True)
    return 1 if failed or not arrived else 0


if __name__ == "__main__":
    sys.exit(main())
