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

Activations without a closed form use :class:`~ntklib.kernel_maps.GaussKronrodMap` (about
1e-14 per layer; at its defaults 345 x 285 + 345 = 98,670 evaluations of ``(phi, phi')`` per
kernel entry and layer, 345 per diagonal entry). ``return_error=True`` also runs the
recursion with the embedded Gauss rule (about a fifth more evaluations) and returns
QUADPACK's estimate of the Kronrod result's error from the difference; ``rtol`` checks that
estimate and warns (:class:`AccuracyWarning`) where it is not met.
"""

from __future__ import annotations

import math
import warnings
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ntklib import _checks, trig
from ntklib.activations import HOMOGENEOUS
from ntklib.kernel_maps import GaussKronrodMap, error_estimate, kernel_map, relu_map
from ntklib.mlp import MLP

# sin t - t cos t = sum_{k >= 1} (-1)^(k+1) 2k t^(2k+1) / (2k+1)!, to 10 terms (t < 1: the
# first term left out is below 1e-18 of the sum)
_SIN_T_COS = tuple((-1) ** (k + 1) * 2 * k / math.factorial(2 * k + 1) for k in range(1, 11))


def _sin_minus_t_cos(t: jax.Array) -> jax.Array:
    z = t * t
    p = _SIN_T_COS[-1]
    for c in _SIN_T_COS[-2::-1]:
        p = p * z + c
    return t * z * p


def _input_det(x1, x2, w2, b2):
    """``det = q1 q2 - s^2`` of the input layer for every pair of rows, from the inputs:

        det = w^4 / n0^2 |x1|^2 |x2 - c x1|^2 + w^2 b^2 / n0 |x1 - x2|^2,   c = x1.x2 / |x1|^2,

    both terms non-negative and accurate to rounding (the residual ``x2 - c x1`` is computed, not
    the difference ``|x1|^2 |x2|^2 - (x1.x2)^2``), so equal rows give 0 exactly and nearly equal
    ones keep their angle, whichever way the compiler rounds the products (computing it from
    ``q`` and ``s`` left 1.5e-8 on the diagonal of ``kernels(x, x)`` under LLVM -O0). One row of
    ``x1`` at a time: memory ``n2 x n0``."""
    n0 = x1.shape[-1]

    def row(a):
        aa = jnp.sum(a * a)
        c = jnp.where(aa > 0, (x2 @ a) / jnp.where(aa > 0, aa, 1.0), 0.0)
        resid = jnp.sum(jnp.square(x2 - c[:, None] * a), -1)
        dist = jnp.sum(jnp.square(x2 - a), -1)
        return w2 * w2 / n0**2 * aa * resid + w2 * b2 / n0 * dist

    return jax.lax.map(row, x1)


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
    """NNGP ``Sigma`` and NTK ``Theta`` (or their error estimates) from :func:`kernels`.

    Attributes:
        nngp: ``Sigma^{L+1}(x1_i, x2_j)``, shape (B1, B2); with ``all_layers=True``
            ``Sigma^l`` for ``l = 1..L+1`` stacked, shape (L + 1, B1, B2).
        ntk: ``Theta^{L+1}(x1_i, x2_j)``, the same shapes.
    """

    nngp: jax.Array
    ntk: jax.Array


class AccuracyWarning(UserWarning):
    """The estimated error of an infinite-width kernel exceeds the requested ``rtol``."""


def _description(net, depth, activation, w_std, b_std) -> tuple[int, str, float, float]:
    """``(depth, activation, w_std, b_std)`` of :func:`kernels`, from ``net`` or the keywords."""
    given = {
        k: v
        for k, v in dict(depth=depth, activation=activation, w_std=w_std, b_std=b_std).items()
        if v is not None
    }
    if net is None:
        if depth is None:
            raise ValueError(
                "kernels needs the network: net=MLP(...) or depth=... (with "
                "activation, w_std, b_std)"
            )
        return (
            depth,
            given.get("activation", "relu"),
            given.get("w_std", 1.0),
            given.get("b_std", 0.0),
        )
    if not isinstance(net, MLP):
        raise ValueError(f"net must be an ntklib MLP, got {type(net).__name__}")
    if given:
        raise ValueError(
            f"give the network once: net= or the keywords, not both (also given: "
            f"{', '.join(given)})"
        )
    if net.parameterization != "ntk" or (net.bias and net.b_std and net.bias_init != "normal"):
        raise ValueError(
            "kernels is the infinite-width limit of an MLP in the NTK parameterization with "
            f"normal biases; this one has parameterization={net.parameterization!r}, "
            f"bias_init={net.bias_init!r} (its NTK differs or diverges with the width)"
        )
    return len(net.widths), net.activation, net.w_std, net.b_std if net.bias else 0.0


def kernels(
    x1: jax.Array,
    x2: jax.Array | None = None,
    *,
    net: MLP | None = None,
    depth: int | None = None,
    activation: str | None = None,
    w_std: float | None = None,
    b_std: float | None = None,
    method: str = "auto",
    n_quad: int = 64,
    all_layers: bool = False,
    return_error: bool = False,
    rtol: float | None = None,
):
    """Infinite-width NNGP ``Sigma^{L+1}`` and NTK ``Theta^{L+1}`` between two batches.

    The recursion of the module docstring (Jacot et al. 2018, Thm. 1; Lee et al. 2019,
    eq. (11)), jitted, with one ``lax.scan`` step per hidden layer. Never NaN where the
    recursion stays finite in float64.

    Arguments:
        x1: inputs, shape (B1, n_0); the kernels have its dtype (use float64).
        x2: inputs, shape (B2, n_0), default ``None`` (``x2 = x1``: the recursion runs on the
            upper triangle only and the result is exactly symmetric).
        net: the network whose infinite-width limit is taken, an :class:`ntklib.mlp.MLP`
            in the NTK parameterization with normal biases (the default ``mlp``), default
            ``None``: it gives ``depth = len(net.widths)``, ``activation``, ``w_std`` and
            ``b_std`` (0 for ``bias=False``), which are then not given; the keyword form
            below describes the same network without an ``MLP``.
        depth: the number ``L`` of hidden layers, an int ``>= 1``, default ``None``:
            required without ``net``.
        activation: name of the nonlinearity (see :mod:`ntklib.activations`), default
            ``None``: ``"relu"``.
        w_std: weight scale ``sigma_w`` (the ``w`` of the recursion), default ``None``: 1.0.
        b_std: bias scale ``sigma_b`` (the ``b`` of the recursion), default ``None``: 0.0.
        method: the kernel map (:func:`ntklib.kernel_maps.kernel_map`), default ``"auto"``:
            the closed form where there is one (relu, erf, identity), else
            :class:`~ntklib.kernel_maps.GaussKronrodMap`; ``"closed"``, ``"kronrod"``,
            ``"hermite"`` (or ``"quadrature"``) as there.
        n_quad: Gauss-Hermite nodes per dimension, for ``method="hermite"`` only, default 64.
        all_layers: return ``Sigma^l, Theta^l`` for every ``l = 1..L+1`` stacked on a leading
            axis, default ``False`` (the output layer only); not with ``return_error`` or
            ``rtol`` (``ValueError``).
        return_error: also return error estimates, default ``False``: ``errors`` is a
            :class:`Kernels` of absolute estimates of each entry's error, QUADPACK's transform
            (:func:`ntklib.kernel_maps.error_estimate`) of ``|Kronrod - Gauss|`` (the
            recursion run with both rules) at the scale ``sqrt(K(x, x) K(x', x'))`` of the
            output layer; for a closed form (no second recursion) it is the rounding floor
            ``50 eps`` times that scale. Not with the Gauss-Hermite rule (``ValueError``).
        rtol: the requested accuracy relative to that scale, a number ``> 0``, default
            ``None`` (no check): an :class:`AccuracyWarning` when the estimate exceeds it;
            ``ValueError`` when it cannot be asked for (below 100 eps of ``x1``'s dtype, a
            Gauss-Hermite map, or inside a trace, where ``return_error`` serves instead).

    Returns:
        A :class:`Kernels` ``(nngp, ntk)`` of shape (B1, B2) (or (L + 1, B1, B2) with
        ``all_layers``); with ``return_error=True`` the pair ``(kernels, errors)``.

    Raises ``ValueError`` before any compute for inputs that are not of shape (batch,
    features) or (outside a trace) hold a NaN or an infinity, naming the first such entry, and
    ``MemoryError`` when the output (every layer's, with ``all_layers``) exceeds the memory
    available;
    warns (:class:`OverflowWarning`) with the first layer whose kernel is infinite when the
    recursion leaves the floating-point range (an erf NTK at ``w_std = 10`` grows about
    six-fold a layer), and (:class:`RangeWarning`) when a quadrature map meets a variance
    outside the range it is tested on, :data:`TESTED_Q` (a GELU network at ``w_std = 1.5``
    reaches ``q = 1.5e6`` by depth 100). Memory grows with the number of kernel entries: a quadrature map
    streams them in chunks (:meth:`ntklib.kernel_maps.GaussKronrodMap.chunk_entries`).
    """
    depth, activation, w_std, b_std = _description(net, depth, activation, w_std, b_std)
    _checks.integer("depth", depth)
    want_error = return_error or rtol is not None
    _refuse(x1, x2, method, all_layers, want_error, rtol=True)
    if rtol is not None:
        eps = float(jnp.finfo(jnp.result_type(x1)).eps)
        if not (isinstance(rtol, int | float) and not isinstance(rtol, bool) and rtol > 0):
            raise ValueError(f"rtol must be a number > 0, got {rtol!r}")
        if rtol < 100 * eps:
            raise ValueError(
                f"rtol = {rtol:g} cannot be reached in {jnp.result_type(x1)} (rounding alone "
                f"is about {100 * eps:.1e} relative after a few layers)"
            )
    _fits("kernels", activation, x1, x2, depth, depth + 1, all_layers, want_error)
    args = dict(
        depth=depth, activation=activation, w_std=w_std, b_std=b_std, method=method, n_quad=n_quad
    )
    out, q_range = _kernels(x1, x2, **args, all_layers=all_layers, with_error=want_error)
    _say_range(q_range, args)
    if not want_error:
        _say_overflow(out, x1, x2, args, all_layers)
        return out
    k, err, scale = out
    _say_overflow(k, x1, x2, args, False)
    if rtol is not None:
        if isinstance(err.ntk, jax.core.Tracer):
            raise ValueError(
                "rtol needs concrete values: inside jit use return_error=True and compare"
            )
        worst = max(
            float(jnp.max(e / jnp.where(sc > 0, sc, 1.0))) for e, sc in zip(err, scale, strict=True)
        )
        if not worst <= rtol:
            warnings.warn(
                f"kernels({activation!r}, depth {depth}): estimated error {worst:.1e} relative "
                f"to the kernel's scale exceeds rtol = {rtol:g}",
                AccuracyWarning,
                stacklevel=2,
            )
    return (k, err) if return_error else k


class ResNetKernels(NamedTuple):
    """NNGP and NTK from :func:`resnet_kernels`, divided by ``exp(log_scale)``.

    The kernels of a deep ReLU ResNet overflow float64 at large depth (without biases the NNGP
    grows like ``(1 + w^2 / 2)^l``: past float64's range after about 1,000 layers at
    ``w_std = sqrt 2``); their ratios do not. The kernels are ``nngp * exp(log_scale)`` and
    ``ntk * exp(log_scale)``.

    Attributes:
        nngp: ``Sigma^depth(x1_i, x2_j) / exp(log_scale)``, shape (B1, B2); with
            ``all_layers=True`` ``Sigma^l / exp(log_scale_l)`` for ``l = 1..depth`` stacked,
            shape (depth, B1, B2).
        ntk: ``Theta^depth(x1_i, x2_j) / exp(log_scale)``, the same shapes.
        log_scale: the log of the common scale, a scalar (shape (depth,) with
            ``all_layers=True``); 0 for activations that are not positively homogeneous and
            for the first layer.
    """

    nngp: jax.Array
    ntk: jax.Array
    log_scale: jax.Array


def resnet_kernels(
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
    return_error: bool = False,
) -> ResNetKernels | tuple[ResNetKernels, Kernels]:
    """Infinite-width NNGP and NTK of one coordinate of ``y^depth`` of the residual network

        y^1 = (w / sqrt n_0) W^1 x + b b^1,
        y^l = y^{l-1} + (w / sqrt n) W^l phi(y^{l-1}) + b b^l,      l = 2..depth,

    (Hayou et al. 2019, eq. (11), in NTK parameterization). The residual branch has mean zero
    given ``y^{l-1}`` (``W^l`` is fresh), so it is uncorrelated with ``y^{l-1}`` and

        Sigma^l = Sigma^{l-1} + w^2 V(Sigma^{l-1}) + b^2,
        Theta^l = (1 + w^2 Vd(Sigma^{l-1})) Theta^{l-1} + w^2 V(Sigma^{l-1}) + b^2,

    ``Sigma^1 = Theta^1 = w^2 <x, x'> / n_0 + b^2``, by one ``lax.scan`` step per layer
    ``l = 2..depth``: the engine of :func:`kernels` with the residual block's layer, so one
    batch recurses on its upper triangle, a quadrature map shares each row's work with bounded
    memory, and the error estimate, the overflow and range warnings and the refusals are
    :func:`kernels`'. For a positively homogeneous activation (ReLU, identity) every such
    layer divides both kernels by the mean of the NNGP diagonal ``Sigma^l(x1_i, x1_i)`` and
    adds its log to ``log_scale`` (exact: the maps commute with the scaling, and the bias
    variance is carried in the same units); other activations keep ``log_scale = 0``, and
    their kernels grow with depth.

    Arguments:
        x1: inputs, shape (B1, n_0); the kernels have its dtype (use float64).
        x2: inputs, shape (B2, n_0), default ``None`` (``x2 = x1``, the diagonal of
            ``Sigma^1`` set to the inputs' variances exactly).
        depth: the number of layers ``depth``, an int ``>= 1`` (keyword-only, no default):
            the input layer, then ``depth - 1`` residual blocks; no read-out layer.
        activation: name of the nonlinearity (see :mod:`ntklib.activations`), default
            ``"relu"``.
        w_std: weight scale ``sigma_w`` (the ``w`` of the recursion), default 1.0.
        b_std: bias scale ``sigma_b`` (the ``b`` of the recursion), default 0.0.
        method: the kernel map (:func:`ntklib.kernel_maps.kernel_map`), default ``"auto"``:
            the closed form where there is one (relu, erf, identity), else
            :class:`~ntklib.kernel_maps.GaussKronrodMap`; ``"closed"``, ``"kronrod"``,
            ``"hermite"`` (or ``"quadrature"``) as there.
        n_quad: Gauss-Hermite nodes per dimension, for ``method="hermite"`` only, default 64.
        all_layers: return every layer ``l = 1..depth`` stacked on a leading axis, default
            ``False`` (the last layer only); not with ``return_error`` (``ValueError``).
        return_error: also return error estimates, default ``False``: a :class:`Kernels` of
            estimates of each entry's error in the units of ``nngp`` and ``ntk``, as
            :func:`kernels` computes them; not with the Gauss-Hermite rule (``ValueError``).

    Returns:
        A :class:`ResNetKernels` ``(nngp, ntk, log_scale)``; with ``return_error=True`` the
        pair ``(kernels, errors)``.
    """
    _checks.integer("depth", depth)
    _refuse(x1, x2, method, all_layers, return_error)
    _fits("resnet_kernels", activation, x1, x2, depth, depth, all_layers, return_error)
    args = dict(
        depth=depth, activation=activation, w_std=w_std, b_std=b_std, method=method, n_quad=n_quad
    )
    out, q_range = _kernels(
        x1, x2, **args, all_layers=all_layers, with_error=return_error, residual=True
    )
    _say_range(q_range, args, "resnet_kernels")
    k, err = (ResNetKernels(*out[0]), out[1]) if return_error else (ResNetKernels(*out), None)
    _say_overflow(k, x1, x2, args, all_layers, residual=True)
    return (k, err) if return_error else k


def _refuse(x1, x2, method: str, all_layers: bool, want_error: bool, rtol: bool = False) -> None:
    """The refusals :func:`kernels` and :func:`resnet_kernels` share, before any compute: the
    inputs (batches with the same features), and an error estimate asked of every layer or of
    the Gauss-Hermite rule; ``rtol``: the caller also takes ``rtol``, which the messages name."""
    _inputs("x1", x1)
    if x2 is not None:
        _inputs("x2", x2)
        if x2.shape[1] != x1.shape[1]:
            raise ValueError(f"x1 and x2 need the same features: shapes {x1.shape} and {x2.shape}")
    if want_error and all_layers:
        asked = "return_error and rtol estimate" if rtol else "return_error estimates"
        raise ValueError(f"{asked} the last layer only: all_layers=False")
    if want_error and method in ("hermite", "quadrature"):
        raise ValueError(
            "the Gauss-Hermite rule has no error estimate (and is not accurate at large "
            "variances): use method='auto' or 'kronrod' with return_error"
            + (" or rtol" if rtol else "")
        )


def _fits(
    name: str, activation: str, x1, x2, depth: int, layers: int, all_layers: bool, want_error: bool
) -> None:
    """Refuse an output that will not fit in memory: NNGP and NTK (and their errors), each of
    ``layers`` layers with ``all_layers``, else the last."""
    n2 = x1.shape[0] if x2 is None else x2.shape[0]
    _checks.fits(
        f"{name}({activation!r}) of {x1.shape[0]} x {n2} inputs at depth {depth}"
        + (" with all_layers" if all_layers else ""),
        (4 if want_error else 2)
        * (layers if all_layers else 1)
        * x1.shape[0]
        * n2
        * jnp.dtype(jnp.result_type(x1)).itemsize,
    )


def _inputs(name: str, x) -> None:
    """A batch of inputs: shape ``(batch, features)``, and (where concrete) every entry finite."""
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != 2:
        raise ValueError(
            f"{name} must be an array of shape (batch, features), got "
            f"{'shape ' + str(tuple(shape)) if shape is not None else type(x).__name__}"
            + (
                ": one input x of n_0 features is x[None, :]"
                if shape is not None and len(shape) == 1
                else ""
            )
        )
    if isinstance(x, jax.core.Tracer):
        return
    bad = np.argwhere(~np.isfinite(np.asarray(x)))
    if bad.size:
        i, j = (int(v) for v in bad[0])
        raise ValueError(
            f"{name}[{i}, {j}] = {float(np.asarray(x)[i, j])} is not finite "
            f"({len(bad)} entr{'y is' if len(bad) == 1 else 'ies are'} not): the kernels would be NaN"
        )


class RangeWarning(AccuracyWarning):
    """The variances entering a quadrature kernel map left the range it is tested on."""


TESTED_Q = (0.01, 1e3)  # GaussKronrodMap's tested variances (the kernel_maps docstring)


def _say_range(q_range, net: dict, name: str = "kernels") -> None:
    """Warn (:class:`RangeWarning`) when a quadrature map met a variance outside
    :data:`TESTED_Q` (a positive one below it, or one above it), outside a trace."""
    if q_range is None or isinstance(q_range[0], jax.core.Tracer):  # a closed form, or traced
        return
    lo, hi = float(q_range[0]), float(q_range[1])
    if 0 < lo < TESTED_Q[0] or hi > TESTED_Q[1]:
        warnings.warn(
            f"{name}({net['activation']!r}, depth {net['depth']}, w_std={net['w_std']}, "
            f"b_std={net['b_std']}): the variances entering the activation's map span "
            f"[{lo:.3g}, {hi:.3g}], outside [{TESTED_Q[0]:g}, {TESTED_Q[1]:g}] where the "
            "Gauss-Kronrod map is tested against nested adaptive quadrature (about 1e-14 there); "
            "its error estimate (return_error=True) may not bound the error outside it",
            RangeWarning,
            stacklevel=3,
        )


class OverflowWarning(RuntimeWarning):
    """The recursion left the floating-point range (the kernel is infinite past some depth)."""


def _say_overflow(k, x1, x2, net: dict, all_layers: bool, residual: bool = False) -> None:
    """Warn, with the first layer whose kernel is not finite, when finite inputs gave a
    non-finite kernel ``k`` (found by rerunning :func:`_kernels` with the same ``net``
    arguments and every layer, only in that case); ``residual`` for :func:`resnet_kernels`."""
    if isinstance(k.ntk, jax.core.Tracer) or bool(jnp.all(jnp.isfinite(k.ntk))):
        return
    if all_layers:
        layers = k
    else:
        out = _kernels(x1, x2, **net, all_layers=True, with_error=False, residual=residual)[0]
        layers = ResNetKernels(*out) if residual else out
    finite = np.asarray(jnp.all(jnp.isfinite(layers.ntk) & jnp.isfinite(layers.nngp), axis=(1, 2)))
    first = int(np.argmin(finite))  # index 0 is layer 1 (the input layer's covariance)
    name, last = ("resnet_kernels", net["depth"]) if residual else ("kernels", net["depth"] + 1)
    warnings.warn(
        f"{name}({net['activation']!r}, w_std={net['w_std']}, b_std={net['b_std']}): the "
        f"recursion leaves the {jnp.result_type(x1)} range at layer l = {first + 1} of "
        f"{'' if residual else 'L + 1 = '}{last}: the kernel is infinite from there on",
        OverflowWarning,
        stacklevel=3,
    )


def _kernels(
    x1: jax.Array,
    x2: jax.Array | None = None,
    *,
    depth: int,
    all_layers: bool = False,
    **kw,
):
    """The jitted recursion behind :func:`kernels` and :func:`resnet_kernels` (same
    arguments, and ``with_error``, ``residual``): ``(out, q_range)``, ``out`` the kernels (with
    ``with_error``: ``(kernels, errors, scales)``, errors and scales as :class:`Kernels`) and
    ``q_range`` the extreme variances ``(q_min, q_max)`` that entered a quadrature map (``None``
    for a closed form, exact at any variance). With ``residual`` the layer is the residual
    block's and ``depth - 1`` of them follow the input layer; ``out`` is ``(nngp, ntk,
    log_scale)``, rescaled as :class:`ResNetKernels` says for a positively homogeneous
    activation. The number of layers is a traced argument, so one compiled program serves
    every depth (a depth sweep compiles once), except with ``all_layers``, whose output's
    shape is the depth's."""
    steps = depth - 1 if kw.get("residual") else depth
    if all_layers:
        return _recursion_all_layers(x1, x2, steps, **kw)
    return _recursion(x1, x2, jnp.asarray(steps, jnp.int32), **kw)


def _recursion_impl(
    x1: jax.Array,
    x2: jax.Array | None,
    steps,
    *,
    activation: str = "relu",
    w_std: float = 1.0,
    b_std: float = 0.0,
    method: str = "auto",
    n_quad: int = 64,
    all_layers: bool = False,
    with_error: bool = False,
    residual: bool = False,
):
    """:func:`_kernels` with ``steps`` layers after the input layer (a static int with
    ``all_layers``, else traced)."""
    kmap = kernel_map(activation, method, n_quad)
    quad = isinstance(kmap, GaussKronrodMap)
    rescale = residual and activation in HOMOGENEOUS
    gauss_run = with_error and quad  # closed forms: no second recursion, rounding only
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
        off, on = np.nonzero(i != j)[0], np.nonzero(i == j)[0]
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

    # ReLU in closed form: carry the determinant too (see _relu_pair; the MLP's layer only)
    angle = kmap is relu_map and not residual

    def diag(q, gauss=False):
        if quad:
            return kmap.diag(q, gauss)
        return kmap(q, q, q)

    def entries(s12, q1, q2, vq1, vdq1, gauss):
        """``(V, Vd)`` of the entries: a quadrature map shares each row's work
        (:meth:`~ntklib.kernel_maps.GaussKronrodMap.batch`), and the diagonal of one batch
        (correlation 1) is the diagonal's own ``(vq1, vdq1)``."""
        if not quad:
            return (kmap.gauss if gauss else kmap)(s12, *pair(q1, q2))
        if not symmetric:
            rows1, rows2 = np.arange(len(q1))[:, None], np.arange(len(q2))[None, :]
            return kmap.batch(s12, q1, q2, rows1, rows2, gauss)
        v, vd = kmap.batch(s12[off], q1, q1, i[off], j[off], gauss)
        full = jnp.zeros_like(s12)
        return (
            full.at[off].set(v).at[on].set(vq1[i[on]]),
            full.at[off].set(vd).at[on].set(vdq1[i[on]]),
        )

    def block(s, t, v, vd, b2):
        """``(Sigma, Theta)`` after the layer from ``(V, Vd)`` of the layer below: the MLP's
        (module docstring) or, with ``residual``, the residual block's (:func:`resnet_kernels`)."""
        if residual:
            return s + w2 * v + b2, (1.0 + w2 * vd) * t + w2 * v + b2
        s_new = w2 * v + b2
        return s_new, s_new + w2 * vd * t

    def layer(s12, q1, q2, t12, tq1, tq2, gauss=False, b2=b2):
        """One layer for pairs ``(s12, t12)`` and both rows' diagonals ``(q, tq)``."""
        vq1, vdq1 = diag(q1, gauss)
        v, vd = entries(s12, q1, q2, vq1, vdq1, gauss)
        s_new, t_new = block(s12, t12, v, vd, b2)
        q1_new, tq1_new = block(q1, tq1, vq1, vdq1, b2)
        if symmetric:
            q2_new, tq2_new = q1_new, tq1_new
        else:
            vq2, vdq2 = diag(q2, gauss)
            q2_new, tq2_new = block(q2, tq2, vq2, vdq2, b2)
        return s_new, q1_new, q2_new, t_new, tq1_new, tq2_new

    def step(carry, _):
        s12, det, q1, q2, t12, tq1, tq2, gcarry, (qlo, qhi), logs = carry
        # what enters the map (fmin, fmax: a NaN past an overflow does not hide the range)
        qlo = jnp.fmin(qlo, jnp.fmin(jnp.nanmin(q1), jnp.nanmin(q2)))
        qhi = jnp.fmax(qhi, jnp.fmax(jnp.nanmax(q1), jnp.nanmax(q2)))
        b2_here = b2 * jnp.exp(-logs) if residual else b2  # the bias variance in current units
        if residual:
            new = layer(s12, q1, q2, t12, tq1, tq2, b2=b2_here)
            m = jnp.mean(new[1]) if rescale else jnp.ones((), s12.dtype)
            s_new, q1_new, q2_new, t_new, tq1_new, tq2_new = (a / m for a in new)
            logs = logs + jnp.log(m)
        elif angle:
            v, vd, det = _relu_pair(s12, det, *pair(q1, q2), w2, b2)
            s_new = w2 * v + b2
            t_new = s_new + w2 * vd * t12
            q1_new = w2 * kmap(q1, q1, q1)[0] + b2
            q2_new = q1_new if symmetric else w2 * kmap(q2, q2, q2)[0] + b2
            tq1_new, tq2_new = q1_new + w2 * tq1 / 2, q2_new + w2 * tq2 / 2  # Vd(q, q, q) = 1/2
        else:
            s_new, q1_new, q2_new, t_new, tq1_new, tq2_new = layer(s12, q1, q2, t12, tq1, tq2)
        if gauss_run:  # never rescaled: a quadrature map is for a non-homogeneous activation
            gcarry = layer(*gcarry, gauss=True, b2=b2_here)
        new = (s_new, det, q1_new, q2_new, t_new, tq1_new, tq2_new, gcarry, (qlo, qhi), logs)
        return new, ((s_new, t_new, logs) if all_layers else None)

    if angle:
        det = _input_det(x1, x2, w2, b2)  # exactly 0 on the diagonal
        if symmetric:
            det = det[i, j]
    else:
        det = jnp.zeros(())
    gcarry = (s12, q1, q2, s12, q1, q2) if gauss_run else ()
    q_range = (jnp.array(jnp.inf, s12.dtype), jnp.array(-jnp.inf, s12.dtype))
    logs = jnp.zeros((), s12.dtype)
    init = (s12, det, q1, q2, s12, q1, q2, gcarry, q_range, logs)
    if all_layers:
        carry, per_layer = jax.lax.scan(step, init, None, length=steps)
    else:  # a traced number of layers: one program for every depth
        carry = jax.lax.fori_loop(0, steps, lambda _, c: step(c, None)[0], init)
    s_out, _, q1_out, q2_out, t_out, tq1_out, tq2_out, g_out, q_range, logs = carry
    q_range = q_range if quad else None
    if all_layers:  # the input layer, then every layer after it
        s_all, t_all, l_all = per_layer
        s_out, t_out = jnp.concatenate([s12[None], s_all]), jnp.concatenate([s12[None], t_all])
        logs = jnp.concatenate([jnp.zeros((1,), l_all.dtype), l_all])
    k = (unpack(s_out), unpack(t_out), logs) if residual else Kernels(unpack(s_out), unpack(t_out))
    if not with_error:
        return k, q_range
    sg, tg = (g_out[0], g_out[3]) if gauss_run else (s_out, t_out)
    scale_s = jnp.sqrt(jnp.multiply(*pair(q1_out, q2_out)))
    scale_t = jnp.sqrt(jnp.multiply(*pair(tq1_out, tq2_out)))
    err = Kernels(
        unpack(error_estimate(jnp.abs(s_out - sg), scale_s)),
        unpack(error_estimate(jnp.abs(t_out - tg), scale_t)),
    )
    return (k, err, Kernels(unpack(scale_s), unpack(scale_t))), q_range


_STATIC = ("activation", "method", "n_quad", "with_error", "residual")
_recursion = jax.jit(_recursion_impl, static_argnames=_STATIC)
_recursion_all_layers = jax.jit(
    partial(_recursion_impl, all_layers=True), static_argnames=("steps", *_STATIC)
)
