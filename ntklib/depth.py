"""The infinite-width NTK at large depth (Hayou, Doucet & Rousseau 2019).

What a chapter on depth needs beyond :func:`ntklib.infinite.kernels`:

* :func:`~ntklib.infinite.resnet_kernels` (also ``ntklib.depth.resnet_kernels``), the
  infinite-width NNGP and NTK of the residual network of the paper's eq. (11),
  ``y^l = y^{l-1} + (sigma_w / sqrt n) W^l phi(y^{l-1}) + sigma_b b^l`` (NTK
  parameterization), by the engine of :func:`~ntklib.infinite.kernels` with the residual
  block's layer;
* the large-depth limits and rates that the chapter derives from the recursions and checks
  against them (:func:`eoc_limit`, :func:`ordered_rate`, :func:`chaotic_rate`);
* Gram-matrix diagnostics (:func:`correlation`, :func:`gram_spectrum`), inputs whose every
  layer sits at ``q*`` (:func:`inputs_at_q`), and the least-squares fits that measure the
  rates and coefficients in the kernels (:func:`fit_log_coefficient`,
  :func:`fit_exponential_rate`, :func:`extrapolate_log_expansion`,
  :func:`eoc_condition_log_coefficient`).

Derivations (the chapter gives them in full). Take inputs with ``q^1 = q*`` so that every
layer has variance ``q*`` and write ``c_l`` for the correlation of two inputs, ``f`` for the
correlation map and ``chi = f'(1)`` (:mod:`ntklib.eoc`). Then ``Theta^{l+1} = q* c_{l+1} +
f'(c_l) Theta^l``, because ``sigma_w^2 Vd = f'`` at variance ``q*``.

* Ordered phase (``chi < 1``): ``Theta^L -> q* / (1 - chi)`` for every pair. ``1 - c_l``
  decays like ``chi^l``; for a smooth ``phi``, ``f'(c_l) - chi = O(1 - c_l)`` forces the
  linear recursion at its own rate, so ``Theta^L - Theta^inf ~ L chi^L`` (rate
  ``log chi``); for a ReLU-like ``phi``, ``f'(c) - chi ~ sqrt(1 - c)``, so the deviation decays
  like ``chi^{L/2}`` (rate ``log(chi) / 2``).
* Chaotic phase (``chi > 1``): the diagonal grows like ``chi^L``, the off-diagonal converges
  (``c_l -> c* < 1``, ``f'(c*) < 1``), so the NTK correlation goes to 0 like ``chi^{-L}``.
* Edge of Chaos (``chi = 1``): with ``delta = 1 - c``, ``f(1 - delta) = 1 - delta + a delta^2
  - b delta^3`` for a smooth ``phi`` (``a = f''(1)/2``, ``b = f'''(1)/6``) and
  ``1 - delta + k delta^{3/2}`` for ReLU. Solving ``1/delta_l`` (resp. ``delta_l^{-1/2}``) to
  second order and inserting it in the NTK recursion gives

      Theta^L(x, x') / L = lambda q* + alpha (log L) / L + O(1 / L),
      ReLU:   lambda = 1/4,  alpha = 3 q* / 8,
      smooth: lambda = 1/3,  alpha = (q* / 3) (1 - b / a^2),

  with ``f^{(k)}(1) = sigma_w^2 q*^{k-1} E[phi^{(k)}(sqrt(q*) Z)^2]``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from ntklib import eoc
from ntklib.activations import get_activation
from ntklib.infinite import ResNetKernels, resnet_kernels  # noqa: F401  (the chapter's name)

RELU_LIKE = ("relu",)  # activations treated as piecewise linear in the rates below


def correlation(k: jax.Array) -> jax.Array:
    """``K_ij / sqrt(K_ii K_jj)`` for a Gram matrix (or a stack of them, shape (..., B, B)).

    Arguments:
        k: the Gram matrices, shape (..., B, B), with a positive diagonal.

    Returns:
        The correlation matrices, the same shape, ones on the diagonal.
    """
    d = jnp.sqrt(jnp.diagonal(k, axis1=-2, axis2=-1))
    return k / (d[..., :, None] * d[..., None, :])


def gram_spectrum(k: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(lambda_min, lambda_max, condition number)`` of symmetric Gram matrices (..., B, B),
    the eigenvalues divided by the mean diagonal entry (scale free; float64 advised: at large
    depth in the ordered phase ``lambda_min`` sinks to the rounding level).

    Arguments:
        k: symmetric Gram matrices, shape (..., B, B) (``eigvalsh`` reads the lower triangle).

    Returns:
        ``(lambda_min, lambda_max, condition number)``, each of shape (...); the condition
        number ``lambda_max / lambda_min`` is independent of the scaling.
    """
    ev = jnp.linalg.eigvalsh(k)
    scale = jnp.mean(jnp.diagonal(k, axis1=-2, axis2=-1), axis=-1)
    lo, hi = ev[..., 0] / scale, ev[..., -1] / scale
    return lo, hi, hi / lo


