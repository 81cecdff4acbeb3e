"""The Gauss-Kronrod kernel map against independent references (nested adaptive quadrature,
benchmarks/gauss_reference.py, stored in tests/data/gaussian_references.json), the closed
forms through the generic path, the error estimate and the refusals."""

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntklib as nl
from ntklib import kernel_maps
from ntklib.infinite import RangeWarning
from ntklib.kernel_maps import GaussKronrodMap, kernel_map, kronrod_rule

REFS = json.loads((Path(__file__).parent / "data" / "gaussian_references.json").read_text())


def test_kronrod_rule_is_exact_to_degree_3n_plus_1():
    x, wk, wg = kronrod_rule(7)
    assert len(x) == 15 and np.count_nonzero(wg) == 7
    for d in range(23):
        exact = 2.0 / (d + 1) if d % 2 == 0 else 0.0
        assert abs(np.sum(wk * x**d) - exact) < 1e-14
    assert abs(np.sum(wg * x**13) - 0.0) < 1e-14 and abs(np.sum(wg * x**12) - 2 / 13) < 1e-14


@pytest.mark.parametrize("act", sorted(REFS))
def test_map_against_the_reference(act):
    # q from 0.01 to 10^3 (q2 = 1.3 q1), c in {-1, -0.999, 0, 0.5, 0.999, 1}: 1e-10 of the
    # kernel's scale sqrt(V(q1) V(q2)) (measured: below 3e-14)
    maps = REFS[act]["maps"]
    s12, q1, q2 = (jnp.array([m[k] for m in maps]) for k in ("s12", "q1", "q2"))
    v, vd = kernel_map(act, "kronrod")(s12, q1, q2)
    ref = np.array([m["v"] for m in maps])
    scale = np.sqrt(np.array([m["d1"] for m in maps]) * np.array([m["d2"] for m in maps]))
    assert np.max(np.abs(np.asarray(v) - ref[:, 0]) / scale[:, 0]) < 1e-10
    assert np.max(np.abs(np.asarray(vd) - ref[:, 1]) / scale[:, 1]) < 1e-10
    dv, dvd = kernel_map(act, "kronrod").diag(q1)
    np.testing.assert_allclose(dv, [m["d1"][0] for m in maps], rtol=1e-10)
    np.testing.assert_allclose(dvd, [m["d1"][1] for m in maps], rtol=1e-10)


def _network_entries(act):
    """``(depth, name, got, est, want, ref_err)`` for entries (0,0), (0,1), (1,1) of the NNGP
    and the NTK at every reference depth of ``act``: ``kernels`` with its error estimate, the
    reference and its stated error (0 where it states none)."""
    r = REFS[act]
    for depth, ref in r["networks"].items():
        k, err = nl.kernels(
            jnp.asarray(r["x"]),
            depth=int(depth),
            activation=act,
            w_std=r["w_std"],
            b_std=r["b_std"],
            return_error=True,
        )
        for name in ("nngp", "ntk"):
            got = np.asarray(getattr(k, name))[[0, 0, 1], [0, 1, 1]]
            est = np.asarray(getattr(err, name))[[0, 0, 1], [0, 1, 1]]
            ref_err = np.asarray(ref.get("error", {}).get(name, 0.0))
            yield depth, name, got, est, np.array(ref[name]), ref_err


# Swish at depth 100: the reference's two panel sets disagree by 1.1e-9 of the NTK's scale
# (1.5e-10 of the NNGP's), and the library's own estimate is 5.5e-10: neither side resolves
# 1e-12 there (measured |kernels - reference| 3.4e-10), so 1e-12 is not verified at that depth
REFERENCE_TOO_COARSE = {("swish", "100")}


