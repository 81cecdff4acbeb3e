"""Full-batch gradient descent on the squared loss, shared by the chapters.

``L(theta) = 1/2 sum_i (f(x_i) - y_i)^2``; the step ``theta <- theta - lr grad L`` makes the
outputs follow ``f_{t+1} - f_t ~ -lr Theta_t (f_t - y)`` (Jacot et al. 2018, eq. (9)), so
``lr < 2 / lambda_max(Theta)`` is the stable range. A ``lax.scan`` over steps: one compile.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ntklib.mlp import MLP, Params, apply


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
