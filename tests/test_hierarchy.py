"""The neural tangent hierarchy: K^(3), K^(4), their identities, RK4 and the truncated flow."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import ntklib as nl
from ntklib import nth
from ntklib.hierarchy import k3, k4, k4_hessian, kernel_hierarchy
from ntklib.ode import rk4, rk4_error


def _small(key, act="tanh", widths=(6, 5), in_dim=3, b=5, bias=False):
    net = nl.MLP(in_dim, widths, act, "ntk", 1.2, 0.3, bias=bias)
    params = nl.init(net, key)
    x = jax.random.normal(jax.random.fold_in(key, 7), (b, in_dim))
    return net, params, x


def test_k4_equals_reference_through_hessians_and_is_symmetric_in_first_pair(key):
    net, params, x = _small(key, "gelu", bias=True, b=3)
    a, ref = k4(net, params, x), k4_hessian(net, params, x)
    assert a.shape == (3, 3, 3, 3)
    np.testing.assert_allclose(a, ref, atol=1e-11 * float(np.abs(ref).max()))
    np.testing.assert_allclose(a, np.swapaxes(a, 0, 1), atol=1e-14)


def test_hierarchy_levels_agree_with_k3_and_ntk_on_mixed_inputs(key):
    net, params, x = _small(key, b=6)
    full = kernel_hierarchy(net, params, x, order=4)
    mixed = kernel_hierarchy(net, params, x, x[:3], order=4)  # first index over 6, others over 3
    assert [k.shape for k in mixed] == [(6, 3), (6, 3, 3), (6, 3, 3, 3)]
    np.testing.assert_allclose(full[0], nl.ntk_gram(net, params, x), rtol=1e-13)
    np.testing.assert_allclose(full[1], k3(net, params, x), rtol=1e-13)
    np.testing.assert_allclose(mixed[1], full[1][:, :3, :3], atol=1e-14)
    np.testing.assert_allclose(mixed[2], full[2][:, :3, :3, :3], atol=1e-14)


def _flip_readout(params):
    *hidden, (w, b) = params
    return [*hidden, (-w, -b)]


def test_parity_in_the_readout_and_k3_vanishes_at_zero_readout(key):
    """f is odd in the read-out (no read-out bias): K2 even, K3 odd, K4 even; K3 = 0 at v = 0."""
    net, params, x = _small(key, b=4)
    ks, flipped = kernel_hierarchy(net, params, x), kernel_hierarchy(net, _flip_readout(params), x)
    np.testing.assert_allclose(flipped[0], ks[0], rtol=1e-13)
    np.testing.assert_allclose(flipped[1], -ks[1], atol=1e-15)
    np.testing.assert_allclose(flipped[2], ks[2], atol=1e-15)
    assert np.abs(ks[1]).max() > 1e-3  # not trivially zero
    *hidden, (w, b) = params
    zero = kernel_hierarchy(net, [*hidden, (jnp.zeros_like(w), b)], x, order=3)
    assert np.abs(zero[1]).max() == 0.0


@pytest.mark.parametrize("level", [0, 1, 2])
def test_each_level_is_the_rate_of_the_one_below_along_gradient_flow(key, level):
    """(Q(theta - eta g) - Q(theta + eta g)) / 2 eta -> -(1/n) K^(r+1) r at O(eta^2), g = grad L."""
    net, params, x = _small(key, widths=(16, 16), b=6)
    y = jnp.sin(x[:4, 0])
    ks = kernel_hierarchy(net, params, x, x[:4], order=4)
    rhs = nth.hierarchy_rates(ks, nl.apply(net, params, x), y)[level]
    errs = [
        float(jnp.abs(nth.measured_rates(net, params, x, y, eta, 4)[level] - rhs).max())
        for eta in (1e-2, 5e-3)
    ]
    assert errs[0] < 1e-5 * float(jnp.abs(rhs).max())
    assert 3.8 < errs[0] / errs[1] < 4.2  # a wrong identity would leave an error that stays


def test_rk4_is_fourth_order_on_a_linear_system():
    a = jnp.array([[-1.0, 2.0], [-2.0, -0.5]])
    y0 = jnp.array([1.0, 0.3])
    exact = np.asarray(scipy.linalg.expm(2.0 * np.asarray(a)) @ np.asarray(y0))
    errs = [
        float(jnp.abs(rk4(lambda y: a @ y, y0, 2.0 / s, s, s)[1][-1] - exact).max())
        for s in (40, 80)
    ]
    assert 14.0 < errs[0] / errs[1] < 18.0
    coarse, fine = (rk4(lambda y: a @ y, y0, 2.0 / s, s, s)[1][-1] for s in (40, 80))
    np.testing.assert_allclose(rk4_error(coarse, fine), errs[1], rtol=0.1)  # Richardson


def test_truncation_at_two_is_kernel_regression_in_closed_form(key):
    """p = 2: f_t = f_0 - K(., X) K_XX^-1 (I - exp(-K_XX t / n)) (f_0(X) - y)."""
    net, params, x = _small(key, b=7)
    n, y = 4, jnp.cos(x[:4, 1])
    ks = kernel_hierarchy(net, params, x, x[:n], order=2)
    f0 = nl.apply(net, params, x)
    traj = nth.truncated_flow(ks, f0, y, 2, 0.05, 100, 100)
    kxx, kx = np.asarray(ks[0][:n]), np.asarray(ks[0])
    decay = np.eye(n) - scipy.linalg.expm(-kxx * 5.0 / n)
    pred = np.asarray(f0) - kx @ np.linalg.solve(kxx, decay @ np.asarray(f0[:n] - y))
    np.testing.assert_allclose(traj.f[-1], pred, atol=1e-9)
    np.testing.assert_allclose(traj.ntk[-1], ks[0], rtol=0)  # frozen
    np.testing.assert_allclose(traj.t[-1], 5.0)


def test_higher_truncations_track_the_trained_network_better(key):
    net = nl.mlp(4, 2, 128, activation="tanh", bias=False)
    params = nl.init(net, key)
    x = jax.random.normal(jax.random.fold_in(key, 3), (8, 4))
    n, y = 5, jnp.sin(x[:5, 0])
    ks = kernel_hierarchy(net, params, x, x[:n], order=4)
    f0 = nl.apply(net, params, x)
    flow = nl.gradient_flow(net, params, x[:n], y, 0.05, 40, 20, x_eval=x)
    np.testing.assert_allclose(flow.f[0], f0, rtol=1e-14)
    np.testing.assert_allclose(flow.ntk[0], ks[0], rtol=1e-12)
    errs = [
        float(jnp.abs(nth.truncated_flow(ks, f0, y, p, 0.05, 40, 20).f[-1] - flow.f[-1]).max())
        for p in (2, 3, 4)
    ]
    assert errs[0] > errs[1] > errs[2] > 0
    assert errs[2] < 0.05 * errs[0]
    assert float(jnp.mean((flow.f[-1, :n] - y) ** 2)) < float(jnp.mean((f0[:n] - y) ** 2))


def test_gradient_flow_is_deterministic_and_converges_in_the_step(key):
    net, params, x = _small(key, widths=(8,), b=4)
    y = jnp.zeros(4)
    a = nl.gradient_flow(net, params, x, y, 0.1, 20, 20)
    b = nl.gradient_flow(net, params, x, y, 0.1, 20, 20)
    assert np.array_equal(np.asarray(a.f), np.asarray(b.f))
    c = nl.gradient_flow(net, params, x, y, 0.05, 40, 40)
    d = nl.gradient_flow(net, params, x, y, 0.025, 80, 80)
    e1, e2 = float(jnp.abs(a.f[-1] - d.f[-1]).max()), float(jnp.abs(c.f[-1] - d.f[-1]).max())
    assert e1 / e2 > 10  # RK4: ~16 (17 with the h/4 reference)


def test_bad_input_is_refused_before_compute(key):
    net, params, x = _small(key, b=4)
    ks = kernel_hierarchy(net, params, x, order=3)
    f0, y = nl.apply(net, params, x), jnp.zeros(4)
    with pytest.raises(ValueError, match="order must be an int >= 2"):
        kernel_hierarchy(net, params, x, order=1)
    with pytest.raises(TypeError, match="order must be an int"):
        kernel_hierarchy(net, params, x, order=3.0)
    with pytest.raises(ValueError, match="p must be an int >= 2"):
        nth.truncated_flow(ks, f0, y, 1, 0.1, 10)
    with pytest.raises(ValueError, match="needs K"):
        nth.truncated_flow(ks, f0, y, 4, 0.1, 10)
    with pytest.raises(ValueError, match="shape"):
        nth.truncated_flow(ks, f0, jnp.zeros(3), 3, 0.1, 10)
    with pytest.raises(ValueError, match="multiple of every"):
        nth.truncated_flow(ks, f0, y, 3, 0.1, 10, every=3)
    with pytest.raises(ValueError, match="multiple of every"):
        nl.gradient_flow(net, params, x, y, 0.1, 10, every=3)