@pytest.mark.parametrize("act", sorted(REFS))
def test_network_kernels_against_the_reference(act):
    """Issue 28's accuracy: within 1e-12 of the kernel's scale sqrt(K(x,x) K(x',x')) at every
    reference depth (1, 3, 10; 100 where stored), beyond the reference's own stated error, which
    must itself be below 1e-12 of the scale for the comparison to verify that (largest
    measured: ELU's and GELU's NTK at depth 100, 2.4e-13 and 2.7e-13; below 1e-14 at depth 10)."""
    assert {"1", "3", "10"} <= set(REFS[act]["networks"]), act  # an empty dict tests nothing
    for depth, name, got, est, want, ref_err in _network_entries(act):
        scale = np.sqrt(want[0] * want[2])
        coarse = float(np.max(ref_err / scale)) > 1e-12
        if (act, depth) in REFERENCE_TOO_COARSE:
            assert coarse, f"{act} {depth}: the reference now resolves 1e-12; update the set"
            continue
        assert not coarse, (act, depth, name, float(np.max(ref_err / scale)))
        assert np.max((np.abs(got - want) - ref_err) / scale) < 1e-12, (act, depth, name)
        # the estimate is at most 1e-4 of the kernel (elu depth 3: 3e-13 of its scale)
        assert float(np.max(est)) < 1e-4 * float(np.max(got))


# was {("elu", "3", "ntk")} (1150x, the kink, when the diagonal went through the 2-d rule at
# c = 1); with the diagonal from the 1-d rule and Mehler's series off it: 27x (issue #28)
ESTIMATE_OVER_100X: set[tuple[str, str, str]] = set()
# GELU's NTK at depth 100 (q up to 1.5e6, beyond the map's tested 1e3): Vd is off by 1.6e-14
# relative per layer there, the NTK by 6.7e-12 relative, and the Gauss-Kronrod difference
# does not see it (estimate 1.1e-14 relative); ELU's at depth 100 likewise (q up to 2.3e6; the
# off-diagonal entry off by 6.3e-5 against an estimate of 3.2e-6 and the reference's 1.9e-6:
# 2.4e-13 of the kernel's scale, within the 1e-12 target). Both warn (RangeWarning); open in #28
ESTIMATE_NOT_A_BOUND = {("gelu", "100", "ntk"), ("elu", "100", "ntk")}


@pytest.mark.parametrize("act", sorted(REFS))
def test_error_estimate_bounds_the_error_within_100x(act):
    """At every reference depth (1, 3; 100 for tanh and GELU), the estimate plus the reference's
    stated error bounds |kernels - reference|, and the estimate is within 100x of the larger of
    that error and the recursion's rounding floor depth eps scale (what no estimate resolves)."""
    for depth, name, got, est, want, ref_err in _network_entries(act):
        scale = np.sqrt(want[0] * want[2])
        true = np.abs(got - want)
        if (act, depth, name) in ESTIMATE_NOT_A_BOUND:
            assert not np.all(true <= est + ref_err), f"{act} {depth} {name} now bounded"
            continue
        assert np.all(true <= est + ref_err), (act, depth, name, true, est)
        floor = int(depth) * np.finfo(float).eps * scale
        over = float(np.max(est / np.maximum(np.maximum(true, ref_err), floor)))
        if (act, depth, name) in ESTIMATE_OVER_100X:
            assert over > 100, f"{act} {depth} {name} now within 100x ({over:.0f}): update the set"
        else:
            assert over <= 100, (act, depth, name, over)


def test_closed_forms_through_the_generic_path():
    s12 = jnp.array([-2.0, -1.999, 0.3, 1.0, 1.999, 2.0, 500.0, -999.0])
    q1 = jnp.array([2.0, 2.0, 1.0, 0.01, 2.0, 2.0, 1000.0, 1000.0])
    q2 = jnp.array([2.0, 2.0, 0.7, 100.0, 2.0, 2.0, 1000.0, 1000.0])
    for act in ("relu", "erf", "identity"):
        a = kernel_map(act)(s12, q1, q2)
        b = kernel_map(act, "kronrod")(s12, q1, q2)
        scale = (jnp.sqrt(kernel_map(act)(q1, q1, q1)[0] * kernel_map(act)(q2, q2, q2)[0]), 1.0)
        for x, y, sc in zip(a, b, scale, strict=True):
            assert float(jnp.max(jnp.abs(x - y) / sc)) < 1e-10, act