def inputs_at_q(n_points: int, in_dim: int, q: float, w_std: float, b_std: float) -> jax.Array:
    """``n_points`` inputs on a great half-circle of the sphere whose first-layer variance
    ``w^2 |x|^2 / n_0 + b^2`` equals ``q`` (so every layer sits at the fixed point ``q*`` when
    ``q = q*``): ``x_k`` has angle ``pi k / n_points``, ``k = 0..n_points-1``, in the plane
    of the first two coordinates, so the inputs' cosines span 1 to
    ``cos(pi (n_points - 1) / n_points)``, about -1 (the first layer's correlations
    ``b^2 / q + (1 - b^2 / q) cos``).

    Arguments:
        n_points: the number of inputs, an int ``>= 2``.
        in_dim: the input dimension ``n_0``, an int ``>= 2``.
        q: the first-layer variance, usually ``q*`` (:func:`ntklib.eoc.q_star`); it must
            exceed ``sigma_b^2`` (else ``ValueError``).
        w_std: weight standard deviation ``sigma_w``, a number ``> 0``.
        b_std: bias standard deviation ``sigma_b``.

    Returns:
        The inputs, shape (n_points, in_dim), in JAX's default float (float64 under
        ``jax_enable_x64``).
    """
    if not (
        isinstance(n_points, int) and n_points >= 2 and isinstance(in_dim, int) and in_dim >= 2
    ):
        raise ValueError("need n_points >= 2 and in_dim >= 2 (ints)")
    if not q > b_std**2:
        raise ValueError(f"q = {q!r} must exceed sigma_b^2 = {b_std**2!r}")
    th = np.pi * np.arange(n_points) / n_points
    x = np.zeros((n_points, in_dim))
    x[:, 0], x[:, 1] = np.cos(th), np.sin(th)
    return jnp.asarray(x * math.sqrt((q - b_std**2) * in_dim / w_std**2))


def _map_derivative_at_one(activation: str, w_std: float, b_std: float, k: int, q: float) -> float:
    """``f^{(k)}(1) = sigma_w^2 q^{k-1} E[phi^{(k)}(sqrt(q) Z)^2]`` (the k-th derivative of
    the correlation map at 1)."""
    phi = get_activation(activation)
    g = phi
    for _ in range(k):
        g = jax.grad(g)
    with eoc._x64():
        gk = jax.jit(lambda x: g(jnp.asarray(x, jnp.float64)))

        def sq(x: float) -> float:
            with eoc._x64():
                return float(gk(x)) ** 2

        return w_std**2 * q ** (k - 1) * eoc.gauss_mean(sq, q)


def eoc_limit(activation: str, w_std: float, b_std: float) -> dict[str, float]:
    """On the Edge of Chaos: ``q*``, the limit ``lambda`` of the NTK correlation and the
    coefficient ``alpha`` of ``Theta^L(x, x') / L = lambda q* + alpha log(L) / L + O(1/L)``
    (module docstring). ReLU: only ``(sigma_b, sigma_w) = (0, sqrt 2)``, where ``q* = q^1``
    is whatever the input gives; ``q* = 1`` is returned (the kernel scales with it).

    A smooth activation needs ``q* > 0``: where ``q* = 0`` (``sigma_b = 0`` and
    ``phi(0) = 0``, e.g. tanh at ``sigma_w = 1``) ``a = 0`` and the division raises
    ``ZeroDivisionError``.

    Arguments:
        activation: name of the nonlinearity ``phi`` (see :mod:`ntklib.activations`).
        w_std: weight standard deviation ``sigma_w`` on the Edge of Chaos
            (:func:`ntklib.eoc.eoc_w_std`); ``chi`` more than 1e-8 from 1 (for ReLU, any
            point but ``(sigma_b, sigma_w) = (0, sqrt 2)``) raises ``ValueError``.
        b_std: bias standard deviation ``sigma_b``.

    Returns:
        A dict with ``"q"`` (``q*``), ``"lambda"`` and ``"alpha"``; for a smooth activation
        also the expansion's coefficients ``"a" = f''(1) / 2`` and ``"b" = f'''(1) / 6``.
    """
    if activation in RELU_LIKE:
        if b_std != 0.0 or not math.isclose(w_std, math.sqrt(2.0), rel_tol=1e-12):
            raise ValueError("the ReLU Edge of Chaos is (sigma_b, sigma_w) = (0, sqrt 2)")
        return {"q": 1.0, "lambda": 0.25, "alpha": 3.0 / 8.0}
    chi = eoc.chi(activation, w_std, b_std)
    if abs(chi - 1.0) > 1e-8:
        raise ValueError(
            f"({b_std}, {w_std}) is not on the Edge of Chaos of {activation}: chi = {chi}"
        )
    q = eoc.q_star(activation, w_std, b_std)
    a = _map_derivative_at_one(activation, w_std, b_std, 2, q) / 2
    b = _map_derivative_at_one(activation, w_std, b_std, 3, q) / 6
    return {"q": q, "lambda": 1.0 / 3.0, "alpha": q / 3.0 * (1.0 - b / a**2), "a": a, "b": b}


