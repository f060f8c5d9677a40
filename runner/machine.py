"""The machine a run ran on: a fingerprint to tell machines apart, and a readable name.

A virtual machine's CPU may call itself just "AMD EPYC"; its family, model, stepping and
ISA level still tell one generation from another. Linux reads /proc; macOS ``sysctl``;
elsewhere (Windows) ``platform`` and the environment say what they can.
"""

import argparse
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any, Optional

from runner import REPO_ROOT
from runner.precision import PRECISION_FLAGS

ISA_LEVELS = (("amx_tile", "amx"), ("avx512f", "avx512f"), ("avx2", "avx2"), ("avx", "avx"))
MACHINE_KEYS = (  # every fingerprint key, as a run's tags
    "cpu", "cpu_id", "isa", "logical_cores", "physical_cores", "memory_gb", "gpus", "os",
    "python", "torch", "onnxruntime", "precision_flags", "gpu_capability",
)  # fmt: skip
IDENTITY_KEYS = ("cpu", "cpu_id", "isa", "logical_cores", "physical_cores", "memory_gb", "gpus")


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _sysctl(name: str) -> str:
    """A macOS ``sysctl -n`` value, or "" where there is no such command or key."""
    try:
        done = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def _cpuinfo_blocks() -> list[dict[str, str]]:
    """/proc/cpuinfo, one dict per logical processor (none off Linux)."""
    blocks, fields = [], {}
    for line in [*_read("/proc/cpuinfo").splitlines(), ""]:
        if not line.strip():
            if fields:
                blocks.append(fields)
            fields = {}
            continue
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return blocks


def _isa(flags: set[str], machine: str) -> str:
    if machine.lower() in ("arm64", "aarch64"):
        return "neon"
    return next((level for flag, level in ISA_LEVELS if flag in flags), machine.lower() or "?")


def _precision_flags(flags: set[str]) -> str:
    """The flags that decide whether int8, bf16 and fp16 run natively, comma-separated."""
    return ",".join(flag for flag in PRECISION_FLAGS if flag in flags) or "none"


ARM_FEATURES = {"FEAT_DotProd": "asimddp", "FEAT_BF16": "bf16", "FEAT_FP16": "asimdhp"}


def cpu_facts() -> dict[str, Any]:
    """Model name, family/model/stepping, ISA level, the precision flags and physical cores,
    however the OS tells them."""
    blocks, machine = _cpuinfo_blocks(), platform.machine()
    if blocks:
        info = blocks[0]
        flags = set(info.get("flags", info.get("Features", "")).split())
        cpu_id = "f{}m{}s{}".format(
            *(info.get(k, "?") for k in ("cpu family", "model", "stepping"))
        )
        cores = {(block.get("physical id"), block.get("core id")) for block in blocks}
        physical = len(cores) if all("core id" in block for block in blocks) else None
        name = info.get("model name") or info.get("Hardware") or platform.processor()
        return {
            "cpu": name,
            "cpu_id": cpu_id,
            "isa": _isa(flags, machine),
            "precision_flags": _precision_flags(flags),
            "physical": physical,
        }
    brand = _sysctl("machdep.cpu.brand_string")
    if brand:  # macOS
        family, model, stepping = (
            _sysctl(f"machdep.cpu.{k}") for k in ("family", "model", "stepping")
        )
        flags = set(_sysctl("machdep.cpu.features").lower().split())
        flags |= set(_sysctl("machdep.cpu.leaf7_features").lower().split())
        flags = {flag.replace(".", "_") for flag in flags}
        flags |= {
            flag for name, flag in ARM_FEATURES.items() if _sysctl(f"hw.optional.arm.{name}") == "1"
        }  # Apple silicon
        physical = _sysctl("hw.physicalcpu")
        return {
            "cpu": brand,
            "cpu_id": f"f{family or '?'}m{model or '?'}s{stepping or '?'}",
            "isa": _isa(flags, machine),
            "precision_flags": _precision_flags(flags),
            "physical": int(physical) if physical.isdigit() else None,
        }
    identifier = os.environ.get(
        "PROCESSOR_IDENTIFIER", ""
    )  # Windows: "... Family 6 Model 85 Stepping 7, ..."
    found = dict(re.findall(r"(Family|Model|Stepping) (\w+)", identifier))
    return {
        "cpu": platform.processor() or machine or "unknown",
        "cpu_id": "f{}m{}s{}".format(*(found.get(k, "?") for k in ("Family", "Model", "Stepping"))),
        "isa": _isa(set(), machine),
        "precision_flags": "none",
        "physical": None,
    }


