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


def fit_amdahl(
    processors: Sequence[int], speedups: Sequence[float]
) -> tuple[float, Optional[tuple[float, float]]]:
    """The serial fraction in [0, 1] whose Amdahl curve is nearest the measured speedups
    (least squares, ``scipy.optimize.curve_fit``), and its 95 % interval from the fit's
    covariance and Student's t (None with fewer than three points, or no spread left)."""
    from scipy.optimize import curve_fit
    from scipy.stats import t

    p = np.asarray(processors, dtype=float)
    s = np.asarray(speedups, dtype=float)
    (serial,), covariance = curve_fit(amdahl, p, s, p0=[0.1], bounds=(0.0, 1.0))
    serial = float(serial)
    spread = float(np.sqrt(covariance[0, 0])) if np.isfinite(covariance[0, 0]) else None
    if len(p) < 3 or spread is None:
        return serial, None
    half = float(t.ppf(0.975, len(p) - 1)) * spread
    return serial, (max(0.0, serial - half), min(1.0, serial + half))
