"""Independent float64 references for the Gaussian expectations of the kernel maps, by nested
adaptive quadrature (SciPy's QUADPACK, relative tolerance 1e-13), and the script that writes
``tests/data/gaussian_references.json`` (``python benchmarks/gauss_reference.py``, ~20 min on 2 cores;
``python benchmarks/gauss_reference.py deep tanh,gelu 10,100`` adds the depth-10 and depth-100
networks at relative tolerance 1e-13 with depths 1 and 3, each deep one with its stated error,
see :func:`ref_deep`;
``python benchmarks/gauss_reference.py accuracy`` writes the benchmark's accuracy-row reference,
see :func:`accuracy_reference`).

    E[f(u) f(v)] = E_u[f(u) E[f(v) | u]],  v | u ~ N(s12 u / q1, q2 - s12^2 / q1),

each one-dimensional integral over ``mu +- 10 sd`` split at 0 (the kink), the mean and points
graded by powers of 2 about both; plain-float activations written out from their formulas
(no JAX), so nothing is shared with :mod:`ntklib.kernel_maps`.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
from scipy import integrate

SQ2PI = math.sqrt(2 * math.pi)


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x > -700 else 0.0


ACTS = {
    "tanh": (math.tanh, lambda x: 1 / math.cosh(x) ** 2 if abs(x) < 350 else 0.0),
    "gelu": (
        lambda x: 0.5 * x * math.erfc(-x / math.sqrt(2)),
        lambda x: 0.5 * math.erfc(-x / math.sqrt(2)) + x * math.exp(-x * x / 2) / SQ2PI,
    ),
    "softplus": (lambda x: max(x, 0.0) + math.log1p(math.exp(-abs(x))), _sig),
    "swish": (lambda x: x * _sig(x), lambda x: _sig(x) * (1 + x * (1 - _sig(x)))),
    "elu": (lambda x: x if x > 0 else math.expm1(x), lambda x: 1.0 if x > 0 else math.exp(x)),
    "relu": (lambda x: max(x, 0.0), lambda x: 1.0 if x > 0 else 0.0),
    "erf": (math.erf, lambda x: 2 / math.sqrt(math.pi) * math.exp(-x * x)),
}
Z = 10.0
KW = dict(epsabs=0.0, epsrel=1e-13, limit=400)
GRADING = range(-6, 4)  # break points at +-2^k and mu +- sd 2^k


def gmean(f, mu: float, sd: float) -> float:
    """``E[f(mu + sd Y)]``, ``Y ~ N(0, 1)``, by adaptive quadrature on graded panels."""
    if sd == 0:
        return f(mu)
    lo, hi = mu - Z * sd, mu + Z * sd
    pts = {lo, hi, mu, 0.0}
    for k in GRADING:
        for sg in (-1, 1):
            pts.add(sg * 2.0**k)
            pts.add(mu + sg * sd * 2.0**k)
    pts = sorted(p for p in pts if lo <= p <= hi)
    tot = 0.0
    for a, b in zip(pts[:-1], pts[1:], strict=True):
        tot += integrate.quad(lambda v: f(v) * math.exp(-0.5 * ((v - mu) / sd) ** 2), a, b, **KW)[0]
    return tot / (sd * SQ2PI)


def ref_map(act: str, s12: float, q1: float, q2: float) -> tuple[float, float]:
    """``(E[phi(u) phi(v)], E[phi'(u) phi'(v)])`` for ``(u, v) ~ N(0, [[q1, s12], [s12, q2]])``."""
    out = []
    for f in ACTS[act]:
        if s12 == 0:
            out.append(gmean(f, 0.0, math.sqrt(q1)) * gmean(f, 0.0, math.sqrt(q2)))
            continue
        m, tau2 = s12 / q1, q2 - s12 * s12 / q1
        # on the diagonal q2 - q^2 / q is a rounding error, not 0 (1.4247... * 1.4247... / 1.4247...
        # != 1.4247...): an inner Gaussian of width 1e-8 that QUADPACK cannot integrate (round-off
        # flags, results off by 1e-12 to 1e-10). Below 1e-15 q2 the conditional variance changes
        # E[f(m u + tau y)] by O(tau^2 f'') = O(1e-15 q2 f''): take it as 0.
        tau = math.sqrt(tau2) if tau2 > 1e-15 * q2 else 0.0
        out.append(
            gmean(lambda u, f=f, m=m, tau=tau: f(u) * gmean(f, m * u, tau), 0.0, math.sqrt(q1))
        )
    return out[0], out[1]


W_STD, B_STD = 1.5, 0.1
X = [[2.0, -3.0, 1.0, 3.0, 2.0], [1.0, 1.5, -2.0, 0.5, -1.0]]  # squared norms 27 and 8.5
MAP_Q = (0.01, 1.0, 13.06, 100.0, 1000.0)
MAP_C = (-1.0, -0.999, 0.0, 0.5, 0.999, 1.0)


def ref_ntk(act: str, depth: int) -> dict:
    """NNGP and NTK entries (0,0), (0,1), (1,1) of :func:`ntklib.kernels` on ``X``, recursing
    with :func:`ref_map` (stax conventions)."""
    w2, b2 = W_STD**2, B_STD**2
    n0 = len(X[0])
    dot = lambda a, b: sum(x * y for x, y in zip(a, b, strict=True))  # noqa: E731
    q = [w2 * dot(x, x) / n0 + b2 for x in X]
    s = w2 * dot(X[0], X[1]) / n0 + b2
    tq, t = list(q), s
    for _ in range(depth):
        v, vd = ref_map(act, s, q[0], q[1])
        dq = [ref_map(act, qi, qi, qi) for qi in q]
        s, t = w2 * v + b2, w2 * v + b2 + w2 * vd * t
        tq = [w2 * d[0] + b2 + w2 * d[1] * ti for d, ti in zip(dq, tq, strict=True)]
        q = [w2 * d[0] + b2 for d in dq]
    return {"nngp": [q[0], s, q[1]], "ntk": [tq[0], t, tq[1]]}


def ref_deep(act: str, depth: int = 100) -> dict:
    """:func:`ref_ntk` at ``depth``, with its own error stated: the entries' distance from the
    same chain on other panels (truncation at 12 sd instead of 10, break points graded from
    2^-7 to 2^4 at half-integer exponents), at least ``depth`` eps of the entry (the rounding of
    a ``depth``-layer chain). (A second QUADPACK tolerance is no estimate: where the integrand
    is resolved on the first pass, 1e-12 and 1e-13 return the same numbers.)"""
    global Z, GRADING
    fine = ref_ntk(act, depth)
    Z, GRADING = 12.0, [k + 0.5 for k in range(-7, 4)]
    try:
        other = ref_ntk(act, depth)
    finally:
        Z, GRADING = 10.0, range(-6, 4)
    error = {
        k: [
            max(abs(a - b), depth * 2.0**-52 * abs(a))
            for a, b in zip(fine[k], other[k], strict=True)
        ]
        for k in fine
    }
    return {**fine, "error": error}


def main_deep(path: Path, acts: list[str], depths: list[int]) -> None:
    """Add the network references at depths 1 and 3, and at each of ``depths`` with its stated
    error (:func:`ref_deep`), of ``acts`` to ``path``."""
    warnings.simplefilter("ignore")
    for act in acts:
        refs = {str(d): ref_ntk(act, d) for d in (1, 3)}
        for depth in depths:
            refs[str(depth)] = ref_deep(act, depth)
            print(act, f"depth {depth} done; stated error", refs[str(depth)]["error"], flush=True)
        data = json.loads(path.read_text())
        data[act]["networks"].update(refs)
        path.write_text(json.dumps(data, indent=1))


def main(path: Path) -> None:
    warnings.simplefilter("ignore")  # QUADPACK's round-off notes at the 1e-13 tolerance
    acts = (
        sys.argv[2].split(",")
        if len(sys.argv) > 2
        else ["tanh", "gelu", "softplus", "swish", "elu", "relu"]
    )
    data = json.loads(path.read_text()) if path.exists() else {}
    for act in acts:
        maps = []
        for q in MAP_Q:
            for c in MAP_C:
                q1, q2 = q, 1.3 * q
                s = c * math.sqrt(q1 * q2)
                maps.append(
                    dict(
                        s12=s,
                        q1=q1,
                        q2=q2,
                        v=ref_map(act, s, q1, q2),
                        d1=ref_map(act, q1, q1, q1),
                        d2=ref_map(act, q2, q2, q2),
                    )
                )
        deep = data.get(act, {}).get("networks", {}).get("100")  # main_deep's, kept
        nets = {str(d): ref_ntk(act, d) for d in (1, 3)} | ({"100": deep} if deep else {})
        data[act] = {"maps": maps, "networks": nets, "w_std": W_STD, "b_std": B_STD, "x": X}
        path.write_text(json.dumps(data, indent=1))
        print(act, "done", flush=True)


def ref_ntk_matrix(act: str, depth: int, x, w_std: float, b_std: float):
    """The NTK matrix of the batch ``x`` (rows) by the recursion with :func:`ref_map` (slow:
    one nested quadrature per entry and layer; for small batches and depths)."""

    x = np.asarray(x, float)
    w2, b2, n0 = w_std**2, b_std**2, x.shape[1]
    s = w2 * x @ x.T / n0 + b2
    t = s.copy()
    for _ in range(depth):
        v = np.empty_like(s)
        vd = np.empty_like(s)
        for i in range(len(s)):
            for j in range(i, len(s)):
                v[i, j], vd[i, j] = v[j, i], vd[j, i] = ref_map(act, s[i, j], s[i, i], s[j, j])
        s, t = w2 * v + b2, w2 * v + b2 + w2 * vd * t
    return t


ACCURACY_FILE = Path(__file__).parent / "results" / "accuracy_reference.json"


def accuracy_reference(act: str, x, w_std: float, b_std: float) -> tuple[np.ndarray, str]:
    """The depth-1 NTK matrix :func:`ref_ntk_matrix` of the benchmark's accuracy row, and where it
    came from: read from ``results/accuracy_reference.json`` where that file holds this very case
    (the same activation, inputs and variances, bit for bit), else computed (about 13 s per
    activation on one core). The file is written by ``python benchmarks/gauss_reference.py
    accuracy`` with this same function's computation."""
    x = np.asarray(x, float)
    if ACCURACY_FILE.exists():
        case = json.loads(ACCURACY_FILE.read_text()).get(act)
        if case and case["x"] == x.tolist() and [case["w_std"], case["b_std"]] == [w_std, b_std]:
            return np.asarray(case["ntk"]), f"stored in {ACCURACY_FILE.name}"
    return ref_ntk_matrix(act, 1, x, w_std, b_std), "computed"


