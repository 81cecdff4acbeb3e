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
    ref = nl.ntk(net, params, x1, x2, implementation="jacobian")
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
        (dict(in_dim=2, widths=(4,), w_std=float("nan")), ValueError),
        (dict(in_dim=2, widths=(4,), w_std="1"), TypeError),
        (dict(in_dim=2, widths=(4,), b_std=-1.0), ValueError),
    ],
)
def test_bad_networks_are_refused(kwargs, err):
    with pytest.raises(err):
        nl.MLP(**kwargs)


def test_mlp_helper_validates_depth():
    with pytest.raises(ValueError, match="depth"):
        nl.mlp(2, 0, 8)


def test_one_entry_point_every_route_agrees(key):
    """nl.ntk: structured (auto for an MLP), per-input gradients and the batch Jacobian."""
    net = nl.MLP(3, (9, 5), activation="tanh", w_std=1.2, b_std=0.4)
    params = nl.init(net, key)
    x1, x2 = jax.random.normal(key, (5, 3)), jax.random.normal(jax.random.fold_in(key, 1), (4, 3))
    auto = nl.ntk(net, params, x1, x2)
    np.testing.assert_array_equal(auto, nl.ntk_gram(net, params, x1, x2))
    for impl in ("gradients", "jacobian"):
        np.testing.assert_allclose(
            nl.ntk(net, params, x1, x2, implementation=impl), auto, rtol=1e-11
        )
    # any apply function, with a vector output chosen by `output`
    apply2 = lambda p, x: jnp.stack([nl.apply(net, p, x), 2.0 * nl.apply(net, p, x)], axis=1)  # noqa: E731
    for impl in ("auto", "gradients", "jacobian"):
        got = nl.ntk(apply2, params, x1, x2, output=1, implementation=impl)
        np.testing.assert_allclose(got, 4.0 * auto, rtol=1e-11)
    np.testing.assert_allclose(
        nl.ntk(net, params, x1, implementation="gradients"),
        nl.ntk_gram(net, params, x1),
        rtol=1e-11,
    )


def test_entry_point_refuses_bad_routes(key):
    net = nl.MLP(3, (4,))
    params = nl.init(net, key)
    x = jnp.ones((2, 3))
    with pytest.raises(ValueError, match="implementation"):
        nl.ntk(net, params, x, implementation="fast")
    with pytest.raises(ValueError, match="needs an MLP"):
        nl.ntk(lambda p, x: nl.apply(net, p, x), params, x, implementation="structured")
    with pytest.raises(ValueError, match="one output"):
        nl.ntk(net, params, x, output=0)


def test_named_and_grid_keys(key):
    ks = nl.named_keys(key, ["a", "b", "c"])
    np.testing.assert_array_equal(jnp.stack(list(ks.values())), jax.random.split(key, 3))
    assert list(nl.named_keys(0, ["a"])) == ["a"]
    np.testing.assert_array_equal(nl.grid_key(key, 3, 7), jax.random.fold_in(key, 307))
    np.testing.assert_array_equal(nl.grid_key(key, 1007), jax.random.fold_in(key, 1007))
    with pytest.raises(ValueError, match="distinct"):
        nl.named_keys(key, ["a", "a"])
    with pytest.raises(ValueError, match="base"):
        nl.grid_key(key, 1, 100)
    with pytest.raises(TypeError):
        nl.grid_key(key, 1.0)


@pytest.mark.parametrize(
    "call, err",
    [
        (lambda: nl.mlp(2, 3, 0), ValueError),
        (lambda: nl.mlp(2, 3.0, 4), TypeError),
        (lambda: nl.MLP(2, (4,), b_std=float("inf")), ValueError),
        (lambda: nl.kernels(jnp.ones((2, 2)), depth=True), TypeError),
        (lambda: nl.narrow.narrow_mlp(2, 1, 3, "1"), TypeError),
    ],
)
def test_one_input_convention(call, err):
    """Wrong kind: TypeError; right kind, out of range: ValueError (ntklib._checks)."""
    with pytest.raises(err):
        call()