def ordered_rate(activation: str, w_std: float, b_std: float) -> float:
    """Predicted exponential rate (per layer, negative) of ``Theta^L - q*/(1 - chi)`` in the
    ordered phase: ``log(chi) / 2`` for ReLU-like activations, ``log chi`` (times a factor
    ``L``) for smooth ones (module docstring).

    Arguments:
        activation: name of the nonlinearity ``phi``; ``"relu"`` counts as ReLU-like, any
            other as smooth.
        w_std: weight standard deviation ``sigma_w``.
        b_std: bias standard deviation ``sigma_b``; ``chi(sigma_w, sigma_b) >= 1`` raises
            ``ValueError``.
    """
    chi = eoc.chi(activation, w_std, b_std)
    if not chi < 1.0:
        raise ValueError(f"chi = {chi} >= 1: not in the ordered phase")
    return math.log(chi) / (2.0 if activation in RELU_LIKE else 1.0)


def chaotic_rate(activation: str, w_std: float, b_std: float) -> float:
    """Predicted rate (negative) at which the NTK correlation of two distinct inputs goes to
    0 in the chaotic phase: ``-log chi`` (module docstring).

    Arguments:
        activation: name of the nonlinearity ``phi`` (see :mod:`ntklib.activations`).
        w_std: weight standard deviation ``sigma_w``.
        b_std: bias standard deviation ``sigma_b``; ``chi(sigma_w, sigma_b) <= 1`` raises
            ``ValueError``.
    """
    chi = eoc.chi(activation, w_std, b_std)
    if not chi > 1.0:
        raise ValueError(f"chi = {chi} <= 1: not in the chaotic phase")
    return -math.log(chi)


def fit_log_coefficient(
    layers: np.ndarray, y: np.ndarray, *, l_min: float
) -> tuple[np.ndarray, np.ndarray]:
    """The coefficient ``alpha`` of ``y_L = alpha log L + beta + gamma log(L)/L + eps/L
    (+ zeta log(L)^2/L)``, fitted by least squares over ``L >= l_min`` for each column of ``y``
    (shape (len(layers), m)). Returns ``(alpha with five terms, alpha with four terms)``: their
    difference is the size of what the truncated expansion leaves in ``alpha``. ``y`` is
    ``L`` times the deviation of a normalized kernel from its limit (``log L / L`` rates).

    Arguments:
        layers: the depths ``L``, shape (len(layers),).
        y: the values ``y_L``, shape (len(layers),) or (len(layers), m).
        l_min: the smallest depth fitted (keyword-only, no default); at least 10 layers must
            be ``>= l_min`` (else ``ValueError``).

    Returns:
        ``(alpha with five terms, alpha with four terms)``, NumPy scalars (arrays of shape
        (m,) for a two-dimensional ``y``).
    """
    ls = np.asarray(layers, float)
    sel = ls >= l_min
    if sel.sum() < 10:
        raise ValueError(f"need at least 10 layers >= l_min = {l_min}, got {int(sel.sum())}")
    l = ls[sel]
    cols = [np.log(l), np.ones_like(l), np.log(l) / l, 1 / l, np.log(l) ** 2 / l]
    yy = np.asarray(y, float)[sel]
    a5 = np.linalg.lstsq(np.stack(cols, 1), yy, rcond=None)[0][0]
    a4 = np.linalg.lstsq(np.stack(cols[:4], 1), yy, rcond=None)[0][0]
    return a5, a4


