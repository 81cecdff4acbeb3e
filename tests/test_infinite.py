"""Infinite-width kernels against closed forms, quadrature and wide random networks."""

import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntklib as nl
from ntklib.kernel_maps import erf_map, quadrature_map, relu_map

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import workloads  # noqa: E402  (the extended-precision reference the benchmarks use)


def _arccos_relu(s12, q1, q2):
    """Cho & Saul's arc-cosine kernel of degree 1 and 0, written out independently."""
    c = np.clip(s12 / np.sqrt(q1 * q2), -1.0, 1.0)
    if c.ndim == 2:
        np.fill_diagonal(c, 1.0)  # x = x': exactly 1, not 1 - rounding (arccos is steep there)
    t = np.arccos(c)
    return (
        np.sqrt(q1 * q2) / (2 * np.pi) * (np.sin(t) + (np.pi - t) * np.cos(t)),
        (np.pi - t) / (2 * np.pi),
    )


def test_relu_map_special_values():
    # c = 1: E[relu(u)^2] = q / 2 and P(u > 0) = 1/2; c = 0: E = q/(2 pi), Vd = 1/4
    v, vd = relu_map(jnp.array(3.0), jnp.array(3.0), jnp.array(3.0))
    assert float(v) == pytest.approx(1.5, rel=1e-14) and float(vd) == pytest.approx(0.5)
    v, vd = relu_map(jnp.array(0.0), jnp.array(2.0), jnp.array(8.0))
    assert float(v) == pytest.approx(4 / (2 * np.pi), rel=1e-14) and float(vd) == pytest.approx(
        0.25
    )
    v, vd = relu_map(jnp.array(-2.0), jnp.array(2.0), jnp.array(2.0))  # c = -1
    assert float(v) == pytest.approx(0.0, abs=1e-14) and float(vd) == pytest.approx(0.0, abs=1e-14)


def test_depth_one_ntk_by_hand(key):
    x = np.asarray(jax.random.normal(key, (3, 4)))
    w, b = 1.3, 0.4
    s1 = w**2 * x @ x.T / 4 + b**2
    q = np.diag(s1)
    v, vd = _arccos_relu(s1, q[:, None], q[None, :])
    s2 = w**2 * v + b**2
    theta2 = s2 + w**2 * vd * s1
    k = nl.kernels(jnp.asarray(x), depth=1, activation="relu", w_std=w, b_std=b)
    np.testing.assert_allclose(k.nngp, s2, rtol=1e-12)
    np.testing.assert_allclose(k.ntk, theta2, rtol=1e-12)


def test_relu_critical_diagonal_is_linear_in_depth(key):
    # sigma_w^2 = 2, sigma_b = 0: q is preserved and Theta^{l+1}(x,x) = q + Theta^l(x,x),
    # so Theta^{L+1}(x,x) = (L + 1) q with q = 2 |x|^2 / n_0.
    x = jax.random.normal(key, (5, 3))
    q = 2 * jnp.sum(x**2, 1) / 3
    for depth in (1, 7, 1000):
        k = nl.kernels(x, depth=depth, activation="relu", w_std=2**0.5)
        np.testing.assert_allclose(jnp.diag(k.nngp), q, rtol=1e-10)
        np.testing.assert_allclose(jnp.diag(k.ntk), (depth + 1) * q, rtol=1e-10)


def test_erf_quadrature_matches_closed_form():
    s12, q1, q2 = (
        jnp.array([0.3, -0.2, 0.9]),
        jnp.array([1.0, 0.5, 2.0]),
        jnp.array([0.7, 0.5, 1.1]),
    )
    a = erf_map(s12, q1, q2)
    b = quadrature_map("erf", 80)(s12, q1, q2)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-10)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-10)


def test_relu_quadrature_converges_to_closed_form():
    # The kink makes Gauss-Hermite converge only algebraically; the error must still fall.
    s12, q = jnp.array(0.4), jnp.array(1.0)
    exact = relu_map(s12, q, q)
    errs = [abs(float(quadrature_map("relu", n)(s12, q, q)[0] - exact[0])) for n in (20, 80, 320)]
    assert errs[2] < errs[1] < errs[0] and errs[2] < 2e-3 * float(exact[0])


def test_erf_against_monte_carlo(key):
    # One hidden layer, direct Gaussian sampling of the pre-activations.
    cov = np.array([[1.0, 0.6], [0.6, 1.5]])
    z = jax.random.multivariate_normal(key, jnp.zeros(2), jnp.asarray(cov), (400_000,))
    from jax.scipy.special import erf

    prod = np.asarray(erf(z[:, 0]) * erf(z[:, 1]))
    mc, se = nl.mean_and_se(prod)
    cf = float(erf_map(jnp.array(0.6), jnp.array(1.0), jnp.array(1.5))[0])
    assert abs(mc - cf) < 4 * se


