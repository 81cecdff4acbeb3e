"""ntklib.finite: the finite-width NTK on the diagonal (Hanin & Nica 2019).

Real networks (weight matrices drawn), the exact scalar chain, the exact moments of the
transfer operator and hand computations are checked against one another.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sps

import ntklib as nl
from ntklib import finite as F

IN_DIM = 3
X = jnp.array([[1.0, -0.5, 2.0]])
X2 = float(jnp.sum(X**2))


def _real(widths, n, seed):
    kw, kb = F.diagonal_parts_mc(F.he_net(IN_DIM, widths), jax.random.PRNGKey(seed), n, X)
    return kw[:, 0], kb[:, 0]


def test_parts_are_half_of_ntklib_ntk():
    net = F.he_net(IN_DIM, (7, 5, 9))
    params = nl.init(net, jax.random.PRNGKey(0))
    kw, kb = F.diagonal_parts(net, params, X)
    np.testing.assert_allclose(kw + kb, nl.ntk_diagonal(net, params, X) / 2, rtol=1e-12)
    # without biases only the weight part remains, and it is the same
    net_nb = F.he_net(IN_DIM, (7, 5, 9), bias=False)
    kw2, kb2 = F.diagonal_parts(net_nb, nl.init(net_nb, jax.random.PRNGKey(0)), X)
    np.testing.assert_allclose(kw2, kw, rtol=1e-12)
    assert float(kb2[0]) == 0.0


def test_zero_initialized_biases_are_zero_but_count():
    net = F.he_net(IN_DIM, (4, 4))
    params = nl.init(net, jax.random.PRNGKey(1))
    assert all(float(jnp.abs(b).max()) == 0.0 for _, b in params)
    assert float(F.diagonal_parts(net, params, X)[1][0]) > 0


@pytest.mark.parametrize("widths", [(8, 8, 8), (2, 6, 3), (12, 4, 20, 6)])
def test_chain_has_the_law_of_real_networks(widths):
    n = 20000
    kw, kb = _real(widths, n, seed=len(widths))
    s = F.sample_diagonal(jax.random.PRNGKey(99), IN_DIM, widths, n, x_norm2=X2)
    for real, chain in ((kw, s["K_w"]), (kb, s["K_b"]), (kw + kb, s["K"])):
        assert sps.ks_2samp(real, chain).pvalue > 1e-3
        m_r, se_r = nl.mean_and_se(real)
        m_c, se_c = nl.mean_and_se(chain)
        assert abs(m_r - m_c) < 4 * np.hypot(se_r, se_c)


@pytest.mark.parametrize("widths", [(8, 8, 8), (2, 3, 2), (5, 16, 4)])
def test_exact_moments_match_real_networks(widths):
    """E[K], E[K^2] of the transfer operator against real networks (weights drawn)."""
    kw, kb = _real(widths, 40000, seed=7)
    ex = F.exact_moments(IN_DIM, widths, X2)
    for name, v in (("K_w", kw), ("K_b", kb), ("K", kw + kb)):
        for k, (m, se) in enumerate((nl.mean_and_se(v), nl.mean_and_se(v**2))):
            assert abs(m - ex[name][k]) < 4 * se, (name, k, m, ex[name][k], se)


def test_exact_second_moment_of_the_chain_at_large_sample():
    widths = (6, 10, 4, 8)
    s = F.sample_diagonal(jax.random.PRNGKey(3), IN_DIM, widths, 100_000, x_norm2=X2)
    ex = F.exact_moments(IN_DIM, widths, X2)
    for name in ("K_w", "K_b", "K"):
        m2, se = nl.mean_and_se(s[name] ** 2)
        assert abs(m2 - ex[name][1]) < 4 * se, name


def test_one_hidden_layer_by_hand():
    """d = 2: K_w = a (|delta_1|^2 + r_1/a) with both (2/n) chi^2_k over the same k active
    units, so E[K_w] = 2a and E[K_w^2] = a^2 (4 + 12/n): by hand, from E k = n/2,
    E k^2 = n^2/4 + n/4 and E[chi^2_k chi^2_k'] = k^2, E[(chi^2_k)^2] = k (k + 2)."""
    for n in (1, 2, 5, 64):
        a = X2 / IN_DIM
        ex = F.exact_moments(IN_DIM, (n,), X2)["K_w"]
        assert ex[0] == pytest.approx(2 * a, rel=1e-13)
        assert ex[1] == pytest.approx(a * a * (4 + 12 / n), rel=1e-13)
    # and the bias part: |delta_2|^2 = 1, |delta_1|^2 = (2/n) chi^2_k: E[K_b] = 1
    assert F.exact_moments(IN_DIM, (5,), X2)["K_b"][0] == pytest.approx(1.0, rel=1e-13)


def test_mean_formula_and_dead_layers():
    assert F.paper_mean_kernel(4, 10, 10.0) == 4 * 1.5
    ew, eb = F.mean_kernel(IN_DIM, (2, 3, 2), X2)
    assert ew == pytest.approx(4 * X2 / IN_DIM)
    assert eb == pytest.approx(0.5 * (1 + 1 + 0.75 + 0.75 * 0.875))
    # matches the transfer operator, and tends to d/2 at large widths
    assert F.exact_moments(IN_DIM, (2, 3, 2), X2)["K_b"][0] == pytest.approx(eb, rel=1e-12)
    assert F.mean_kernel(IN_DIM, (60,) * 5, X2)[1] == pytest.approx(3.0, abs=1e-15)


def test_monte_carlo_mean_matches_exact_formula_at_many_seeds():
    """Small depth, 20 seeds: the z-scores against the exact mean look standard normal."""
    widths = (4, 6)
    exact = sum(F.mean_kernel(IN_DIM, widths, X2))
    ex = F.exact_moments(IN_DIM, widths, X2)["K"]
    se = np.sqrt((ex[1] - ex[0] ** 2) / 5000)
    z = np.array(
        [
            (
                F.sample_diagonal(jax.random.PRNGKey(s), IN_DIM, widths, 5000, x_norm2=X2)[
                    "K"
                ].mean()
                - exact
            )
            / se
            for s in range(20)
        ]
    )
    assert np.max(np.abs(z)) < 3.9  # Bonferroni 1 % over 20 scores: 3.48
    assert abs(z.mean()) < 3 / np.sqrt(20)
    assert 0.5 < z.std() < 1.6


def test_one_layer_fourth_moment_ratio():
    for n in (1, 2, 3, 10, 100):
        assert F.layer_moment(n, 1) == pytest.approx(1.0, rel=1e-12)
        assert F.layer_moment(n, 2) == pytest.approx(1 + 5 / n, rel=1e-12)
    assert F.forward_moment((4, 8), 2) == pytest.approx((1 + 5 / 4) * (1 + 5 / 8))
    # and on real random layers
    n = 6

    def xi(k):
        w = jax.random.normal(k, (n, IN_DIM)) * jnp.sqrt(2.0)
        return jnp.sum(jax.nn.relu(w @ X[0] / jnp.sqrt(IN_DIM)) ** 2) / n / (X2 / IN_DIM)

    v = np.asarray(nl.map_keys(xi, jax.random.PRNGKey(5), 200000, chunk=20000))
    m2, se = nl.mean_and_se(v**2)
    assert abs(m2 - (1 + 5 / n)) < 4 * se


def test_growth_rate_fit_recovers_a_known_constant():
    """Synthetic log-normal samples with E[X^2]/E[X]^2 = exp(c beta): the weighted fit of
    log(moment_ratio) against beta recovers c within 3 s.e."""
    c, n = 5.0, 200000
    betas = np.array([0.02, 0.05, 0.08, 0.11, 0.14])
    r, se = [], []
    for i, b in enumerate(betas):
        s2 = c * b  # Var log X
        z = np.asarray(jax.random.normal(jax.random.PRNGKey(i), (n,)))
        ri, sei = nl.moment_ratio(np.exp(np.sqrt(s2) * z - s2 / 2))
        r.append(ri)
        se.append(sei)
    r, se = np.array(r), np.array(se)
    fit = nl.fit_line(betas, np.log(r), se / r)
    assert abs(fit.slope - c) < 3 * fit.slope_se
    assert fit.slope_se < 0.5


def test_moment_ratio_error_is_calibrated():
    est, errs = [], []
    for i in range(40):
        x = np.asarray(jax.random.gamma(jax.random.PRNGKey(i), 2.0, (4000,)))
        r, se = nl.moment_ratio(x)
        est.append(r)
        errs.append(se)
    # Gamma(2): E X^2 / E[X]^2 = (k + 1) / k = 1.5
    assert abs(np.mean(est) - 1.5) < 3 * np.std(est) / np.sqrt(40)
    assert 0.7 < np.std(est) / np.mean(errs) < 1.4


def test_bootstrap_interval_is_reproducible_and_covers():
    x = np.asarray(jax.random.gamma(jax.random.PRNGKey(0), 2.0, (3000,)))
    stat = lambda v: nl.moment_ratio(v)[0]  # noqa: E731
    ci1 = nl.bootstrap_ci(jax.random.PRNGKey(1), x, stat, n_boot=300)
    ci2 = nl.bootstrap_ci(jax.random.PRNGKey(1), x, stat, n_boot=300)
    assert ci1 == ci2
    assert ci1[0] < 1.5 < ci1[1]
    with pytest.raises(ValueError):
        nl.bootstrap_ci(jax.random.PRNGKey(1), x, stat, level=1.5)


def test_paper_second_moment_by_hand():
    """d = 2, width n: [4 a^2 + 2 a (2 e^{-5/n}) + 3 e^{-5/n}] e^{5/n}."""
    n, a = 7, X2 / IN_DIM
    want = 4 * a * a * np.exp(5 / n) + 4 * a + 3
    assert F.paper_second_moment(2, (n,), IN_DIM, X2) == pytest.approx(want, rel=1e-13)
    with pytest.raises(ValueError):
        F.paper_second_moment(3, (n,), IN_DIM, X2)


def test_paper_step_expression_by_hand():
    """Thm. 2's expression. d = 2 (i1 = 1, i2 = 2, l = 1): (r^2 e^{-6/n} + r) / n, where the
    e^{5 beta} cancels the e^{-5/n} of both terms; equal widths, beta -> 0: the double sum
    counts sum_{i1 < i2} (i2 - i1) = d (d^2 - 1) / 6 terms 1/n."""
    r = X2 / IN_DIM
    for n in (3, 8, 50):
        want = (r * r * np.exp(-6 / n) + r) / n
        assert F.paper_step_expression(IN_DIM, (n,), X2) == pytest.approx(want, rel=1e-13)
    n, d = 10**7, 6
    got = F.paper_step_expression(IN_DIM, (n,) * (d - 1), X2) * n
    assert got == pytest.approx((r * r + r) * d * (d * d - 1) / 6, rel=1e-4)
    # one hidden layer more always adds positive terms
    assert F.paper_step_expression(IN_DIM, (8, 8, 8), X2) > F.paper_step_expression(
        IN_DIM, (8, 8), X2
    )
    with pytest.raises(ValueError):
        F.paper_step_expression(IN_DIM, (), X2)


def test_literal_paper_network_has_one_more_half_in_the_bias_part():
    """The network of the paper's eq. (3) read literally (hidden weights sqrt(2/n) W, output
    weights sqrt(1/n) W, W ~ N(0, 1), biases added unscaled) has the same E[K_w] = d |x|^2/n_0
    but E[K_b] = (d + 1)/2: the output bias contributes 1, each hidden layer 1/2. The
    chapter's network (ntklib.finite.he_net) has E[K_b] = d/2, the value Thm. 1 states."""
    widths, n_nets = (12, 12), 20000
    dims = (IN_DIM, *widths, 1)
    d = len(dims) - 1

    def one(key):
        ws = [
            jax.random.normal(k, (dims[i + 1], dims[i]), jnp.float64)
            for i, k in enumerate(jax.random.split(key, d))
        ]
        bs = [jnp.zeros(dims[i + 1], jnp.float64) for i in range(d)]

        def f(ws, bs):
            a = X[0].astype(jnp.float64)
            for i in range(d):
                c = (2.0 if i < d - 1 else 1.0) / dims[i]
                h = jnp.sqrt(c) * ws[i] @ a + bs[i]
                a = jax.nn.relu(h) if i < d - 1 else h
            return a[0]

        gw, gb = jax.grad(f, argnums=(0, 1))(ws, bs)
        return sum(jnp.sum(g**2) for g in gw), sum(jnp.sum(g**2) for g in gb)

    with jax.enable_x64(True) if hasattr(jax, "enable_x64") else _x64():
        kw, kb = jax.vmap(one)(jax.random.split(jax.random.PRNGKey(5), n_nets))
        kw, kb = np.asarray(kw), np.asarray(kb)
    for v, want in ((kw, d * X2 / IN_DIM), (kb, (d + 1) / 2)):
        assert abs(v.mean() - want) < 4 * v.std() / np.sqrt(n_nets)
    assert abs(kb.mean() - d / 2) > 10 * kb.std() / np.sqrt(n_nets)  # not Thm. 1's d/2


def _x64():
    from jax.experimental import enable_x64

    return enable_x64()


def test_networks_needed_grows_with_beta():
    few = F.networks_needed((50,) * 5, 0.1)
    many = F.networks_needed((50,) * 20, 0.1)
    assert 0 < few < many


def test_sampler_is_deterministic_and_chunk_free():
    a = F.sample_diagonal(jax.random.PRNGKey(4), IN_DIM, (5, 6), 3000, x_norm2=X2)
    b = F.sample_diagonal(jax.random.PRNGKey(4), IN_DIM, (5, 6), 3000, x_norm2=X2, chunk=1000)
    c = F.sample_diagonal(jax.random.PRNGKey(4), IN_DIM, (5, 6), 2000, x_norm2=X2)
    # the same networks whatever the chunking (to rounding: XLA vectorizes each shape anew)
    np.testing.assert_array_equal(
        a["K"], F.sample_diagonal(jax.random.PRNGKey(4), IN_DIM, (5, 6), 3000, x_norm2=X2)["K"]
    )
    np.testing.assert_allclose(a["K"], b["K"], rtol=1e-12)
    np.testing.assert_allclose(a["K"][:2000], c["K"], rtol=1e-12)
    # padding changes the random stream, never the law: same mean within error
    d = F.sample_diagonal(jax.random.PRNGKey(4), IN_DIM, (5, 6), 3000, x_norm2=X2, pad_to=8)
    assert abs(d["K"].mean() - a["K"].mean()) < 5 * a["K"].std() / np.sqrt(3000)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(in_dim=0, widths=(3,)),
        dict(in_dim=3, widths=()),
        dict(in_dim=3, widths=(3, 0)),
        dict(in_dim=3, widths=(3,), x_norm2=-1.0),
        dict(in_dim=3, widths=(3,), x_norm2=float("nan")),
        dict(in_dim=3, widths=(3, 3, 3), pad_to=2),
    ],
)
def test_bad_input_is_refused_before_compute(kwargs):
    with pytest.raises(ValueError):
        F.sample_diagonal(jax.random.PRNGKey(0), n_nets=10, **kwargs)
    with pytest.raises(TypeError):  # a width that is not an int
        F.sample_diagonal(jax.random.PRNGKey(0), n_nets=10, in_dim=3, widths=(3, 2.5))


