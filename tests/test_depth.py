"""ntklib.depth: the ResNet recursion, large-depth limits and rates, Gram diagnostics.

The ResNet recursion is checked against an independent NumPy loop, closed forms and the
empirical NTK of wide random ResNets; the derived large-depth asymptotics against the
recursions themselves at depths where they have converged.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntklib as nl
from ntklib import depth as D
from ntklib import eoc

X = jnp.array([[1.0, 0.2, -0.5], [0.3, -1.0, 0.8], [-0.7, 0.4, 0.1], [0.0, 0.9, 0.9]])


def _relu_map(s, q1, q2):
    c = np.clip(s / np.sqrt(q1 * q2), -1, 1)
    t = np.arccos(c)
    return (
        np.sqrt(q1 * q2) * (np.sin(t) + (np.pi - t) * c) / (2 * np.pi),
        (np.pi - t) / (2 * np.pi),
    )


def _resnet_numpy(x, depth, w, b):
    x = np.asarray(x)
    s = w * w * x @ x.T / x.shape[1] + b * b
    t = s.copy()
    for _ in range(depth - 1):
        q = np.diag(s)
        v, vd = _relu_map(s, q[:, None], q[None, :])
        s, t = s + w * w * v + b * b, (1 + w * w * vd) * t + w * w * v + b * b
    return s, t


def test_resnet_matches_numpy_loop_with_rescaling():
    r = D.resnet_kernels(X, depth=7, activation="relu", w_std=1.3, b_std=0.4)
    s, t = _resnet_numpy(X, 7, 1.3, 0.4)
    scale = float(np.exp(r.log_scale))
    np.testing.assert_allclose(np.asarray(r.nngp) * scale, s, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(r.ntk) * scale, t, rtol=1e-12)
    # all_layers: the last layer is the plain result; depth 1 is the first layer
    ra = D.resnet_kernels(X, depth=7, activation="relu", w_std=1.3, b_std=0.4, all_layers=True)
    np.testing.assert_allclose(ra.ntk[-1], r.ntk, rtol=1e-13)
    r1 = D.resnet_kernels(X, depth=1, w_std=1.3, b_std=0.4)
    np.testing.assert_allclose(r1.ntk, r1.nngp)


def test_resnet_relu_diagonal_closed_form_and_no_overflow():
    """b = 0: q_L = (1 + a)^{L-1} q_1 and Theta_L = q_L (1 + (L - 1) a / (1 + a)), a = w^2/2,
    at a depth where the unscaled kernel would overflow float64."""
    w, depth = 2.0, 3000
    a = w * w / 2
    r = D.resnet_kernels(X, depth=depth, activation="relu", w_std=w)
    q1 = w * w * np.sum(np.asarray(X) ** 2, 1) / X.shape[1]
    log_q = (depth - 1) * math.log(1 + a) + np.log(q1)
    np.testing.assert_allclose(np.log(np.diag(r.nngp)) + float(r.log_scale), log_q, rtol=1e-12)
    want = 1 + (depth - 1) * a / (1 + a)
    np.testing.assert_allclose(np.diag(r.ntk) / np.diag(r.nngp), want, rtol=1e-10)
    assert np.all(np.isfinite(np.asarray(r.ntk)))


def test_resnet_non_homogeneous_is_not_rescaled():
    r = D.resnet_kernels(X, depth=5, activation="erf", w_std=0.8, b_std=0.1)
    assert float(r.log_scale) == 0.0
    r2 = D.resnet_kernels(
        X, depth=5, activation="erf", w_std=0.8, b_std=0.1, method="quadrature", n_quad=96
    )
    np.testing.assert_allclose(r.ntk, r2.ntk, rtol=1e-9)


def test_resnet_runs_on_the_mlp_engine_with_its_estimate_warnings_and_refusals():
    """A quadrature activation: the residual recursion written out with the map itself on full
    matrices, against the engine's packed triangle and shared rows; its error estimate (at the
    rounding level here), a variance outside the map's tested range and an overflow said; the
    refusals."""
    w, b, depth = 1.2, 0.3, 4
    r, err = D.resnet_kernels(
        X, depth=depth, activation="tanh", w_std=w, b_std=b, return_error=True
    )
    kmap = nl.kernel_maps.kernel_map("tanh")
    s = w * w * X @ X.T / X.shape[1] + b * b
    t = s
    for _ in range(depth - 1):
        q = jnp.diag(s)
        v, vd = kmap(s, q[:, None], q[None, :])
        s, t = s + w * w * v + b * b, (1 + w * w * vd) * t + w * w * v + b * b
    assert float(r.log_scale) == 0.0
    np.testing.assert_allclose(r.nngp, s, rtol=1e-13)
    np.testing.assert_allclose(r.ntk, t, rtol=1e-13)
    np.testing.assert_array_equal(r.ntk, r.ntk.T)  # one triangle, mirrored
    assert float(jnp.max(err.ntk)) < 1e-12 * float(jnp.max(r.ntk))
    with pytest.warns(nl.infinite.RangeWarning):  # q grows by up to w^2 a block: past 1e3
        D.resnet_kernels(X, depth=300, activation="tanh", w_std=2.0, b_std=b, return_error=True)
    # softplus: V(q) ~ q / 2 for large q, so q grows about w^2 / 2 = 5e11-fold a block at
    # w = 1e6: past float64 at block 27 (at w = 10, block 180 of 300, but ten times the time)
    with pytest.warns(nl.infinite.OverflowWarning, match=r"resnet_kernels.*layer l = 27 of 40"):
        with pytest.warns(nl.infinite.RangeWarning, match="resnet_kernels"):
            D.resnet_kernels(X, depth=40, activation="softplus", w_std=1e6)
    with pytest.raises(ValueError, match="all_layers"):
        D.resnet_kernels(X, depth=3, all_layers=True, return_error=True)
    with pytest.raises(ValueError, match="Gauss-Hermite"):
        D.resnet_kernels(X, depth=3, activation="tanh", method="hermite", return_error=True)
    with pytest.raises(ValueError, match="same features"):
        D.resnet_kernels(X, X[:, :2], depth=3)


def _resnet_ntk_empirical(key, x, width, depth, w, b):
    n0 = x.shape[1]
    ks = jax.random.split(key, 2 * depth)
    params = [(jax.random.normal(ks[0], (width, n0)), jax.random.normal(ks[1], (width,)))]
    for l in range(1, depth):
        params.append(
            (
                jax.random.normal(ks[2 * l], (width, width)),
                jax.random.normal(ks[2 * l + 1], (width,)),
            )
        )

    def f(p, xi):
        y = w * p[0][0] @ xi / jnp.sqrt(n0) + b * p[0][1]
        for wl, bl in p[1:]:
            y = y + w * wl @ jax.nn.relu(y) / jnp.sqrt(width) + b * bl
        return y[0]

    jac = jax.vmap(lambda xi: jax.tree_util.tree_leaves(jax.grad(f)(params, xi)))(x)
    flat = jnp.concatenate([j.reshape(x.shape[0], -1) for j in jac], axis=1)
    return flat @ flat.T


def test_resnet_recursion_is_the_wide_network_limit():
    width, depth, w, b, n_nets = 512, 3, 1.0, 0.3, 24
    keys = jax.random.split(jax.random.PRNGKey(0), n_nets)
    emp = np.stack([np.asarray(_resnet_ntk_empirical(k, X, width, depth, w, b)) for k in keys])
    r = D.resnet_kernels(X, depth=depth, activation="relu", w_std=w, b_std=b)
    inf = np.asarray(r.ntk) * float(np.exp(r.log_scale))
    se = emp.std(0, ddof=1) / np.sqrt(n_nets)
    z = (emp.mean(0) - inf) / se
    assert np.max(np.abs(z)) < 4.0, z


def test_correlation_and_gram_spectrum_closed_form():
    n, lam, q = 6, 0.25, 3.0
    k = q * ((1 - lam) * jnp.eye(n) + lam * jnp.ones((n, n)))
    np.testing.assert_allclose(D.correlation(k), k / q, rtol=1e-15)
    lo, hi, cond = D.gram_spectrum(k)
    assert float(lo) == pytest.approx(1 - lam, rel=1e-12)
    assert float(hi) == pytest.approx(1 + (n - 1) * lam, rel=1e-12)
    assert float(cond) == pytest.approx((1 + (n - 1) * lam) / (1 - lam), rel=1e-12)


def test_inputs_at_q_set_the_first_layer_variance():
    x = D.inputs_at_q(5, 3, 0.7, 1.2, 0.3)
    q1 = 1.2**2 * np.sum(np.asarray(x) ** 2, 1) / 3 + 0.09
    np.testing.assert_allclose(q1, 0.7, rtol=1e-14)
    with pytest.raises(ValueError):
        D.inputs_at_q(5, 3, 0.05, 1.2, 0.3)  # below sigma_b^2
    with pytest.raises(ValueError):
        D.inputs_at_q(1, 3, 0.7, 1.2, 0.3)


def test_eoc_limit_curvatures_match_finite_differences_of_the_closed_form_map():
    """a = f''(1)/2 and b = f'''(1)/6 from Gaussian expectations of phi'' and phi''', against
    one-sided finite differences of erf's closed-form correlation map."""
    b_std = 0.2
    w = eoc.eoc_w_std("erf", b_std)
    lim = D.eoc_limit("erf", w, b_std)
    q = lim["q"]
    kmap = nl.kernel_map("erf")

    def f(c):
        return float((w * w * kmap(jnp.array(q * c), jnp.array(q), jnp.array(q))[0] + b_std**2) / q)

    h = 1e-3
    vals = [f(1 - i * h) for i in range(5)]
    # f(1 - t) = 1 - t + a t^2 - b t^3 + O(t^4): fit the four coefficients exactly
    t = np.array([i * h for i in range(5)])
    coef = np.polyfit(t, vals, 4)[::-1]
    assert coef[1] == pytest.approx(-1.0, abs=1e-6)  # chi = 1
    assert coef[2] == pytest.approx(lim["a"], rel=1e-4)
    assert -coef[3] == pytest.approx(lim["b"], rel=2e-3)