def test_all_layers_and_shapes(key):
    x1, x2 = jax.random.normal(key, (4, 3)), jax.random.normal(key, (2, 3))
    k = nl.kernels(x1, x2, depth=6, activation="tanh", w_std=1.2, b_std=0.1)
    ka = nl.kernels(x1, x2, depth=6, activation="tanh", w_std=1.2, b_std=0.1, all_layers=True)
    assert k.ntk.shape == (4, 2) and ka.ntk.shape == (7, 4, 2)
    np.testing.assert_allclose(ka.ntk[-1], k.ntk, rtol=1e-13)
    np.testing.assert_allclose(ka.nngp[0], 1.44 * x1 @ x2.T / 3 + 0.01, rtol=1e-13)


def test_deep_recursion_is_finite(key):
    # Where the variance map has a fixed point or grows slowly, depth 10^4 stays finite.
    x = jax.random.normal(key, (64, 10))
    for act, w in (("relu", 2**0.5), ("erf", 1.0)):
        k = nl.kernels(x, depth=10_000, activation=act, w_std=w, b_std=0.1)
        assert bool(jnp.all(jnp.isfinite(k.ntk))) and bool(jnp.all(jnp.diag(k.ntk) > 0))


def test_bad_depth_is_refused(key):
    with pytest.raises(ValueError, match="depth"):
        nl.kernels(jnp.ones((2, 2)), depth=0)
    with pytest.raises(ValueError, match="unknown activation"):
        nl.kernels(jnp.ones((2, 2)), depth=2, activation="nope")


def test_a_network_is_described_once_an_mlp_gives_the_same_kernels(key):
    """kernels(x, net=mlp(...)) is kernels(x, depth=..., activation=..., w_std=..., b_std=...)
    bit for bit; bias=False is b_std = 0; an MLP whose limit is another kernel (standard
    parameterization, zero-initialized biases), a network given twice, or none, is refused."""
    x = jax.random.normal(key, (4, 3))
    net = nl.mlp(3, 4, 64, activation="tanh", w_std=1.3, b_std=0.2)
    want = nl.kernels(x, depth=4, activation="tanh", w_std=1.3, b_std=0.2)
    got = nl.kernels(x, net=net)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    no_bias = nl.mlp(3, 2, 64, w_std=2**0.5, b_std=0.3, bias=False)
    np.testing.assert_array_equal(
        nl.kernels(x, net=no_bias).ntk, nl.kernels(x, depth=2, w_std=2**0.5).ntk
    )
    with pytest.raises(ValueError, match="NTK parameterization"):
        nl.kernels(x, net=nl.mlp(3, 2, 64, parameterization="standard", b_std=0.1))
    with pytest.raises(ValueError, match="NTK parameterization"):
        nl.kernels(x, net=nl.mlp(3, 2, 64, b_std=0.1, bias_init="zero"))
    with pytest.raises(ValueError, match="not both"):
        nl.kernels(x, net=net, depth=4)
    with pytest.raises(ValueError, match="needs the network"):
        nl.kernels(x)


def test_wide_networks_approach_the_limit_like_inverse_sqrt_width(key):
    """RMS relative error of the empirical NTK falls like width^-1/2 (slope within 3 s.e.)."""
    x = jax.random.normal(key, (6, 3))
    w, b = 2**0.5, 0.2
    k_inf = np.asarray(nl.kernels(x, depth=2, activation="erf", w_std=w, b_std=b).ntk)
    widths = [32, 64, 128, 256, 512]
    rms, se = [], []
    for i, n in enumerate(widths):
        net = nl.mlp(3, 2, n, activation="erf", w_std=w, b_std=b)
        th = np.asarray(nl.ntk_gram_mc(net, jax.random.fold_in(key, i), 48, x))
        e2 = np.sum((th - k_inf) ** 2, (1, 2)) / np.sum(k_inf**2)
        m, s = nl.mean_and_se(e2)
        rms.append(np.sqrt(m))
        se.append(s / (2 * np.sqrt(m)))
    fit = nl.fit_power_law(widths, rms, se)
    assert abs(fit.slope + 0.5) < 3 * fit.slope_se, fit
    assert fit.slope_se < 0.1


def test_one_batch_upper_triangle_equals_the_two_batch_recursion(key):
    # kernels(x) recurses on the packed upper triangle and mirrors it; kernels(x, x) recurses
    # on every entry. Each entry's recursion involves only itself and the diagonal, so the
    # upper triangles agree to rounding. (Below the diagonal the two-batch result is not exactly
    # symmetric for quadrature maps: the rule is not symmetric in (q1, q2), an O(quadrature
    # error) difference, 1e-5 for tanh here.) Every layer repeats the same step, so five layers
    # show it as well as forty.
    x = jax.random.normal(key, (9, 5))
    upper = np.triu_indices(9)
    for act in ("relu", "erf", "tanh"):
        one = nl.kernels(x, depth=5, activation=act, w_std=1.3, b_std=0.2, all_layers=True)
        two = nl.kernels(x, x, depth=5, activation=act, w_std=1.3, b_std=0.2, all_layers=True)
        for a, b in ((one.ntk, two.ntk), (one.nngp, two.nngp)):
            np.testing.assert_array_equal(a, jnp.swapaxes(a, -1, -2))
            np.testing.assert_allclose(
                a[:, upper[0], upper[1]], b[:, upper[0], upper[1]], rtol=1e-12
            )