def fit_exponential_rate(layers: np.ndarray, dev: np.ndarray, *, linear_prefactor: bool) -> float:
    """The rate ``r`` of ``|dev_L| = |A L + B| e^{r L}`` (``linear_prefactor``, the smooth
    ordered phase, where the forcing resonates) or ``|dev_L| = C e^{r L}``, by least squares
    on ``log |dev|`` over the given layers (one pair of inputs: the sign of ``A L + B`` is
    fixed there, a maximum over pairs may switch between pairs).

    Arguments:
        layers: the depths ``L``, shape (len(layers),).
        dev: the deviations ``dev_L`` at those depths, nonzero, shape (len(layers),).
        linear_prefactor: fit ``|A L + B| e^{r L}`` (``True``; started from the straight-line
            fit) or ``C e^{r L}`` (``False``: a straight line through ``log |dev|``)
            (keyword-only, no default).

    Returns:
        The rate ``r`` per layer, a float.
    """
    ls, y = np.asarray(layers, float), np.log(np.abs(np.asarray(dev, float)))
    r0, c0 = np.polyfit(ls, y, 1)
    if not linear_prefactor:
        return float(r0)

    def resid(p):
        r, a, b = p
        return np.log(np.abs(a * ls + b) + 1e-300) + r * ls - y

    a0 = float(np.exp(c0) / ls.mean())
    fit = optimize.least_squares(resid, x0=[r0, a0, 0.0], xtol=1e-14, ftol=1e-14, gtol=1e-14)
    return float(fit.x[0])


def extrapolate_log_expansion(
    layers: np.ndarray, y: np.ndarray, *, l_min: float, l_max: float, l_target: float
) -> tuple[np.ndarray, np.ndarray]:
    """``y`` at ``l_target`` predicted from the expansion of :func:`fit_log_coefficient`
    fitted over ``l_min <= L <= l_max`` only (shallower layers), for each column of ``y``.

    Returns ``(prediction with five terms, prediction with four terms)``: their difference is
    an estimate of what the truncated expansion leaves in the prediction, independent of the
    value of ``y`` at ``l_target`` (which the fit never sees when ``l_max < l_target``).

    Arguments:
        layers: the depths ``L``, shape (len(layers),).
        y: the values ``y_L``, shape (len(layers),) or (len(layers), m).
        l_min: the smallest depth fitted, ``> 0`` (keyword-only, no default).
        l_max: the largest depth fitted, ``> l_min`` (keyword-only, no default); at least 10
            layers must lie in ``[l_min, l_max]`` (else ``ValueError``).
        l_target: the depth predicted, a finite number ``> 0`` (keyword-only, no default).

    Returns:
        ``(prediction with five terms, prediction with four terms)``, NumPy scalars (arrays
        of shape (m,) for a two-dimensional ``y``).
    """
    ls = np.asarray(layers, float)
    if not (0 < l_min < l_max and np.isfinite(l_target) and l_target > 0):
        raise ValueError(
            f"need 0 < l_min < l_max and l_target > 0, got {l_min}, {l_max}, {l_target}"
        )
    sel = (ls >= l_min) & (ls <= l_max)
    if sel.sum() < 10:
        raise ValueError(f"need at least 10 layers in [{l_min}, {l_max}], got {int(sel.sum())}")

    def cols(l):
        l = np.asarray(l, float)
        return [np.log(l), np.ones_like(l), np.log(l) / l, 1 / l, np.log(l) ** 2 / l]

    a = np.stack(cols(ls[sel]), 1)
    t = np.array(cols(np.array([l_target])))[:, 0]
    yy = np.asarray(y, float)[sel]
    c5 = np.linalg.lstsq(a, yy, rcond=None)[0]
    c4 = np.linalg.lstsq(a[:, :4], yy, rcond=None)[0]
    return t @ c5, t[:4] @ c4


def eoc_condition_log_coefficient(n_points: int, lam: float, alpha: float, q: float) -> float:
    """On the Edge of Chaos, the coefficient ``A`` of ``L (kappa_L - kappa_inf) = A log L +
    O(1)`` for ``n_points`` inputs at ``q*``: the ``log L / L`` term of every off-diagonal
    entry of ``Theta^L / (L q*)`` is the same, ``alpha / q*`` times ``11^T - I``, which moves
    ``lambda`` in ``kappa(lambda) = (1 + (N-1) lambda) / (1 - lambda)``; ``d kappa / d lambda
    = N / (1 - lambda)^2``. The ``1/L`` terms differ by pair and only move the ``O(1)``.
    Hence ``A = N alpha / (q* (1 - lambda)^2)``.

    Arguments:
        n_points: the number ``N`` of inputs, an int ``>= 2``.
        lam: the limit ``lambda`` of the NTK correlation, in ``(0, 1)``
            (:func:`eoc_limit`).
        alpha: the coefficient ``alpha`` of ``log(L) / L`` (:func:`eoc_limit`).
        q: the fixed point ``q*``, ``> 0``.

    Returns:
        ``A``, a float.
    """
    if not (isinstance(n_points, int) and n_points >= 2 and 0 < lam < 1 and q > 0):
        raise ValueError("need n_points >= 2, 0 < lambda < 1, q > 0")
    return n_points * alpha / (q * (1.0 - lam) ** 2)
