"""Benchmark: gridbench's own serving driver against MLPerf's LoadGen, side by side.

    python bench/drivers.py            # prints, and writes outputs/bench/drivers.md
    python bench/drivers.py --own      # only what of a single-stream query is the tool's
    python bench/drivers.py --long-steps   # only the batch-1 peaks with 10 s steps

On ONNX Runtime fp32, one process, one thread, the test split, the two drivers
alternated round after round (a slow minute of the machine falls on both): single-stream
p50 and p90; the server scenario at a tenth and at half of gridbench's batch-1 peak
(achieved rate, p50, p99); offline at batch 256 (samples a second); the peak under a 10
ms p99 at batch 1 and with dynamic batching to 64 (each driver's own search). Each figure is the
median over rounds, with each driver's spread; LoadGen over gridbench is called different
only where a t-test over rounds says so (``runner.statistics``).
"""

import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from run import describe_machine  # noqa: E402
from serving import job_of  # noqa: E402

from runner import statistics as stats  # noqa: E402
from runner.execution.sequential import run_sequential  # noqa: E402
from runner.machine import torch_version  # noqa: E402

ROUNDS = 3
QUERIES = 5000
OWN_BLOCK = 250  # queries of one kind in a row (the tool's own part)
OUT = ROOT / "outputs" / "bench"


def figures(driver: str, scenario: str, **settings: object) -> dict:
    """One served run's figures under ``driver``."""
    job = replace(job_of(settings.pop("batch_size", 1), QUERIES, scenario=scenario, **settings),
                  driver=driver, logs_dir=str(OUT / "loadgen"))  # fmt: skip
    return run_sequential(job).serving


def main() -> None:
    peak = run_sequential(job_of(1, QUERIES, qps=None)).serving["peak_qps"]
    cases = {
        "single-stream": ("single_stream", {}, ("query_p50_ms", "query_p90_ms", "query_max_ms")),
        f"server at {0.1 * peak:,.0f}/s (a tenth of the peak)": (
            "server", {"qps": 0.1 * peak}, ("achieved_qps", "query_p50_ms", "query_p99_ms")),
        f"server at {0.5 * peak:,.0f}/s (half the peak)": (
            "server", {"qps": 0.5 * peak}, ("achieved_qps", "query_p50_ms", "query_p99_ms")),
        "offline, batch 256": ("offline", {"batch_size": 256}, ("achieved_qps",)),
        "peak under a 10 ms p99, batch 1": ("server", {"qps": None}, ("peak_qps",)),
        "peak under a 10 ms p99, batch 64": ("server", {"qps": None, "batch_size": 64},
                                              ("peak_qps",)),
    }  # fmt: skip
    seen: dict[tuple[str, str, str], list[float]] = {}
    for _ in range(ROUNDS):
        for name, (scenario, settings, keys) in cases.items():
            for driver in ("gridbench", "loadgen"):
                if driver == "gridbench" and scenario == "offline":
                    found = {"achieved_qps": _offline_rate(settings["batch_size"])}
                else:
                    found = figures(driver, scenario, **dict(settings))
                for key in keys:
                    seen.setdefault((name, key, driver), []).append(float(found[key]))
    machine = describe_machine(torch_version())
    lines = [f"Measured by `python bench/drivers.py` on: {machine}; gridbench's "
             f"batch-1 peak under a 10 ms p99: {peak:,.0f} queries/s. Medians of {ROUNDS} "
             "alternated rounds [each driver's lowest, highest]; LoadGen 6.0.17.", "",
             "| scenario | figure | gridbench | LoadGen | LoadGen / gridbench |",
             "|---|---|---|---|---|"]  # fmt: skip
    for name, (_, _, keys) in cases.items():
        for key in keys:
            ours, theirs = seen[(name, key, "gridbench")], seen[(name, key, "loadgen")]
            verdict = stats.compare([[v] for v in ours], [[v] for v in theirs])
            lines.append(f"| {name} | {key} | {_shown(ours)} | {_shown(theirs)} | "
                         f"{verdict.ratio:.2f} ({verdict.verdict()}) |")  # fmt: skip
    floor, handed = (np.median([_null_p50(threaded) for _ in range(ROUNDS)])
                     for threaded in (False, True))  # fmt: skip
    scheduled = {rate: np.median([_null_p50(False, "server", qps=rate) for _ in range(ROUNDS)])
                 for rate in (0.1 * peak, 0.5 * peak)}  # fmt: skip
    lines += ["", f"LoadGen with no model, single-stream: a system under test that answers "
              f"inside LoadGen's issue call, p50 {floor * 1000:.1f} us; through gridbench's "
              f"dispatcher thread, {handed * 1000:.1f} us (single- and multi-stream, and the "
              "server at batch 1 in one process, now answer inside the call). Server, "
              "answering inside the call: p50 " + ", ".join(
                  f"{p50 * 1000:.0f} us at {rate:,.0f}/s" for rate, p50 in scheduled.items())
              + ": LoadGen's own wake-up after each scheduled arrival (gridbench's driver "
              "keeps awake before each)."]  # fmt: skip
    own = [_own_part() for _ in range(ROUNDS)]
    lines += ["", "What of a single-stream query is the tool's own (medians of "
              f"{ROUNDS} rounds of {QUERIES:,} queries; p50s, us): "
              + "; ".join(f"{name} {np.median([o[key] for o in own]):.1f}"
                          for key, name in OWN_PARTS.items()) + "."]  # fmt: skip
    text = "\n".join(lines)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "drivers.md").write_text(text + "\n")
    print(text)


