"""Full-batch gradient descent and gradient flow on the squared loss, shared by the chapters.

``L(theta) = 1/2 sum_i (f(x_i) - y_i)^2``; the step ``theta <- theta - lr grad L`` makes the
outputs follow ``f_{t+1} - f_t ~ -lr Theta_t (f_t - y)`` (Jacot et al. 2018, eq. (9)), so
``lr < 2 / lambda_max(Theta)`` is the stable range. A ``lax.scan`` over steps: one compile.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ntklib.empirical import ntk_gram
from ntklib.mlp import MLP, Params, apply
from ntklib.ode import rk4


class TrainResult(NamedTuple):
    params: Params
    loss: jax.Array  # (steps + 1,) loss before each step and after the last


def squared_loss(net: MLP, params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
    return 0.5 * jnp.sum((apply(net, params, x) - y) ** 2)


@partial(jax.jit, static_argnums=(0, 5))
def gradient_descent(
    net: MLP, params: Params, x: jax.Array, y: jax.Array, lr: float, steps: int
) -> TrainResult:
    """``steps`` full-batch GD steps at learning rate ``lr``; returns params and loss curve."""
    grad = jax.value_and_grad(partial(squared_loss, net))

    def step(p, _):
        loss, g = grad(p, x, y)
        return jax.tree_util.tree_map(lambda a, b: a - lr * b, p, g), loss

    final, losses = jax.lax.scan(step, params, None, length=steps)
    last = squared_loss(net, final, x, y)
    return TrainResult(final, jnp.concatenate([losses, last[None]]))


class FlowResult(NamedTuple):
    """Gradient flow observed at ``t = 0, dt*every, ...``."""

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
    """
    x_eval = x_train if x_eval is None else x_eval
    f, k, final = _flow(net, params, x_train, y, x_eval, dt, steps, every)
    return FlowResult(dt * every * jnp.arange(f.shape[0]), f, k, final)
