"""The vectorizing inverse trigonometric functions against NumPy's (the C library's)."""

import jax
import jax.numpy as jnp
import numpy as np

from ntklib import trig


def _ulps(a, e):
    return np.max(np.abs(a - e) / np.spacing(np.abs(e)))


def test_atan2_within_two_ulp_of_numpy_over_many_scales():
    rng = np.random.default_rng(0)
    n = 400_000
    y = rng.standard_normal(n) * np.exp(rng.uniform(-30, 30, n))
    x = rng.standard_normal(n) * np.exp(rng.uniform(-30, 30, n))
    a = np.asarray(jax.jit(trig.atan2)(y, x))
    assert _ulps(a, np.arctan2(y, x)) <= 2.0


def test_atan2_near_the_reduction_edges_and_octant_boundaries():
    # ratios straddling tan(pi/16), tan(3 pi/16) and 1, where the reduction changes branch
    edges = np.array([np.tan(np.pi / 16), np.tan(3 * np.pi / 16), 1.0])
    r = (edges[:, None] * (1 + np.linspace(-1e-6, 1e-6, 2001))).ravel()
    for y, x in ((r, np.ones_like(r)), (np.ones_like(r), r), (r, -np.ones_like(r))):
        assert _ulps(np.asarray(trig.atan2(y, x)), np.arctan2(y, x)) <= 2.0


def test_atan2_special_values():
    got = np.asarray(
        trig.atan2(
            jnp.array([0.0, 0.0, 1.0, -1.0, 0.0, 1e-300, 3.0]),
            jnp.array([1.0, -1.0, 0.0, 0.0, 0.0, 1.0, 3.0]),
        )
    )
    want = np.array([0.0, np.pi, np.pi / 2, -np.pi / 2, 0.0, 1e-300, np.pi / 4])
    np.testing.assert_array_equal(got[:6], want[:6])  # exact, tiny angles included
    assert abs(got[6] - want[6]) <= np.spacing(want[6])


def test_arcsin_with_and_without_its_cosine():
    s = np.linspace(-1.0, 1.0, 100_001)
    assert _ulps(np.asarray(trig.arcsin(s))[1:-1], np.arcsin(s)[1:-1]) <= 3.0
    # near 1: with c from 1 - s (exact there, Sterbenz) every digit of arcsin(s) is kept
    s1 = 1 - np.logspace(-15, -1, 50)
    c = np.sqrt((1 - s1) * (1 + s1))
    assert _ulps(np.asarray(trig.arcsin(s1, c)), np.arcsin(s1)) <= 2.0


def test_float32_is_accurate_to_float32():
    rng = np.random.default_rng(1)
    y, x = rng.standard_normal((2, 10_000)).astype(np.float32)
    a = np.asarray(trig.atan2(jnp.asarray(y), jnp.asarray(x)))
    assert a.dtype == np.float32
    np.testing.assert_allclose(
        a, np.arctan2(y.astype(float), x.astype(float)), rtol=1e-6, atol=1e-7
    )
