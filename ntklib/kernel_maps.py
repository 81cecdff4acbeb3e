"""Gaussian expectations behind the infinite-width recursions.

For ``(u, v) ~ N(0, [[q1, s12], [s12, q2]])`` a *kernel map* returns the pair

    V(s12, q1, q2)  = E[phi(u) phi(v)],        Vd(s12, q1, q2) = E[phi'(u) phi'(v)].

Closed forms (Cho & Saul 2009 arc-cosine kernels; Williams 1997 for erf):

* relu:  V = sqrt(q1 q2) (sin t + (pi - t) cos t) / (2 pi),   Vd = (pi - t) / (2 pi),
  with ``t = arccos(s12 / sqrt(q1 q2))`` (computed as an atan2, exact on the diagonal);
* erf:   V = (2/pi) arcsin(2 s12 / sqrt((1 + 2 q1)(1 + 2 q2))),
         Vd = (4/pi) / sqrt((1 + 2 q1)(1 + 2 q2) - 4 s12^2);

* identity: V = s12, Vd = 1.

The arcsin is computed as an atan2 too, and both use :mod:`ntklib.trig`'s vectorizing
``atan2`` (XLA's calls the scalar C library on the CPU, which made it most of the cost of a
deep recursion).

Any other activation (``method="auto"``) uses :class:`GaussKronrodMap`: the expectation is
written as ``E_u[phi(u) E[phi(v) | u]]`` with ``v | u ~ N(s12 u / q1, q2 (1 - c^2))``, and
both one-dimensional integrals are taken by composite Gauss-Kronrod rules in the standard
variable, on panels split at the activation's kink (0) and graded down to the activation's own
length scale ``1 / sqrt(q)``; it is accurate to about 1e-14 of the kernel's scale for
variances 0.01 to 10^3 and every correlation in [-1, 1] (tested against nested adaptive
quadrature), and the embedded Gauss rule gives an error estimate in the same pass. Within
a network recursion (:meth:`GaussKronrodMap.batch`) the map shares each input's work: Mehler's
series ``V = sum_k b_k(q1) b_k(q2) c^k`` in the normalized Hermite coefficients ``b_k`` of
``phi(sqrt(q) z)`` (one set per input and layer) gives each entry in 65 multiply-adds, with a
bound on its truncation error; the entries where that bound exceeds 1e-15 of the kernel's scale
(correlations near +-1) take the direct rule. The
previous two-dimensional Gauss-Hermite rule (``method="hermite"``, probabilists' nodes, ``u =
sqrt(q1) z1``, ``v = sqrt(q2) (c z1 + sqrt(1 - c^2) z2)``) under-resolves the scale
``1 / sqrt(q)`` once ``q`` is a few units (10 % of the kernel for tanh at ``q = 13``) and is
kept for comparison only.
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
KINKED = ("relu", "elu")  # activations whose derivative is not smooth at 0
METHODS = ("auto", "closed", "kronrod", "hermite", "quadrature")


def _corr(s12, q1, q2):
    return jnp.clip(s12 / jnp.sqrt(q1 * q2), -1.0, 1.0)


def relu_map(s12, q1, q2):
    """ReLU kernel map in closed form (Cho & Saul 2009, the degree-1 arc-cosine kernel).

        V = (sqrt(q1 q2 - s12^2) + (pi - t) s12) / (2 pi),    Vd = (pi - t) / (2 pi),

    with ``t = atan2(sqrt(q1 q2 - s12^2), s12)``, the angle ``arccos(c)`` of the module
    docstring: on the diagonal ``s12 = q1 = q2 = q`` it is exactly 0, so ``V = q / 2`` and
    ``Vd = 1/2`` to the last bit.

    Arguments:
        s12: the covariance ``E[u v]``, an array.
        q1: the variance ``E[u^2]`` (``>= 0``), an array broadcastable with ``s12``.
        q2: the variance ``E[v^2]`` (``>= 0``), likewise.

    Returns:
        ``(V, Vd)``, each of the broadcast shape.
    """
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
    """erf kernel map in closed form (Williams 1997).

        V  = (2/pi) arcsin(2 s12 / sqrt(d)),    Vd = (4/pi) / sqrt(d - 4 s12^2),
        d  = (1 + 2 q1)(1 + 2 q2),

    with the arcsin taken as ``atan2(2 s12, sqrt(d - 4 s12^2))`` and ``d - 4 s12^2`` summed
    from non-negative terms (no cancellation at large ``q`` and correlation near 1).

    Arguments:
        s12: the covariance ``E[u v]``, an array.
        q1: the variance ``E[u^2]`` (``>= 0``), an array broadcastable with ``s12``.
        q2: the variance ``E[v^2]`` (``>= 0``), likewise.

    Returns:
        ``(V, Vd)``, each of the broadcast shape.
    """
    # V = (2/pi) atan2(2 s12, sqrt(d - 4 s12^2)) with d = (1 + 2 q1)(1 + 2 q2): the square
    # root is Vd's, and d - 4 s12^2 = 1 + 2 (q1 + q2) + 4 (r - s12)(r + s12), r = sqrt(q1 q2),
    # is a sum of non-negative terms (no cancellation when q is large and c near 1).
    r = jnp.sqrt(q1 * q2)
    root = jnp.sqrt(1.0 + 2.0 * (q1 + q2) + 4.0 * jnp.maximum((r - s12) * (r + s12), 0.0))
    return (2.0 / jnp.pi) * trig.atan2(2.0 * s12, root), (4.0 / jnp.pi) / root


def identity_map(s12, q1, q2):
    """Kernel map of the identity activation: ``V = s12``, ``Vd = 1``.

    Arguments:
        s12: the covariance ``E[u v]``, an array; returned as is.
        q1: the variance ``E[u^2]`` (unused but for the shape of ``Vd``).
        q2: the variance ``E[v^2]``, likewise.

    Returns:
        ``(s12, ones)``, ``ones`` of the shape of ``s12 + q1 + q2``.
    """
    return s12, jnp.ones_like(s12 + q1 + q2)


def quadrature_map(activation: str, n_quad: int = 64) -> KernelMap:
    """Gauss-Hermite kernel map for any activation (the previous default; ``method="hermite"``).

    ``E[f(u) f(v)] ~ sum_ij w_i w_j f(u_ij) f(v_ij)`` for ``f = phi`` and ``f = phi'`` on the
    ``n_quad x n_quad`` tensor grid of probabilists' Hermite nodes ``z_i``, with ``u_ij =
    sqrt(q1) z_i``, ``v_ij = sqrt(q2) (c z_i + sqrt(1 - c^2) z_j)``: ``2 n_quad^2``
    evaluations each of ``phi`` and ``phi'`` per entry. Inaccurate once ``q`` is a few units
    (see the module docstring); kept for comparison.

    Arguments:
        activation: name of the nonlinearity (see :mod:`ntklib.activations`); ``phi'`` is
            taken by ``jax.grad``.
        n_quad: Hermite nodes per dimension, default 64; NumPy's weights overflow beyond
            about 300 nodes.

    Returns:
        The kernel map ``(s12, q1, q2) -> (V, Vd)``, arrays broadcast together.
    """
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


def kronrod_rule(n: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``2n + 1``-point Gauss-Kronrod rule on [-1, 1] extending ``n``-point Gauss-Legendre.

    The new nodes are the roots of the Stieltjes polynomial ``E_{n+1}`` (``int E P_n P_j =
    0``, ``j <= n``), the weights solve ``sum_i w_i P_j(x_i) = 2 delta_j0``, ``j <= 2n``, both
    in the Legendre basis.

    Arguments:
        n: the number of Gauss points, default 7 (QUADPACK's GK15).

    Returns:
        ``(x, w_kronrod, w_gauss)``, NumPy float64 arrays of length ``2n + 1``: the sorted
        nodes, the Kronrod weights (exact for polynomials of degree ``3n + 1``, ``3n + 2`` for
        odd ``n``), and the Gauss weights on the same nodes (0 at the ``n + 1`` Kronrod-only
        nodes).
    """
    leg = np.polynomial.legendre
    xg, wg = leg.leggauss(n)
    unit = np.eye(n + 2)
    gram = np.array(
        [
            [
                leg.legval(
                    1.0, leg.legint(leg.legmul(leg.legmul(unit[n], unit[j]), unit[k]), lbnd=-1)
                )
                for k in range(n + 2)
            ]
            for j in range(n + 1)
        ]
    )
    stieltjes = np.append(np.linalg.solve(gram[:, : n + 1], -gram[:, n + 1]), 1.0)
    x = np.sort(np.concatenate([xg, leg.legroots(stieltjes).real]))
    wk = np.linalg.solve(leg.legvander(x, 2 * n).T, np.eye(2 * n + 1)[0] * 2.0)
    w_gauss = np.zeros_like(x)
    w_gauss[[int(np.argmin(np.abs(x - xi))) for xi in xg]] = wg
    return x, wk, w_gauss