def memory_gb() -> Optional[float]:
    """Total memory: /proc/meminfo, macOS's hw.memsize, or what sysconf knows."""
    match = re.search(r"MemTotal:\s+(\d+) kB", _read("/proc/meminfo"))
    if match:
        return round(int(match.group(1)) / 2**20, 1)
    size = _sysctl("hw.memsize")
    if size.isdigit():
        return round(int(size) / 2**30, 1)
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (AttributeError, ValueError, OSError):
        return None


def torch_version() -> str:
    """torch's full version (``2.14.1+cu130``) without importing torch, which costs seconds:
    read from its ``version.py``; the package's metadata drops the build suffix."""
    if "torch" in sys.modules:
        return sys.modules["torch"].__version__
    from importlib.util import find_spec

    spec = find_spec("torch")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        match = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)", _read(f"{folder}/version.py"), re.M)
        if match:
            return match.group(1)
    return ""


def _onnxruntime_version() -> str:
    try:
        from importlib.metadata import version

        return version("onnxruntime")
    except Exception:
        return ""


@cache
def software() -> dict[str, str]:
    """What a result's figures also depend on besides the hardware: gridbench's commit
    (``+dirty`` with uncommitted changes) and OpenVINO's version (torch's, ONNX Runtime's
    and Python's are in ``fingerprint``)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        openvino = version("openvino")
    except PackageNotFoundError:
        openvino = ""
    return {"gridbench": _commit(), "openvino": openvino}


def _commit() -> str:
    try:
        asked = ["describe", "--always", "--dirty=+dirty", "--abbrev=12", "--exclude=*"]
        done = subprocess.run(["git", "-C", str(REPO_ROOT), *asked], capture_output=True,
                              text=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def gpu_names(query: str = "name") -> str:
    """The NVIDIA GPUs ``nvidia-smi`` lists (without waking CUDA in this process): their
    names, or another ``--query-gpu`` field of each (``compute_cap``)."""
    try:
        done = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""
    names = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    if done.returncode or not names:
        return ""
    return ", ".join(names)


@cache
def fingerprint() -> dict[str, Any]:
    """Everything that says which machine and software measured a run."""
    cpu = cpu_facts()
    return {
        "cpu": cpu["cpu"],
        "cpu_id": cpu["cpu_id"],
        "isa": cpu["isa"],
        "logical_cores": os.cpu_count() or 1,
        "physical_cores": cpu["physical"],
        "memory_gb": memory_gb(),
        "gpus": gpu_names(),
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "torch": torch_version(),
        "onnxruntime": _onnxruntime_version(),
        "precision_flags": cpu["precision_flags"],
        "gpu_capability": gpu_names("compute_cap").replace(" ", ""),
    }


def machine_name(facts: dict[str, Any]) -> str:
    """A readable name unique to the hardware, e.g. ``amd-epyc-f25m1-2c-avx2-3f9a1c``:
    vendor and line, family and model, logical cores, ISA, and a hash of all of it."""
    words = re.findall(r"[a-z0-9]+", facts["cpu"].lower().replace("(r)", "").replace("(tm)", ""))
    line = "-".join(words[:2]) or "cpu"
    family_model = re.sub(r"s[^m]*$", "", facts["cpu_id"])  # stepping only in the hash
    identity = {key: facts.get(key) for key in IDENTITY_KEYS}
    identity["memory_gb"] = round(facts.get("memory_gb") or 0)  # whole GB: stable on a VM
    identity = json.dumps(identity, sort_keys=True)
    digest = hashlib.sha256(identity.encode()).hexdigest()[:6]
    return f"{line}-{family_model}-{facts['logical_cores']}c-{facts['isa']}-{digest}"


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m runner.machine``: what a run on this machine is tagged, and the facts
    the tag is made of (its ceilings: ``python -m runner.ceilings``)."""
    from runner.errors import CommandParser

    parser = CommandParser("runner.machine", main.__doc__)
    parser.add_argument("--ceiling", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--again", action="store_true", help=argparse.SUPPRESS)
    return parser.run(argv, _machine)


def _machine(args: argparse.Namespace) -> int:
    from runner.errors import InputError

    if args.ceiling or args.again:  # where the ceilings were measured before 2026-12-08
        raise InputError("the ceilings have a command of their own: python -m runner.ceilings")
    facts = fingerprint()
    json.dump({"machine": machine_name(facts), **facts}, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
