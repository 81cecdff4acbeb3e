"""Signal propagation at infinite width: variance and correlation maps, chi, the Edge of Chaos.

For a fully connected network with weight and bias variances ``(sigma_w^2, sigma_b^2)`` and
activation ``phi``, the pre-activation variance of an input follows the *variance map* and
the correlation of two inputs the *correlation map* (Poole et al. 2016; Schoenholz et al.
2017; Hayou, Doucet & Rousseau 2019, Sec. 2):

    q_{l+1} = F(q_l) = sigma_w^2 E[phi(sqrt(q_l) Z)^2] + sigma_b^2,
    c_{l+1} = f(c_l) = (sigma_w^2 E[phi(u) phi(v)] + sigma_b^2) / q*,
        (u, v) ~ N(0, q* [[1, c], [c, 1]]),

with ``q*`` the fixed point of ``F``. The slope of ``f`` at ``c = 1`` is

    chi = f'(1) = sigma_w^2 E[phi'(sqrt(q*) Z)^2]:

``chi < 1`` is the ordered phase (correlations go to 1), ``chi > 1`` the chaotic phase, and
``chi = 1`` the Edge of Chaos (EOC). The one-dimensional Gaussian expectations here are
computed with adaptive quadrature on each half-line (the activations may have a kink at 0),
to about 1e-12; the two-dimensional one in :func:`correlation_map` by the kernel maps of
:mod:`ntklib.kernel_maps` (closed forms, else the Gauss-Kronrod map), the maps of
:func:`ntklib.kernels`. NumPy/SciPy floats: these are scalar root-finding problems, not array
programs (the library's kernel recursions for deep networks are in :mod:`ntklib.infinite`).

Every function that takes them checks ``w_std`` and ``b_std`` (finite numbers ``>= 0``, else
``TypeError`` or ``ValueError``) and the activation's name
(:func:`ntklib.activations.get_activation`); :func:`eoc_curve` turns a ``ValueError`` into NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.experimental
import jax.numpy as jnp
import numpy as np
from scipy import integrate, optimize

from ntklib import _checks
from ntklib.activations import HOMOGENEOUS, get_activation
from ntklib.kernel_maps import kernel_map


def _x64():
    """A context in which JAX computes in float64, whatever the caller's setting."""
    if hasattr(jax, "enable_x64"):  # JAX >= 0.7: the config state is a context manager
        return jax.enable_x64(True)
    return jax.experimental.enable_x64()  # older JAX


_SQRT_PI = math.sqrt(math.pi)

# Plain-float versions of the activations with elementary formulas: adaptive quadrature calls
# them thousands of times, and a jitted JAX call costs ~100 times more per point. Each is
# tested against its JAX definition in tests/test_eoc.py.
_SCALAR: dict[str, tuple[Callable[[float], float], Callable[[float], float]]] = {
    "relu": (lambda x: x if x > 0 else 0.0, lambda x: 1.0 if x > 0 else 0.0),
    "identity": (lambda x: x, lambda x: 1.0),
    "tanh": (math.tanh, lambda x: 1.0 / math.cosh(x) ** 2 if abs(x) < 350 else 0.0),
    "erf": (math.erf, lambda x: 2.0 / _SQRT_PI * math.exp(-x * x)),
    "elu": (lambda x: x if x > 0 else math.expm1(x), lambda x: 1.0 if x > 0 else math.exp(x)),
}


def _numpy_activation(activation: str) -> tuple[Callable, Callable]:
    """``phi`` and ``phi'`` as float -> float callables: elementary formulas where ntklib has
    them, else JAX evaluated in float64 whatever the caller's ``jax_enable_x64`` setting."""
    get_activation(activation)  # unknown names raise here
    if activation in _SCALAR:
        return _SCALAR[activation]
    enable_x64 = _x64
    phi = get_activation(activation)
    with enable_x64():
        f = jax.jit(lambda x: phi(jnp.asarray(x, jnp.float64)))
        df = jax.jit(jax.grad(lambda x: phi(jnp.asarray(x, jnp.float64))))

    def call(fn):
        def run(x: float) -> float:
            with enable_x64():
                return float(fn(x))

        return run

    return call(f), call(df)