def _naive_extended(x, pairs, depth, w, b):
    """ReLU NTK of pairs in NumPy longdouble, recomputing q1 q2 - s^2 every layer (accurate to
    about sqrt(1.1e-19) in the angle, enough at the depths it is used at here)."""
    ld = np.longdouble
    pi = 4 * np.arctan(ld(1))
    w2, b2 = ld(w) ** 2, ld(b) ** 2
    xl = np.asarray(x).astype(ld)
    q = w2 * np.sum(xl**2, 1) / xl.shape[1] + b2
    i, j = pairs[:, 0], pairs[:, 1]
    s = w2 * np.sum(xl[i] * xl[j], 1) / xl.shape[1] + b2
    theta = s.copy()
    for _ in range(depth):
        r = np.sqrt(q[i] * q[j])
        t = np.arccos(np.clip(s / r, -1, 1))
        s = w2 * r * (np.sin(t) + (pi - t) * np.cos(t)) / (2 * pi) + b2
        theta = s + w2 * (pi - t) / (2 * pi) * theta
        q = w2 * q / 2 + b2
    return theta


@pytest.mark.parametrize(
    "w, b, depth",
    [(1.4, 0.1, 10_000), (1.2, 0.5, 3000), (2**0.5, 0.0, 2000), (1.6, 0.3, 1000)],
)
def test_relu_recursion_keeps_its_digits_where_correlations_reach_one(w, b, depth):
    # Deep ReLU recursions drive every correlation to 1. Recomputing q1 q2 - s^2 from rounded
    # values there turns a rounding eps into an angle error sqrt(eps): the previous ntklib (and
    # neural-tangents) were off by 2.5e-9 at depth 1000 and 1.3e-6 at depth 10^4 (first case).
    # ntklib carries the determinant; the reference does the same in extended precision.
    # Tolerance: float64 rounding accumulated over the layers (measured 1.2e-15 ... 1.6e-11).
    x = workloads.inputs(64, "float64")
    pairs = workloads.reference_sample(64, 200)
    ref = workloads.reference_pairs("relu", depth, x, pairs, w, b)
    got = np.asarray(
        nl.kernels(jnp.asarray(x), depth=depth, activation="relu", w_std=w, b_std=b).ntk
    )
    rel = np.abs(got[pairs[:, 0], pairs[:, 1]] - ref) / np.abs(ref)
    assert float(rel.max()) < 1e-10


def test_relu_reference_and_library_against_the_textbook_recursion():
    # the textbook arc-cosine recursion, in extended precision, where it is still accurate
    # (depth 300: its angle floor sqrt(1e-19) costs < 1e-12 here)
    x = workloads.inputs(32, "float64")
    pairs = workloads.reference_sample(32, 100)
    for w, b in ((1.4, 0.1), (2**0.5, 0.0), (1.6, 0.3)):
        textbook = _naive_extended(x, pairs, 300, w, b)
        ref = workloads.reference_pairs("relu", 300, x, pairs, w, b)
        got = np.asarray(
            nl.kernels(jnp.asarray(x), depth=300, activation="relu", w_std=w, b_std=b).ntk
        )[pairs[:, 0], pairs[:, 1]]
        assert float(np.max(np.abs(ref - textbook) / np.abs(textbook))) < 1e-11
        assert float(np.max(np.abs(got - textbook) / np.abs(textbook))) < 1e-11


def test_bad_inputs_are_refused_with_the_entry_and_overflow_names_its_layer(key):
    x = jax.random.normal(key, (3, 5))
    with pytest.raises(ValueError, match=r"shape \(batch, features\), got shape \(3,\): one input"):
        nl.kernels(jnp.ones(3), depth=2)
    with pytest.raises(ValueError, match=r"x1\[1, 2\] = nan is not finite \(1 entry"):
        nl.kernels(x.at[1, 2].set(jnp.nan), depth=2)
    with pytest.raises(ValueError, match=r"x2\[0, 0\] = inf"):
        nl.kernels(x, x.at[0, 0].set(jnp.inf), depth=2)
    # erf at w_std = 10: the NTK grows by w^2 E[erf'(u)^2], about 6, a layer: 6^375 ~ 1e300
    with pytest.warns(
        nl.infinite.OverflowWarning, match=r"range at layer l = \d+ of L \+ 1 = 1001"
    ):
        k = nl.kernels(x, depth=1000, activation="erf", w_std=10.0, b_std=0.1)
    assert not bool(jnp.all(jnp.isfinite(k.ntk)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a finite recursion says nothing
        nl.kernels(x, depth=1000, activation="erf", w_std=1.0, b_std=0.1)


def test_an_output_that_cannot_fit_is_refused_before_any_compute():
    """Every layer of 4096 x 4096 kernels at depth 10^5 would need 25 TiB: refused at once."""
    x = jnp.ones((4096, 3))
    with pytest.raises(MemoryError, match=r"depth 100000 with all_layers needs \d+\.\d GiB"):
        nl.kernels(x, depth=100_000, activation="tanh", all_layers=True)
