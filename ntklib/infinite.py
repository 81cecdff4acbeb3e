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
amplifies rounding near correlation 1. For ReLU the determinant ``Sigma_11 Sigma_22 -
Sigma_12^2`` is carried from layer to layer (see ``_relu_pair``), which keeps the kernel's
digits where every correlation approaches 1 (within 1e-10 of an extended-precision recursion
at depth 10^4, tested; recomputing it loses half the digits there).
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ntklib import _checks, trig
from ntklib.kernel_maps import kernel_map, relu_map

# sin t - t cos t = sum_{k >= 1} (-1)^(k+1) 2k t^(2k+1) / (2k+1)!, to 10 terms (t < 1: the
# first term left out is below 1e-18 of the sum)
_SIN_T_COS = tuple((-1) ** (k + 1) * 2 * k / math.factorial(2 * k + 1) for k in range(1, 11))


def _sin_minus_t_cos(t: jax.Array) -> jax.Array:
    z = t * t
    p = _SIN_T_COS[-1]
    for c in _SIN_T_COS[-2::-1]:
        p = p * z + c
    return t * z * p


def _relu_pair(s, det, q1, q2, w2, b2):
    """One ReLU layer for entries ``(s, det)``, ``det = q1 q2 - s^2``, with row variances
    ``q1, q2``: returns ``V``, ``Vd`` and the next layer's ``det``, computed without
    cancellation.

    Deep networks drive correlations to 1 (the degenerate limit of the large-depth chapter);
    there the angle ``t = arccos(s / sqrt(q1 q2))`` is about ``sqrt(det) / q``, and recomputing
    ``det`` from rounded ``q`` and ``s`` makes a rounding ``eps`` an error ``sqrt(eps)`` in the
    angle (1e-9 after 1000 layers, 1e-6 after 10^4, measured). Carrying ``det`` itself keeps
    its relative accuracy:

        det' = w^4 (q1 q2 / 4) D (2 - D) + w^2 b^2 ((sqrt q1 - sqrt q2)^2 / 2 + sqrt(q1 q2) D),
        D    = 1 - J(t) / pi = (1 - cos t) - (sin t - t cos t) / pi,

    with ``J(t) = sin t + (pi - t) cos t`` (Cho & Saul's degree-1 arc-cosine kernel: ``V = sqrt(
    q1 q2) J / (2 pi)``), which is ``q1' q2' - s'^2`` for ``q' = w^2 q / 2 + b^2``,
    ``s' = w^2 V + b^2`` expanded so that every term is non-negative.
    """
    sq1, sq2 = jnp.sqrt(q1), jnp.sqrt(q2)
    r = sq1 * sq2
    safe = jnp.where(r > 0, r, 1.0)
    root = jnp.sqrt(det)
    t = trig.atan2(root, s)
    v = (root + (jnp.pi - t) * s) / (2 * jnp.pi)
    vd = (jnp.pi - t) / (2 * jnp.pi)
    one_minus_cos = jnp.where(s > 0, det / (safe * (safe + s)), (safe - s) / safe)
    odd = jnp.where(t < 1.0, _sin_minus_t_cos(t), (root - t * s) / safe)
    d = one_minus_cos - odd / jnp.pi
    det_new = w2 * w2 * (r * r / 4) * d * (2 - d) + w2 * b2 * ((sq1 - sq2) ** 2 / 2 + r * d)
    return v, vd, det_new


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
    _checks.integer("depth", depth)
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

    angle = kmap is relu_map  # ReLU in closed form: carry the determinant too (see _relu_pair)

    def step(carry, _):
        s12, det, q1, q2, t12 = carry
        if angle:
            v, vd, det_new = _relu_pair(s12, det, *pair(q1, q2), w2, b2)
        else:
            (v, vd), det_new = kmap(s12, *pair(q1, q2)), det
        s_new = w2 * v + b2
        t_new = s_new + w2 * vd * t12
        q1_new = w2 * kmap(q1, q1, q1)[0] + b2
        q2_new = q1_new if symmetric else w2 * kmap(q2, q2, q2)[0] + b2
        return (s_new, det_new, q1_new, q2_new, t_new), ((s_new, t_new) if all_layers else None)

    if angle:
        r = jnp.sqrt(jnp.multiply(*pair(q1, q2)))
        det = jnp.maximum((r - s12) * (r + s12), 0.0)  # exactly 0 on the diagonal
    else:
        det = jnp.zeros(())
    init = (s12, det, q1, q2, s12)
    (s_out, _, _, _, t_out), per_layer = jax.lax.scan(step, init, None, length=depth)
    if all_layers:
        s_all, t_all = per_layer
        return Kernels(
            unpack(jnp.concatenate([s12[None], s_all])), unpack(jnp.concatenate([s12[None], t_all]))
        )
    return Kernels(unpack(s_out), unpack(t_out))