def _graded(center, h, reach, k):
    """Break points ``center``, ``center +- h (reach / h)^(j / (k - 1))``, ``j = 0..k-1``
    (shape ``(..., 2k + 1)``, sorted): panels graded from width ``h`` at ``center`` out to
    ``reach``."""
    d = h[..., None] * (reach / h[..., None]) ** (jnp.arange(k) / (k - 1))
    c = center[..., None]
    return jnp.concatenate([c - d[..., ::-1], c, c + d], -1)


def _panels(breaks, x, weights):
    """Nodes ``(..., P * len(x))`` of the rule ``(x, w)`` (on [-1, 1]) mapped onto each panel
    between consecutive ``breaks`` (``(..., P + 1)``), and each weight vector scaled alike."""
    a, b = breaks[..., :-1, None], breaks[..., 1:, None]
    half = 0.5 * (b - a)
    shape = breaks.shape[:-1] + (-1,)
    nodes = (0.5 * (a + b) + half * x).reshape(shape)
    return nodes, tuple((half * w).reshape(shape) for w in weights)


class GaussKronrodMap:
    """Kernel map ``(s12, q1, q2) -> (E[phi(u) phi(v)], E[phi'(u) phi'(v)])`` of any activation
    by composite Gauss-Kronrod quadrature adapted to the integrand's scales.

    With ``s_i = sqrt(q_i)``, ``c = s12 / (s1 s2)``, ``u = s1 z``, and ``v | u ~ N(m u, tau^2)``,
    ``m = c s2 / s1``, ``tau = s2 sqrt(1 - c^2)``:

        E[f(u) f(v)] = int f(s1 z) g(s1 z) N(z) dz,   g(u) = int f(m u + tau y) N(y) dy,

    for ``f = phi`` and ``f = phi'`` (one ``jax.jvp`` gives both). Both integrals are truncated
    to ``|z|, |y| <= z_max`` (Gaussian tail below 1e-18) and taken with the ``(2n + 1)``-point
    Kronrod rule on panels: outer break points the union, sorted, of ``n_uniform`` equal panels
    on ``[-z_max, z_max]`` (the Gaussian's scale), 0 and ``+- h (z_max / h)^(j / (k_outer - 1))``
    with ``h = min(1 / s1, max(1, tau) / (|c| s2), z_max / k_outer)`` (the activation's
    scale in ``z``, the scale of ``g``; also ``tau / (|c| s2)``, the width of a smoothed kink,
    if ``kink``), floored at ``h_floor``; inner break points the union, sorted, of ``n_uniform``
    equal panels on ``[-z_max, z_max]`` and panels graded the same way about the kink ``y* =
    -m u / tau`` from ``min(1 / tau, 2 z_max / k_inner)``. Weights are normalized by the rule's
    own Gaussian mass (constants exact). ``c = +-1`` is exact: ``tau = 0`` and ``g(u) =
    f(m u)``. The embedded ``n``-point Gauss rule on the same nodes gives the second result of
    :meth:`pair`.

    Cost per kernel entry and layer: ``N_outer (N_inner + 1)`` evaluations of
    ``(phi, phi')`` (``phi(u)`` at the outer nodes, ``phi(v)`` at the inner nodes of each),
    with ``N_outer = (n_uniform + 2 k_outer + 1) (2n + 1)`` and
    ``N_inner = (n_uniform + 2 k_inner + 1) (2n + 1)`` (the break points are concatenated with
    their duplicates, such as 0 and ``+-z_max``, which become zero-width panels evaluated with
    weight 0): 345 x (285 + 1) = 98,670 at the defaults (the Gauss-Hermite rule: 2 x 64 x 64 =
    8,192), and ``N_outer`` = 345 for :meth:`diag`. Accuracy measured against nested adaptive
    quadrature for tanh, GELU, softplus, swish, ELU and ReLU, ``q`` in [0.01, 10^3], ``c`` in
    {-1, -0.999, 0, 0.5, 0.999, 1}: below 3e-14 of ``sqrt(V(q1) V(q2))``.

    Arguments:
        phi: the activation, a JAX-differentiable elementwise function (``phi'`` by
            ``jax.jvp``).
        kink: whether ``phi'`` may be non-smooth at 0 (relu, elu), default ``True``: the outer
            panels then also resolve the width ``tau / (|c| s2)`` of the smoothed kink.
        n: Gauss points per panel, default 7 (GK15: 15 Kronrod points per panel).
        z_max: truncation of both standard variables, default 9.0.
        k_outer: graded outer panels on each side of 0, default 8.
        n_uniform: equal panels on ``[-z_max, z_max]``, in both integrals, default 6.
        k_inner: graded inner panels on each side of the kink ``y*``, default 6.
        h_floor: the smallest outer panel, default 1e-8 (a kink smoothed over less costs
            under 1e-15).
        max_bytes: the memory one chunk of entries may hold, default 2^28 (256 MiB): a
            batch of more entries is evaluated chunk by chunk (:meth:`chunk_entries`).
        degree: the last term of Mehler's series in :meth:`batch`, default 64.
        series_tol: the bound on the series' truncation error, relative to the kernel's
            scale, below which :meth:`batch` takes an entry from the series, default 1e-15.
        z_coef: truncation of the standard variable for the series' coefficients, default
            13.0 (``exp(-z^2 / 4)``, the envelope of the normalized Hermite functions, is
            below 1e-18 there; 9 would leave 1e-9).
        coef_panels: equal panels on ``[-z_coef, z_coef]`` for the coefficients, default 52
            (width 0.5: the Hermite polynomials of degree 64 oscillate at about 8 per unit).

    The arguments other than ``n`` are kept as attributes of the same names.

    Attributes:
        evaluations: ``((n_uniform + 2 k_outer) (2n + 1), (n_uniform + 2 k_inner) (2n + 1))``,
            (330, 270) at the defaults: a nominal count of outer and inner nodes, one panel
            per dimension short of the ``(N_outer, N_inner)`` actually evaluated (above).
    """

    def __init__(
        self,
        phi,
        kink: bool = True,
        n: int = 7,
        z_max: float = 9.0,
        k_outer: int = 8,
        n_uniform: int = 6,
        k_inner: int = 6,
        h_floor: float = 1e-8,
        max_bytes: int = 2**28,
        degree: int = 64,
        series_tol: float = 1e-15,
        z_coef: float = 13.0,
        coef_panels: int = 52,
    ):
        self.phi, self.kink, self.max_bytes = phi, kink, max_bytes
        self.degree, self.series_tol, self.z_coef, self.coef_panels = (
            degree,
            series_tol,
            z_coef,
            coef_panels,
        )
        self.z_max, self.k_outer, self.k_inner, self.h_floor = z_max, k_outer, k_inner, h_floor
        self.n_uniform = n_uniform
        x, wk, wg = kronrod_rule(n)
        self._kronrod = (x, (wk, wg))  # NumPy: a cached map holds no tracer
        xg, wgg = np.polynomial.legendre.leggauss(n)
        self._gauss = (xg, (wgg,))
        self.evaluations = (
            (n_uniform + 2 * k_outer) * (2 * n + 1),
            (n_uniform + 2 * k_inner) * (2 * n + 1),
        )

    def _both(self, v):
        return jax.jvp(self.phi, (v,), (jnp.ones_like(v),))

    def _outer(self, s1, h, rule):
        graded = _graded(jnp.zeros_like(h), jnp.maximum(h, self.h_floor), self.z_max, self.k_outer)
        uniform = jnp.broadcast_to(
            jnp.linspace(-self.z_max, self.z_max, self.n_uniform + 1),
            h.shape + (self.n_uniform + 1,),
        )
        breaks = jnp.sort(jnp.concatenate([uniform, graded], -1), -1)
        z, ws = _panels(breaks, *rule)
        dens = jnp.exp(-0.5 * z * z)
        ws = tuple(w * dens / jnp.sum(w * dens, -1, keepdims=True) for w in ws)
        return s1[..., None] * z, ws

    def chunk_entries(self) -> int:
        """Entries evaluated at once: the ``(N_outer, N_inner)`` evaluations of an entry, with
        the arrays that live beside them (about 8 of that size, float64), fill at most
        ``max_bytes``; larger batches are streamed through ``jax.lax.map`` in chunks of this
        size, so that peak memory grows with the number of entries, not entries times nodes."""
        n_out, n_in = self.evaluations
        return max(1, self.max_bytes // (8 * 8 * (n_out + 15) * (n_in + 15)))

    def _expect(self, s12, q1, q2, rule):
        s12, q1, q2 = jnp.broadcast_arrays(s12, q1, q2)
        shape, chunk = s12.shape, self.chunk_entries()
        if s12.size <= chunk:
            return self._expect_block(s12, q1, q2, rule)
        flat = tuple(a.reshape(-1) for a in (s12, q1, q2))
        out = jax.lax.map(lambda a: self._expect_block(*a, rule), flat, batch_size=chunk)
        return jax.tree_util.tree_map(lambda o: o.reshape(shape), out)

    def _expect_block(self, s12, q1, q2, rule):
        zm, inf = self.z_max, jnp.inf
        s1, s2 = jnp.sqrt(q1), jnp.sqrt(q2)
        r = jnp.sqrt(q1 * q2)  # exactly s12 where s12 = q1 = q2 (c = 1 on the diagonal)
        c = jnp.clip(jnp.where(r > 0, s12 / jnp.where(r > 0, r, 1.0), 0.0), -1.0, 1.0)
        tau = s2 * jnp.sqrt(jnp.maximum((1.0 - c) * (1.0 + c), 0.0))
        m = jnp.where(s1 > 0, c * s2 / jnp.where(s1 > 0, s1, 1.0), 0.0)
        acs = jnp.abs(c) * s2
        safe_acs = jnp.where(acs > 0, acs, 1.0)
        h = jnp.minimum(jnp.where(s1 > 0, 1.0 / jnp.where(s1 > 0, s1, 1.0), inf), zm / self.k_outer)
        h = jnp.minimum(h, jnp.where(acs > 0, jnp.maximum(1.0, tau) / safe_acs, inf))
        if self.kink:
            h = jnp.minimum(h, jnp.where((tau > 0) & (acs > 0), tau / safe_acs, inf))
        u, ws = self._outer(s1, h, rule)
        fu, du = self._both(u)
        mu = m[..., None] * u
        t = tau[..., None]
        safe_t = jnp.where(t > 0, t, 1.0)
        kink = jnp.clip(jnp.where(t > 0, -mu / safe_t, 0.0), -3 * zm, 3 * zm)
        hb = jnp.broadcast_to(
            jnp.where(t > 0, jnp.minimum(1.0 / safe_t, 2 * zm / self.k_inner), 1.0), kink.shape
        )
        graded = jnp.clip(_graded(kink, hb, 2 * zm, self.k_inner), -zm, zm)
        uniform = jnp.broadcast_to(
            jnp.linspace(-zm, zm, self.n_uniform + 1), kink.shape + (self.n_uniform + 1,)
        )
        y, vs = _panels(jnp.sort(jnp.concatenate([uniform, graded], -1), -1), *rule)
        fv, dv = self._both(mu[..., None] + t[..., None] * y)
        dens = jnp.exp(-0.5 * y * y)
        out = []
        for w_out, w_in in zip(ws, vs, strict=True):
            w_in = w_in * dens / jnp.sum(w_in * dens, -1, keepdims=True)
            g, gd = jnp.sum(w_in * fv, -1), jnp.sum(w_in * dv, -1)
            out.append((jnp.sum(w_out * fu * g, -1), jnp.sum(w_out * du * gd, -1)))
        return out

    def __call__(self, s12, q1, q2):
        """``(V, Vd)`` by the Kronrod rule; ``s12, q1, q2`` arrays broadcast together."""
        return self._expect(s12, q1, q2, self._kronrod)[0]

    def pair(self, s12, q1, q2):
        """``((V, Vd) Kronrod, (V, Vd) embedded Gauss)`` from the same activation evaluations.

        Arguments:
            s12: the covariance ``E[u v]``, an array.
            q1: the variance ``E[u^2]`` (``>= 0``), an array broadcastable with ``s12``.
            q2: the variance ``E[v^2]`` (``>= 0``), likewise.

        Returns:
            Two pairs ``(V, Vd)``, each array of the broadcast shape; their difference feeds
            :func:`error_estimate`.
        """
        return tuple(self._expect(s12, q1, q2, self._kronrod))

    def gauss(self, s12, q1, q2):
        """``(V, Vd)`` by the ``n``-point Gauss rule alone on the same panels.

        About a fifth of the evaluations of the Kronrod rule (``(n / (2n + 1))^2``:
        161 x (133 + 1) at the defaults); up to rounding the second pair of :meth:`pair`.

        Arguments:
            s12: the covariance ``E[u v]``, an array.
            q1: the variance ``E[u^2]`` (``>= 0``), an array broadcastable with ``s12``.
            q2: the variance ``E[v^2]`` (``>= 0``), likewise.
        """
        return self._expect(s12, q1, q2, self._gauss)[0]

    def _rows(self, q, rule):
        """Per-row Hermite coefficients of ``phi`` and ``phi'`` (see :meth:`batch`)."""
        s = jnp.sqrt(q)
        zc = self.z_coef
        h = jnp.minimum(jnp.where(s > 0, 1.0 / jnp.where(s > 0, s, 1.0), jnp.inf), 0.5)
        graded = _graded(jnp.zeros_like(h), jnp.maximum(h, self.h_floor), zc, self.k_outer)
        uniform = jnp.broadcast_to(
            jnp.linspace(-zc, zc, self.coef_panels + 1), h.shape + (self.coef_panels + 1,)
        )
        z, ws = _panels(jnp.sort(jnp.concatenate([uniform, graded], -1), -1), *rule)
        w = ws[0] * jnp.exp(-0.5 * z * z)
        w = w / jnp.sum(w, -1, keepdims=True)
        f, d = self._both(s[..., None] * z)
        wf, wd = w * f, w * d

        def step(carry, k):
            h_prev, h_k = carry
            out = (jnp.sum(wf * h_k, -1), jnp.sum(wd * h_k, -1))
            h_next = (z * h_k - jnp.sqrt(k) * h_prev) / jnp.sqrt(k + 1.0)
            return (h_k, h_next), out

        ks = jnp.arange(self.degree + 1, dtype=z.dtype)
        _, (bf, bd) = jax.lax.scan(step, (jnp.zeros_like(z), jnp.ones_like(z)), ks)
        ef, ed = jnp.sum(wf * f, -1), jnp.sum(wd * d, -1)
        tails = (
            jnp.maximum(ef - jnp.sum(bf * bf, 0), 0.0),
            jnp.maximum(ed - jnp.sum(bd * bd, 0), 0.0),
        )
        return (bf, bd), tails, (ef, ed)

    def batch(self, s12, qa, qb, ia, ib, gauss: bool = False):
        """``(V, Vd)`` of entries ``s12`` between rows ``ia`` of ``qa`` and rows ``ib`` of ``qb``:
        the map at ``(s12, qa[ia], qb[ib])``, sharing the work of each row (what
        :func:`ntklib.kernels` calls).

        Each row ``q`` gets the normalized Hermite coefficients of ``phi`` and ``phi'``,

            b_k(q) = E[phi(sqrt(q) z) He_k(z)] / sqrt(k!),   k = 0..degree,

        by the Kronrod (or Gauss) rule on panels of ``[-z_coef, z_coef]`` (``coef_panels`` equal
        ones and the graded outer ones), and its tail ``T(q) = E[phi^2] - sum_k b_k^2``. Mehler's
        formula then gives every entry in ``degree + 1`` multiply-adds,

            V = sum_{k <= degree} b_k(q1) b_k(q2) c^k,   |error| <= |c|^(degree+1) sqrt(T(q1) T(q2))

        (Cauchy-Schwarz on the rest of the series), and likewise ``Vd`` with the coefficients of
        ``phi'``. Entries whose bound exceeds ``series_tol`` of ``sqrt(E[phi(u)^2] E[phi(v)^2])``
        (correlations near +-1, where the series converges slowly) are gathered and evaluated
        by the direct rule (:meth:`__call__`), ``chunk`` entries at a time in a
        ``lax.while_loop`` that runs only as many chunks as there are such entries.

        Arguments:
            s12: the covariances, an array (any shape).
            qa: the variances of the first rows, shape ``(na,)``.
            qb: the variances of the second rows, shape ``(nb,)``; the same object as ``qa``
                shares their coefficients.
            ia: integer array broadcastable with ``s12``: row of ``qa`` of each entry.
            ib: likewise, row of ``qb``.
            gauss: use the ``n``-point Gauss rule (coefficients and direct rule) instead of the
                Kronrod rule, default ``False``: the second recursion of the error estimate.

        Returns:
            ``(V, Vd)``, each of ``s12``'s shape (the broadcast of ``s12, ia, ib``).
        """
        rule = self._gauss if gauss else self._kronrod
        s12, ia, ib = jnp.broadcast_arrays(s12, ia, ib)
        shape = s12.shape
        s12, ia, ib = (a.reshape(-1) for a in (s12, ia, ib))
        if s12.size == 0:
            return s12.reshape(shape), s12.reshape(shape)
        ca, ta, ea = self._rows(qa, rule)
        cb, tb, eb = (ca, ta, ea) if qb is qa else self._rows(qb, rule)
        q1, q2 = qa[ia], qb[ib]
        r = jnp.sqrt(q1 * q2)
        c = jnp.clip(jnp.where(r > 0, s12 / jnp.where(r > 0, r, 1.0), 0.0), -1.0, 1.0)
        power = jnp.abs(c) ** (self.degree + 1)
        ok = jnp.abs(c) < 1.0
        out = []
        for ba, bb, ta_, tb_, ea_, eb_ in zip(ca, cb, ta, tb, ea, eb, strict=True):

            def horner(acc, k, ba=ba, bb=bb):
                return acc * c + ba[k][ia] * bb[k][ib], None

            ks = jnp.arange(self.degree, -1, -1)
            val, _ = jax.lax.scan(horner, jnp.zeros_like(c), ks)
            out.append(val)
            bound = power * jnp.sqrt(ta_[ia] * tb_[ib])
            ok = ok & (bound <= self.series_tol * jnp.sqrt(ea_[ia] * eb_[ib]))
        v, vd = out
        # the rest by the direct rule, gathered (flagged entries first) chunk by chunk
        n_all = s12.size
        chunk = max(1, min(self.chunk_entries(), -(-n_all // 16)))
        count = jnp.sum(~ok)
        order = jnp.argsort(ok, stable=True)  # False (direct) first
        pad = -(-n_all // chunk) * chunk - n_all
        order = jnp.concatenate([order, jnp.zeros(pad, order.dtype)])

        def body(state):
            k, v, vd = state
            idx = jax.lax.dynamic_slice(order, (k * chunk,), (chunk,))
            valid = k * chunk + jnp.arange(chunk) < count
            dv, dvd = self._expect_block(s12[idx], q1[idx], q2[idx], rule)[0]
            idx = jnp.where(valid, idx, n_all)  # out of bounds: dropped
            return k + 1, v.at[idx].set(dv, mode="drop"), vd.at[idx].set(dvd, mode="drop")

        _, v, vd = jax.lax.while_loop(lambda st: st[0] * chunk < count, body, (0, v, vd))
        return v.reshape(shape), vd.reshape(shape)

    def _diag(self, q, rule):
        s = jnp.sqrt(q)
        h = jnp.minimum(
            jnp.where(s > 0, 1.0 / jnp.where(s > 0, s, 1.0), jnp.inf), self.z_max / self.k_outer
        )
        u, ws = self._outer(s, h, rule)
        f, d = self._both(u)
        return [(jnp.sum(w * f * f, -1), jnp.sum(w * d * d, -1)) for w in ws]

    def diag(self, q, gauss: bool = False):
        """``(E[phi(u)^2], E[phi'(u)^2])``, ``u ~ N(0, q)``: the map at ``s12 = q1 = q2 = q``.

        By the outer rule alone (``N_outer`` evaluations, no inner integral).

        Arguments:
            q: the variance (``>= 0``), an array; the results have its shape.
            gauss: use the ``n``-point Gauss rule instead of the Kronrod rule, default
                ``False``.
        """
        return self._diag(q, self._gauss if gauss else self._kronrod)[0]


def error_estimate(diff, scale):
    """QUADPACK's estimate of the Kronrod result's error from ``diff = |Kronrod - Gauss|``.

        err = max(diff min(1, (200 diff / scale)^(3/2)),  50 eps scale)

    (Piessens et al. 1983, Sec. 2.2.1), ``eps`` the machine epsilon of ``diff``'s dtype.

    Arguments:
        diff: ``|Kronrod - Gauss|``, an array ``>= 0``.
        scale: the magnitude of the result (here the kernel's diagonal scale), an array
            ``>= 0`` broadcastable with ``diff``; where it is 0 the relative difference is
            taken as ``diff`` itself.

    Returns:
        The absolute error estimate, of the broadcast shape.
    """
    eps = jnp.finfo(jnp.result_type(diff)).eps
    rel = diff / jnp.where(scale > 0, scale, 1.0)
    return jnp.maximum(diff * jnp.minimum(1.0, (200.0 * rel) ** 1.5), 50 * eps * scale)


def kernel_map(activation: str, method: str = "auto", n_quad: int = 64) -> KernelMap:
    """The kernel map ``(s12, q1, q2) -> (V, Vd)`` of ``activation`` (module docstring).

    Arguments:
        activation: name of the nonlinearity (see :mod:`ntklib.activations`).
        method: one of ``"auto"``, ``"closed"``, ``"kronrod"``, ``"hermite"``,
            ``"quadrature"`` (else ``ValueError``), default ``"auto"``: the closed form where
            there is one (relu, erf, identity), else :class:`GaussKronrodMap`; ``"closed"``
            the closed form or ``ValueError``; ``"kronrod"`` :class:`GaussKronrodMap` for any
            activation (the closed forms too, as a check); ``"hermite"`` (or its old name
            ``"quadrature"``) the Gauss-Hermite rule :func:`quadrature_map`.
        n_quad: Gauss-Hermite nodes per dimension for ``"hermite"``, default 64; ignored
            otherwise.

    Returns:
        :func:`relu_map`, :func:`erf_map` or :func:`identity_map`; or one
        :class:`GaussKronrodMap` per activation name (cached, with ``kink`` for relu and elu,
        so that jit caches see the same object); or a new :func:`quadrature_map`.
    """
    get_activation(activation)
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    if method in ("hermite", "quadrature"):
        return quadrature_map(activation, n_quad)
    if method == "kronrod" or (method == "auto" and activation not in CLOSED_FORMS):
        return _kronrod_map(activation)
    if activation not in CLOSED_FORMS:
        raise ValueError(f"no closed form for {activation!r}; closed forms: {CLOSED_FORMS}")
    return {"relu": relu_map, "erf": erf_map, "identity": identity_map}[activation]


_KRONROD: dict[str, GaussKronrodMap] = {}


def _kronrod_map(activation: str) -> GaussKronrodMap:
    """One :class:`GaussKronrodMap` per activation name (kept: jit caches see the same object)."""
    if activation not in _KRONROD:
        _KRONROD[activation] = GaussKronrodMap(
            get_activation(activation), kink=activation in KINKED
        )
    return _KRONROD[activation]
