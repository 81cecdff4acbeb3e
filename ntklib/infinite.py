"""Infinite-width NNGP and NTK of :class:`~ntklib.mlp.MLP` networks in NTK parameterization.

Conventions are those of neural-tangents' ``stax`` (``Dense(W_std, b_std)`` in NTK
parameterization, ``depth`` = number of hidden ``Dense -> activation`` blocks, then a
``Dense`` read-out), so ``kernels(x, depth=L, ...)`` equals ``stax.serial(*[Dense(1, W_std,
b_std), act] * L, Dense(1, W_std, b_std))[2](x, x)``. The recursion (Jacot et al. 2018,
Thm. 1; Lee et al. 2019, eq. (11)):

    Sigma^1(x, x') = w^2 <x, x'> / n_0 + b^2,                      Theta^1 = Sigma^1,
    Sigma^{l+1}    = w^2 V(Sigma^l) + b^2,
    Theta^{l+1}    = Sigma^{l+1} + w^2 Vd(Sigma^l) Theta^l,          l = 1..L,

with ``V, Vd`` the kernel maps of :mod:`ntklib.kernel_maps`. The output kernels are
``Sigma^{L+1}, Theta^{L+1}``. A ``lax.scan`` over layers keeps compile time independent of
depth, so depth 10^4 costs milliseconds. Use float64: the recursion at large depth
amplifies rounding near correlation 1.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ntklib.kernel_maps import kernel_map


class Kernels(NamedTuple):
    """NNGP ``Sigma`` and NTK ``Theta``; shape (B1, B2), or (depth + 1, B1, B2) per layer."""

    nngp: jax.Array
    ntk: jax.Array


@partial(jax.jit, static_argnames=("depth", "activation", "method", "n_quad", "all_layers"))
def kernels(
    x1: jax.Array,
    x2: jax.Array | None = None,
    *,
    depth: int,
    activation: str = "relu",
    w_std: float = 1.0,
    b_std: float = 0.0,
    method: str = "auto",
    n_quad: int = 64,
    all_layers: bool = False,
) -> Kernels:
    """Infinite-width NNGP and NTK between batches ``x1`` (B1, n_0) and ``x2`` (B2, n_0).

    With ``all_layers=True`` the result stacks ``Sigma^l, Theta^l`` for ``l = 1..depth+1``.
    """
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ValueError(f"depth must be an int >= 1, got {depth!r}")
    kmap = kernel_map(activation, method, n_quad)
    symmetric = x2 is None
    x2 = x1 if symmetric else x2
    n0 = x1.shape[-1]
    w2, b2 = jnp.square(w_std), jnp.square(b_std)
    s12 = w2 * (x1 @ x2.T) / n0 + b2
    q1 = w2 * jnp.sum(x1**2, -1) / n0 + b2
    q2 = w2 * jnp.sum(x2**2, -1) / n0 + b2

    if symmetric:
        # One batch: recurse on the upper triangle only (half the elementwise work, which is
        # all of the cost at depth), packed as a vector; entry k pairs rows i[k] and j[k]. The
        # diagonal starts at q exactly, so correlation 1 stays exactly 1 at any depth.
        i, j = np.triu_indices(x1.shape[0])
        s12 = jnp.where(i == j, q1[i], s12[i, j])

        def pair(q1, q2):
            return q1[i], q1[j]

        def unpack(s):
            return (
                jnp.zeros(s.shape[:-1] + (len(q1), len(q1)), s.dtype)
                .at[..., i, j]
                .set(s)
                .at[..., j, i]
                .set(s)
            )

    else:

        def pair(q1, q2):
            return q1[:, None], q2[None, :]

        def unpack(s):
            return s

    def step(carry, _):
        s12, q1, q2, t12 = carry
        v, vd = kmap(s12, *pair(q1, q2))
        s_new = w2 * v + b2
        t_new = s_new + w2 * vd * t12
        q1_new = w2 * kmap(q1, q1, q1)[0] + b2
        q2_new = q1_new if symmetric else w2 * kmap(q2, q2, q2)[0] + b2
        return (s_new, q1_new, q2_new, t_new), ((s_new, t_new) if all_layers else None)

    init = (s12, q1, q2, s12)
    (s_out, _, _, t_out), per_layer = jax.lax.scan(step, init, None, length=depth)
    if all_layers:
        s_all, t_all = per_layer
        return Kernels(
            unpack(jnp.concatenate([s12[None], s_all])), unpack(jnp.concatenate([s12[None], t_all]))
        )
    return Kernels(unpack(s_out), unpack(t_out))
