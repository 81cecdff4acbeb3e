"""Depth and width together: how far a trained network of depth L and width n is from its NTK.

A synthesis of the book's papers on one grid of networks with ``L`` hidden layers of equal
width ``n``: Hanin & Nica (2019) predict that the NTK's fluctuations at initialization and
its motion during training are governed by ``beta = L / n`` (for ReLU, ``E[K^2] / E[K]^2 ~
exp(5 beta)``; the first SGD step moves the kernel by ``~ beta`` relative to itself), where
the fixed-depth theory (Jacot et al. 2018; Huang & Yau 2020) sees only ``1 / n``.

**The task** (:func:`sphere_task`): inputs uniform on the sphere ``|x|^2 = n_0`` and the smooth
target ``y = sin(<u, x>)`` with ``u`` a uniform unit vector.

**Per network** (:func:`training_mc`, one jitted program ``vmap``-ed over networks): the
empirical NTK ``Theta_0`` on the training inputs ``X``; the learning rate
``lr = c * 2 / lambda_max(Theta_0)`` (``c = lr_fraction``, stable for ``c < 1``); ``T`` steps of
full-batch gradient descent on ``1/2 sum_i (f(x_i) - y_i)^2`` (:func:`ntklib.train.descend`);
then

    kernel change       ||Theta_T - Theta_0||_F / ||Theta_0||_F          (on X),
    linear distance     |f_T - f_lin|  / |y|                             (on the test inputs),
    infinite distance   |f_T - f_inf|  / |y|,

where ``f_lin = f_0 + Theta_0(., X) c_T(Theta_0)`` is the network linearized at
initialization and ``f_inf = f_0 + Theta_inf(., X) c_T(Theta_inf)`` kernel regression with the
infinite-width NTK (:func:`ntklib.infinite.kernels`) from the same initial function, both
trained by the same ``T`` steps at the same ``lr`` in closed form
(:func:`ntklib.train.kernel_descent` on the residual ``y - f_0(X)``). Starting both from the
network's own ``f_0`` removes the ``O(1)`` random initial function (a Gaussian process at
every width), so each distance measures a kernel's error only: ``f_lin`` differs from the
network by the kernel's motion during training, ``f_inf`` by that and by ``Theta_0 -
Theta_inf``.

**The first-order prediction of the kernel's motion** (Huang & Yau 2020, the hierarchy
truncated at ``p = 3``: ``dTheta/dt = -K^(3) . r`` with ``K^(3)`` frozen at initialization;
:mod:`ntklib.hierarchy`). To first order in the parameters' displacement, and with the
residual along the frozen-kernel path (so ``sum_t lr r_t = -c_T``, the linearized
network's coefficients, ``f_lin = f_0 + Theta_0 c_T``),

    Delta Theta(a, b) = sum_c K^(3)_0(a, b, c) c_T(c)
                      = < grad Theta_0(a, b), grad f_0(X)^T c_T >,

one ``vjp`` (the displacement ``grad f_0(X)^T c_T``) and one ``jvp`` of the Gram, never
``K^(3)`` itself. It neglects the motion of ``K^(3)`` and the residual's departure from the
linear path, both smaller by ``O(1/n)`` for a smooth activation at fixed depth; for ReLU the
``jvp`` sees no unit switch (``relu'`` is piecewise constant), so the switching part of the
motion is outside it.

**Fluctuations at initialization** (:func:`fluctuation`): the moment ratio ``E[K^2] / E[K]^2``
of the diagonal ``K(x, x)`` of real He-ReLU networks (:func:`ntklib.finite.diagonal_parts_mc`)
against its exact finite-width value (:func:`ntklib.finite.exact_moments`).

**Fits** (:func:`fit_depth_width`): ``log m = a + p log L + q log n`` by weighted least squares
over the grid, each cell weighted by the standard error of its mean ``log`` over networks; a
law in ``L / n`` alone has ``p = -q``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ntklib import _checks, finite
from ntklib.activations import get_activation
from ntklib.empirical import ntk_gram
from ntklib.infinite import kernels
from ntklib.mlp import MLP, apply, init
from ntklib.stats import mean_and_se, moment_ratio
from ntklib.sweep import map_keys
from ntklib.train import descend, kernel_descent


def sphere_task(
    key: jax.Array, n_train: int, n_test: int, in_dim: int
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Inputs uniform on the sphere ``|x|^2 = n_0`` and the smooth target ``y = sin(<u, x>)``.

    ``x = sqrt(n_0) g / |g|`` with ``g ~ N(0, I)``; ``u = v / |v|``, ``v ~ N(0, I)``, so
    ``<u, x>`` has variance 1 and the target is smooth on the scale of the inputs. The key is
    split in two: the inputs (training inputs first), then ``u``.

    Arguments:
        key: a ``jax.random`` key.
        n_train: the number of training inputs, an int ``>= 2``.
        n_test: the number of test inputs, an int ``>= 1``.
        in_dim: the input dimension ``n_0``, an int ``>= 1``.

    Returns:
        ``(x_train, y_train, x_test, y_test)`` of shapes (n_train, n_0), (n_train,),
        (n_test, n_0), (n_test,), in JAX's default float.
    """
    _checks.integer("n_train", n_train, 2)
    _checks.integer("n_test", n_test)
    _checks.integer("in_dim", in_dim)
    k_x, k_u = jax.random.split(key)
    g = jax.random.normal(k_x, (n_train + n_test, in_dim))
    x = g / jnp.linalg.norm(g, axis=1, keepdims=True) * jnp.sqrt(in_dim)
    v = jax.random.normal(k_u, (in_dim,))
    y = jnp.sin(x @ (v / jnp.linalg.norm(v)))
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _relative(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.linalg.norm(a - b) / jnp.linalg.norm(b)


def _measure(
    f,
    gram,
    params,
    x_tr,
    y_tr,
    x_te,
    y_te,
    k_inf_tr,
    k_inf_te,
    c,
    steps,
    every=None,
    first_order=True,
):
    """The module docstring's measurements of one network ``f(params, x)`` whose NTK Gram is
    ``gram(params, x1, x2)`` (``x2 = None``: ``x1`` against itself)."""
    x_all = jnp.concatenate([x_tr, x_te])
    n = x_tr.shape[0]
    k0 = gram(params, x_all, x_tr)  # (n + m, n): training rows first
    k0_tr, k0_te = k0[:n], k0[n:]
    lr = c * 2.0 / jnp.linalg.eigvalsh(k0_tr)[-1]
    f0 = f(params, x_all)
    res = descend(f, params, x_tr, y_tr, lr, steps, steps)
    k_t = gram(res.params, x_tr, None)
    f_t = f(res.params, x_te)
    resid = y_tr - f0[:n]
    # the linearized network's coefficients c_T (f_lin = f_0 + Theta_0 c_T): the rows of an
    # identity "test kernel" read them out, followed by the held-out rows
    _, lin = kernel_descent(k0_tr, resid, lr, steps, steps, jnp.concatenate([jnp.eye(n), k0_te]))
    coef, lin = lin[:, :n], lin[:, n:]
    # first order in the parameters' displacement along the linearized path,
    # d theta = grad f_0(X)^T c_T: Delta Theta = K^(3)_0 . c_T, one vjp and one jvp
    if first_order:
        _, pull = jax.vjp(lambda p: f(p, x_tr), params)
        (move,) = pull(coef[-1])
        k_pred = jax.jvp(lambda p: gram(p, x_tr, None), (params,), (move,))[1]
    lr_inf = c * 2.0 / jnp.linalg.eigvalsh(k_inf_tr)[-1]
    _, inf = kernel_descent(k_inf_tr, resid, lr_inf, steps, steps, k_inf_te)
    y_norm = jnp.linalg.norm(y_te)
    first = (
        {
            "first_order_change": jnp.linalg.norm(k_pred) / jnp.linalg.norm(k0_tr),
            "first_order_error": _relative(k_pred, k_t - k0_tr),
        }
        if first_order
        else {}
    )
    out = {
        "kernel_change": _relative(k_t, k0_tr),
        **first,
        "linear_distance": jnp.linalg.norm(f_t - f0[n:] - lin[-1]) / y_norm,
        "infinite_distance": jnp.linalg.norm(f_t - f0[n:] - inf[-1]) / y_norm,
        "loss_ratio": res.loss[-1] / res.loss[0],
        "lr": lr,
    }
    return (
        out
        if every is None
        else {
            **out,
            **_first_order_path(f, gram, params, x_tr, y_tr, k0_tr, resid, lr, steps, every),
        }
    )


def _first_order_path(f, gram, params, x_tr, y_tr, k0_tr, resid, lr, steps, every):
    """The first-order prediction along training: at ``t = every, 2 every, ..., steps`` the
    measured ``Theta_t - Theta_0`` (a second descent, recording the Gram), the predicted
    ``K^(3)_0 . c_t`` (one ``linearize`` of the Gram, applied to each displacement
    ``grad f_0(X)^T c_t``), and the size of the linearized displacement ``|c_t|``."""
    observe = lambda p: gram(p, x_tr, None)  # noqa: E731
    k_path = descend(f, params, x_tr, y_tr, lr, steps, every, observe).observed[1:]
    _, coef = kernel_descent(k0_tr, resid, lr, steps, every, jnp.eye(x_tr.shape[0]))
    coef = coef[1:]
    _, pull = jax.vjp(lambda p: f(p, x_tr), params)
    _, tangent = jax.linearize(lambda p: gram(p, x_tr, None), params)
    k_pred = jax.lax.map(lambda c: tangent(pull(c)[0]), coef)
    moved = k_path - k0_tr
    norm0 = jnp.linalg.norm(k0_tr)
    return {
        "kernel_change_path": jnp.linalg.norm(moved, axis=(1, 2)) / norm0,
        "first_order_error_path": jnp.linalg.norm(k_pred - moved, axis=(1, 2))
        / jnp.linalg.norm(moved, axis=(1, 2)),
        "coefficient_path": jnp.linalg.norm(coef, axis=1),
    }


@functools.lru_cache(maxsize=64)
def _train_fn(
    net: MLP,
    steps: int,
    every: int | None = None,
    first_order: bool = True,
    padded: MLP | None = None,
):
    """The per-network program of :func:`training_mc` (one callable per argument set, so
    :func:`ntklib.sweep.map_keys` compiles it once). With ``padded`` (a wider architecture)
    the parameters are cut from a ``padded``-wide draw (:func:`real_blocks`): the arithmetic
    of ``net``'s own shapes, the draws of the padded program."""
    f = functools.partial(apply, net)
    gram = functools.partial(ntk_gram, net)

    def one(key, *data):  # data: x_tr, y_tr, x_te, y_te, k_inf_tr, k_inf_te, c
        if padded is None:
            params = init(net, key, data[0].dtype)
        else:
            params = real_blocks(init(padded, key, data[0].dtype), net.widths)
        return _measure(f, gram, params, *data, steps, every, first_order)

    return one


def _padded_net(net: MLP, pad_to: int) -> MLP:
    """``net`` with every hidden layer ``pad_to`` wide (the shapes of the padded program)."""
    return dataclasses.replace(net, widths=(pad_to,) * net.depth)


def _padded_forward(net: MLP, params, x, widths, eps=None):
    """``(f, [a_0..a_L])`` of the network of hidden widths ``widths`` (a traced float array,
    each ``<= pad_to``) embedded in ``net``'s ``pad_to``-wide arrays: unit ``i`` of hidden
    layer ``l`` is real iff ``i < widths[l]``; a padded unit's activation is set to 0, so it
    reaches nothing, receives no gradient (``delta = 0``) and adds nothing to the NTK. Layer
    ``l`` multiplies by ``w_std / sqrt(fan-in)`` with the *real* fan-in, so the function, its
    NTK and its gradient descent are those of the unpadded network whose parameters are the
    real blocks of ``params``."""
    phi = get_activation(net.activation)
    cb = net.bias_multiplier()
    fan = jnp.concatenate([jnp.full((1,), net.in_dim, x.dtype), widths.astype(x.dtype)])
    units = jnp.arange(net.widths[0])
    a, acts = x, [x]
    for l, (w, b) in enumerate(params):
        h = net.w_std / jnp.sqrt(fan[l]) * (a @ w.T)
        if cb != 0.0:
            h = h + cb * b
        if eps is not None:
            h = h + eps[l]
        if l < net.depth:
            a = jnp.where(units < widths[l], phi(h), 0.0)
            acts.append(a)
    return h[:, 0], acts


def _padded_gram(net: MLP, params, widths, x1, x2=None):
    """The padded network's NTK Gram, layer-structured as :func:`ntklib.empirical.ntk_gram`:
    ``sum_l (delta_l delta_l'^T) (w_std^2 / fan-in_l a_l a_l'^T + c_b^2)``."""

    def signals(x):
        eps = [jnp.zeros((x.shape[0], n), x.dtype) for n in net.dims[1:]]

        def total(e):
            out, acts = _padded_forward(net, params, x, widths, e)
            return out.sum(), acts

        deltas, acts = jax.grad(total, has_aux=True)(eps)
        return acts, deltas

    a1, d1 = signals(x1)
    a2, d2 = (a1, d1) if x2 is None else signals(x2)
    fan = jnp.concatenate([jnp.full((1,), net.in_dim, x1.dtype), widths.astype(x1.dtype)])
    cb2 = net.bias_multiplier() ** 2
    out = 0.0
    for l in range(net.depth + 1):
        out = out + (d1[l] @ d2[l].T) * (net.w_std**2 / fan[l] * (a1[l] @ a2[l].T) + cb2)
    return out


@functools.lru_cache(maxsize=64)
def _padded_train_fn(net: MLP, steps: int, every: int | None = None, first_order: bool = True):
    """The per-network program of :func:`training_mc` with ``pad_to``: ``net`` is the padded
    architecture (:func:`_padded_net`), the real widths are an argument, so one compiled
    program serves every width up to ``pad_to`` at this depth."""

    def one(key, widths, *data):  # data as in _train_fn
        params = init(net, key, data[0].dtype)
        f = lambda p, x: _padded_forward(net, p, x, widths)[0]  # noqa: E731
        gram = lambda p, x1, x2: _padded_gram(net, p, widths, x1, x2)  # noqa: E731
        return _measure(f, gram, params, *data, steps, every, first_order)

    return one


def real_blocks(params, widths: Sequence[int]):
    """The parameters of the unpadded network inside padded ones: ``W_l[:n_{l+1}, :n_l]``
    and ``b_l[:n_{l+1}]`` (what :func:`training_mc` with ``pad_to`` trains, in law an
    ordinary :func:`ntklib.mlp.init` draw of the unpadded network).

    Arguments:
        params: padded parameters ``[(W_0, b_0), ..., (W_L, b_L)]``.
        widths: the real hidden widths ``n_1..n_L``.
    """
    dims = (params[0][0].shape[1], *widths, 1)
    return [(w[: dims[l + 1], : dims[l]], b[: dims[l + 1]]) for l, (w, b) in enumerate(params)]


def training_mc(
    net: MLP,
    key: jax.Array,
    n_nets: int,
    x_train: jax.Array,
    y_train: jax.Array,
    x_test: jax.Array,
    y_test: jax.Array,
    *,
    steps: int,
    lr_fraction: float = 0.5,
    chunk: int = 8,
    pad_to: int | None = None,
    masked: bool = True,
    every: int | None = None,
    first_order: bool = True,
) -> dict[str, np.ndarray]:
    """Train ``n_nets`` random networks by full-batch GD and measure the module docstring's
    kernel change and distances (to the linearized and to the infinite-width model).

    Network ``i`` is initialized from ``jax.random.split(key, n_nets)[i]``
    (:func:`ntklib.sweep.map_keys`: ``vmap``-ed in chunks, one compile per ``(net, steps)``
    and chunk size). Its learning rate is ``lr_fraction * 2 / lambda_max(Theta_0)`` of its own
    initial NTK on ``x_train``; the loss is ``1/2 sum_i (f(x_i) - y_i)^2``. Use float64
    inputs (``jax_enable_x64``): the kernel change is a difference of nearby Gram matrices.

    Arguments:
        net: the architecture, in the NTK parameterization with normal biases or none (the
            networks :func:`ntklib.infinite.kernels` takes the limit of; ``ValueError``
            otherwise), e.g. :func:`ntklib.finite.he_net` with ``bias=False``.
        key: the root key, split into one key per network.
        n_nets: the number of networks, an int ``>= 1``.
        x_train: the training inputs, shape (n, n_0), ``n >= 2``.
        y_train: the training targets, shape (n,).
        x_test: the held-out inputs, shape (m, n_0).
        y_test: their targets, shape (m,), not all zero (the distances are relative to it).
        steps: the number of gradient-descent steps ``T``, an int ``>= 1``.
        lr_fraction: ``c`` in ``lr = c * 2 / lambda_max(Theta_0)``, in (0, 1), default 0.5.
        chunk: networks ``vmap``-ed at a time, default 8.
        pad_to: default ``None`` (the program has ``net``'s shapes). An int ``>=`` every
            hidden width: the program has hidden layers ``pad_to`` wide with the units beyond
            each real width masked (:func:`_padded_forward`: exactly the unpadded network's
            function, NTK and training, on the real blocks of ``pad_to``-wide draws, see
            :func:`real_blocks`), so one compile per ``(depth, pad_to, steps)`` and chunk
            size serves every width: fewer compiles for more arithmetic. The draws differ
            from ``pad_to=None``'s (the same law). NTK parameterization only. The same key
            then gives *nested* networks at every width (each one's weights are blocks of
            the next wider one's): calls at several widths with one key are coupled, and
            differences between widths can be measured network by network.
        masked: with ``pad_to``, run the masked ``pad_to``-wide program (default ``True``)
            or, ``False``, cut the real blocks first and run a program of ``net``'s own
            shapes (one compile per width, the arithmetic of the real width; the same
            results up to rounding).
        every: default ``None``. An int dividing ``steps``: also follow the first-order
            prediction along training, at ``t = every, 2 every, ..., steps`` (a second
            descent that records the Gram, and one ``linearize`` of the Gram applied to each
            recorded displacement): ``"kernel_change_path"`` (``|Theta_t - Theta_0| /
            |Theta_0|``), ``"first_order_error_path"`` (``|Theta_t - Theta_0 - K^(3)_0 . c_t|
            / |Theta_t - Theta_0|``) and ``"coefficient_path"`` (``|c_t|``, the size of the
            linearized network's coefficients), each of shape ``(n_nets, steps // every)``.
        first_order: measure the first-order prediction at ``T`` (``"first_order_change"``,
            ``"first_order_error"``: one ``vjp`` and one ``jvp`` of the Gram, whose compile
            grows with depth), default ``True``; ``False`` leaves both out.

    Returns:
        ``{"kernel_change", "first_order_change", "first_order_error", "linear_distance",
        "infinite_distance", "loss_ratio", "lr"}``, each a NumPy array of shape (n_nets,);
        ``loss_ratio`` is the final loss over the initial one; ``first_order_*`` compare
        the measured ``Theta_T - Theta_0`` with the first-order prediction of the module
        docstring (relative size ``|Delta Theta| / |Theta_0|``, and error
        ``|Theta_T - Theta_0 - Delta Theta| / |Theta_T - Theta_0|``, Frobenius norms on X).
    """
    _checks.integer("n_nets", n_nets)
    _checks.integer("steps", steps)
    if every is not None and steps % _checks.integer("every", every):
        raise ValueError(f"every must be a positive divisor of steps={steps}, got {every}")
    c = _checks.number("lr_fraction", lr_fraction, strict=True)
    if c >= 1.0:
        raise ValueError(f"lr_fraction must be < 1 (stable gradient descent), got {c}")
    x_tr, x_te = jnp.asarray(x_train), jnp.asarray(x_test)
    y_tr, y_te = jnp.asarray(y_train, x_tr.dtype), jnp.asarray(y_test, x_tr.dtype)
    if x_tr.ndim != 2 or x_te.ndim != 2 or x_tr.shape[1] != net.in_dim != x_te.shape[1]:
        raise ValueError(
            f"x_train and x_test must have shape (batch, {net.in_dim}), got {x_tr.shape} "
            f"and {x_te.shape}"
        )
    if x_tr.shape[0] < 2 or y_tr.shape != (x_tr.shape[0],) or y_te.shape != (x_te.shape[0],):
        raise ValueError(
            f"need n >= 2 training inputs and one target per input: shapes {x_tr.shape}, "
            f"{y_tr.shape}, {x_te.shape}, {y_te.shape}"
        )
    if not bool(jnp.any(y_te != 0)):
        raise ValueError("y_test is all zero: the distances are relative to |y_test|")
    k_tr = kernels(x_tr, net=net).ntk
    k_te = kernels(x_te, x_tr, net=net).ntk
    args = (x_tr, y_tr, x_te, y_te, k_tr, k_te, jnp.asarray(c, x_tr.dtype))
    if pad_to is None:
        return map_keys(
            _train_fn(net, steps, every, first_order), key, n_nets, args=args, chunk=chunk
        )
    _checks.integer("pad_to", pad_to)
    if pad_to < max(net.widths) or net.parameterization != "ntk":
        raise ValueError(
            f"pad_to={pad_to} must be >= every hidden width {net.widths}, and the network in "
            f"the NTK parameterization (got {net.parameterization!r})"
        )
    if not masked:
        fn = _train_fn(net, steps, every, first_order, _padded_net(net, pad_to))
        return map_keys(fn, key, n_nets, args=args, chunk=chunk)
    widths = jnp.asarray(net.widths, x_tr.dtype)
    return map_keys(
        _padded_train_fn(_padded_net(net, pad_to), steps, every, first_order),
        key,
        n_nets,
        args=(widths, *args),
        chunk=chunk,
    )


class Fluctuation(NamedTuple):
    """The NTK's fluctuation at one input: the result of :func:`fluctuation`.

    Attributes:
        ratio: the measured ``E[K^2] / E[K]^2`` over the networks.
        se: its delta-method standard error (:func:`ntklib.stats.moment_ratio`).
        exact: the exact finite-width value (:func:`ntklib.finite.exact_moments`).
        z: ``(ratio - exact) / se``.
        needed: the networks needed for the relative error ``rel_err`` of the second moment
            (:func:`ntklib.finite.networks_needed`): below it the standard error itself is
            unreliable (it needs the fourth moment of a heavy-tailed ``K``).
    """

    ratio: float
    se: float
    exact: float
    z: float
    needed: float


def fluctuation(
    net: MLP,
    key: jax.Array,
    n_nets: int,
    x: jax.Array,
    *,
    rel_err: float = 0.1,
    chunk: int | None = None,
    method: str = "networks",
    pad_to: int | None = None,
) -> Fluctuation:
    """``E[K^2] / E[K]^2`` of the diagonal NTK ``K(x, x)`` of ``n_nets`` He-ReLU networks,
    measured and exact (Hanin & Nica 2019, Thm. 1; the exact value of
    :func:`ntklib.finite.exact_moments`, ``~ exp(5 L / n)`` for ``L`` equal widths ``n``).

    ``K = K_w + K_b`` (``K_w`` alone for a network without biases). The ratio is scale free,
    so the paper's ``K`` and ntklib's ``2 K`` give the same number. Network ``i`` is
    initialized from ``jax.random.split(key, n_nets)[i]``.

    Arguments:
        net: the network of :func:`ntklib.finite.he_net` (anything else: ``ValueError``).
        key: the root key, split into one key per network.
        n_nets: the number of networks, an int ``>= 2``.
        x: the one input, ``n_0`` numbers (reshaped to (1, n_0)), in the parameters' dtype.
        rel_err: the relative error of the second moment for which ``needed`` is computed
            (``> 0``), default 0.1.
        chunk: networks ``vmap``-ed at a time, default ``None``: for ``"networks"`` as many
            as hold ``2^25`` weights in all (256 MiB in float64), at most 512; for
            ``"chain"`` 4096.
        method: ``"networks"`` (default): real networks, weight matrices drawn
            (:func:`ntklib.finite.diagonal_parts_mc`, one compile per architecture);
            ``"chain"``: the scalar chain of :func:`ntklib.finite.sample_diagonal`, the same
            joint law of ``(K_w, K_b)`` (biases are zero at initialization, so ``K_w`` is
            that of the network without biases too) in ``O(L)`` work per network and one
            compile for every width and every depth up to ``pad_to``.
        pad_to: for ``"chain"``, the padded number of hidden layers (``>= L``), default
            ``None`` (the next power of two); ignored by ``"networks"``.

    Returns:
        A :class:`Fluctuation`.
    """
    _checks.integer("n_nets", n_nets, 2)
    rel_err = _checks.number("rel_err", rel_err, strict=True)
    _checks.choice("method", method, ("networks", "chain"))
    x = jnp.asarray(x).reshape(1, net.in_dim)
    x2 = float(jnp.sum(x**2))
    if method == "chain":
        finite._check_he(net)
        s = finite.sample_diagonal(
            key, net.in_dim, net.widths, n_nets, x_norm2=x2, chunk=chunk or 4096, pad_to=pad_to
        )
        k = s["K"] if net.bias else s["K_w"]
    else:
        if chunk is None:
            weights = sum(a * b for a, b in zip(net.dims[:-1], net.dims[1:], strict=True))
            chunk = min(512, max(1, 2**25 // weights))
        kw, kb = finite.diagonal_parts_mc(net, key, n_nets, x, chunk=chunk)
        k = (kw + kb)[:, 0]
    part = "K" if net.bias else "K_w"
    r, se = moment_ratio(k)
    m1, m2 = finite.exact_moments(net.in_dim, net.widths, x2)[part]
    exact = m2 / m1**2
    z = (r - exact) / se if se > 0 else float("inf")
    return Fluctuation(r, se, exact, float(z), finite.networks_needed(net.widths, rel_err))


class WidthExponent(NamedTuple):
    """The exponent of ``n`` of a quantity at the widest widths, with a truncation estimate:
    the result of :func:`width_exponent`.

    Attributes:
        local: the local exponents ``s_k`` between successive widths, shape (K - 1,).
        local_se: their standard errors, shape (K - 1,).
        exponent: ``s_{K-1}``, the exponent between the two widest widths.
        se: its standard error.
        truncation: ``|s_{K-1} - s_{K-2}|``, the estimate of the remaining pre-asymptotic
            deviation of ``exponent`` (see :func:`width_exponent`).
        truncation_se: the standard error of ``s_{K-1} - s_{K-2}``.
    """

    local: np.ndarray
    local_se: np.ndarray
    exponent: float
    se: float
    truncation: float
    truncation_se: float


def width_exponent(widths: Sequence[int], samples) -> WidthExponent:
    """Local exponents of ``n`` from coupled samples, and a Richardson-style truncation bound.

    ``samples[k, i]`` is the quantity of network ``i`` at width ``n_k`` (the same ``i``
    across widths: nested networks, :func:`training_mc` with one key and ``pad_to``). The
    local exponent between successive widths is the mean over networks of

        s_k^(i) = (log samples[k+1, i] - log samples[k, i]) / log(n_{k+1} / n_k),

    its standard error that of the mean (paired: the coupling cancels in the difference).
    If the quantity is ``A n^p (1 + c / n + ...)``, the local exponent approaches ``p`` with
    a deviation ``delta_k ~ c' / m_k``, ``m_k = sqrt(n_k n_{k+1})``; with ``rho = m_{K-1} /
    m_{K-2}`` the remaining deviation at the widest pair is

        delta_{K-1} = (s_{K-1} - s_{K-2}) / (rho - 1)     (``truncation``, its absolute value;
                                                           ``rho = 2`` for widths doubling):

    the last change of the local exponent, one Richardson step. Its own standard error is
    returned (paired, network by network, divided by ``rho - 1`` as well).

    Arguments:
        widths: at least 3 increasing positive widths.
        samples: positive finite samples, shape ``(len(widths), k)``, ``k >= 2``, row ``k``
            at ``widths[k]``, column ``i`` one network across widths.

    Returns:
        A :class:`WidthExponent`.
    """
    s = np.asarray(samples, float)
    n = np.asarray(widths, float)
    if n.ndim != 1 or n.size < 3 or np.any(np.diff(n) <= 0) or np.any(n <= 0):
        raise ValueError(f"need at least 3 increasing positive widths, got {widths}")
    if s.ndim != 2 or s.shape[0] != n.size or s.shape[1] < 2:
        raise ValueError(f"samples must have shape ({n.size}, k >= 2), got {s.shape}")
    if not np.all(np.isfinite(s) & (s > 0)):
        raise ValueError("samples must be positive and finite")
    per = np.diff(np.log(s), axis=0) / np.diff(np.log(n))[:, None]  # (K - 1, k)
    local, local_se = mean_and_se(per, axis=1)
    mid = np.log(n[:-1] * n[1:]) / 2
    rho = np.exp(mid[-1] - mid[-2])
    dd, dd_se = mean_and_se((per[-1] - per[-2]) / (rho - 1.0))
    return WidthExponent(
        np.asarray(local),
        np.asarray(local_se),
        float(local[-1]),
        float(local_se[-1]),
        float(abs(dd)),
        float(dd_se),
    )


class DepthWidthFit(NamedTuple):
    """``log m = intercept + p log L + q log n``: the result of :func:`fit_depth_width`.

    Attributes:
        depth_exponent: ``p``.
        depth_se: its standard error.
        width_exponent: ``q``.
        width_se: its standard error.
        intercept: the fitted intercept.
        ratio: ``-p / q``, 1 for a law in ``L / n`` alone, 0 for a law in ``n`` alone.
        ratio_se: its delta-method standard error (with the covariance of ``p`` and ``q``).
        chi2_dof: the weighted residual ``chi^2`` per degree of freedom (the standard
            errors are inflated by its square root when it exceeds 1, never deflated).
    """

    depth_exponent: float
    depth_se: float
    width_exponent: float
    width_se: float
    intercept: float
    ratio: float
    ratio_se: float
    chi2_dof: float


def fit_depth_width(depths: Sequence[int], widths: Sequence[int], samples) -> DepthWidthFit:
    """Weighted least squares of ``mean_k log samples[i, j, k]`` on ``(1, log L_i, log n_j)``.

    Each cell ``(i, j)`` is weighted by ``1 / se^2``, ``se`` the standard error of its mean
    ``log`` over the ``k`` samples (e.g. networks); the parameters' covariance is
    ``(A^T W A)^-1`` times ``max(1, chi^2 / dof)``, ``dof = cells - 3`` (as
    :func:`ntklib.stats.fit_line`: inflated when the cells scatter more than their errors
    allow, never deflated). ``var(-p/q) = (var p + r^2 var q + 2 r cov(p, q)) / q^2`` with
    ``r = -p/q`` (delta method).

    Arguments:
        depths: the depths ``L_i``, positive, at least 2 distinct.
        widths: the widths ``n_j``, positive, at least 2 distinct.
        samples: positive finite samples of shape ``(len(depths), len(widths), k)``,
            ``k >= 2``, and at least 4 cells.

    Returns:
        A :class:`DepthWidthFit`.
    """
    s = np.asarray(samples, float)
    L, n = np.asarray(depths, float), np.asarray(widths, float)
    if s.ndim != 3 or s.shape[:2] != (L.size, n.size) or s.shape[2] < 2:
        raise ValueError(f"samples must have shape ({L.size}, {n.size}, k >= 2), got {s.shape}")
    if len(set(L)) < 2 or len(set(n)) < 2 or np.any(L <= 0) or np.any(n <= 0):
        raise ValueError("need at least 2 distinct positive depths and 2 distinct widths")
    if not np.all(np.isfinite(s) & (s > 0)):
        raise ValueError("samples must be positive and finite")
    mean, se = mean_and_se(np.log(s), axis=2)
    ll, nn = np.meshgrid(np.log(L), np.log(n), indexing="ij")
    a = np.stack([np.ones(ll.size), ll.ravel(), nn.ravel()], 1)
    w = 1.0 / se.ravel() ** 2
    cov = np.linalg.inv(a.T @ (w[:, None] * a))
    coef = cov @ (a.T @ (w * mean.ravel()))
    dof = ll.size - 3
    chi2_dof = float(np.sum(w * (mean.ravel() - a @ coef) ** 2) / dof) if dof > 0 else 0.0
    cov = cov * max(1.0, chi2_dof)
    p, q = coef[1], coef[2]
    r = -p / q
    var_r = (cov[1, 1] + r * r * cov[2, 2] + 2 * r * cov[1, 2]) / q**2
    return DepthWidthFit(
        float(p),
        float(np.sqrt(cov[1, 1])),
        float(q),
        float(np.sqrt(cov[2, 2])),
        float(coef[0]),
        float(r),
        float(np.sqrt(max(var_r, 0.0))),
        chi2_dof,
    )


def condition_numbers(x: jax.Array, net: MLP) -> np.ndarray:
    """``lambda_max / lambda_min`` of the infinite-width NTK Gram on ``x`` after each depth
    ``l = 1..L`` of ``net``'s hidden layers (one recursion, :func:`ntklib.infinite.kernels`
    with ``all_layers``; :func:`ntklib.depth.gram_spectrum`'s ratio).

    Arguments:
        x: the inputs, shape (B, n_0), ``B >= 2`` distinct points; use float64.
        net: the network whose limit is taken (as :func:`training_mc`); its depth ``L`` is
            the deepest point.

    Returns:
        The condition numbers at depths ``1..L``, a NumPy array of shape (L,).
    """
    k = kernels(x, net=net, all_layers=True).ntk[1:]  # Theta^{l+1}: l hidden layers, l = 1..L
    ev = np.linalg.eigvalsh(np.asarray(k))
    return ev[:, -1] / ev[:, 0]