def test_user_supplied_function_and_the_issue_example():
    # tanh at depth 1, sigma_w 1.5, sigma_b 0.1, |x|^2 = 29 in dim 5: Gauss-Hermite is off by
    # 10 % of the largest entry; the Gauss-Kronrod map and a user-supplied tanh agree
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 5))
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True) * 29**0.5
    new = nl.kernels(x, depth=1, activation="tanh", w_std=1.5, b_std=0.1).ntk
    old = nl.kernels(x, depth=1, activation="tanh", w_std=1.5, b_std=0.1, method="hermite").ntk
    assert float(jnp.max(jnp.abs(new - old))) > 0.05 * float(jnp.max(new))
    mine = GaussKronrodMap(lambda u: jnp.tanh(u), kink=False)
    v = mine(jnp.array(5.0), jnp.array(13.0), jnp.array(14.0))
    w = kernel_map("tanh")(jnp.array(5.0), jnp.array(13.0), jnp.array(14.0))
    np.testing.assert_allclose(v, w, rtol=1e-14)


def test_no_nan_at_large_sigma_w_or_depth():
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 5))
    for act, w, depth in (
        ("tanh", 10.0, 100),
        ("gelu", 10.0, 30),
        ("erf", 10.0, 1000),
        ("erf", 1.0, 1000),
    ):
        k = nl.kernels(x, depth=depth, activation=act, w_std=w, b_std=0.1)
        assert not bool(jnp.any(jnp.isnan(k.ntk))), (act, w, depth)
    k, err = nl.kernels(x, depth=100, activation="tanh", w_std=10.0, b_std=0.1, return_error=True)
    assert bool(jnp.all(jnp.isfinite(k.ntk))) and bool(jnp.all(jnp.isfinite(err.ntk)))


def test_jit_and_refusals():
    x = jnp.ones((2, 3)) * jnp.array([[1.0], [2.0]])
    f = jax.jit(lambda x: nl.kernels(x, depth=3, activation="swish", return_error=True))
    k, err = f(x)
    assert bool(jnp.all(err.ntk < 1e-10 * jnp.max(k.ntk)))
    with pytest.raises(ValueError, match="cannot be reached"):
        nl.kernels(x, depth=2, activation="tanh", rtol=1e-17)
    with pytest.raises(ValueError, match="no error estimate"):
        nl.kernels(x, depth=2, activation="tanh", method="hermite", return_error=True)
    with pytest.raises(ValueError, match="method"):
        nl.kernels(x, depth=2, activation="tanh", method="nope")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nl.kernels(x, depth=2, activation="tanh", rtol=1e-10)  # met: no warning
    # an estimate of rounding alone for a closed form, and a warning when rtol is not met
    k, err = nl.kernels(x, depth=2, activation="relu", return_error=True)
    assert float(jnp.max(err.ntk)) < 1e-13 * float(jnp.max(k.ntk))
    coarse = GaussKronrodMap(jnp.tanh, kink=False, n=3, k_outer=3, n_uniform=2, k_inner=2)
    (vk, _), (vg, _) = coarse.pair(jnp.array(0.5), jnp.array(900.0), jnp.array(900.0))
    assert abs(float(vk - vg)) > 1e-8  # a coarse rule's estimate is visible


def test_a_batch_is_streamed_in_chunks_that_agree_with_one_block():
    """Entries beyond one chunk go through jax.lax.map: the same numbers as one block."""
    small = kernel_maps.GaussKronrodMap(jnp.tanh, kink=False, max_bytes=2**22)
    whole = kernel_maps.GaussKronrodMap(jnp.tanh, kink=False)
    assert small.chunk_entries() < 10 < whole.chunk_entries()
    s12 = jnp.linspace(-1.9, 1.9, 25).reshape(5, 5)
    q1, q2 = jnp.full((5, 5), 2.0), jnp.linspace(0.5, 3.0, 5)
    for a, b in zip(small.pair(s12, q1, q2), whole.pair(s12, q1, q2), strict=True):
        for u, v in zip(a, b, strict=True):
            assert u.shape == (5, 5)
            np.testing.assert_allclose(u, v, rtol=1e-14, atol=1e-16)


