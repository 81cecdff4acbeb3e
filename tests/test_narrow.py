"""Deep narrow networks (No, Ryu, Lee & Choi): the initialization, the NTK, its limit."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FAST_COMPILE
from scipy.stats import norm

from ntklib import narrow as nw
from ntklib.train import descend, gradient_descent, kernel_descent, kernel_lr


def _inputs(key, n=6, d=3):
    return jax.random.normal(key, (n, d))  # some coordinates negative on purpose


@pytest.mark.parametrize("d_in,d_out,depth", [(2, 1, 1), (3, 2, 7), (5, 1, 40)])
def test_network_computes_zero_and_carries_the_input_at_initialization(key, d_in, d_out, depth):
    net = nw.narrow_mlp(d_in, d_out, depth, 3.5)
    x = _inputs(key, d=d_in)
    for i in range(3):
        p = nw.init_mlp(net, jax.random.fold_in(key, i))
        assert np.all(np.asarray(nw.apply_mlp(p, x)) == 0.0)
        h = nw.hidden_mlp(p, x)
        assert h.shape == (x.shape[0], d_in + 1 + d_out)
        np.testing.assert_array_equal(h[:, :d_in], 3.5 * jnp.maximum(x, 0.0))
        np.testing.assert_array_equal(h[:, d_in + 1 :], 3.5)


def test_cnn_computes_zero_and_its_ntk_is_a_gram_matrix(key):
    net = nw.narrow_cnn(2, 3, 5, 2.0, 4)
    x = jax.random.uniform(key, (5, 2, 4, 4))
    p = nw.init_cnn(net, jax.random.fold_in(key, 1))
    assert np.all(np.asarray(nw.apply_cnn(p, x)) == 0.0)
    k = np.asarray(nw.ntk_cnn(net, p, x))
    np.testing.assert_allclose(k, k.T, rtol=1e-12)
    assert np.linalg.eigvalsh(k)[0] > -1e-10 * np.abs(k).max()
    ps = nw.init_cnn(net, key, "standard")
    assert np.abs(np.asarray(nw.apply_cnn(ps, x))).max() > 0  # He init: not zero


def test_conv_is_a_same_convolution(key):
    x = jax.random.normal(key, (3, 4, 6, 5))
    w = jax.random.normal(jax.random.fold_in(key, 1), (2, 4, 3, 3))
    ref = jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW")
    )
    np.testing.assert_allclose(nw._conv(x, w, jnp.zeros(2)), ref, atol=1e-12)


def test_only_the_output_rows_have_a_gradient_at_initialization(key):
    net = nw.narrow_mlp(3, 2, 6, 2.0)
    p = nw.init_mlp(net, key)
    x = jnp.abs(_inputs(jax.random.fold_in(key, 1), n=1, d=3))[0]
    for out in range(2):
        g = jax.grad(lambda q, o=out: nw.apply_mlp(q, x[None])[0, o])(p)
        rows = jnp.arange(net.width) != 3 + 1 + out  # every row but this output's channel
        assert float(jnp.abs(g["head"]["w"][rows]).max()) == 0.0
        assert float(jnp.abs(g["body"]["w"][:, rows]).max()) == 0.0
        assert float(jnp.abs(g["body"]["b"][:, rows]).max()) == 0.0
        assert float(jnp.abs(g["body"]["w"][:, ~rows]).max()) > 0.0


def test_empirical_ntk_equals_the_derived_sum_over_layers(key):
    """Theta_L = <x,x'> + 1 + L (C^2 (<x+,x'+> + d_out) + 1) + a0 a0' + C^2 sum phi phi',
    evaluated from the drawn random channel of one network."""
    d, o, L, c = 3, 1, 9, 2.5
    net = nw.narrow_mlp(d, o, L, c)
    p = nw.init_mlp(net, key)
    x = _inputs(jax.random.fold_in(key, 1), n=5, d=d)
    xp = jnp.maximum(x, 0.0)
    a0 = jax.nn.relu(x @ p["head"]["w"][d] + p["head"]["b"][d])
    phi = jax.nn.relu(xp @ p["body"]["w"][:, d, :d].T * c + p["body"]["b"][:, d]) / c  # (n, L-1)
    theta = x @ x.T + 1 + L * (c**2 * (xp @ xp.T + o) + 1) + jnp.outer(a0, a0) + c**2 * phi @ phi.T
    np.testing.assert_allclose(nw.ntk_mlp(net, p, x) * L * c**2, theta, rtol=1e-12)


def test_output_rows_part_of_the_ntk_at_initialization_and_after_training(key):
    """At initialization the rest is the head's output row and the tail: (<x,x'> + 1 +
    <h_{L-1}, h'_{L-1}> + 1) / (L C^2); after training the part equals the rows' Jacobian
    contracted directly (jacrev of the whole network, rows selected)."""
    d, o, L, c = 2, 1, 7, 3.0
    net = nw.narrow_mlp(d, o, L, c)
    p = nw.init_mlp(net, key)
    x = _inputs(jax.random.fold_in(key, 1), n=5, d=d)
    h = nw.hidden_mlp(p, x)
    rest = (x @ x.T + 1 + h @ h.T + 1) / (L * c**2)
    np.testing.assert_allclose(
        nw.ntk_mlp(net, p, x) - nw.ntk_output_rows_mlp(net, p, x), rest, rtol=1e-12, atol=1e-14
    )
    trained = descend(nw.apply_mlp, p, x, jnp.sin(x[:, :1]), 0.05 / (L * c**2), 20, 20).params
    jac = jax.jacrev(lambda q: nw.apply_mlp(q, x)[:, 0])(trained)["body"]
    rows = slice(d + 1, None)
    jw, jb = jac["w"][:, :, rows, :].reshape(5, -1), jac["b"][:, :, rows].reshape(5, -1)
    direct = (jw @ jw.T + jb @ jb.T) / (L * c**2)
    part = nw.ntk_output_rows_mlp(net, trained, x)
    np.testing.assert_allclose(part, direct, rtol=1e-12)
    assert float(jnp.abs(nw.ntk_mlp(net, trained, x) - part - rest).max()) > 1e-6  # the rest moved


def test_relu_moments_against_closed_forms_and_monte_carlo(key):
    q = jnp.array([[2.0]])
    m1, m2 = nw.relu_moments(q, q, q)  # u = v: E relu^2 = q/2, E relu^4 = 3 q^2 / 2
    np.testing.assert_allclose([m1[0, 0], m2[0, 0]], [1.0, 6.0], rtol=1e-12)
    m1, m2 = nw.relu_moments(jnp.zeros((1, 1)), jnp.array([[2.0]]), jnp.array([[3.0]]))
    np.testing.assert_allclose([m1[0, 0], m2[0, 0]], [np.sqrt(6) / (2 * np.pi), 1.5], rtol=1e-12)
    q1, q2, s = 1.3, 0.7, -0.4
    z = jax.random.normal(key, (2, 2_000_000))
    u = np.sqrt(q1) * z[0]
    v = s / np.sqrt(q1) * z[0] + np.sqrt(q2 - s**2 / q1) * z[1]
    for moment, samples in zip(
        nw.relu_moments(jnp.array([[s]]), jnp.array([[q1]]), jnp.array([[q2]])),
        (jax.nn.relu(u) * jax.nn.relu(v), (jax.nn.relu(u) * jax.nn.relu(v)) ** 2),
        strict=True,
    ):
        se = float(samples.std()) / np.sqrt(samples.size)
        assert abs(float(samples.mean()) - float(moment[0, 0])) < 5 * se


def test_limit_kernel_against_monte_carlo_over_networks(key):
    """Mean and spread of the scaled NTK over 2000 networks against the derived formulas."""
    net = nw.narrow_mlp(2, 1, 32, 3.0)
    g = jnp.array([0.2, 0.7, 1.3])
    x = jnp.stack([jnp.cos(g), jnp.sin(g)], -1)
    ks = jax.random.split(key, 2000)
    k = np.asarray(jax.jit(jax.vmap(lambda kk: nw.ntk_mlp(net, nw.init_mlp(net, kk), x)))(ks))
    mean, sd = k.mean(0), k.std(0, ddof=1)
    z = (mean - np.asarray(nw.mean_kernel(net, x))) / (sd / np.sqrt(len(ks)))
    assert np.abs(z).max() < norm.ppf(1 - 0.005 / z.size)
    np.testing.assert_allclose(sd, nw.kernel_sd(net, x), rtol=0.12)  # se of sd ~ 3 % here

    # the finite-depth mean is the limit plus O(1/L)
    def gap(depth):
        mean = nw.mean_kernel(net._replace(depth=depth), x)
        return float(jnp.abs(mean - nw.limit_kernel(net, x)).max())

    assert gap(10_000) < gap(100) / 50


def test_limit_kernel_against_a_deep_monte_carlo(key):
    """At L = 2048 the sample mean of 100 networks is the limit, up to 4 s.e. and the exact
    O(1/L) offset of the finite-depth mean."""
    net = nw.narrow_mlp(2, 1, 2048, 5.0)
    g = jnp.array([0.3, 0.9, 1.4])
    x = jnp.stack([jnp.cos(g), jnp.sin(g)], -1)
    ks = jax.random.split(key, 100)
    k = np.asarray(jax.jit(jax.vmap(lambda kk: nw.ntk_mlp(net, nw.init_mlp(net, kk), x)))(ks))
    limit = np.asarray(nw.limit_kernel(net, x))
    offset = np.abs(np.asarray(nw.mean_kernel(net, x)) - limit)
    se = k.std(0, ddof=1) / np.sqrt(len(ks))
    assert np.all(np.abs(k.mean(0) - limit) <= 4 * se + offset)
    assert np.all(se < 0.01 * limit)  # the test has teeth: 1 % of the kernel


def test_determinism_and_independence_of_keys(key):
    net = nw.narrow_mlp(2, 1, 12, 2.0)
    a, b = nw.init_mlp(net, key), nw.init_mlp(net, key)
    c = nw.init_mlp(net, jax.random.fold_in(key, 1))
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a["body"]["w"], c["body"]["w"])


@pytest.mark.parametrize(
    "make,error",
    [
        (lambda: nw.narrow_mlp(2, 1, 0, 1.0), ValueError),
        (lambda: nw.narrow_mlp(2, 1, 3.0, 1.0), TypeError),
        (lambda: nw.narrow_mlp(0, 1, 3, 1.0), ValueError),
        (lambda: nw.narrow_mlp(2, 1, 3, 0.0), ValueError),
        (lambda: nw.narrow_mlp(2, 1, 3, float("inf")), ValueError),
        (lambda: nw.narrow_mlp(2, 1, True, 1.0), TypeError),
        (lambda: nw.narrow_cnn(1, 2, 3, 1.0, 4, kernel=2), ValueError),
        (lambda: nw.init_mlp(nw.narrow_mlp(2, 1, 3, 1.0), jax.random.PRNGKey(0), "he"), ValueError),
    ],
)
def test_bad_input_is_refused(make, error):
    with pytest.raises(error):
        make()


def _loop(f, params, x, y, lr, steps):
    losses = []
    loss = lambda p: 0.5 * jnp.sum((f(p, x) - y) ** 2)  # noqa: E731
    for _ in range(steps):
        losses.append(float(loss(params)))
        g = jax.grad(loss)(params)
        params = jax.tree_util.tree_map(lambda a, b: a - lr * b, params, g)
    return params, losses + [float(loss(params))]


def test_descend_is_gradient_descent_and_records_every_k_steps(key):
    net = nw.narrow_mlp(2, 1, 5, 2.0)
    p = nw.init_mlp(net, key)
    x = jnp.abs(_inputs(key, n=4, d=2))
    y = jnp.sin(x[:, :1])
    lr = 0.2 / (5 * 4.0)
    ref_p, ref_loss = _loop(nw.apply_mlp, p, x, y, lr, 6)
    out = descend(nw.apply_mlp, p, x, y, lr, 6, 2, lambda q: nw.apply_mlp(q, x))
    np.testing.assert_allclose(out.loss, ref_loss[::2], rtol=1e-12)
    np.testing.assert_allclose(out.observed[-1], nw.apply_mlp(ref_p, x), rtol=1e-12)
    assert out.observed.shape == (4, 4, 1)
    with pytest.raises(ValueError):
        descend(nw.apply_mlp, p, x, y, lr, 7, 2)


def test_gradient_descent_of_an_mlp_still_matches_a_loop(key):
    import ntklib as nl

    net = nl.mlp(3, 2, 8)
    p = nl.init(net, key)
    x = _inputs(key, n=4, d=3)
    y = jnp.cos(x[:, :1])
    ref_p, ref_loss = _loop(lambda q, xx: nl.apply(net, q, xx), p, x, y, 0.05, 5)
    out = gradient_descent(net, p, x, y, 0.05, 5)
    np.testing.assert_allclose(out.loss, ref_loss, rtol=1e-12)


@pytest.mark.parametrize("rate", [0.5, 1.0])
def test_kernel_descent_is_the_closed_form_of_the_linear_iteration(rate):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(7, 7))
    k = a @ a.T + np.outer(np.ones(7), np.ones(7)) * 30  # a dominant constant mode, as in the CNN
    y = rng.normal(size=(7, 3))
    kt = rng.normal(size=(2, 7))
    lr = rate / np.linalg.eigvalsh(k)[-1]
    path, test = [], []
    c = np.zeros_like(y)  # f = K c
    for t in range(41):
        if t % 8 == 0:
            path.append(k @ c)
            test.append(kt @ c)
        c = c - lr * (k @ c - y)
    f_tr, f_te = kernel_descent(jnp.asarray(k), jnp.asarray(y), lr, 40, 8, jnp.asarray(kt))
    np.testing.assert_allclose(f_tr, path, atol=1e-12 * np.abs(y).max())
    np.testing.assert_allclose(f_te, test, atol=1e-11 * np.abs(y).max())


def test_kernel_lr_at_one_removes_the_top_direction_in_one_step():
    """kernel_lr(K, c) = c / lambda_max(K), batched; at c = 1 one step of the linear iteration
    leaves nothing along the top eigenvector (the residual's component there is (1 - lr lambda))."""
    rng = np.random.default_rng(1)
    a = rng.normal(size=(3, 6, 6))
    k = a @ np.swapaxes(a, -1, -2)
    lam, vec = np.linalg.eigh(k)
    np.testing.assert_allclose(kernel_lr(jnp.asarray(k), 0.5), 0.5 / lam[:, -1], rtol=1e-13)
    y = rng.normal(size=6)
    lr = float(kernel_lr(jnp.asarray(k[0])))
    residual = y - lr * k[0] @ y  # f = 0 at t = 0: one step of f <- f - lr K (f - y)
    assert abs(vec[0][:, -1] @ residual) < 1e-13 * np.linalg.norm(y)  # rounding: ulps of |y|
    assert abs(vec[0][:, 0] @ residual) > 0.5 * abs(vec[0][:, 0] @ y)


def test_the_program_does_not_grow_with_depth(key):
    """One lax.scan over the body: the traced program of the NTK is the same size at any L."""
    x = jnp.ones((3, 2)) * 0.5

    def size(depth):
        net = nw.narrow_mlp(2, 1, depth, 2.0)
        p = nw.init_mlp(net, key)
        return len(jax.make_jaxpr(lambda q: nw.ntk_mlp(net, q, x))(p).jaxpr.eqns)

    assert size(10) == size(3000)
    assert size(1) == size(2)  # an empty body is a scan of length 0, not another program


def test_torch_default_scheme_is_uniform_with_variance_one_third_over_fan_in():
    net = nw.narrow_mlp(2, 1, 400, 1.0)
    p = nw.init_mlp(net, jax.random.PRNGKey(3), "torch")
    body = np.asarray(p["body"]["w"]).ravel()
    fan_in = net.width
    assert np.abs(body).max() <= 1 / np.sqrt(fan_in)
    # variance 1/(3 fan_in) within 5 standard errors of a sample variance of a uniform
    n = body.size
    se = np.sqrt((1 / 5 - 1 / 9) / n) / fan_in  # Var(u^2) = E u^4 - (E u^2)^2 for u ~ U(-a, a)
    assert abs(body.var() - 1 / (3 * fan_in)) < 5 * se
    cnet = nw.narrow_cnn(1, 1, 50, 1.0, 4)
    pc = nw.init_cnn(cnet, jax.random.PRNGKey(4), "torch")
    assert np.abs(np.asarray(pc["body"]["w"])).max() <= 1 / np.sqrt(cnet.width * 9)


def test_authors_setting_matches_their_example():
    # README of lthilnklover/deep-narrow-NTK: depths 100 and 10^4, scales 5 and 5e4, rates 1e-4, 1e-14
    assert nw.authors_scale(100) == 5.0 and nw.authors_scale(10_000) == 50_000.0
    assert np.isclose(nw.authors_rate(100, 5.0), 1e-4, rtol=1e-12)
    assert np.isclose(nw.authors_rate(10_000, 5e4), 1e-14, rtol=1e-12)


def test_cnn_limit_kernel_reduces_to_the_mlp_on_one_pixel():
    """A 1 x 1 convolution on 1 x 1 images is the MLP: the CNN's limit and exact mean are the
    MLP's formulas (the derivation's special case), to rounding."""
    x = jax.random.normal(jax.random.PRNGKey(3), (4, 3))
    cnn = nw.narrow_cnn(3, 2, 40, 0.7, 1, kernel=1, sigma=1.3, beta=0.6)
    mlp = nw.narrow_mlp(3, 2, 40, 0.7, sigma=1.3, beta=0.6)
    img = x[:, :, None, None]
    np.testing.assert_allclose(nw.limit_kernel_cnn(cnn, img), nw.limit_kernel(mlp, x), atol=1e-12)
    np.testing.assert_allclose(nw.mean_kernel_cnn(cnn, img), nw.mean_kernel(mlp, x), atol=1e-12)


@pytest.mark.slow  # 256 CNN NTKs: about a minute on 2 cores
def test_cnn_limit_kernel_against_monte_carlo_over_networks(key):
    """The scaled CNN NTK over 256 networks (4 x 4 images, kernel 3, C = 0.25, where the
    O(1/L) head terms stand out above the spread): its mean equals the exact finite-depth mean
    within Bonferroni z; the limit differs from it by more than 4 s.e. at this depth (the test
    can tell the two apart) and by 1/50 of that at 50 times the depth."""
    net = nw.narrow_cnn(2, 1, 10, 0.25, 4)
    x = jax.random.normal(jax.random.fold_in(key, 1), (3, 2, 4, 4))
    ks = jax.random.split(key, 256)
    k = np.asarray(jax.jit(jax.vmap(lambda kk: nw.ntk_cnn(net, nw.init_cnn(net, kk), x)))(ks))
    mean, se = k.mean(0), k.std(0, ddof=1) / np.sqrt(len(ks))
    exact = np.asarray(nw.mean_kernel_cnn(net, x))
    limit = np.asarray(nw.limit_kernel_cnn(net, x))
    assert np.abs((mean - exact) / se).max() < norm.ppf(1 - 0.005 / mean.size)
    assert np.abs(exact - limit).min() > 4 * se.max()
    far = np.asarray(nw.mean_kernel_cnn(net._replace(depth=500), x))
    assert np.abs(far - limit).max() < np.abs(exact - limit).max() / 49


@pytest.mark.parametrize("scale", [0.5, 3.0])  # the head's term dominates / is below 1 %
def test_cnn_kernel_sd_against_the_spread_over_networks(key, scale):
    """kernel_sd_cnn (Monte Carlo over single layers: the body's and the head's terms) against
    the sample sd of the scaled CNN NTK over 384 networks, within Bonferroni z of the sample
    sd's standard error (fourth moment) and the formula's own. One layer's sd, without the
    CLT's 1 / sqrt(L), is excluded."""
    net = nw.narrow_cnn(1, 1, 6, scale, 4)
    x = jax.random.uniform(jax.random.fold_in(key, 1), (3, 1, 4, 4)) - 0.2
    ks = jax.random.split(key, 384)
    k = np.asarray(
        jax.jit(jax.lax.map, static_argnums=0)(
            lambda kk: nw.ntk_cnn(net, nw.init_cnn(net, kk), x), ks
        )
    )
    sd, m4 = k.std(0, ddof=1), ((k - k.mean(0)) ** 4).mean(0)
    rel_se = 0.5 * np.sqrt((m4 / sd**4 - 1) / len(ks))
    formula, f_se = (
        np.asarray(a) for a in nw.kernel_sd_cnn(net, x, None, jax.random.fold_in(key, 2))
    )
    z = np.abs(sd / formula - 1) / np.hypot(rel_se, f_se / formula)
    assert z.max() < norm.ppf(1 - 0.005 / z.size), z
    one_layer = formula * net.depth / np.sqrt(net.depth)  # about one term's sd
    assert (np.abs(sd / one_layer - 1) / rel_se).min() > 5
    with pytest.raises(ValueError, match="multiple of 256"):
        nw.kernel_sd_cnn(net, x, None, key, draws=1000)


def test_output_spread_is_each_networks_relative_spread_and_torch_collapses_with_depth(key):
    """output_spread is (max_i f(x_i) - min_i f(x_i)) / max_i |f(x_i)| per draw; PyTorch's
    default collapses a narrow CNN with depth (every draw constant at 40 layers), He's does not
    (none of 32 draws at 40 layers)."""
    x = jax.random.uniform(key, (6, 1, 4, 4))
    ks = jax.random.split(key, 32)
    shallow = nw.narrow_cnn(1, 1, 3, 1.0, 4)
    r = np.asarray(nw.output_spread(shallow, x, ks[:3], "torch"))
    for k, ri in zip(ks[:3], r, strict=True):
        out = np.asarray(nw.apply_cnn(nw.init_cnn(shallow, k, "torch"), x))[:, 0]
        np.testing.assert_allclose(ri, np.ptp(out) / np.abs(out).max(), rtol=1e-12, atol=0)
    deep = nw.narrow_cnn(1, 1, 40, 1.0, 4)
    assert np.all(np.asarray(nw.output_spread(deep, x, ks, "torch")) == 0.0)
    assert np.all(np.asarray(nw.output_spread(deep, x, ks, "standard")) > 1e-3)


def test_output_spread_at_every_depth_reads_each_prefix_network_of_one_pass(key):
    """every_depth=True gives, at depth l, the spread of the draw's head, first l - 1 body
    layers and tail (applied on their own), for the CNN and the MLP; its last column is the
    full network's; the narrow scheme is refused (its prefixes are not narrow draws)."""
    x = jax.random.uniform(key, (6, 1, 4, 4))
    ks = jax.random.split(key, 3)
    for net, init, apply, xs, scheme in (
        (nw.narrow_cnn(1, 2, 5, 1.0, 4), nw.init_cnn, nw.apply_cnn, x, "torch"),
        (nw.narrow_mlp(3, 2, 5, 1.0), nw.init_mlp, nw.apply_mlp, x[:, 0, 0, :3], "standard"),
    ):
        r = np.asarray(nw.output_spread(net, xs, ks, scheme, True))
        assert r.shape == (3, 5)
        # r's rounding error is that of ptp relative to max |f|: ulps per layer, absolute
        full = nw.output_spread(net, xs, ks, scheme)
        np.testing.assert_allclose(r[:, -1], full, rtol=0, atol=1e-13)
        for depth in range(1, 6):

            def prefix(k, depth=depth, init=init, apply=apply, net=net, xs=xs, scheme=scheme):
                p = init(net, k, scheme)
                body = jax.tree.map(lambda a: a[: depth - 1], p["body"])
                return apply(dict(p, body=body), xs)[:, 0]

            out = np.asarray(jax.vmap(prefix)(ks))
            expected = np.ptp(out, axis=1) / np.abs(out).max(axis=1)
            np.testing.assert_allclose(r[:, depth - 1], expected, rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match="every_depth"):
        nw.output_spread(nw.narrow_cnn(1, 1, 3, 1.0, 4), x, ks, "narrow", True)


FUSED_CNN = """
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
from ntklib import narrow as nw
key = jax.random.PRNGKey(0)
net = nw.narrow_cnn(1, 10, 8, float(np.sqrt(8)), 4)
img = jax.random.uniform(jax.random.fold_in(key, 1), (4, 1, 4, 4))
keys = jax.random.split(key, 8)
for _ in range(COMPILES):
    jax.clear_caches()
    out = jax.jit(jax.vmap(lambda k: nw.apply_cnn(nw.init_cnn(net, k), img)))(keys)
    print(float(jnp.max(jnp.abs(out))))
"""
COMPILES = 10


def test_conv_is_one_matmul_against_the_stacked_taps():
    """The form of ``_conv`` XLA:CPU compiles correctly: one ``dot_general`` per call. The
    previous form, a sum of ``k^2`` separate matmuls (9 here), was miscomputed by XLA:CPU
    (jaxlib 0.10.2) inside ``jit(vmap(init + apply))`` in 14 of 140 compiles (the slow test
    below); this test fails with certainty if that form comes back."""
    h, w, b = jnp.ones((2, 3, 4, 4)), jnp.ones((5, 3, 3, 3)), jnp.zeros(5)
    eqns = jax.make_jaxpr(nw._conv)(h, w, b).jaxpr.eqns
    assert [e.primitive.name for e in eqns].count("dot_general") == 1
    assert not any(e.primitive.name == "conv_general_dilated" for e in eqns)


@pytest.mark.slow
def test_the_fused_vmapped_cnn_computes_exactly_zero_at_every_compile():
    """jit(vmap(init + apply)) of the narrow CNN gives exactly 0 at each of 10 compiles (XLA's
    default optimization level, no compilation cache): a guard against XLA:CPU miscompiling
    the present form of ``_conv``, which it did not in 60 compiles. The former form was
    miscomputed in 14 of 140 compiles (6 of 60, 8 of 80), every output wrong (e.g. 2.9e220 for
    an exact 0); against its return, the certain guard is the structural test above (10 clean
    compiles at that rate have probability 0.9^10 = 35 %). 10 compiles: about 20 s on 2 cores;
    30 took 61 s, the slow tier's longest test."""
    flags = os.environ.get("XLA_FLAGS", "").replace(FAST_COMPILE, "").strip()
    env = dict(os.environ, XLA_FLAGS=flags, JAX_ENABLE_COMPILATION_CACHE="false")
    proc = subprocess.run(
        [sys.executable, "-c", FUSED_CNN.replace("COMPILES", str(COMPILES))],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert [float(v) for v in proc.stdout.split()] == [0.0] * COMPILES


def test_backward_pass_memory_is_one_layer_input_per_layer():
    """The loss gradient's temporary memory (XLA's own analysis) is what ``apply_mlp`` states:
    under 2 x 8 L B width bytes and linear in L (a scan that kept every layer's parameters,
    width^2 per layer, or a Python loop unrolled over depth would exceed it)."""
    temps, x = [], jax.random.uniform(jax.random.PRNGKey(1), (16, 2))
    for depth in (500, 2000):
        net = nw.narrow_mlp(2, 1, depth, 5.0)
        p = nw.init_mlp(net, jax.random.PRNGKey(0))
        grad = jax.jit(jax.grad(lambda p: jnp.sum(nw.apply_mlp(p, x) ** 2)))
        temp = grad.lower(p).compile().memory_analysis().temp_size_in_bytes
        assert temp < 2 * 8 * depth * 16 * net.width, (depth, temp)
        temps.append(temp)
    assert 3.5 < temps[1] / temps[0] < 4.5


def test_kernel_motion_is_the_measurement_of_a_step_by_step_run(key):
    """kernel_motion's network i is init_mlp(split(key, n)[i]) trained by plain gradient steps at
    c 2 / lambda_max of its unscaled NTK; its change is that of the scaled NTK's Gram on x."""
    net = nw.narrow_mlp(2, 1, 5, 2.0)
    x = jax.random.uniform(key, (6, 2), minval=-1.0, maxval=1.0)
    y = jnp.sin(x[:, 0] + 2 * x[:, 1])
    out = nw.kernel_motion(net, key, 2, x, y, steps=4, lr_fraction=0.3, chunk=1)
    for i, k in enumerate(jax.random.split(key, 2)):
        p = p0 = nw.init_mlp(net, k)
        k0 = nw.ntk_mlp(net, p0, x)
        lr = 0.3 * 2.0 / float(jnp.linalg.eigvalsh(k0 * 5 * 2.0**2)[-1])
        loss = lambda q: 0.5 * jnp.sum((nw.apply_mlp(q, x)[:, 0] - y) ** 2)  # noqa: E731
        for _ in range(4):
            p = jax.tree.map(lambda a, g, lr=lr: a - lr * g, p, jax.grad(loss)(p))
        kt = nw.ntk_mlp(net, p, x)
        change = float(jnp.linalg.norm(kt - k0) / jnp.linalg.norm(k0))
        np.testing.assert_allclose(out["kernel_change"][i], change, rtol=1e-9)
        np.testing.assert_allclose(out["loss_ratio"][i], float(loss(p) / loss(p0)), rtol=1e-9)
    assert np.all(out["kernel_change"] > 0) and np.all(out["loss_ratio"] < 1)
    with pytest.raises(ValueError, match="lr_fraction"):
        nw.kernel_motion(net, key, 2, x, y, steps=4, lr_fraction=1.0)
    with pytest.raises(ValueError, match="shape"):
        nw.kernel_motion(net, key, 2, x[:, :1], y, steps=4)
    with pytest.raises(TypeError, match="steps"):
        nw.kernel_motion(net, key, 2, x, y, steps=4.0)
