"""Full-batch gradient descent and gradient flow on the squared loss, shared by the chapters.

``L(theta) = 1/2 sum_i (f(x_i) - y_i)^2``; the step ``theta <- theta - lr grad L`` makes the
outputs follow ``f_{t+1} - f_t ~ -lr Theta_t (f_t - y)`` (Jacot et al. 2018, eq. (9)), so
``lr < 2 / lambda_max(Theta)`` is the stable range. A ``lax.scan`` over steps: one compile.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ntklib.empirical import ntk_gram
from ntklib.mlp import MLP, Params, apply
from ntklib.ode import rk4


class TrainResult(NamedTuple):
    """The result of :func:`gradient_descent`.

    Attributes:
        params: the parameters after the last step.
        loss: shape (steps + 1,), the loss before each step and after the last.
    """

    params: Params
    loss: jax.Array  # (steps + 1,) loss before each step and after the last


def squared_loss(net: MLP, params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
    """The squared loss ``L = 1/2 sum_i (f(x_i) - y_i)^2`` (a sum, not a mean), a scalar.

    Arguments:
        net: the architecture.
        params: its parameters.
        x: inputs, shape (B, n_0).
        y: targets, shape (B,).
    """
    return 0.5 * jnp.sum((apply(net, params, x) - y) ** 2)


class DescentResult(NamedTuple):
    """The result of :func:`descend`.

    Attributes:
        params: the parameters after the last step.
        loss: shape (steps // every + 1,), the loss at steps 0, every, 2 every, ..., steps.
        observed: ``observe(params)`` at the same steps, stacked leaf by leaf along a new
            first axis (``None`` without ``observe``).
    """

    params: Params
    loss: jax.Array  # (steps // every + 1,) the loss at steps 0, every, 2 every, ...
    observed: Any  # observe(params) at the same steps, stacked (None without observe)


def _descend(
    f: Callable[[Params, jax.Array], jax.Array],
    params: Params,
    x: jax.Array,
    y: jax.Array,
    lr: float,
    steps: int,
    every: int = 1,
    observe: Callable[[Params], Any] | None = None,
) -> DescentResult:
    """``steps`` full-batch GD steps on ``1/2 sum (f(params, x) - y)^2`` for any network
    function ``f``. ``f`` and ``observe`` are static: pass module-level functions (a new
    lambda or ``functools.partial`` per call compiles anew).

    Records the loss (and ``observe(params)``, e.g. test accuracy) every ``every`` steps and
    after the last; ``steps`` must be a multiple of ``every``. Two nested ``lax.scan``: one
    compile whatever ``steps`` is; the recorded loss is the value of the step's own
    ``value_and_grad`` (no extra forward pass).

    Arguments:
        f: the network function ``f(params, x)``, returning the same shape as ``y`` (static).
        params: the initial parameters (any pytree).
        x: the training inputs.
        y: the training targets.
        lr: the learning rate.
        steps: the number of steps (static), a multiple of ``every``.
        every: record every ``every`` steps (static), default 1.
        observe: a function of the parameters to record with the loss (static), default
            ``None`` (nothing recorded).

    Returns:
        A :class:`DescentResult`.
    """
    if every < 1 or steps % every:
        raise ValueError(f"steps ({steps}) must be a multiple of every ({every})")
    loss_fn = lambda p: 0.5 * jnp.sum((f(p, x) - y) ** 2)  # noqa: E731
    grad = jax.value_and_grad(loss_fn)
    obs = (lambda p: None) if observe is None else observe

    def step(p, _):
        loss, g = grad(p)
        return jax.tree_util.tree_map(lambda a, b: a - lr * b, p, g), loss

    def block(p, _):
        seen = obs(p)
        p, block_losses = jax.lax.scan(step, p, None, length=every)
        return p, (block_losses[0], seen)

    final, (losses, seen) = jax.lax.scan(block, params, None, length=steps // every)
    last = (loss_fn(final), obs(final))
    cat = lambda a, b: jnp.concatenate([a, b[None]])  # noqa: E731
    return DescentResult(final, cat(losses, last[0]), jax.tree_util.tree_map(cat, seen, last[1]))


descend = jax.jit(_descend, static_argnums=(0, 5, 6, 7))
descend.__doc__ = _descend.__doc__


@partial(jax.jit, static_argnums=(0, 5))
def _mlp_descent(net, params, x, y, lr, steps):
    return _descend(partial(apply, net), params, x, y, lr, steps)


def gradient_descent(
    net: MLP, params: Params, x: jax.Array, y: jax.Array, lr: float, steps: int
) -> TrainResult:
    """``steps`` full-batch GD steps at learning rate ``lr``; returns params and loss curve.

    The loss is :func:`squared_loss`, ``1/2 sum_i (f(x_i) - y_i)^2``; one compile per
    ``(net, steps)``.

    Arguments:
        net: the architecture (static).
        params: the initial parameters.
        x: training inputs, shape (B, n_0).
        y: training targets, shape (B,).
        lr: the learning rate; ``lr < 2 / lambda_max(Theta)`` is stable (module docstring).
        steps: the number of steps (static).

    Returns:
        A :class:`TrainResult`: the final parameters and the ``steps + 1`` losses.
    """
    out = _mlp_descent(net, params, x, y, lr, steps)
    return TrainResult(out.params, out.loss)


class FlowResult(NamedTuple):
    """Gradient flow observed at ``t = 0, dt*every, ...``: the result of :func:`gradient_flow`.

    Attributes:
        t: the observation times, shape (S,) with ``S = steps // every + 1``.
        f: the outputs on the tracked inputs ``x_eval``, shape (S, B).
        ntk: the empirical NTK rows ``K^(2)(x_b, x_train_c)``, shape (S, B, n).
        params: the parameters at the final time.
    """

    t: jax.Array  # (S,)
    f: jax.Array  # (S, B) outputs on the tracked inputs
    ntk: jax.Array  # (S, B, n) empirical NTK rows K^(2)(x_b, x_train_c)
    params: Params  # at the final time


@partial(jax.jit, static_argnums=(0, 6, 7))
def _flow(net, params, x_train, y, x_eval, dt, steps, every):
    n = x_train.shape[0]
    grad = jax.grad(lambda p: squared_loss(net, p, x_train, y) / n)
    rhs = lambda p: jax.tree_util.tree_map(jnp.negative, grad(p))  # noqa: E731
    observe = lambda p: (apply(net, p, x_eval), ntk_gram(net, p, x_eval, x_train))  # noqa: E731
    final, (f, k) = rk4(rhs, params, dt, steps, every, observe)
    return f, k, final


def gradient_flow(
    net: MLP,
    params: Params,
    x_train: jax.Array,
    y: jax.Array,
    dt: float,
    steps: int,
    every: int = 1,
    x_eval: jax.Array | None = None,
) -> FlowResult:
    """Gradient flow ``theta' = -grad L``, ``L = 1/(2n) sum (f(x_i) - y_i)^2``, by RK4.

    The normalization is Huang & Yau's (:mod:`ntklib.nth`), so the outputs follow
    ``f' = -(1/n) Theta_t (f - y)`` with the *moving* NTK ``Theta_t``. Records the outputs on
    ``x_eval`` (default ``x_train``; put the training inputs first) and the NTK rows
    ``Theta_t(x_eval, x_train)`` every ``every`` steps. RK4's error is ``O(dt^4)``: check it
    with :func:`ntklib.ode.rk4_error` on a run at ``dt/2``.

    Arguments:
        net: the architecture (static).
        params: the initial parameters.
        x_train: the ``n`` training inputs, shape (n, n_0).
        y: the training targets, shape (n,).
        dt: the RK4 time step.
        steps: the number of steps (static), a multiple of ``every``.
        every: observe every ``every`` steps (static), default 1.
        x_eval: the tracked inputs, shape (B, n_0), default ``None`` (``x_train``).

    Returns:
        A :class:`FlowResult`.
    """
    x_eval = x_train if x_eval is None else x_eval
    f, k, final = _flow(net, params, x_train, y, x_eval, dt, steps, every)
    return FlowResult(dt * every * jnp.arange(f.shape[0]), f, k, final)


def kernel_lr(gram: jax.Array, c: float = 1.0) -> jax.Array:
    """The learning rate ``c / lambda_max(gram)`` for a (batch of) NTK Gram matrices.

    Gradient descent on the squared loss ``1/2 |f - y|^2`` of the linearized network moves
    each eigendirection by ``(1 - lr lambda)`` per step: stable for ``c < 2``, and ``c = 1``
    removes the top direction in one step.

    Arguments:
        gram: symmetric positive semi-definite matrices, shape (..., n, n) (``eigvalsh`` reads
            the lower triangle).
        c: the fraction of ``1 / lambda_max``, default 1.0.
    """
    return c / jnp.linalg.eigvalsh(gram)[..., -1]


def kernel_descent(
    gram: jax.Array,
    y: jax.Array,
    lr: float,
    steps: int,
    every: int = 1,
    k_test: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array | None]:
    """Gradient descent of the kernel (linearized) model from ``f_0 = 0``, in closed form.

    ``f_{t+1} = f_t - lr K (f_t - y)`` on the training inputs (``gram = K = V diag(lambda)
    V^T``, ``y: (n,)`` or ``(n, k)``) gives ``f_t = K c_t`` with ``c_t = V diag((1 - (1 - lr
    lambda)^t) / lambda) V^T y`` (the gain ``(1 - (1 - lr lambda)^t) / lambda -> lr t`` where
    ``lambda -> 0``), and ``k_test c_t`` off the training set. Returns the outputs at ``t = 0,
    every, ..., steps``: training ``(S, n, ...)`` and, with ``k_test: (m, n)``, test ``(S, m,
    ...)``. Use float64: the gains of small eigenvalues are differences of numbers near 1.
    Eigenvalues below the dtype's smallest normal number (zero or negative by rounding) are
    raised to it.

    Arguments:
        gram: the training kernel ``K``, shape (n, n), symmetric.
        y: the training targets, shape (n,) or (n, k).
        lr: the learning rate.
        steps: the last step (recorded when it is a multiple of ``every``).
        every: the stride of the recorded steps, default 1.
        k_test: the test-train kernel, shape (m, n), default ``None`` (no test outputs).

    Returns:
        ``(f_train, f_test)``, ``f_train`` of shape (S, n, ...) and ``f_test`` of shape
        (S, m, ...) or ``None`` without ``k_test``, ``S = len(range(0, steps + 1, every))``.
    """
    lam, v = jnp.linalg.eigh(gram)
    lam = jnp.maximum(lam, jnp.finfo(gram.dtype).tiny)
    t = jnp.arange(0, steps + 1, every)[:, None]
    x = lr * lam[None, :]
    small = x < 1e-3  # 1 - (1 - x)^t without cancellation; x = 1 (lr = 1/lambda_max) exact
    smooth = -jnp.expm1(t * jnp.log1p(-jnp.where(small, x, 0.0)))
    gain = jnp.where(small, smooth, 1.0 - jnp.power(1.0 - x, t)) / lam  # (S, n)
    proj = jnp.einsum("ni,n...->i...", v, y)
    coef = jnp.einsum("ni,si,i...->sn...", v, gain, proj)
    f_train = jnp.einsum("mn,sn...->sm...", gram, coef)
    f_test = None if k_test is None else jnp.einsum("mn,sn...->sm...", k_test, coef)
    return f_train, f_test
