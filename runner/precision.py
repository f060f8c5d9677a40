"""Precisions as a hardware axis: whether this machine computes one natively or emulates it.

A precision other than fp32 is fast only where the hardware has instructions for it:
dot products of int8 (VNNI, AMX, Arm's dot product), bf16 (AVX-512 BF16, AMX) and fp16
(AVX-512 FP16, AMX FP16, Arm's half-precision arithmetic); on a GPU, tensor cores (compute
capability 7.0 for fp16, 8.0 for bf16). Elsewhere the runtime converts to wider types and
back, which is slower than fp32: a comparison must say which of the two it measured.
"""

from dataclasses import dataclass

NATIVE_FLAGS = {  # /proc/cpuinfo flag names (x86, then Arm)
    "int8": ("amx_int8", "avx512_vnni", "avx_vnni", "asimddp"),
    "bf16": ("amx_bf16", "avx512_bf16", "bf16"),
    "fp16": ("amx_fp16", "avx512_fp16", "asimdhp"),
}
PRECISION_FLAGS = tuple(sorted({flag for flags in NATIVE_FLAGS.values() for flag in flags}))
GPU_NATIVE_CAPABILITY = {"fp16": 7.0, "bf16": 8.0}  # tensor cores for the type


@dataclass(frozen=True)
class Native:
    """Whether a precision runs natively, and the hardware fact that says so."""

    native: bool
    reason: str

    @property
    def word(self) -> str:
        return "native" if self.native else "emulated"


def nativeness(precision: str, device: str, cpu_flags: str, gpu_capability: str) -> Native:
    """``cpu_flags`` and ``gpu_capability`` as the fingerprint gives them (a comma list of
    ``PRECISION_FLAGS`` present; ``"8.0"``, or several for several GPUs)."""
    if precision == "fp32":
        return Native(True, "fp32")
    if device.startswith("cuda"):
        needed = GPU_NATIVE_CAPABILITY.get(precision)
        capabilities = [float(cc) for cc in gpu_capability.split(",") if _is_number(cc)]
        if needed is None or not capabilities:
            return Native(False, f"no compute capability known for {precision}")
        lowest = min(capabilities)
        verb = "has" if lowest >= needed else "lacks"
        return Native(lowest >= needed, f"the GPU {verb} {precision} tensor cores (compute "
                      f"capability {lowest:g}, {needed:g} needed)")  # fmt: skip
    present = set(cpu_flags.split(","))
    found = [flag for flag in NATIVE_FLAGS[precision] if flag in present]
    if found:
        return Native(True, f"this CPU has {', '.join(found)}")
    return Native(False, f"this CPU has none of {', '.join(NATIVE_FLAGS[precision])}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