def test_eoc_log_coefficient_relu_and_erf():
    """Theta^L(x, x')/L = lambda q + alpha log L / L + beta / L + ...: the coefficient alpha of
    a four-term fit over L in [100, 10^4] against the derived values."""
    for act, b_std, tol in (("relu", 0.0, 0.01), ("erf", 0.2, 0.03)):
        w = eoc.eoc_w_std(act, b_std)
        lim = D.eoc_limit(act, w, b_std)
        x = D.inputs_at_q(6, 3, lim["q"], w, b_std)
        k = np.asarray(
            nl.kernels(x, depth=10000, activation=act, w_std=w, b_std=b_std, all_layers=True).ntk
        )
        ls = np.arange(1, k.shape[0] + 1, dtype=float)
        sel = ls >= 100
        basis = np.stack([np.log(ls), np.ones_like(ls), np.log(ls) / ls, 1 / ls], 1)[sel]
        i, j = np.triu_indices(6, 1)
        y = (k[:, i, j] / ls[:, None] - lim["lambda"] * lim["q"]) * ls[:, None]
        alpha = np.linalg.lstsq(basis, y[sel], rcond=None)[0][0]
        assert np.all(np.abs(alpha - lim["alpha"]) < tol), (act, alpha, lim["alpha"])


def test_ordered_and_chaotic_rates():
    for act, w, b_std in (("relu", 1.2, 0.1), ("erf", 0.8, 0.3)):
        chi = eoc.chi(act, w, b_std)
        q = eoc.q_star(act, w, b_std)
        x = D.inputs_at_q(5, 3, q, w, b_std)
        k = np.asarray(
            nl.kernels(x, depth=60, activation=act, w_std=w, b_std=b_std, all_layers=True).ntk
        )
        i, j = np.triu_indices(5, 1)
        dev = np.max(np.abs(k[:, i, j] - q / (1 - chi)), axis=1)
        l1, l2 = 30, 50
        slope = (np.log(dev[l2]) - np.log(dev[l1])) / (l2 - l1)
        # smooth: L chi^L, whose local slope is log chi + 1/L
        pred = D.ordered_rate(act, w, b_std) + (0.0 if act == "relu" else 2 / (l1 + l2))
        assert slope == pytest.approx(pred, abs=0.01), (act, slope, pred)
    w, b_std = 2.5, 0.1
    q = eoc.q_star("erf", w, b_std)
    x = D.inputs_at_q(5, 3, q, w, b_std)
    k = nl.kernels(x, depth=100, activation="erf", w_std=w, b_std=b_std, all_layers=True).ntk
    rho = np.asarray(D.correlation(k))[:, 0, 2]  # the off-diagonal limit is reached like f'(c*)^L
    slope = (np.log(abs(rho[100])) - np.log(abs(rho[60]))) / 40
    assert slope == pytest.approx(D.chaotic_rate("erf", w, b_std), abs=1e-3)