def test_kernel_parts_refuse_other_networks():
    net = nl.mlp(IN_DIM, 2, 4)  # not He / zero-bias
    with pytest.raises(ValueError, match="he_net"):
        F.diagonal_parts(net, nl.init(net, jax.random.PRNGKey(0)), X)


def test_sgd_step_exact_and_first_order():
    net = F.he_net(IN_DIM, (16, 16))
    params = nl.init(net, jax.random.PRNGKey(2))
    k0, dk, dlin = F.sgd_step_change(net, params, X, 0.3, 1e-5)
    k0b, dk2, dlin2 = F.sgd_step_change(net, params, X, 0.3, 2e-5)
    # a step this small switches no unit: exact = first order + O(lr^2)
    assert float(dlin2) == pytest.approx(2 * float(dlin), rel=1e-9)
    r1, r2 = float(dk - dlin), float(dk2 - dlin2)
    assert abs(r1) < 1e-4 * abs(float(dlin))
    assert r2 / r1 == pytest.approx(4.0, rel=0.05)
    assert float(k0) == pytest.approx(float(F.kernel(net, params, X)[0]))
    # the step is taken in the paper's parameters: lr/2 in ntklib's, recomputed exactly
    g = jax.grad(lambda p: 0.5 * (nl.apply(net, p, X)[0] - 0.3) ** 2)(params)
    lr = 0.01
    new = jax.tree_util.tree_map(lambda p, gi: p - 0.5 * lr * gi, params, g)
    want = F.kernel(net, new, X)[0] - k0
    np.testing.assert_allclose(F.sgd_step_change(net, params, X, 0.3, lr)[1], want, rtol=1e-12)


