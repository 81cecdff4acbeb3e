"""Higher-order kernels of the neural tangent hierarchy (Huang & Yau 2020).

With ``f`` the network output and ``K2 = Theta`` the NTK, the third-order kernel is

    K3(x_a, x_b, x_c) = < grad_theta K2(x_a, x_b), grad_theta f(x_c) >,

the rate at which the NTK moves when the parameters move along ``grad f(x_c)``: under
gradient flow on ``L = 1/2 sum_c (f(x_c) - y_c)^2``, ``d/dt K2(a, b) = -sum_c K3(a, b, c) r_c``.

:func:`k3` contracts as it goes: one forward-mode derivative (``jvp``) of the structured NTK
along each gradient ``grad f(x_c)``; it never forms a parameter-by-parameter Hessian.
:func:`k3_hessian` is the naive reference, ``K3(a,b,c) = g_b H_a g_c + g_a H_b g_c`` with full
Hessians ``H_a`` of size ``P x P``; use it only for small networks (tests, benchmarks).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.flatten_util
import jax.numpy as jnp

from ntklib.empirical import ntk_gram
from ntklib.mlp import MLP, Params, forward


@partial(jax.jit, static_argnums=0)
def k3(net: MLP, params: Params, x: jax.Array) -> jax.Array:
    """``K3[a, b, c]`` for all inputs in ``x``, shape (B, B, B); symmetric in ``a, b``."""
    grads = jax.jacrev(lambda p: forward(net, p, x)[0])(params)  # leaves (B, ...)

    def along(c):
        tangent = jax.tree_util.tree_map(lambda g: g[c], grads)
        return jax.jvp(lambda p: ntk_gram(net, p, x), (params,), (tangent,))[1]

    return jnp.moveaxis(jax.lax.map(along, jnp.arange(x.shape[0])), 0, -1)


def _flat(tree) -> jax.Array:
    return jnp.concatenate([leaf.reshape(-1) for leaf in jax.tree_util.tree_leaves(tree)])


@partial(jax.jit, static_argnums=0)
def k3_hessian(net: MLP, params: Params, x: jax.Array) -> jax.Array:
    """Reference ``K3`` through full ``P x P`` Hessians (memory ``O(B P^2)``)."""
    flat, unravel = jax.flatten_util.ravel_pytree(params)

    def f_one(theta, xi):
        return forward(net, unravel(theta), xi[None])[0][0]

    g = jax.vmap(lambda xi: jax.grad(f_one)(flat, xi))(x)  # (B, P)
    h = jax.vmap(lambda xi: jax.hessian(f_one)(flat, xi))(x)  # (B, P, P)
    hg = jnp.einsum("apq,cq->acp", h, g)  # H_a g_c
    return jnp.einsum("bp,acp->abc", g, hg) + jnp.einsum("ap,bcp->abc", g, hg)