def main_accuracy(acts: list[str], x: np.ndarray, w_std: float, b_std: float) -> None:
    """Write ``results/accuracy_reference.json``: the accuracy row's reference for ``acts`` on
    the inputs ``x`` (rows) with the variances ``w_std``, ``b_std`` (the benchmark's)."""
    warnings.simplefilter("ignore")
    data = json.loads(ACCURACY_FILE.read_text()) if ACCURACY_FILE.exists() else {}
    for act in acts:
        ntk = ref_ntk_matrix(act, 1, x, w_std, b_std)
        data[act] = dict(x=x.tolist(), w_std=w_std, b_std=b_std, ntk=ntk.tolist())
        print(act, "done", flush=True)
    ACCURACY_FILE.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__" and sys.argv[1:2] == ["accuracy"]:
    import workloads as W  # the benchmark's inputs and variances (this folder)

    main_accuracy(
        sys.argv[2].split(",") if len(sys.argv) > 2 else ["tanh", "gelu"],
        W.accuracy_inputs(),
        W.ACC_W_STD,
        W.ACC_B_STD,
    )
elif __name__ == "__main__" and sys.argv[1:2] == ["deep"]:
    main_deep(
        Path(__file__).parents[1] / "tests" / "data" / "gaussian_references.json",
        sys.argv[2].split(",") if len(sys.argv) > 2 else ["tanh", "gelu"],
        [int(d) for d in sys.argv[3].split(",")] if len(sys.argv) > 3 else [100],
    )
elif __name__ == "__main__":
    main(
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else Path(__file__).parents[1] / "tests" / "data" / "gaussian_references.json"
    )
