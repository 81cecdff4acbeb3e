"""The neural tangent hierarchy truncated at level ``p`` (Huang & Yau 2020).

Gradient flow on ``L = 1/(2n) sum_c r_c^2``, ``r_c = f(x_c) - y_c`` over ``n`` training inputs,
moves the output and the kernels of :func:`ntklib.hierarchy.kernel_hierarchy` by

    f'     = -(1/n) K^(2) r,
    K^(k)' = -(1/n) K^(k+1) . r        (contracting the last index),   k = 2, 3, ...

an infinite hierarchy. Truncating at level ``p`` freezes ``K^(p)`` at its value at ``t = 0`` and
integrates ``f, K^(2), ..., K^(p-1)`` exactly: ``p = 2`` is the frozen-NTK (lazy, linearized)
model; ``p = 3`` lets the NTK move with a frozen ``K^(3)``; ``p = 4`` lets ``K^(3)`` move too.
The first index of every kernel runs over all tracked inputs; the training inputs must come
first (indices ``0..n-1``), so ``f[:n]`` gives the residual and the other rows are predictions
on held-out inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ntklib import _checks
from ntklib.hierarchy import kernel_hierarchy
from ntklib.mlp import MLP, Params, apply
from ntklib.ode import rk4
from ntklib.train import squared_loss


class Trajectory(NamedTuple):
    """Observations at ``t = 0, dt*every, ...``: outputs ``(S, B)`` and NTK ``(S, B, n)``.

    Attributes:
        t: the observation times, shape (S,) with ``S = steps // every + 1``.
        f: the outputs on all ``B`` tracked inputs, shape (S, B).
        ntk: the NTK rows ``K^(2)(x_b, x_c)`` over the ``n`` training inputs, shape
            (S, B, n) (constant at ``p = 2``, where the NTK is the frozen level).
    """

    t: jax.Array
    f: jax.Array
    ntk: jax.Array


def _check_truncation(kernels: Sequence[jax.Array], p: int, f0: jax.Array, y: jax.Array) -> None:
    _checks.integer("the truncation level p", p, 2)
    if len(kernels) < p - 1:
        raise ValueError(f"truncation at p = {p} needs K^(2)..K^({p}); got {len(kernels)} kernels")
    b, n = f0.shape[0], y.shape[0]
    for r, k in enumerate(kernels[: p - 1], start=2):
        if k.shape != (b,) + (n,) * (r - 1):
            raise ValueError(f"K^({r}) has shape {k.shape}, expected {(b,) + (n,) * (r - 1)}")
    if n > b:
        raise ValueError(f"{n} targets but only {b} outputs: the training inputs come first")


@partial(jax.jit, static_argnums=(3, 5, 6))
def _truncated(kernels, f0, y, p, dt, steps, every):
    n = y.shape[0]
    frozen = kernels[p - 2]

    def rhs(state):
        f, moving = state
        r = f[:n] - y
        ks = list(moving) + [frozen]
        df = -(ks[0] @ r) / n
        dks = tuple(-(ks[i + 1] @ r) / n for i in range(len(moving)))
        return df, dks

    def observe(state):
        f, moving = state
        return f, (moving[0] if moving else frozen)

    _, (f, ntk) = rk4(rhs, (f0, tuple(kernels[: p - 2])), dt, steps, every, observe)
    return f, ntk


def truncated_flow(
    kernels: Sequence[jax.Array],
    f0: jax.Array,
    y: jax.Array,
    p: int,
    dt: float,
    steps: int,
    every: int = 1,
) -> Trajectory:
    """Integrate the hierarchy truncated at level ``p`` with RK4 (:mod:`ntklib.ode`).

    ``kernels = (K^(2), ..., K^(q))`` at ``t = 0`` with ``q >= p`` (from
    :func:`ntklib.hierarchy.kernel_hierarchy`, first index over all ``B`` tracked inputs,
    training inputs first); ``f0`` the outputs at ``t = 0`` (B,); ``y`` the ``n`` training
    targets. Returns the outputs on all ``B`` inputs and the NTK rows ``K^(2)(x_b, x_c)``.

    Arguments:
        kernels: ``(K^(2), ..., K^(q))`` at ``t = 0``, ``q >= p``, ``K^(r)`` of shape
            ``(B, n, ..., n)`` (``r - 1`` n's); only the first ``p - 1`` are used.
        f0: the outputs at ``t = 0`` on all ``B`` tracked inputs, shape (B,), ``B >= n``.
        y: the training targets, shape (n,).
        p: the truncation level, an int ``>= 2`` (static): ``K^(p)`` is frozen.
        dt: the RK4 time step.
        steps: the number of steps (static), a multiple of ``every``.
        every: observe every ``every`` steps (static), default 1.

    Returns:
        A :class:`Trajectory`.
    """
    _check_truncation(kernels, p, f0, y)
    f, ntk = _truncated(tuple(kernels[: p - 1]), f0, y, p, dt, steps, every)
    return Trajectory(dt * every * jnp.arange(f.shape[0]), f, ntk)


def hierarchy_rates(
    kernels: Sequence[jax.Array], f: jax.Array, y: jax.Array
) -> tuple[jax.Array, ...]:
    """The hierarchy's right-hand sides ``(f', K^(2)', ..., K^(q-1)')`` from ``K^(2..q)``.

    ``f' = -(1/n) K^(2) r`` and ``K^(k)' = -(1/n) K^(k+1) . r`` with ``r = f[:n] - y``.

    Arguments:
        kernels: ``(K^(2), ..., K^(q))``, ``K^(r)`` of shape ``(B, n, ..., n)``, training
            inputs first.
        f: the outputs on all ``B`` tracked inputs, shape (B,).
        y: the training targets, shape (n,).

    Returns:
        ``q - 1`` arrays: ``f'`` of shape (B,), then ``K^(k)'`` of the shape of ``K^(k)``.
    """
    n = y.shape[0]
    r = f[:n] - y
    return tuple(-(k @ r) / n for k in kernels)


def measured_rates(
    net: MLP, params: Params, x: jax.Array, y: jax.Array, eta: float, order: int = 4
) -> tuple[jax.Array, ...]:
    """``(f', K^(2)', ..., K^(order-1)')`` by a central difference along the gradient flow.

    The parameters are moved to ``theta -+ eta grad L`` (``L = 1/(2n) sum r^2`` on the first
    ``n = len(y)`` rows of ``x``) and ``(Q(theta - eta g) - Q(theta + eta g)) / (2 eta)`` is
    taken for every ``Q``: the actual rate of change along gradient flow, to ``O(eta^2)``,
    computed without the next kernel of the hierarchy. Compare with :func:`hierarchy_rates`.

    Arguments:
        net: the architecture.
        params: its parameters.
        x: all tracked inputs, the ``n`` training inputs first, shape (B, n_0).
        y: the training targets, shape (n,).
        eta: the half-width of the central difference (in flow time).
        order: one more than the highest kernel order differentiated, an int ``>= 2``,
            default 4 (``f'``, ``K^(2)'`` and ``K^(3)'``); ``order = 2`` gives ``f'`` alone.

    Returns:
        ``order - 1`` arrays of the shapes :func:`hierarchy_rates` returns.
    """
    n = y.shape[0]
    x_train = x[:n]
    g = jax.grad(lambda p: squared_loss(net, p, x_train, y) / n)(params)

    def quantities(sign):
        p = jax.tree_util.tree_map(lambda a, b: a + sign * eta * b, params, g)
        ks = kernel_hierarchy(net, p, x, x_train, order - 1) if order > 2 else ()
        return (apply(net, p, x), *ks)

    ahead, behind = quantities(-1.0), quantities(1.0)
    return tuple((a - b) / (2 * eta) for a, b in zip(ahead, behind, strict=True))