def test_first_step_mc_matches_a_loop():
    net = F.he_net(IN_DIM, (6, 6))
    k0, dk, dlin = F.first_step_mc(net, jax.random.PRNGKey(8), 5, X, 0.0, 0.05, chunk=2)
    keys = jax.random.split(jax.random.PRNGKey(8), 5)
    for i in range(5):
        want = F.sgd_step_change(net, nl.init(net, keys[i]), X, 0.0, 0.05)
        np.testing.assert_allclose([k0[i], dk[i], dlin[i]], want, rtol=1e-12)


def test_real_weight_samplers_have_the_exact_moments():
    """finite.layer_xi and finite.last_layer_norm (real Gaussian weights) against
    layer_moment / forward_moment: E xi = 1, E xi^2 = 1 + 5/n, E r^2 = prod (1 + 5/n_j)."""
    x = jnp.ones(3)
    n = 6
    xi = np.asarray(
        nl.map_keys(
            functools.partial(F.layer_xi, x=x, n_max=8),
            jax.random.PRNGKey(3),
            40000,
            args=(jnp.asarray(n, jnp.float64),),
            chunk=8192,
        )
    )
    for k, moment in ((1, xi), (2, xi**2)):
        m, se = nl.mean_and_se(moment)
        assert abs(m - F.layer_moment(n, k)) < 4.5 * se, (k, m, F.layer_moment(n, k), se)
    widths = (4, 7, 5)
    args = (jnp.asarray((1,) + widths, jnp.float64), jnp.asarray((False, True, True, True)))
    r = np.asarray(
        nl.map_keys(
            functools.partial(F.last_layer_norm, x=x, n_max=7),
            jax.random.PRNGKey(4),
            40000,
            args=args,
            chunk=8192,
        )
    )
    m, se = nl.mean_and_se(r**2)
    assert abs(m - F.forward_moment(widths, 2)) < 4.5 * se
    assert (
        abs(m - 1.0) > 10 * se
    )  # the finite-width excess is resolved: not the 1 of infinite width
