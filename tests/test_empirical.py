"""The structured empirical NTK against the Jacobian contraction and |grad f|^2."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntklib as nl

CASES = [
    dict(activation="relu", parameterization="ntk", w_std=1.4, b_std=0.3),
    dict(activation="erf", parameterization="ntk", w_std=1.1, b_std=0.0),
    dict(activation="tanh", parameterization="standard", w_std=1.3, b_std=0.2),
    dict(activation="gelu", parameterization="standard", w_std=0.9, b_std=0.0),
    dict(activation="relu", parameterization="ntk", w_std=2**0.5, b_std=0.0, bias=False),
    dict(activation="identity", parameterization="standard", w_std=1.0, b_std=0.5, bias=False),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['activation']}-{c['parameterization']}")
def test_structured_equals_jacobian(case, key):
    net = nl.MLP(5, (7, 12, 3), **case)  # unequal widths
    params = nl.init(net, jax.random.fold_in(key, 1))
    x1 = jax.random.normal(key, (6, 5))
    x2 = jax.random.normal(jax.random.fold_in(key, 2), (4, 5))
    ref = nl.ntk_gram_jacobian(net, params, x1, x2)
    got = nl.ntk_gram(net, params, x1, x2)
    assert got.shape == (6, 4)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10 * float(jnp.abs(ref).max()))
    sym = nl.ntk_gram(net, params, x1)
    np.testing.assert_allclose(sym, sym.T, rtol=1e-12)


@pytest.mark.parametrize("case", CASES[:4], ids=lambda c: c["activation"])
def test_diagonal_is_squared_gradient_norm(case, key):
    net = nl.MLP(3, (9, 4), **case)
    params = nl.init(net, key)
    x = jax.random.normal(jax.random.fold_in(key, 5), (5, 3))
    diag = nl.ntk_diagonal(net, params, x)
    for i in range(x.shape[0]):
        g = jax.grad(lambda p, xi=x[i : i + 1]: nl.apply(net, p, xi)[0])(params)
        sq = sum(float(jnp.sum(leaf**2)) for leaf in jax.tree_util.tree_leaves(g))
        assert diag[i] == pytest.approx(sq, rel=1e-11)


def test_parameterizations_share_the_function_not_the_kernel(key):
    x = jax.random.normal(key, (4, 3))
    ntk = nl.MLP(3, (8, 8), "relu", "ntk", 1.5, 0.5)
    std = nl.MLP(3, (8, 8), "relu", "standard", 1.5, 0.5)
    # Same key: standard weights are the NTK ones times w_std / sqrt(n_l), so f agrees exactly.
    pn, ps = nl.init(ntk, key), nl.init(std, key)
    np.testing.assert_allclose(nl.apply(ntk, pn, x), nl.apply(std, ps, x), rtol=1e-12)
    assert not np.allclose(nl.ntk_gram(ntk, pn, x), nl.ntk_gram(std, ps, x))


def test_mc_is_independent_of_chunking(key):
    net = nl.mlp(2, 2, 16)
    x = jax.random.normal(key, (3, 2))
    a = nl.ntk_gram_mc(net, key, 7, x, chunk=3)
    b = nl.ntk_gram_mc(net, key, 7, x, chunk=7)
    assert a.shape == (7, 3, 3)
    np.testing.assert_allclose(a, b, rtol=1e-13)
    # network i is the one initialized from split(key, n)[i]
    k3 = jax.random.split(key, 7)[3]
    np.testing.assert_allclose(a[3], nl.ntk_gram(net, nl.init(net, k3), x), rtol=1e-13)


def test_same_key_same_numbers(key):
    net = nl.mlp(2, 3, 32, activation="erf")
    x = jax.random.normal(key, (4, 2))
    a = nl.ntk_gram(net, nl.init(net, key), x)
    b = nl.ntk_gram(net, nl.init(net, key), x)
    assert np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize(
    "kwargs, err",
    [
        (dict(in_dim=2, widths=()), ValueError),
        (dict(in_dim=2, widths=(4, 0)), ValueError),
        (dict(in_dim=0, widths=(4,)), ValueError),
        (dict(in_dim=2, widths=(4.0,)), TypeError),
        (dict(in_dim=2, widths=4), TypeError),
        (dict(in_dim=2, widths=(4,), activation="sigmoidz"), ValueError),
        (dict(in_dim=2, widths=(4,), parameterization="mup"), ValueError),
        (dict(in_dim=2, widths=(4,), w_std=float("nan")), TypeError),
        (dict(in_dim=2, widths=(4,), b_std=-1.0), ValueError),
    ],
)
def test_bad_networks_are_refused(kwargs, err):
    with pytest.raises(err):
        nl.MLP(**kwargs)


def test_mlp_helper_validates_depth():
    with pytest.raises(ValueError, match="depth"):
        nl.mlp(2, 0, 8)
