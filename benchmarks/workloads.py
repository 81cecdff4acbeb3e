"""Benchmark workloads, shared by both sides (plain Python and NumPy: it runs under ntklib's
JAX and under the peer environment's older JAX alike).

Every workload fixes its inputs and weights through NumPy seeds, so ntklib and
neural-tangents compute on the same numbers and their results can be compared.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

W_STD, B_STD = 1.4, 0.1
IN_DIM = 16

SIZES = {
    # tiny: CI keeps the benchmarks working; small: `make bench`; full: every size of the issue
    "tiny": {
        "gram": [(3, 64, 16, "float32"), (3, 64, 16, "float64")],
        "kernel": [("relu", 10, 16), ("erf", 100, 16)],
        "mc": [(5, 32, 256)],
        "k3": [8, 16],
        "matmul": 512,
        "book": None,
        # (activation, depth of the timing run, batch of the timing run)
        "accuracy": [("tanh", 10, 8), ("gelu", 10, 8)],
    },
    "small": {
        # batch 64 throughout, plus one batch-256 point; the NTK-vector-product and Jacobian
        # routes cost minutes per call at depth 10, width 1024, batch 256 on 2 cores
        "gram": [
            (d, w, 64, dt) for d in (3, 10) for w in (256, 1024) for dt in ("float32", "float64")
        ]
        + [(3, 1024, 256, "float32")],
        "kernel": [(a, d, 128) for a in ("relu", "erf") for d in (10, 100, 1000, 10000)],
        "mc": [(50, 50, 2048)],
        "k3": [8, 16, 32, 64],
        "matmul": 2048,
        "book": "quick",
        "accuracy": [("tanh", 100, 16), ("gelu", 100, 16)],
    },
    "full": {
        "gram": [
            (d, w, b, dt)
            for d in (3, 10)
            for w in (256, 512, 1024, 2048)
            for b in (64, 128, 256, 512)
            for dt in ("float32", "float64")
        ],
        # and batch 512 at depth 1000: the recursion's cost per kernel entry depends on the batch
        "kernel": [(a, d, 128) for a in ("relu", "erf") for d in (10, 100, 1000, 10000)]
        + [(a, 1000, 512) for a in ("relu", "erf")],
        "mc": [(50, 50, 16384)],
        "k3": [8, 16, 32, 64, 128],  # the naive route's memory decides whether it runs at 128
        "matmul": 4096,
        "book": "quick",
        "accuracy": [("tanh", 1000, 32), ("gelu", 1000, 32)],
    },
}

# A Jacobian larger than this is not attempted (reported as skipped, with its size).
JACOBIAN_BYTES_LIMIT = 4e9

# The Gram routes whose cost grows like batch^2 x parameters (Jacobian contraction,
# NTK-vector products) are not run on a workload when one of their steady-state calls on a
# smaller workload of the same depth and dtype, scaled by (batch ratio)^2 x (width ratio)^2,
# predicts more than this many seconds; they are reported as skipped, with the measurement
# behind the prediction. The structured routes (ntklib's and neural-tangents') always run.
CALL_BUDGET_S = 60.0
BUDGETED = ("jacobian", "nt jacobian contraction", "nt ntk-vector products")


def over_budget(timed: dict, impl: str, wl: tuple) -> str | None:
    """Why ``impl`` is skipped at Gram workload ``wl``, given ``timed[impl] = [(wl, seconds)]``
    of its steady-state calls so far; None when it should run."""
    if impl not in BUDGETED:
        return None
    depth, width, batch, dt = wl
    for (d, w, b, t), secs in timed.get(impl, []):
        if d == depth and t == dt and width >= w and batch >= b:
            predicted = secs * (batch / b) ** 2 * (width / w) ** 2
            if predicted > CALL_BUDGET_S:
                return (
                    f"not run: predicted {predicted:.0f} s from {secs:.2g} s at width {w}, "
                    f"batch {b} (budget {CALL_BUDGET_S:.0f} s)"
                )
    return None


def result_file(outdir, bench: str, wl: tuple, tag: str) -> Path:
    """Where a side saves a workload's result for the agreement check (one name, both sides)."""
    return Path(outdir) / f"{bench}-{'-'.join(map(str, wl))}-{tag}.npy"


def dims(depth: int, width: int) -> list[int]:
    return [IN_DIM] + [width] * depth + [1]