def _null_p50(threaded: bool, scenario: str = "single_stream", **settings: object) -> float:
    """LoadGen's p50 (ms) with a system under test that runs no model: it answers inside
    LoadGen's issue call, or hands each sample to ``loadgen.Dispatcher``'s thread over
    workers that answer at once."""
    import threading

    import mlperf_loadgen as lg

    from runner.execution import loadgen
    from runner.execution.classify import Part

    class AtOnce:  # workers that answer the moment they are sent a range
        count = 1

        def __init__(self) -> None:
            self.sent: list[Part] = []

        def send(self, first: int, stop: int) -> None:
            self.sent.append(Part(first, np.zeros(stop - first), np.zeros(stop - first),
                                  np.zeros(1)))  # fmt: skip

        def answers(self, wait_s: float) -> list[Part]:
            done, self.sent = self.sent, []
            return done

    job = replace(job_of(1, QUERIES, scenario=scenario, serve_min_s=0.5, **settings),
                  driver="loadgen", logs_dir=str(OUT / "loadgen"))  # fmt: skip
    dispatcher = loadgen.Dispatcher(AtOnce(), job)

    def inline(samples: list) -> None:
        lg.QuerySamplesComplete([lg.QuerySampleResponse(s.id, 0, 0) for s in samples])

    sut = lg.ConstructSUT(dispatcher.issue if threaded else inline, dispatcher.flush)
    qsl = lg.ConstructQSL(QUERIES, QUERIES, lambda _: None, lambda _: None)
    thread = threading.Thread(target=dispatcher.serve, daemon=True)
    thread.start()
    log = lg.LogSettings()
    log.log_output.outdir = job.logs_dir
    Path(job.logs_dir).mkdir(parents=True, exist_ok=True)
    lg.StartTestWithLogSettings(sut, qsl, loadgen.settings_of(job), log)
    dispatcher.stop()
    thread.join()
    lg.DestroyQSL(qsl)
    lg.DestroySUT(sut)
    summary = loadgen.read_summary(Path(job.logs_dir) / loadgen.SUMMARY)
    return float(summary["50.00 percentile latency (ns)"]) / 1e6


OWN_PARTS = {
    "bare": "a bare `session.run` of one image",
    "served": "gridbench's single-stream query",
    "own": "their difference, the tool's part",
    "null": "gridbench's query with a classifier that runs no model (the driver alone)",
}