def gauss_mean(g: Callable[[float], float], q: float) -> float:
    """``E[g(sqrt(q) Z)]``, ``Z ~ N(0, 1)``, by adaptive quadrature on each half-line.

    The integrand ``g(sqrt(q) z) exp(-z^2 / 2) / sqrt(2 pi)`` is integrated over ``(-inf, 0]``
    and ``[0, inf)`` separately (SciPy's ``quad``, ``epsabs=1e-13``, ``epsrel=1e-12``), so a
    kink of ``g`` at 0 costs no accuracy.

    Arguments:
        g: a float -> float function; it is called many times, so plain Python (not a JAX
            call) is fastest.
        q: the variance of the argument ``sqrt(q) Z``, a finite number ``>= 0`` (else
            ``ValueError``).

    Returns:
        The expectation, a float.
    """
    if not (math.isfinite(q) and q >= 0):
        raise ValueError(f"variance q must be a finite number >= 0, got {q!r}")
    s = math.sqrt(q)
    dens = 1.0 / math.sqrt(2 * math.pi)

    def h(z: float) -> float:
        return g(s * z) * dens * math.exp(-0.5 * z * z)

    left = integrate.quad(h, -np.inf, 0.0, epsabs=1e-13, epsrel=1e-12, limit=200)[0]
    right = integrate.quad(h, 0.0, np.inf, epsabs=1e-13, epsrel=1e-12, limit=200)[0]
    return left + right


def _check(w_std: float, b_std: float) -> None:
    _checks.number("w_std", w_std)
    _checks.number("b_std", b_std)


def variance_map(q: float, activation: str, w_std: float, b_std: float) -> float:
    """The variance map ``F(q) = sigma_w^2 E[phi(sqrt(q) Z)^2] + sigma_b^2``, ``Z ~ N(0, 1)``.

    The pre-activation variance of layer ``l + 1`` from that of layer ``l`` (module docstring;
    Poole et al. 2016; Hayou, Doucet & Rousseau 2019, Sec. 2), by :func:`gauss_mean`.

    Arguments:
        q: the variance ``q_l``, a finite number ``>= 0``.
        activation: name of the nonlinearity ``phi`` (see :mod:`ntklib.activations`).
        w_std: weight standard deviation ``sigma_w``, a finite number ``>= 0``.
        b_std: bias standard deviation ``sigma_b``, a finite number ``>= 0``.

    Returns:
        ``F(q)``, a float.
    """
    _check(w_std, b_std)
    phi, _ = _numpy_activation(activation)
    return w_std**2 * gauss_mean(lambda u: phi(u) ** 2, q) + b_std**2


def q_star(activation: str, w_std: float, b_std: float, *, q_max: float = 1e8) -> float:
    """The stable fixed point ``q* = F(q*)`` of the variance map.

    Found by bracketing ``F(q) - q`` (doubling the upper end) and Brent's method. With
    ``sigma_b = 0`` and ``phi(0) = 0``, ``q = 0`` is a fixed point; it is the one returned
    when no positive fixed point exists. Raises ``ValueError`` when the variance diverges
    (``F(q) > q`` up to ``q_max``: e.g. ReLU with ``sigma_w^2 > 2``, or ``= 2`` with
    ``sigma_b > 0``), or for a positively homogeneous activation on its critical line, where
    every ``q`` is fixed.

    Arguments:
        activation: name of the nonlinearity ``phi`` (see :mod:`ntklib.activations`).
        w_std: weight standard deviation ``sigma_w``, a finite number ``>= 0``.
        b_std: bias standard deviation ``sigma_b``, a finite number ``>= 0``.
        q_max: the largest upper end of the bracket (keyword-only), default 1e8: where
            ``F(q) > q`` still holds beyond it, the variance is declared divergent.

    Returns:
        ``q*``, a float (``0.0`` for the zero fixed point).
    """
    _check(w_std, b_std)
    phi, _ = _numpy_activation(activation)

    def g(q: float) -> float:
        return w_std**2 * gauss_mean(lambda u: phi(u) ** 2, q) + b_std**2 - q

    if (
        activation in HOMOGENEOUS
        and b_std == 0
        and math.isclose(w_std**2 * gauss_mean(lambda u: phi(u) ** 2, 1.0), 1.0, rel_tol=1e-12)
    ):
        raise ValueError(
            f"every q is a fixed point of {activation} at sigma_w = {w_std}, sigma_b = 0"
        )
    hi = max(1.0, 2.0 * b_std**2)
    while g(hi) > 0:
        hi *= 2.0
        if hi > q_max:
            raise ValueError(
                f"the variance of {activation} at sigma_w = {w_std}, sigma_b = {b_std} diverges "
                "with depth: no fixed point q*"
            )
    lo = b_std**2 if b_std > 0 else 1e-12 * hi
    if g(lo) <= 0:  # sigma_b = 0 and the zero fixed point attracts
        return 0.0
    return float(optimize.brentq(g, lo, hi, xtol=1e-14, rtol=1e-13))


