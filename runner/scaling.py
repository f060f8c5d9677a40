"""Two classic readings of measured speedups: the Karp-Flatt metric and Amdahl's law.

Karp and Flatt (1990): the experimentally determined serial fraction of a run on p
processors with speedup S is e = (1/S - 1/p) / (1 - 1/p). Constant e over p points to
work that cannot be parallelised; e growing with p points to overhead that grows with p
(start-up, communication, a tail). Amdahl: S(p) = 1 / (f + (1 - f) / p) for a serial
fraction f, fitted here to the measured speedups by least squares.
"""

from collections.abc import Sequence
from typing import Optional

import numpy as np


def karp_flatt(speedup: float, processors: int) -> Optional[float]:
    """The serial fraction e, or None where it is undefined (one processor)."""
    if processors <= 1 or speedup <= 0:
        return None
    return (1 / speedup - 1 / processors) / (1 - 1 / processors)


def amdahl(processors: np.ndarray, serial_fraction: float) -> np.ndarray:
    """Amdahl's speedup on ``processors`` for a serial fraction."""
    p = np.asarray(processors, dtype=float)
    return 1 / (serial_fraction + (1 - serial_fraction) / p)


def fit_amdahl(processors: Sequence[int], speedups: Sequence[float]) -> float:
    """The serial fraction in [0, 1] whose Amdahl curve is nearest the measured speedups
    (least squares, on a grid of 0.0001 steps: exact enough, and no optimiser to trust)."""
    candidates = np.linspace(0.0, 1.0, 10001)
    p = np.asarray(processors, dtype=float)[None, :]
    curves = 1 / (candidates[:, None] + (1 - candidates[:, None]) / p)
    errors = ((curves - np.asarray(speedups, dtype=float)[None, :]) ** 2).sum(axis=1)
    return float(candidates[int(np.argmin(errors))])
