"""Higher-order kernels of the neural tangent hierarchy (Huang & Yau 2020).

With ``f`` the network output and ``K2 = Theta`` the NTK, the kernels of the hierarchy are

    K^(r+1)(x_1, ..., x_r, x_c) = < grad_theta K^(r)(x_1, ..., x_r), grad_theta f(x_c) >,

so ``K^(r+1)`` is the rate at which ``K^(r)`` changes when the parameters move along
``grad f(x_c)``. Under gradient flow on ``L = 1/(2n) sum_c (f(x_c) - y_c)^2`` (Huang & Yau's
normalization, :mod:`ntklib.nth`) this gives the hierarchy

    d/dt f(x)       = -(1/n) sum_c K^(2)(x, x_c) r_c,
    d/dt K^(r)(...) = -(1/n) sum_c K^(r+1)(..., x_c) r_c,      r_c = f(x_c) - y_c.

:func:`kernel_hierarchy` computes ``K^(2), ..., K^(order)`` exactly with nested forward-mode
derivatives: ``K^(r+1)`` is one ``jvp`` of the function ``theta -> K^(r)`` along each gradient
``grad f(x_c)``, the gradient itself recomputed inside so that the next level differentiates
it too. Nothing parameter-by-parameter is ever formed: memory is a few copies of the
parameters, and the cost of ``K^(r)`` is ``T^(r-2)`` nested ``jvp``\\ s of the layer-structured
NTK (``T`` driving inputs). :func:`k3_hessian` is the naive reference through full ``P x P``
Hessians, for tests and benchmarks only.

The first index of every kernel runs over ``x`` (training and held-out inputs alike), the
others over the driving (training) inputs ``x_drive``: exactly the entries the hierarchy
needs to move ``f`` on every input of ``x``. Use float64: the kernels of wide networks are
``O(1/m)`` and their differences smaller.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.flatten_util
import jax.numpy as jnp

from ntklib import _checks
from ntklib.empirical import ntk_gram
from ntklib.mlp import MLP, Params, forward

KernelFn = Callable[[Params], jax.Array]


def _raise_order(net: MLP, kernel: KernelFn, x_drive: jax.Array) -> KernelFn:
    """``theta -> K^(r)`` to ``theta -> K^(r+1)``: a new last axis over ``x_drive``."""

    def next_kernel(params: Params) -> jax.Array:
        grads = jax.jacrev(lambda p: forward(net, p, x_drive)[0])(params)  # leaves (T, ...)

        def along(c):
            tangent = jax.tree_util.tree_map(lambda g: g[c], grads)
            return jax.jvp(kernel, (params,), (tangent,))[1]

        return jnp.moveaxis(jax.lax.map(along, jnp.arange(x_drive.shape[0])), 0, -1)

    return next_kernel


@partial(jax.jit, static_argnums=(0, 4))
def _hierarchy(
    net: MLP, params: Params, x: jax.Array, x_drive: jax.Array, order: int
) -> tuple[jax.Array, ...]:
    kernel: KernelFn = lambda p: ntk_gram(net, p, x, x_drive)  # noqa: E731
    out = [kernel(params)]
    for _ in range(order - 2):
        kernel = _raise_order(net, kernel, x_drive)
        out.append(kernel(params))
    return tuple(out)


def kernel_hierarchy(
    net: MLP, params: Params, x: jax.Array, x_drive: jax.Array | None = None, order: int = 4
) -> tuple[jax.Array, ...]:
    """``(K^(2), ..., K^(order))`` with ``K^(r)`` of shape ``(B, T, ..., T)`` (``r - 1`` T's).

    ``x`` (B inputs) gives the first index, ``x_drive`` (T inputs, default ``x``) the others.
    Each level is computed from scratch, so asking for ``order = 4`` costs about ``T^2``
    nested ``jvp``\\ s of the NTK on ``B + T`` inputs.

    Arguments:
        net: the architecture (static).
        params: its parameters.
        x: the ``B`` inputs of the first index, shape (B, n_0).
        x_drive: the ``T`` driving (training) inputs of the other indices, shape (T, n_0),
            default ``None`` (``x``).
        order: the highest order ``r`` computed, an int ``>= 2`` (static), default 4.

    Returns:
        A tuple of ``order - 1`` arrays, ``K^(2)`` (the NTK, shape (B, T)) first.
    """
    _checks.integer("order", order, 2, " (K^(2) is the NTK)")
    return _hierarchy(net, params, x, x if x_drive is None else x_drive, order)


@partial(jax.jit, static_argnums=0)
def k3(net: MLP, params: Params, x: jax.Array) -> jax.Array:
    """``K3[a, b, c]`` for all inputs in ``x``, shape (B, B, B); symmetric in ``a, b``.

    Arguments:
        net: the architecture (static).
        params: its parameters.
        x: inputs, shape (B, n_0).
    """
    return _hierarchy(net, params, x, x, 3)[1]


@partial(jax.jit, static_argnums=0)
def k4(net: MLP, params: Params, x: jax.Array) -> jax.Array:
    """``K4[a, b, c, d]`` for all inputs in ``x``, shape (B, B, B, B).

    Arguments:
        net: the architecture (static).
        params: its parameters.
        x: inputs, shape (B, n_0).
    """
    return _hierarchy(net, params, x, x, 4)[2]


def _flat(tree) -> jax.Array:
    return jnp.concatenate([leaf.reshape(-1) for leaf in jax.tree_util.tree_leaves(tree)])


@partial(jax.jit, static_argnums=0)
def k3_hessian(net: MLP, params: Params, x: jax.Array) -> jax.Array:
    """Reference ``K3`` through full ``P x P`` Hessians (memory ``O(B P^2)``).

    ``K3(a, b, c) = g_b H_a g_c + g_a H_b g_c`` with ``g_a = grad f(x_a)``, ``H_a`` its Hessian.

    Arguments:
        net: the architecture (static).
        params: its parameters.
        x: inputs, shape (B, n_0).
    """
    flat, unravel = jax.flatten_util.ravel_pytree(params)

    def f_one(theta, xi):
        return forward(net, unravel(theta), xi[None])[0][0]

    g = jax.vmap(lambda xi: jax.grad(f_one)(flat, xi))(x)  # (B, P)
    h = jax.vmap(lambda xi: jax.hessian(f_one)(flat, xi))(x)  # (B, P, P)
    hg = jnp.einsum("apq,cq->acp", h, g)  # H_a g_c
    return jnp.einsum("bp,acp->abc", g, hg) + jnp.einsum("ap,bcp->abc", g, hg)


@partial(jax.jit, static_argnums=0)
def k4_hessian(net: MLP, params: Params, x: jax.Array) -> jax.Array:
    """Reference ``K4[a, b, c, d] = < grad_theta K3[a, b, c], g_d >`` (memory ``O(B^3 P^2)``).

    The gradient of the Hessian-based :func:`k3_hessian` with respect to the flat parameters
    by reverse mode (a ``B^3 x P`` Jacobian), then contracted with every ``g_d``: a route that
    shares no code with :func:`kernel_hierarchy` beyond the forward pass.

    Arguments:
        net: the architecture (static).
        params: its parameters.
        x: inputs, shape (B, n_0).
    """
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    jac = jax.jacrev(lambda th: k3_hessian(net, unravel(th), x))(flat)  # (B, B, B, P)
    g = jax.vmap(lambda xi: jax.grad(lambda th: forward(net, unravel(th), xi[None])[0][0])(flat))(x)
    return jnp.einsum("abcp,dp->abcd", jac, g)