def test_peak_memory_grows_with_entries_not_entries_times_nodes():
    """48 tanh inputs at depth 1: 1176 kernel entries, each evaluated at about 10^5 nodes
    (about 4 GB at once before the map was chunked: 128 inputs asked 26 GB); streamed, the
    whole process stays under 1.5 GB."""
    code = (
        "import jax; jax.config.update('jax_enable_x64', True); import ntklib as nl; "
        "x = 1.5 * jax.random.normal(jax.random.PRNGKey(0), (48, 5)); "
        "k = nl.kernels(x, depth=1, activation='tanh', w_std=1.5, b_std=0.1).ntk; "
        "assert bool(jax.numpy.all(jax.numpy.isfinite(k))); "
        "print(open('/proc/self/status').read())"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], check=True, timeout=600, capture_output=True, text=True
    )
    # the child's own peak resident set (VmHWM, in kB: its address space's high-water mark;
    # getrusage's ru_maxrss would also count the forking test worker's memory)
    peak_kb = int(re.search(r"^VmHWM:\s+(\d+) kB", run.stdout, re.M).group(1))
    assert peak_kb < 1.5 * 2**20, f"peak {peak_kb / 2**20:.2f} GB"


@pytest.mark.parametrize("act", sorted(set(REFS) - {"relu"}))
def test_batch_shares_rows_and_matches_the_reference(act):
    """``batch`` (Mehler's series per row, the direct rule where its bound is not met) at the
    reference points, given as rows: within 1e-12 of the kernel's scale (rules out a wrong
    coefficient, normalization or power of c in the series, and entries scattered to the wrong
    place by the gathered direct rule)."""
    maps = REFS[act]["maps"]
    q1 = jnp.array([m["q1"] for m in maps])
    q2 = jnp.array([m["q2"] for m in maps])
    s12 = jnp.array([m["s12"] for m in maps])
    rows = np.arange(len(maps))
    m = kernel_map(act, "kronrod")
    v, vd = jax.jit(lambda s, a, b: m.batch(s, a, b, rows, rows))(s12, q1, q2)
    ref = np.array([x["v"] for x in maps])
    scale = np.sqrt(np.array([x["d1"] for x in maps]) * np.array([x["d2"] for x in maps]))
    assert np.max(np.abs(np.asarray(v) - ref[:, 0]) / scale[:, 0]) < 1e-12
    assert np.max(np.abs(np.asarray(vd) - ref[:, 1]) / scale[:, 1]) < 1e-12


def test_series_where_its_bound_holds_direct_rule_elsewhere():
    """With the direct rule replaced by NaN: the entries at moderate correlation come from the
    series (finite), those at |c| = 0.999 with q = 1000 (series bound far above 1e-15) and at
    |c| = 1 from the direct rule (NaN). Rules out a series that is never used (no speed-up)
    and one used where its truncation error is not bounded."""

    class NoDirect(GaussKronrodMap):
        def _expect_block(self, s12, q1, q2, rule):
            nan = jnp.full_like(s12, jnp.nan)
            return [(nan, nan)]

    m = NoDirect(jnp.tanh, kink=False)
    q = jnp.array([1.0, 1000.0])
    c = jnp.array([0.0, 0.5, -0.5, 0.999, 1.0])
    ia = np.array([0, 0, 0, 1, 1])
    v, vd = m.batch(c * q[ia], q, q, ia, ia)
    assert np.all(np.isfinite(v[:3])) and np.all(np.isfinite(vd[:3]))
    assert np.all(np.isnan(v[3:])) and np.all(np.isnan(vd[3:]))


def test_a_variance_outside_the_tested_range_is_said():
    """A GELU network whose variances grow past 1e3 (w_std = 2: about double per layer) warns
    with the range it met; one that stays inside (tanh, whose q <= w^2 + b^2), and a closed
    form far outside it (ReLU, exact at any q), do not."""
    x = jnp.array([[1.0, 0.5, -0.3], [0.2, -1.0, 0.8]])
    with pytest.warns(RangeWarning, match=r"outside \[0.01, 1000\]"):
        nl.kernels(x, depth=12, activation="gelu", w_std=2.0, b_std=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nl.kernels(x, depth=12, activation="tanh", w_std=2.0, b_std=0.1)
        nl.kernels(x, depth=12, activation="relu", w_std=2.0, b_std=0.1)