def chi(activation: str, w_std: float, b_std: float, q: float | None = None) -> float:
    """The slope ``chi = sigma_w^2 E[phi'(sqrt(q) Z)^2]`` of the correlation map at ``c = 1``.

    ``chi < 1``: ordered phase, ``chi > 1``: chaotic, ``chi = 1``: the Edge of Chaos (module
    docstring; Schoenholz et al. 2017; Hayou, Doucet & Rousseau 2019).

    Arguments:
        activation: name of the nonlinearity ``phi`` (see :mod:`ntklib.activations`).
        w_std: weight standard deviation ``sigma_w``, a finite number ``>= 0``.
        b_std: bias standard deviation ``sigma_b``, a finite number ``>= 0``; it enters
            through ``q*`` only (checked, but unused, when ``q`` is given).
        q: the variance at which ``chi`` is evaluated, a finite number ``>= 0``, default
            ``None``: the fixed point ``q*`` of :func:`q_star` (whose ``ValueError`` passes
            through where the variance diverges).

    Returns:
        ``chi``, a float.
    """
    _check(w_std, b_std)
    _, dphi = _numpy_activation(activation)
    q = q_star(activation, w_std, b_std) if q is None else q
    return w_std**2 * gauss_mean(lambda u: dphi(u) ** 2, q)


def correlation_map(c: float, activation: str, w_std: float, b_std: float) -> float:
    """``f(c) = (sigma_w^2 E[phi(u) phi(v)] + sigma_b^2) / q*`` at correlation ``c``.

    ``E[phi(u) phi(v)]``, ``(u, v) ~ N(0, q* [[1, c], [c, 1]])``, from the same kernel map as
    :func:`ntklib.kernels` (:func:`ntklib.kernel_maps.kernel_map`, ``method="auto"``: the closed
    form where there is one, else the Gauss-Kronrod map, about 1e-14), in float64.

    Arguments:
        c: the correlation ``c_l``, a number in ``[-1, 1]`` (else ``ValueError``).
        activation: name of the nonlinearity ``phi`` (see :mod:`ntklib.activations`).
        w_std: weight standard deviation ``sigma_w``, a finite number ``>= 0``.
        b_std: bias standard deviation ``sigma_b``, a finite number ``>= 0``.

    Returns:
        ``c_{l+1} = f(c)``, a float. ``q*`` comes from :func:`q_star` (its ``ValueError``
        passes through); where ``q* = 0`` (``sigma_b = 0`` and ``phi(0) = 0`` on the ordered
        side) there is no correlation and the division raises ``ZeroDivisionError``.
    """
    if not -1.0 <= c <= 1.0:
        raise ValueError(f"c must be a correlation in [-1, 1], got {c}")
    q = q_star(activation, w_std, b_std)
    with _x64():
        qa = jnp.asarray(q, jnp.float64)
        ev = float(kernel_map(activation)(jnp.asarray(c * q, jnp.float64), qa, qa)[0])
    return float((w_std**2 * ev + b_std**2) / q)