def _own_part() -> dict[str, float]:
    """Single-stream p50s (us): a bare ONNX Runtime call on one image, gridbench's query
    (the driver, the worker interface, the cells' images, the part it returns) and the same
    query with a classifier that answers at once: in blocks of ``OWN_BLOCK`` queries, the
    three kinds alternated block after block in one process, so that a slow stretch of
    the machine falls on all three."""
    from runner.execution import serving
    from runner.execution.backends import ort_session
    from runner.execution.sequential import InThisProcess

    job = job_of(1, OWN_BLOCK, scenario="single_stream")
    workers = InThisProcess(job)
    workers.start()
    model = workers.classify_batch
    session = ort_session(job.spec(None, "cpu"))
    answer = (np.zeros(1, np.uint8), np.zeros(1, np.float32))
    clock = time.perf_counter
    times: dict[str, list[float]] = {"bare": [], "served": [], "null": []}
    for _ in range(QUERIES // OWN_BLOCK):
        for query in range(OWN_BLOCK):
            image = job.split.images[query : query + 1]
            began = clock()
            session.run(None, {"images": image})
            times["bare"].append(clock() - began)
        workers.classify_batch = model
        times["served"] += list(serving.single_stream(workers, job, OWN_BLOCK).latencies_s)
        workers.classify_batch = lambda images: answer
        times["null"] += list(serving.single_stream(workers, job, OWN_BLOCK).latencies_s)
    p50 = {name: float(np.median(found)) * 1e6 for name, found in times.items()}
    return {**p50, "own": p50["served"] - p50["bare"]}


def _offline_rate(batch_size: int) -> float:
    """gridbench's offline figure: one pass over the grid's cells, images a second."""
    job = replace(job_of(batch_size, QUERIES, scenario="offline"), repeats=3)
    return QUERIES / run_sequential(job).runtime_s


def _shown(values: list[float]) -> str:
    digits = 0 if max(values) >= 100 else 3
    return (f"{np.median(values):,.{digits}f} [{min(values):,.{digits}f}, "
            f"{max(values):,.{digits}f}]")  # fmt: skip


LOADGEN_PRECISION = 5e-5  # LoadGen's search stops at a 0.1 queries/s bracket (its default
# server_find_peak_qps_decimals_of_precision, 1; unsigned: it cannot be coarser than 1/s)


def long_step_peaks(rounds: int = 1, step_s: float = 10.0) -> list[str]:
    """Batch-1 peaks under a 10 ms p99 with steps of ``step_s`` seconds (LoadGen's minimum
    duration, gridbench's ``server.min_s``), alternated: gridbench's search, LoadGen's,
    and gridbench's searching as LoadGen does (to a 0.1 queries/s bracket near 2,000/s,
    a rate ruled out on one failed run); with each search's number of steps."""
    from runner.execution import serving

    ways = {"gridbench": ("gridbench", False), "loadgen": ("loadgen", False),
            "gridbench as LoadGen searches": ("gridbench", True)}  # fmt: skip
    peaks: dict[str, list[float]] = {way: [] for way in ways}
    steps: dict[str, list[int]] = {way: [] for way in ways}
    kept = serving.PEAK_PRECISION, serving.AGAIN
    for _ in range(rounds):
        for way, (driver, as_loadgen) in ways.items():
            serving.PEAK_PRECISION, serving.AGAIN = (LOADGEN_PRECISION, 0) if as_loadgen else kept
            found = figures(driver, "server", qps=None, serve_min_s=step_s)
            peaks[way].append(float(found["peak_qps"]))
            steps[way].append(len(found["steps"]) if "steps" in found else _loadgen_steps())
    serving.PEAK_PRECISION, serving.AGAIN = kept
    base = np.median(peaks["gridbench"])
    return [
        f"{way}: {', '.join(f'{p:,.0f}' for p in found)} queries/s in "
        f"{', '.join(map(str, steps[way]))} steps; over gridbench's {np.median(found) / base:.2f}"
        for way, found in peaks.items()
    ]


def _loadgen_steps() -> int:
    """The runs LoadGen's last peak search made, from its detail log: the first rate, the
    widenings and the bisections."""
    text = (OUT / "loadgen" / "mlperf_log_detail.txt").read_text()
    return 1 + text.count("FindBoundaries: Checking") + text.count("BinarySearch: Testing")


if __name__ == "__main__":
    if sys.argv[1:] == ["--long-steps"]:  # only the peaks with 10 s steps
        print("\n".join(long_step_peaks()))
    elif sys.argv[1:] == ["--own"]:  # only what of a query is the tool's
        own = [_own_part() for _ in range(ROUNDS)]
        for key, name in OWN_PARTS.items():
            print(f"{name}: p50 {np.median([o[key] for o in own]):.1f} us")
    else:
        main()
