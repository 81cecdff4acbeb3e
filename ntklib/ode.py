"""Fixed-step classical Runge-Kutta (RK4) for pytree-valued ODEs, as one ``lax.scan``.

``y' = F(y)`` (autonomous) with step ``h``: the global error is ``O(h^4)``. Both the network's
gradient flow (:func:`ntklib.train.gradient_flow`) and the truncated hierarchy
(:func:`ntklib.nth.truncated_flow`) use it on the same time grid, so their difference is the
physics, not the integrator; :func:`rk4_error` estimates what the integrator adds, by step
halving (Richardson: with errors ``C h^4`` and ``C h^4 / 16``, ``y_h - y_{h/2}`` is ``15/16``
of the error of ``y_h``, so ``|y_h - y_{h/2}| / 15`` is the error of ``y_{h/2}`` and
``|y_h - y_{h/2}| * 16/15`` that of ``y_h``, to leading order).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


def _axpy(a: float, x: PyTree, y: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda u, v: v + a * u, x, y)


def rk4_step(rhs: Callable[[PyTree], PyTree], y: PyTree, h: float) -> PyTree:
    """One RK4 step of ``y' = rhs(y)``:

        y + h/6 (k1 + 2 k2 + 2 k3 + k4),   k1 = F(y), k2 = F(y + h/2 k1),
        k3 = F(y + h/2 k2), k4 = F(y + h k3).

    Arguments:
        rhs: the right-hand side ``F``, a pytree to a pytree of the same structure.
        y: the state (any pytree of arrays).
        h: the step size.
    """
    k1 = rhs(y)
    k2 = rhs(_axpy(h / 2, k1, y))
    k3 = rhs(_axpy(h / 2, k2, y))
    k4 = rhs(_axpy(h, k3, y))
    return jax.tree_util.tree_map(
        lambda y0, a, b, c, d: y0 + (h / 6) * (a + 2 * b + 2 * c + d), y, k1, k2, k3, k4
    )


def rk4(
    rhs: Callable[[PyTree], PyTree],
    y0: PyTree,
    h: float,
    steps: int,
    every: int = 1,
    observe: Callable[[PyTree], PyTree] = lambda y: y,
) -> PyTree:
    """Integrate ``steps`` RK4 steps of size ``h``; ``observe(y)`` at ``t = 0, every*h, ...``.

    Returns ``(y_final, observations)``, the observations stacked, ``steps // every + 1`` of
    them (``steps`` must be a multiple of ``every``). Call it inside ``jax.jit`` with
    ``steps``/``every`` static.

    Arguments:
        rhs: the right-hand side ``F`` of ``y' = F(y)``.
        y0: the initial state (any pytree of arrays).
        h: the step size.
        steps: the number of steps, a multiple of ``every``.
        every: observe every ``every`` steps, default 1.
        observe: the function of the state recorded, default the identity (the whole state).

    Returns:
        ``(y_final, observations)``, each leaf of the observations with a new first axis of
        length ``steps // every + 1``.
    """
    if steps % every:
        raise ValueError(f"steps ({steps}) must be a multiple of every ({every})")

    def block(y, _):
        y = jax.lax.fori_loop(0, every, lambda _, z: rk4_step(rhs, z, h), y)
        return y, observe(y)

    final, obs = jax.lax.scan(block, y0, None, length=steps // every)
    first = observe(y0)
    return final, jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), first, obs)


def rk4_error(coarse: PyTree, fine: PyTree) -> PyTree:
    """Leading-order error of the *fine* (step ``h/2``) solution: ``|coarse - fine| / 15``.

    Arguments:
        coarse: the solution at step ``h`` (any pytree of arrays).
        fine: the solution at step ``h/2`` on the same time grid, the same structure.
    """
    return jax.tree_util.tree_map(lambda a, b: jnp.abs(a - b) / 15.0, coarse, fine)
