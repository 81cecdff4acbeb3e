"""Gaussian expectations behind the infinite-width recursions.

For ``(u, v) ~ N(0, [[q1, s12], [s12, q2]])`` a *kernel map* returns the pair

    V(s12, q1, q2)  = E[phi(u) phi(v)],        Vd(s12, q1, q2) = E[phi'(u) phi'(v)].

Closed forms (Cho & Saul 2009 arc-cosine kernels; Williams 1997 for erf):

* relu:  V = sqrt(q1 q2) (sin t + (pi - t) cos t) / (2 pi),   Vd = (pi - t) / (2 pi),
  with ``t = arccos(s12 / sqrt(q1 q2))`` (computed as an atan2, exact on the diagonal);
* erf:   V = (2/pi) arcsin(2 s12 / sqrt((1 + 2 q1)(1 + 2 q2))),
         Vd = (4/pi) / sqrt((1 + 2 q1)(1 + 2 q2) - 4 s12^2);

with :mod:`ntklib.trig`'s vectorizing ``atan2``/``arcsin`` (XLA's call the scalar C library
on the CPU, which made them most of the cost of a deep recursion);
* identity: V = s12, Vd = 1.

Any other activation uses two-dimensional Gauss-Hermite quadrature (probabilists' nodes),
``u = sqrt(q1) z1``, ``v = sqrt(q2) (c z1 + sqrt(1 - c^2) z2)``; its error decays
spectrally for smooth activations and like ``n_quad^{-1}`` to ``n_quad^{-3/2}`` at a kink.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ntklib import trig
from ntklib.activations import get_activation

KernelMap = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]

CLOSED_FORMS = ("relu", "erf", "identity")


def _corr(s12, q1, q2):
    return jnp.clip(s12 / jnp.sqrt(q1 * q2), -1.0, 1.0)


def relu_map(s12, q1, q2):
    # t = angle between the two inputs, from atan2 rather than arccos(c): at s12 = q1 = q2
    # (the diagonal) it is exactly 0, so V = q / 2 and Vd = 1/2 hold to the last bit, and
    # V = (sqrt(q1 q2 - s12^2) + (pi - t) s12) / (2 pi) avoids dividing by sqrt(q1 q2).
    # (r - s12)(r + s12) rather than q1 q2 - s12^2: no cancellation near c = 1, and no fused
    # multiply-add can turn an exact zero into a rounding error.
    r = jnp.sqrt(q1 * q2)
    det = jnp.sqrt(jnp.maximum((r - s12) * (r + s12), 0.0))
    t = trig.atan2(det, s12)
    return (det + (jnp.pi - t) * s12) / (2 * jnp.pi), (jnp.pi - t) / (2 * jnp.pi)


def erf_map(s12, q1, q2):
    # V = (2/pi) atan2(2 s12, sqrt(d - 4 s12^2)) with d = (1 + 2 q1)(1 + 2 q2): the square
    # root is Vd's, and d - 4 s12^2 = 1 + 2 (q1 + q2) + 4 (r - s12)(r + s12), r = sqrt(q1 q2),
    # is a sum of non-negative terms (no cancellation when q is large and c near 1).
    r = jnp.sqrt(q1 * q2)
    root = jnp.sqrt(1.0 + 2.0 * (q1 + q2) + 4.0 * jnp.maximum((r - s12) * (r + s12), 0.0))
    return (2.0 / jnp.pi) * trig.atan2(2.0 * s12, root), (4.0 / jnp.pi) / root


def identity_map(s12, q1, q2):
    return s12, jnp.ones_like(s12 + q1 + q2)


def quadrature_map(activation: str, n_quad: int = 64) -> KernelMap:
    """Gauss-Hermite kernel map for any activation in :mod:`ntklib.activations`."""
    phi = get_activation(activation)
    dphi = jnp.vectorize(jax.grad(phi))
    z, w = np.polynomial.hermite_e.hermegauss(n_quad)
    w = w / w.sum()
    z1, z2 = (jnp.asarray(a) for a in np.meshgrid(z, z, indexing="ij"))
    ww = jnp.asarray(np.outer(w, w))

    def kmap(s12, q1, q2):
        s12, q1, q2 = jnp.broadcast_arrays(s12, q1, q2)
        c = _corr(s12, q1, q2)[..., None, None]
        u = jnp.sqrt(q1)[..., None, None] * z1
        v = jnp.sqrt(q2)[..., None, None] * (c * z1 + jnp.sqrt(1.0 - c**2) * z2)
        ev = jnp.sum(ww * phi(u) * phi(v), axis=(-2, -1))
        evd = jnp.sum(ww * dphi(u) * dphi(v), axis=(-2, -1))
        return ev, evd

    return kmap


def kernel_map(activation: str, method: str = "auto", n_quad: int = 64) -> KernelMap:
    """The kernel map of ``activation``: ``method`` is "auto", "closed" or "quadrature"."""
    get_activation(activation)
    if method not in ("auto", "closed", "quadrature"):
        raise ValueError(f"method must be 'auto', 'closed' or 'quadrature', got {method!r}")
    if method == "quadrature" or (method == "auto" and activation not in CLOSED_FORMS):
        return quadrature_map(activation, n_quad)
    if activation not in CLOSED_FORMS:
        raise ValueError(f"no closed form for {activation!r}; closed forms: {CLOSED_FORMS}")
    return {"relu": relu_map, "erf": erf_map, "identity": identity_map}[activation]
