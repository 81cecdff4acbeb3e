"""ntklib.depth_width: the task, the trained-network measurements against a direct computation,
the fluctuation against the exact moments, the two-variable fit, the condition numbers, and
refusals before compute. Small sizes, float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntklib as nl
from ntklib import depth_width as dw
from ntklib import finite

jax.config.update("jax_enable_x64", True)
KEY = jax.random.PRNGKey(3)


def _task(n_train=6, n_test=5, in_dim=3):
    return dw.sphere_task(KEY, n_train, n_test, in_dim)


def test_sphere_task_is_on_the_sphere_and_reproducible():
    x_tr, y_tr, x_te, y_te = _task()
    assert x_tr.shape == (6, 3) and x_te.shape == (5, 3) and y_tr.shape == (6,)
    np.testing.assert_allclose(jnp.sum(x_tr**2, 1), 3.0, rtol=1e-12)
    np.testing.assert_allclose(jnp.sum(x_te**2, 1), 3.0, rtol=1e-12)
    again = _task()
    assert all(np.array_equal(a, b) for a, b in zip(_task(), again, strict=True))
    # the target is sin of one direction: y = sin(x u) for a unit u, so |y| <= 1 and it is
    # not constant
    assert float(jnp.max(jnp.abs(y_tr))) <= 1.0 and float(jnp.std(y_tr)) > 0.05
    with pytest.raises(ValueError):
        dw.sphere_task(KEY, 1, 5, 3)
    with pytest.raises(TypeError):
        dw.sphere_task(KEY, 4, 5, 2.0)


def _direct(net, key, x_tr, y_tr, x_te, y_te, steps, c):
    """The measurements of one network, computed step by step with the public API."""
    params = nl.init(net, key)
    k0 = nl.ntk_gram(net, params, x_tr)
    lr = c * 2.0 / float(jnp.linalg.eigvalsh(k0)[-1])
    f0_tr, f0_te = nl.apply(net, params, x_tr), nl.apply(net, params, x_te)
    p = params
    for _ in range(steps):
        g = jax.grad(lambda q: 0.5 * jnp.sum((nl.apply(net, q, x_tr) - y_tr) ** 2))(p)
        p = jax.tree_util.tree_map(lambda a, b: a - lr * b, p, g)
    kt = nl.ntk_gram(net, p, x_tr)
    ft = nl.apply(net, p, x_te)
    # the linearized network, stepped explicitly: f <- f - lr K (f - y)
    f_lin_tr, f_lin_te = f0_tr, f0_te
    k0_te = nl.ntk_gram(net, params, x_te, x_tr)
    kinf = nl.kernels(x_tr, net=net).ntk
    kinf_te = nl.kernels(x_te, x_tr, net=net).ntk
    lr_inf = c * 2.0 / float(jnp.linalg.eigvalsh(kinf)[-1])
    f_inf_tr, f_inf_te = f0_tr, f0_te
    for _ in range(steps):
        r = f_lin_tr - y_tr
        f_lin_tr, f_lin_te = f_lin_tr - lr * k0 @ r, f_lin_te - lr * k0_te @ r
        r = f_inf_tr - y_tr
        f_inf_tr, f_inf_te = f_inf_tr - lr_inf * kinf @ r, f_inf_te - lr_inf * kinf_te @ r
    # the first-order prediction: K^(3) at initialization (ntklib.hierarchy) contracted with
    # the linearized network's coefficients, stepped explicitly: c <- c + lr (y - f_0 - K c)
    k3 = nl.kernel_hierarchy(net, params, x_tr, order=3)[1]
    coef = jnp.zeros_like(y_tr)
    for _ in range(steps):
        coef = coef + lr * (y_tr - f0_tr - k0 @ coef)
    pred = jnp.einsum("abc,c->ab", k3, coef)
    yn = jnp.linalg.norm(y_te)
    return {
        "first_order_change": jnp.linalg.norm(pred) / jnp.linalg.norm(k0),
        "first_order_error": jnp.linalg.norm(kt - k0 - pred) / jnp.linalg.norm(kt - k0),
        "kernel_change": jnp.linalg.norm(kt - k0) / jnp.linalg.norm(k0),
        "linear_distance": jnp.linalg.norm(ft - f_lin_te) / yn,
        "infinite_distance": jnp.linalg.norm(ft - f_inf_te) / yn,
        "lr": lr,
    }


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_training_mc_matches_a_direct_computation(activation):
    x_tr, y_tr, x_te, y_te = _task()
    if activation == "relu":
        net = finite.he_net(3, (16, 16), bias=False)
    else:
        net = nl.mlp(3, 2, 16, activation="tanh", w_std=1.2, b_std=0.1)
    out = dw.training_mc(net, KEY, 3, x_tr, y_tr, x_te, y_te, steps=7, lr_fraction=0.4, chunk=2)
    assert all(v.shape == (3,) for v in out.values())
    for i, k in enumerate(jax.random.split(KEY, 3)):  # network i is split(key, n)[i]
        ref = _direct(net, k, x_tr, y_tr, x_te, y_te, 7, 0.4)
        for name, v in ref.items():
            np.testing.assert_allclose(out[name][i], v, rtol=1e-8, err_msg=name)
    assert np.all(out["loss_ratio"] < 1.0)  # training lowered every loss


def test_first_order_path_is_the_measurement_at_each_recorded_step():
    """With ``every``, entry k of each path is what a run of (k + 1) * every steps measures at
    its end (the step-by-step public-API computation), and |c_t| grows from 0."""
    x_tr, y_tr, x_te, y_te = _task()
    net = nl.mlp(3, 2, 16, activation="tanh", w_std=1.2, b_std=0.1)
    out = dw.training_mc(net, KEY, 2, x_tr, y_tr, x_te, y_te, steps=4, lr_fraction=0.05,
                         every=2)  # fmt: skip
    assert out["first_order_error_path"].shape == (2, 2) == out["coefficient_path"].shape
    for i, k in enumerate(jax.random.split(KEY, 2)):
        for j, t in enumerate((2, 4)):
            ref = _direct(net, k, x_tr, y_tr, x_te, y_te, t, 0.05)
            for name in ("first_order_error", "kernel_change"):
                np.testing.assert_allclose(out[f"{name}_path"][i, j], ref[name], rtol=1e-8)
    c = out["coefficient_path"]
    assert np.all(c[:, 0] > 0) and np.all(c[:, 1] > c[:, 0])
    # the path's last entry is the end-of-training measurement of the same run
    np.testing.assert_allclose(out["first_order_error_path"][:, -1], out["first_order_error"],
                               rtol=1e-10)  # fmt: skip
    with pytest.raises(ValueError, match="divisor"):
        dw.training_mc(net, KEY, 2, x_tr, y_tr, x_te, y_te, steps=5, every=2)
    # first_order=False leaves the prediction out and every other measurement as it was
    plain = dw.training_mc(net, KEY, 2, x_tr, y_tr, x_te, y_te, steps=4, lr_fraction=0.05,
                           first_order=False)  # fmt: skip
    assert set(plain) == set(out) - {"first_order_change", "first_order_error"} - {
        k for k in out if k.endswith("_path")
    }
    for k, v in plain.items():
        np.testing.assert_allclose(v, out[k], rtol=1e-12, err_msg=k)


def test_the_kernel_moves_less_in_wider_networks():
    """The measurement responds to the width: 16x the width, a much smaller motion."""
    x_tr, y_tr, x_te, y_te = _task()
    small, wide = (
        dw.training_mc(finite.he_net(3, (n,) * 2, bias=False), KEY, 4, x_tr, y_tr, x_te, y_te,
                       steps=20)["kernel_change"]
        for n in (16, 256)
    )  # fmt: skip
    assert np.exp(np.mean(np.log(wide))) < 0.4 * np.exp(np.mean(np.log(small)))


def test_training_mc_refuses_bad_input_before_compute():
    x_tr, y_tr, x_te, y_te = _task()
    net = finite.he_net(3, (8,), bias=False)
    args = (net, KEY, 2, x_tr, y_tr, x_te, y_te)
    with pytest.raises(ValueError, match="lr_fraction"):
        dw.training_mc(*args, steps=3, lr_fraction=1.0)
    with pytest.raises(ValueError, match="lr_fraction"):
        dw.training_mc(*args, steps=3, lr_fraction=0.0)
    with pytest.raises(TypeError, match="steps"):
        dw.training_mc(*args, steps=2.5)
    with pytest.raises(ValueError, match="shape"):
        dw.training_mc(net, KEY, 2, x_tr[:, :2], y_tr, x_te, y_te, steps=3)
    with pytest.raises(ValueError, match="target"):
        dw.training_mc(net, KEY, 2, x_tr, y_tr[:3], x_te, y_te, steps=3)
    with pytest.raises(ValueError, match="all zero"):
        dw.training_mc(net, KEY, 2, x_tr, y_tr, x_te, 0 * y_te, steps=3)
    with pytest.raises(ValueError, match="normal biases"):  # no infinite-width limit of this one
        dw.training_mc(finite.he_net(3, (8,)), KEY, 2, x_tr, y_tr, x_te, y_te, steps=3)


def test_fluctuation_agrees_with_the_exact_moments_and_not_with_one():
    net = finite.he_net(3, (16, 16, 16), bias=False)
    x = jnp.ones(3)
    fl = dw.fluctuation(net, KEY, 4000, x)
    m1, m2 = finite.exact_moments(3, (16, 16, 16), 3.0)["K_w"]
    assert fl.exact == pytest.approx(m2 / m1**2, rel=1e-12)
    assert fl.needed < 4000 and abs(fl.z) < nl.bonferroni_z(1)
    assert (fl.ratio - 1.0) / fl.se > 5  # at beta = 3/16 the kernel is far from deterministic
    with_bias = dw.fluctuation(finite.he_net(3, (16, 16, 16)), KEY, 4000, x)
    m1, m2 = finite.exact_moments(3, (16, 16, 16), 3.0)["K"]
    assert with_bias.exact == pytest.approx(m2 / m1**2, rel=1e-12)
    with pytest.raises(ValueError, match="he_net"):
        dw.fluctuation(nl.mlp(3, 2, 8), KEY, 100, x)
    with pytest.raises(ValueError):
        dw.fluctuation(net, KEY, 1, x)


def test_fit_depth_width_recovers_known_exponents():
    L, n = np.array([2, 4, 8]), np.array([32, 64, 128, 256])
    noise = np.asarray(jax.random.normal(KEY, (3, 4, 40))) * 0.3
    p, q = 0.7, -0.4
    samples = np.exp(1.5 + p * np.log(L)[:, None, None] + q * np.log(n)[None, :, None] + noise)
    fit = dw.fit_depth_width(L, n, samples)
    assert abs(fit.depth_exponent - p) < 4 * fit.depth_se and fit.depth_se < 0.1
    assert abs(fit.width_exponent - q) < 4 * fit.width_se and fit.width_se < 0.1
    assert abs(fit.ratio - p / -q) < 4 * fit.ratio_se
    # any function of L / n gives -p/q = 1 (here a curved one), a function of n alone 0
    beta = (L[:, None] / n[None, :])[..., None]
    curved = dw.fit_depth_width(L, n, beta**0.6 * np.exp(5 * beta) * np.exp(0.01 * noise))
    assert abs(curved.ratio - 1.0) < 4 * curved.ratio_se
    width_only = dw.fit_depth_width(L, n, np.exp(0.01 * noise) / n[None, :, None])
    assert abs(width_only.ratio) < 4 * width_only.ratio_se and width_only.ratio_se < 0.05
    with pytest.raises(ValueError, match="shape"):
        dw.fit_depth_width(L, n, samples[:, :3])
    with pytest.raises(ValueError, match="positive"):
        dw.fit_depth_width(L, n, -samples)
    with pytest.raises(ValueError, match="distinct"):
        dw.fit_depth_width([2, 2, 2], n, samples)


def test_condition_numbers_are_those_of_each_depths_kernel():
    x_tr = _task()[0]
    net = finite.he_net(3, (16,) * 5, bias=False)
    cond = dw.condition_numbers(x_tr, net)
    assert cond.shape == (5,)
    for l in (1, 3, 5):
        ev = np.linalg.eigvalsh(np.asarray(nl.kernels(x_tr, depth=l, w_std=np.sqrt(2.0)).ntk))
        assert cond[l - 1] == pytest.approx(ev[-1] / ev[0], rel=1e-9)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_padded_training_is_the_unpadded_network_on_the_real_blocks(activation, monkeypatch):
    """With ``pad_to`` the masked program (one compile for every width) and the cut program
    give the measurements of the ordinary network whose parameters are the real blocks of a
    ``pad_to``-wide draw; the same key nests the networks of different widths."""
    x_tr, y_tr, x_te, y_te = _task()
    if activation == "relu":
        net = finite.he_net(3, (5, 7), bias=False)
    else:
        net = nl.mlp(3, 2, 6, activation="tanh", w_std=1.2, b_std=0.1)
    args = (net, KEY, 3, x_tr, y_tr, x_te, y_te)
    masked = dw.training_mc(*args, steps=7, lr_fraction=0.4, chunk=2, pad_to=9)
    cut = dw.training_mc(*args, steps=7, lr_fraction=0.4, chunk=2, pad_to=9, masked=False)
    padded = dw.MLP(**{**net.__dict__, "widths": (9, 9)})
    for i, k in enumerate(jax.random.split(KEY, 3)):
        blocks = dw.real_blocks(nl.init(padded, k), net.widths)
        assert [w.shape for w, _ in blocks] == [(net.widths[0], 3), (net.widths[1], net.widths[0]), (1, net.widths[1])]  # fmt: skip
        monkeypatch.setattr(nl, "init", lambda *a, p=blocks, **kw: p)
        ref = _direct(net, k, x_tr, y_tr, x_te, y_te, 7, 0.4)
        monkeypatch.undo()
        for name, v in ref.items():
            np.testing.assert_allclose(masked[name][i], v, rtol=1e-9, err_msg=name)
            np.testing.assert_allclose(cut[name][i], v, rtol=1e-9, err_msg=name)
    with pytest.raises(ValueError, match="pad_to"):
        dw.training_mc(*args, steps=3, pad_to=4)


def test_width_exponent_recovers_the_exponent_and_its_truncation():
    n = np.array([32, 64, 128, 256])
    noise = np.asarray(jax.random.normal(KEY, (1, 50))) * 0.3  # one factor per network
    c = 2.0
    samples = np.exp(noise) * n[:, None] ** -1.0 * (1 + c / n[:, None])
    we = dw.width_exponent(n, samples)
    # exact local exponents of n^-1 (1 + c/n): the noise cancels network by network
    exact = np.diff(np.log(n**-1.0 * (1 + c / n))) / np.log(2.0)
    np.testing.assert_allclose(we.local, exact, rtol=1e-12)
    assert we.se < 1e-12 and we.exponent == pytest.approx(exact[-1])
    # the Richardson step: the truncation estimate is close to the remaining deviation
    assert we.truncation == pytest.approx(abs(exact[-1] + 1.0), rel=0.05)
    noisy = dw.width_exponent(
        n, samples * np.exp(0.1 * np.asarray(jax.random.normal(KEY, (4, 50))))
    )
    assert noisy.se > 0 and abs(noisy.exponent - exact[-1]) < 4 * noisy.se
    with pytest.raises(ValueError, match="3 increasing"):
        dw.width_exponent(n[:2], samples[:2])
    with pytest.raises(ValueError, match="shape"):
        dw.width_exponent(n, samples[:, :1])
    with pytest.raises(ValueError, match="positive"):
        dw.width_exponent(n, -samples)


def test_fluctuation_by_the_chain_agrees_with_the_exact_moments():
    net = finite.he_net(3, (16, 16, 16), bias=False)
    x = jnp.ones(3)
    fl = dw.fluctuation(net, KEY, 2**14, x, method="chain", chunk=1024, pad_to=4)
    assert abs(fl.z) < nl.bonferroni_z(1) and (fl.ratio - 1.0) / fl.se > 10
    with pytest.raises(ValueError, match="method"):
        dw.fluctuation(net, KEY, 100, x, method="exact")