def weights(
    depth: int, width: int, dtype: str, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Standard-normal ``(W, b)`` per dense layer, ``W`` of shape (n_in, n_out) (stax layout)."""
    rng = np.random.default_rng(seed)
    d = dims(depth, width)
    return [
        (
            rng.standard_normal((d[i], d[i + 1])).astype(dtype),
            rng.standard_normal(d[i + 1]).astype(dtype),
        )
        for i in range(len(d) - 1)
    ]


def inputs(batch: int, dtype: str, seed: int = 1) -> np.ndarray:
    """``batch`` standard-normal inputs; a smaller batch is the first rows of a larger one."""
    return np.random.default_rng(seed).standard_normal((batch, IN_DIM)).astype(dtype)


def n_params(depth: int, width: int) -> int:
    d = dims(depth, width)
    return sum(d[i] * d[i + 1] + d[i + 1] for i in range(len(d) - 1))


def gram_flops(depth: int, width: int, batch: int) -> float:
    """FLOPs of the structured NTK Gram: forward + backward matmuls and the per-layer Grams."""
    d = dims(depth, width)
    layers = range(len(d) - 1)
    return 4.0 * batch * sum(d[i] * d[i + 1] for i in layers) + 2.0 * batch**2 * sum(
        d[i] + d[i + 1] for i in layers
    )


def label(bench: str, w) -> str:
    if bench == "gram":
        d, width, b, dt = w
        return f"depth {d}, width {width}, batch {b}, {dt}"
    if bench == "kernel":
        a, d, b = w
        return f"{a}, depth {d}, batch {b}"
    if bench == "mc":
        d, width, n = w
        return f"depth {d}, width {width}, {n} networks"
    if bench == "k3":
        return f"width {w}, depth 2, batch 4"
    return str(w)


def timeit(fn, repeats: int = 3) -> tuple[float, float]:
    """(first call seconds, best steady-state seconds) of ``fn()`` (which must block).

    Calls taking over a second are repeated once only: their timing noise is small anyway.
    """
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeats if first < 2.0 else 1):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return first, best


def emit(**record) -> None:
    """Print one benchmark record as a JSON line (what ``run.py`` collects from each side)."""
    print(json.dumps(record), flush=True)


def emit_timed(
    fn: Callable[[], object],
    repeats: int = 3,
    *,
    rate: dict[str, float] | None = None,
    per: dict[str, float] | None = None,
    **record,
) -> float:
    """Time ``fn()`` (:func:`timeit`) and :func:`emit` ``record`` with ``seconds`` (best steady
    state) and ``compile_seconds`` (first call minus that); each ``name: v`` of ``rate`` adds
    ``name = v / seconds`` (a throughput), each of ``per`` adds ``name = seconds / v``.
    Returns the seconds."""
    first, t = timeit(fn, repeats)
    derived = {k: v / t for k, v in (rate or {}).items()}
    derived |= {k: t / v for k, v in (per or {}).items()}
    emit(**record, seconds=t, compile_seconds=first - t, **derived)
    return t


def emit_accuracy_timing(fn: Callable[[], object], act: str, impl: str, depth: int, batch: int):
    """:func:`emit_timed` for the accuracy row's timing run, ``fn()`` the NTK of ``batch``
    inputs at ``depth`` (the same on both sides): the time per layer and per entry and layer."""
    entries = batch * (batch + 1) // 2
    return emit_timed(
        fn,
        repeats=2,
        per={"seconds_per_layer": depth, "seconds_per_entry_layer": depth * entries},
        bench="accuracy",
        workload=accuracy_label(act),
        impl=impl,
        activation=act,
        timing=f"depth {depth}, batch {batch} ({entries} entries)",
    )


def exact_diagonal(act: str, depth: int, x: np.ndarray) -> np.ndarray:
    """``Theta(x, x)`` of the infinite-width NTK from the one-variable recursion on the
    diagonal (correlation exactly 1), in NumPy: the reference both libraries are held to there.

    relu: V(q) = q / 2, Vd = 1/2;  erf: V(q) = (2/pi) arcsin(2q / (1 + 2q)), Vd = (4/pi) / sqrt(1 + 4q).
    """
    w2, b2 = W_STD**2, B_STD**2
    q = w2 * np.sum(x**2, axis=1) / x.shape[1] + b2
    theta = q.copy()
    for _ in range(depth):
        if act == "relu":
            v, vd = q / 2, 0.5
        else:
            v, vd = (2 / np.pi) * np.arcsin(2 * q / (1 + 2 * q)), (4 / np.pi) / np.sqrt(1 + 4 * q)
        q = w2 * v + b2
        theta = q + w2 * vd * theta
    return theta


def reference_pairs(
    act: str,
    depth: int,
    x: np.ndarray,
    pairs: np.ndarray,
    w_std: float = W_STD,
    b_std: float = B_STD,
) -> np.ndarray:
    """``Theta(x_i, x_j)`` for each row ``(i, j)`` of ``pairs``, from the infinite-width recursion
    in NumPy extended precision (``longdouble``: 64-bit mantissa on x86, an exponent range that
    does not overflow here) with the C library's ``atan2``, ``sin``, ``cos``: a reference for
    both libraries, independent of XLA and of either library's code.

    relu: the angle t = atan2(sqrt(det), s) with det = q1 q2 - s^2 carried from layer to layer
          (recomputing it from s and q would floor it at eps q^2 and the angle at sqrt(eps)):
          V = sqrt(q1 q2) J(t) / (2 pi), J = sin t + (pi - t) cos t, Vd = (pi - t) / (2 pi),
          det' = w^4 (q1 q2 / 4) D (2 - D) + w^2 b^2 ((sqrt q1 - sqrt q2)^2 / 2 + sqrt(q1 q2) D),
          D = 1 - J / pi = 2 sin^2(t / 2) - (sin t - t cos t) / pi, the last by its series
          (20 terms) for t < 1;
    erf:  root = sqrt(1 + 2 (q1 + q2) + 4 det), V = (2/pi) atan2(2 s, root), Vd = (4/pi) / root,
          with det = q1 q2 - s^2 recomputed (erf's recursion does not drive it to 0 here).
    """
    ld = np.longdouble
    pi = 4 * np.arctan(ld(1))
    w2, b2 = ld(w_std) ** 2, ld(b_std) ** 2
    xl = x.astype(ld)
    q = w2 * np.sum(xl**2, axis=1) / xl.shape[1] + b2
    i, j = pairs[:, 0], pairs[:, 1]
    s = w2 * np.sum(xl[i] * xl[j], axis=1) / xl.shape[1] + b2
    det = np.maximum(q[i] * q[j] - s * s, 0)
    theta = s.copy()
    series = [
        ld((-1) ** (k + 1) * 2 * k) / np.prod(np.arange(1, 2 * k + 2, dtype=ld))
        for k in range(1, 21)
    ]
    for _ in range(depth):
        q1, q2 = q[i], q[j]
        r = np.sqrt(q1 * q2)
        if act == "relu":
            t = np.arctan2(np.sqrt(det), s)
            z, horner = t * t, series[-1]
            for c in series[-2::-1]:  # sum_k c_k t^(2k), by Horner's rule in t^2
                horner = horner * z + c
            odd = np.where(t < 1, t * z * horner, np.sin(t) - t * np.cos(t))
            d = 2 * np.sin(t / 2) ** 2 - odd / pi
            v, vd = r * (1 - d) / 2, (pi - t) / (2 * pi)
            det = w2 * w2 * (q1 * q2 / 4) * d * (2 - d) + w2 * b2 * (
                (np.sqrt(q1) - np.sqrt(q2)) ** 2 / 2 + r * d
            )
            vq = q / 2
        else:
            root = np.sqrt(1 + 2 * (q1 + q2) + 4 * np.maximum(q1 * q2 - s * s, 0))
            v, vd = (2 / pi) * np.arctan2(2 * s, root), (4 / pi) / root
            vq = (2 / pi) * np.arctan2(2 * q, np.sqrt(1 + 4 * q))
        s = w2 * v + b2
        theta = s + w2 * vd * theta
        q = w2 * vq + b2
    return theta


def reference_sample(batch: int, n: int = 256, seed: int = 2) -> np.ndarray:
    """``n`` distinct off-diagonal pairs ``(i, j)``, ``i < j``, of a batch (fixed by ``seed``)."""
    i, j = np.triu_indices(batch, 1)
    pick = np.random.default_rng(seed).choice(len(i), size=min(n, len(i)), replace=False)
    return np.stack([i[pick], j[pick]], axis=1)


# The accuracy row (issue #17): depth 1, sigma_w 1.5, sigma_b 0.1, three inputs of squared norm
# about 29 in dimension 5, where a 64-point Gauss-Hermite rule is off by 10 % for tanh.
ACC_W_STD, ACC_B_STD = 1.5, 0.1


def accuracy_inputs() -> np.ndarray:
    """Three inputs in R^5 of squared norm 29, 27 and 31 (fixed)."""
    x = np.random.default_rng(5).standard_normal((3, 5))
    return x / np.linalg.norm(x, axis=1, keepdims=True) * np.sqrt([[29.0], [27.0], [31.0]])


def accuracy_label(act: str) -> str:
    return f"{act}, depth 1, sigma_w {ACC_W_STD}, sigma_b {ACC_B_STD}, |x|^2 ~ 29, dim 5"
