"""Input checks shared by every public function: a clear error before any compute.

The convention throughout ntklib: a value of the wrong kind (a float where an int is needed, a
string where a number is) raises ``TypeError``; a value of the right kind out of its range (a
depth of 0, a negative or non-finite standard deviation) raises ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def integer(name: str, v: object, minimum: int = 1, note: str = "") -> int:
    """``v`` as an int ``>= minimum``; ``note`` (default none) is appended to the message."""
    if isinstance(v, bool) or not isinstance(v, int | np.integer):
        raise TypeError(f"{name} must be an int >= {minimum}{note}, got {v!r}")
    if v < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}{note}, got {v!r}")
    return int(v)


def number(name: str, v: object, *, minimum: float | None = 0.0, strict: bool = False) -> float:
    """``v`` as a finite float ``>= minimum`` (``> minimum`` when ``strict``; default
    ``>= 0``); ``minimum=None`` allows any finite value."""
    if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number, got {type(v).__name__} {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if minimum is not None and (v <= minimum if strict else v < minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum:g}, got {v}")
    return v


def widths(ws: object, name: str = "widths") -> tuple[int, ...]:
    """Hidden widths: a non-empty sequence of ints ``>= 1``, as a tuple."""
    if isinstance(ws, int | str) or not isinstance(ws, Sequence | np.ndarray):
        raise TypeError(f"{name} must be a sequence of ints, one per hidden layer, got {ws!r}")
    if len(ws) < 1:
        raise ValueError(f"{name} must list at least one hidden width (depth >= 1)")
    return tuple(integer(f"every entry of {name}", w) for w in ws)


def choice(name: str, v: object, options: Sequence[str]) -> str:
    """``v`` if it is one of ``options``."""
    if v not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got {v!r}")
    return v  # type: ignore[return-value]


def available_memory() -> int | None:
    """Bytes available for new allocations (Linux ``MemAvailable``), or ``None`` where unknown
    (then nothing is refused for memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def fits(what: str, needed: float, available: int | None = None) -> None:
    """Refuse (``MemoryError``, before any compute) an output of ``needed`` bytes that exceeds
    the memory available (default: :func:`available_memory`)."""
    available = available_memory() if available is None else available
    if available is not None and needed > available:
        raise MemoryError(
            f"{what} needs {needed / 2**30:.1f} GiB and this machine has "
            f"{available / 2**30:.1f} GiB available"
        )
