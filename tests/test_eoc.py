"""ntklib.eoc: variance and correlation maps, chi and the Edge of Chaos."""

import math

import numpy as np
import pytest

import ntklib as nl
from ntklib import eoc


def test_relu_edge_of_chaos_is_the_known_point():
    assert eoc.eoc_w_std("relu", 0.0) == pytest.approx(math.sqrt(2.0), rel=1e-10)
    with pytest.raises(ValueError, match="no Edge of Chaos"):
        eoc.eoc_w_std("relu", 0.1)
    # chi = sigma_w^2 / 2 at any q for ReLU
    assert eoc.chi("relu", 1.2, 0.0, q=3.7) == pytest.approx(1.2**2 / 2, rel=1e-10)


def test_variance_diverges_where_it_must():
    with pytest.raises(ValueError, match="diverges"):
        eoc.q_star("relu", 1.6, 0.1)  # sigma_w^2 > 2
    with pytest.raises(ValueError, match="every q"):
        eoc.q_star("relu", math.sqrt(2.0), 0.0)
    assert eoc.q_star("relu", 1.2, 0.0) == 0.0  # ordered: the variance dies out


def test_quadrature_agrees_with_the_erf_closed_form():
    """E[erf(sqrt(q) Z)^2] = (2/pi) arcsin(2q / (1 + 2q))."""
    for q in (0.01, 0.3, 1.0, 7.0):
        want = 1.3**2 * (2 / np.pi) * np.arcsin(2 * q / (1 + 2 * q)) + 0.2**2
        assert eoc.variance_map(q, "erf", 1.3, 0.2) == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("act,w,b", [("tanh", 1.5, 0.1), ("erf", 1.1, 0.3), ("elu", 1.2, 0.2)])
def test_fixed_point_and_chi_is_the_slope_of_the_correlation_map(act, w, b):
    q = eoc.q_star(act, w, b)
    assert eoc.variance_map(q, act, w, b) == pytest.approx(q, rel=1e-10)
    h = 1e-3
    slope = (1.0 - eoc.correlation_map(1.0 - h, act, w, b)) / h  # one-sided, error O(h)
    assert slope == pytest.approx(eoc.chi(act, w, b), rel=5e-3)
    assert eoc.correlation_map(1.0, act, w, b) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("act,b", [("tanh", 0.3), ("erf", 0.2), ("elu", 0.2)])
def test_edge_of_chaos_solves_chi_equal_one(act, b):
    w = eoc.eoc_w_std(act, b)
    assert eoc.chi(act, w, b) == pytest.approx(1.0, abs=1e-9)
    # ordered below, chaotic above
    assert eoc.chi(act, 0.9 * w, b) < 1 < eoc.chi(act, 1.1 * w, b)


def test_edge_of_chaos_at_zero_bias():
    """sigma_b = 0: q* = 0 on the ordered side, so chi = sigma_w^2 phi'(0)^2."""
    assert eoc.eoc_w_std("tanh", 0.0) == pytest.approx(1.0, rel=1e-12)
    assert eoc.eoc_w_std("erf", 0.0) == pytest.approx(math.sqrt(math.pi) / 2, rel=1e-12)
    # and continuity: a tiny bias moves the EOC only a little
    assert eoc.eoc_w_std("tanh", 1e-3) == pytest.approx(1.0, abs=1e-2)


@pytest.mark.parametrize(
    "call",
    [
        lambda: eoc.variance_map(1.0, "tanh", -1.0, 0.0),
        lambda: eoc.variance_map(1.0, "tanh", float("nan"), 0.0),
        lambda: eoc.variance_map(-1.0, "tanh", 1.0, 0.0),
        lambda: eoc.variance_map(1.0, "sigmoid", 1.0, 0.0),
        lambda: eoc.correlation_map(1.5, "tanh", 1.0, 0.1),
    ],
)
def test_bad_input(call):
    with pytest.raises((ValueError, TypeError)):
        call()


def test_float64_whatever_the_callers_jax_setting():
    """The conftest enables x64; a caller without it gets the same digits and keeps float32."""
    import subprocess
    import sys

    code = (
        "import jax; from ntklib import eoc; "
        "print(repr(eoc.variance_map(0.3, 'erf', 1.3, 0.2)), jax.config.jax_enable_x64)"
    )
    out = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"},
    ).stdout.split()
    assert float(out[0]) == pytest.approx(eoc.variance_map(0.3, "erf", 1.3, 0.2), rel=1e-14)
    assert out[1] == "False"


@pytest.mark.parametrize("name", ["relu", "identity", "tanh", "erf", "elu"])
def test_scalar_activations_match_jax(name):
    import jax
    import jax.numpy as jnp

    phi, dphi = eoc._SCALAR[name]
    f = nl.get_activation(name)
    with eoc._x64():
        for x in (-3.7, -0.4, 0.3, 2.9):
            xs = jnp.asarray(x, jnp.float64)
            assert phi(x) == pytest.approx(float(f(xs)), rel=1e-14, abs=1e-15)
            assert dphi(x) == pytest.approx(float(jax.grad(f)(xs)), rel=1e-13, abs=1e-15)


def test_eoc_curve_marks_missing_points_nan():
    curve = eoc.eoc_curve("relu", [0.0, 0.1])  # ReLU: the EOC is the point sigma_b = 0
    assert curve[0] == pytest.approx(math.sqrt(2.0), rel=1e-12)
    assert np.isnan(curve[1])


def test_eoc_found_just_below_the_variance_divergence():
    """ELU at sigma_b = 0.95: chi crosses 1 at sigma_w ~ 1.357, just below sqrt 2 where the
    variance diverges; a coarse shrink of the bracket used to step over it."""
    w = eoc.eoc_w_std("elu", 0.95)
    assert 1.3 < w < math.sqrt(2.0)
    assert eoc.chi("elu", w, 0.95) == pytest.approx(1.0, abs=1e-9)