def eoc_w_std(
    activation: str, b_std: float, *, bracket: tuple[float, float] = (0.05, 10.0)
) -> float:
    """``sigma_w`` on the Edge of Chaos for this ``sigma_b``: the root of ``chi = 1``.

    ``chi`` is evaluated at the fixed point ``q*(sigma_w, sigma_b)`` of the variance map. For a
    positively homogeneous activation (ReLU) ``chi = sigma_w^2 E[phi'(Z)^2]`` for every ``q``
    and the EOC is the single point ``sigma_b = 0``, ``sigma_w = 1 / sqrt(E[phi'(Z)^2])``
    (``sqrt 2`` for ReLU): with ``sigma_b > 0`` the variance diverges there. With
    ``sigma_b = 0`` and ``phi(0) = 0`` (tanh, erf), ``q* = 0`` on the ordered side and the EOC
    is ``sigma_w = 1 / |phi'(0)|`` (the rule applied to every activation with ``phi(0) = 0``
    and ``phi'(0) != 0``). Otherwise Brent's method on ``chi - 1`` over
    ``bracket``, whose upper end is first lowered (by factors of 0.9) while the variance
    diverges there; if ``chi - 1`` then has one sign only, a bisection walks towards the
    divergence, where ``chi`` may cross 1 just below it (unbounded activations at large
    ``sigma_b``, e.g. ELU). Raises ``ValueError`` when there is no root in ``bracket``.

    Arguments:
        activation: name of the nonlinearity ``phi`` (see :mod:`ntklib.activations`).
        b_std: bias standard deviation ``sigma_b``, a finite number ``>= 0``.
        bracket: the interval ``(lo, hi)`` of ``sigma_w`` searched (keyword-only), default
            ``(0.05, 10.0)``; not used for positively homogeneous activations or at
            ``sigma_b = 0`` with ``phi(0) = 0``, where the EOC is known in closed form.

    Returns:
        ``sigma_w`` on the Edge of Chaos, a float.
    """
    _check(1.0, b_std)
    if activation in HOMOGENEOUS:
        if b_std > 0:
            raise ValueError(
                f"{activation} has no Edge of Chaos at sigma_b = {b_std} > 0: at chi = 1 the "
                "variance grows without bound; its EOC is the point sigma_b = 0"
            )
        _, dphi = _numpy_activation(activation)
        return 1.0 / math.sqrt(gauss_mean(lambda u: dphi(u) ** 2, 1.0))

    phi, dphi = _numpy_activation(activation)
    if b_std == 0 and phi(0.0) == 0.0 and dphi(0.0) != 0.0:
        # q* = 0 on the ordered side, where chi = sigma_w^2 phi'(0)^2
        return 1.0 / abs(dphi(0.0))

    def g(w: float) -> float:
        return chi(activation, w, b_std) - 1.0

    lo, hi = bracket
    diverges = None  # the smallest sigma_w seen at which the variance diverges
    try:
        glo = g(lo)
        while True:  # shrink the upper end until the variance has a fixed point there
            try:
                ghi = g(hi)
                break
            except ValueError:
                diverges = hi
                hi *= 0.9
                if hi <= lo:
                    raise
    except ValueError as e:
        raise ValueError(f"no Edge of Chaos for {activation} at sigma_b = {b_std}: {e}") from None
    if glo * ghi > 0 and diverges is not None:
        # chi may cross 1 only just below the divergence (unbounded activations at large
        # sigma_b, e.g. ELU): walk towards it by bisection, keeping the valid end
        valid = hi
        for _ in range(60):
            mid = 0.5 * (valid + diverges)
            try:
                gm = g(mid)
            except ValueError:
                diverges = mid
                continue
            valid = mid
            if gm * glo <= 0:
                hi, ghi = mid, gm
                break
    if glo * ghi > 0:
        raise ValueError(
            f"no Edge of Chaos for {activation} at sigma_b = {b_std} in sigma_w in {bracket}"
        )
    return float(optimize.brentq(g, lo, hi, xtol=1e-12, rtol=1e-12))


def eoc_curve(activation: str, b_stds: Sequence[float]) -> np.ndarray:
    """:func:`eoc_w_std` at each ``sigma_b``, NaN where the activation has no Edge of Chaos
    there (ReLU at ``sigma_b > 0``, or any root outside the solver's bracket).

    Arguments:
        activation: name of the nonlinearity ``phi`` (see :mod:`ntklib.activations`).
        b_stds: the bias standard deviations ``sigma_b``, a sequence of numbers ``>= 0``
            (each solved with :func:`eoc_w_std`'s default bracket).

    Returns:
        The EOC curve ``sigma_w(sigma_b)``, a float64 NumPy array of shape
        ``(len(b_stds),)``.
    """
    out = np.full(len(b_stds), np.nan)
    for i, b in enumerate(b_stds):
        try:
            out[i] = eoc_w_std(activation, float(b))
        except ValueError:
            pass
    return out
