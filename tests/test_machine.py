"""The machine fingerprint on Linux and, with Linux's sources taken away, elsewhere; and the
portable fallbacks of the rest of the package."""

import multiprocessing
import os
import re
import subprocess
import sys

from runner import REPO_ROOT, choices, machine
from runner.execution import devices
from runner.machine import cpu_facts, fingerprint, machine_name, memory_gb
from tests.conftest import wait_for

PROCESSOR = """processor\t: {number}
vendor_id\t: AuthenticAMD
cpu family\t: 23
model\t\t: 49
model name\t: AMD EPYC
stepping\t: 0
core id\t\t: 0
physical id\t: 0
flags\t\t: fpu sse2 avx avx2 fma
"""
CPUINFO = "\n".join(PROCESSOR.format(number=n) for n in (0, 1))  # two threads of one core


def with_files(monkeypatch, files):
    monkeypatch.setattr(machine, "_read", lambda path: files.get(path, ""))


def test_linux_facts_from_proc(monkeypatch):
    with_files(monkeypatch, {"/proc/cpuinfo": CPUINFO, "/proc/meminfo": "MemTotal: 8388608 kB\n"})
    monkeypatch.setattr(machine.platform, "machine", lambda: "x86_64")
    facts = cpu_facts()
    # two logical processors on one core (SMT): one physical core
    assert facts == {"cpu": "AMD EPYC", "cpu_id": "f23m49s0", "isa": "avx2", "physical": 1,
                     "precision_flags": "none"}  # fmt: skip
    assert memory_gb() == 8.0


def test_this_machine_has_a_readable_stable_name():
    facts = fingerprint()
    name = machine_name(facts)
    assert re.fullmatch(r"[a-z0-9-]+-f\w+m\w+-\d+c-[a-z0-9]+-[0-9a-f]{6}", name), name
    assert facts["logical_cores"] == os.cpu_count()
    assert machine_name({**facts, "torch": "0.0", "python": "2.7"}) == name  # software: same
    assert machine_name({**facts, "cpu_id": "f99m1s0"}) != name  # another generation


def test_two_vms_that_say_only_amd_epyc_are_told_apart():
    base = {"cpu": "AMD EPYC", "isa": "avx2", "logical_cores": 2, "physical_cores": 2,
            "memory_gb": 8.0, "gpus": ""}  # fmt: skip
    rome = machine_name({**base, "cpu_id": "f23m49s0"})
    milan = machine_name({**base, "cpu_id": "f25m1s1"})
    assert rome.startswith("amd-epyc-f23m49-2c-avx2-") and milan.startswith("amd-epyc-f25m1-")
    assert rome != milan


def test_macos_facts_from_sysctl(monkeypatch):
    with_files(monkeypatch, {})  # no /proc
    values = {"machdep.cpu.brand_string": "Apple M2", "hw.physicalcpu": "8",
              "hw.memsize": str(16 * 2**30), "hw.optional.arm.FEAT_BF16": "1",
              "hw.optional.arm.FEAT_DotProd": "1", "hw.optional.arm.FEAT_FP16": "0"}  # fmt: skip
    monkeypatch.setattr(machine, "_sysctl", lambda name: values.get(name, ""))
    monkeypatch.setattr(machine.platform, "machine", lambda: "arm64")
    facts = cpu_facts()
    assert facts == {"cpu": "Apple M2", "cpu_id": "f?m?s?", "isa": "neon", "physical": 8,
                     "precision_flags": "asimddp,bf16"}  # fmt: skip
    assert memory_gb() == 16.0


def test_windows_facts_from_the_environment(monkeypatch):
    with_files(monkeypatch, {})
    monkeypatch.setattr(machine, "_sysctl", lambda name: "")
    monkeypatch.setenv("PROCESSOR_IDENTIFIER", "Intel64 Family 6 Model 85 Stepping 7, GenuineIntel")
    monkeypatch.setattr(machine.platform, "processor", lambda: "Intel64 Family 6 Model 85")
    monkeypatch.setattr(machine.platform, "machine", lambda: "AMD64")
    monkeypatch.delattr(os, "sysconf")
    facts = cpu_facts()
    assert facts["cpu_id"] == "f6m85s7" and facts["physical"] is None
    assert facts["precision_flags"] == "none"  # Windows tells no flags: every precision emulated
    assert memory_gb() is None


def test_cores_without_an_affinity_mask(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity")  # macOS and Windows have none
    assert devices.available_cores() == os.cpu_count()


def test_spawn_where_forkserver_is_not_offered(monkeypatch):
    assert choices.usable_start_method("forkserver") == "forkserver"  # Linux keeps it
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])  # Windows
    assert choices.usable_start_method("forkserver") == "spawn"


def test_the_store_lock_needs_no_fcntl(tmp_path):
    """Where there is no fcntl, the store is still locked while it is created: a second
    process that asks for the lock gets it only once the first has let it go."""
    (tmp_path / "phases").mkdir()
    code = (
        "import sys; sys.modules['fcntl'] = None\n"  # importing fcntl now fails
        "from pathlib import Path\n"
        "from runner.tracking import store\n"
        f"with store._store_lock('sqlite:///{tmp_path / 'mlflow.db'}'):\n"
        "    print('held', flush=True)\n"
        "    if sys.argv[1] == 'first':\n"
        "        sys.stdin.readline()\n"
        f"        Path('{tmp_path / 'released'}').touch()\n"
        "    else:\n"
        f"        print(Path('{tmp_path / 'released'}').exists())\n"
    )
    env = {**os.environ, "GRIDBENCH_PHASE_DIR": str(tmp_path / "phases")}

    def start(which):
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True, "env": env}
        return subprocess.Popen([sys.executable, "-c", code, which], cwd=REPO_ROOT, **pipes)

    first = start("first")
    assert first.stdout.readline() == "held\n"
    (tmp_path / "phases" / "store_lock").unlink()
    second = start("second")
    wait_for(tmp_path / "phases" / "store_lock", second)  # it asks for the lock now
    out, _ = first.communicate("go\n", timeout=120)
    assert first.returncode == 0
    out, _ = second.communicate(timeout=120)
    assert (second.returncode, out.split()) == (0, ["held", "True"])  # after the first let go


def test_a_fingerprint_never_fails(monkeypatch):
    with_files(monkeypatch, {})
    monkeypatch.setattr(machine, "_sysctl", lambda name: "")
    monkeypatch.delenv("PROCESSOR_IDENTIFIER", raising=False)
    facts = cpu_facts()
    assert facts["cpu"] and facts["isa"] and facts["cpu_id"] == "f?m?s?"


def test_torch_version_is_read_without_importing_torch():
    code = "import sys; from runner.machine import torch_version as v; "
    code += "print(v(), 'torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    import torch

    assert done.stdout.split() == [torch.__version__, "False"]