def test_bad_inputs_raise_before_compute():
    with pytest.raises(ValueError):
        D.resnet_kernels(X, depth=0)
    with pytest.raises(ValueError):
        D.eoc_limit("relu", 1.3, 0.0)
    with pytest.raises(ValueError):
        D.eoc_limit("erf", 2.0, 0.2)
    with pytest.raises(ValueError):
        D.ordered_rate("erf", 2.5, 0.1)
    with pytest.raises(ValueError):
        D.chaotic_rate("erf", 0.8, 0.3)


def test_extrapolate_log_expansion_recovers_an_exact_expansion():
    ls = np.arange(1.0, 2001.0)
    y = 0.3 * np.log(ls) - 0.7 + 2.0 * np.log(ls) / ls + 0.5 / ls
    p5, p4 = nl.depth.extrapolate_log_expansion(ls, y[:, None], l_min=20, l_max=1000, l_target=2000)
    exact = 0.3 * np.log(2000) - 0.7 + 2.0 * np.log(2000) / 2000 + 0.5 / 2000
    assert abs(p5[0] - exact) < 1e-9 and abs(p4[0] - exact) < 1e-9
    with pytest.raises(ValueError):
        nl.depth.extrapolate_log_expansion(ls, y, l_min=1000, l_max=20, l_target=2000)


def test_eoc_condition_log_coefficient_is_the_derivative_of_kappa():
    n, lam, alpha, q = 12, 1 / 3, -0.4, 1.7
    kappa = lambda lm: (1 + (n - 1) * lm) / (1 - lm)  # noqa: E731
    h = 1e-6
    dk = (kappa(lam + h) - kappa(lam - h)) / (2 * h)
    assert abs(nl.depth.eoc_condition_log_coefficient(n, lam, alpha, q) - dk * alpha / q) < 1e-6
    with pytest.raises(ValueError):
        nl.depth.eoc_condition_log_coefficient(n, 1.0, alpha, q)
