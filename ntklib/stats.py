"""Statistics for theorem checks that SciPy and NumPy do not provide as such.

Standard errors come from :func:`scipy.stats.sem`, weighted line fits from
:func:`numpy.polyfit` (``cov="unscaled"``) and bootstrap intervals from
:func:`scipy.stats.bootstrap`; what is ours is the *never-deflate* error scaling of a weighted
fit, power laws on log-log axes, the moment ratio with its delta-method error, and seeding the
bootstrap from a ``jax.random`` key.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np
from scipy import stats as _sps


class LineFit(NamedTuple):
    """``y ~ intercept + slope x`` with standard errors (:func:`fit_line`).

    Attributes:
        slope: the fitted slope (a float).
        slope_se: its standard error.
        intercept: the fitted intercept (the value at ``x = 0``).
        intercept_se: its standard error.
    """

    slope: float
    slope_se: float
    intercept: float
    intercept_se: float


def mean_and_se(samples, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sample mean and its standard error ``std / sqrt(n)`` (ddof = 1): :func:`scipy.stats.sem`.

    Arguments:
        samples: an array-like of numbers, converted to float64; at least 2 along ``axis``
            (else ``ValueError``).
        axis: the axis of the samples, default 0.

    Returns:
        ``(mean, se)``, each of the shape of ``samples`` without ``axis`` (a 0-d value for a
        1-D sample).
    """
    s = np.asarray(samples, dtype=float)
    if s.shape[axis] < 2:
        raise ValueError("need at least 2 samples for a standard error")
    return s.mean(axis), _sps.sem(s, axis=axis, ddof=1)


def fit_line(x, y, y_se=None) -> LineFit:
    """Weighted least squares of ``y`` on ``x`` (:func:`numpy.polyfit`, degree 1).

    With ``y_se`` each squared residual is weighted by ``1 / y_se^2`` (``polyfit``'s ``w = 1 /
    y_se``) and the standard errors are those implied by ``y_se`` (``cov="unscaled"``),
    inflated by ``sqrt(chi^2 / dof)``, ``dof = len(x) - 2``, when the points scatter more than
    their errors allow -- never deflated. Two points with ``y_se`` give the line through them,
    its errors from ``y_se`` alone (slope s.e. ``sqrt(se_1^2 + se_2^2) / |x_2 - x_1|``; no
    scatter to measure). Without ``y_se``: ordinary least squares and its usual errors (the
    covariance scaled by ``chi^2 / dof``, whatever its size).

    Arguments:
        x: the abscissae, a 1-D array-like of at least 3 points, or 2 with ``y_se`` (else
            ``ValueError``).
        y: the ordinates, same length.
        y_se: the standard errors of ``y`` (positive, same length), default ``None``
            (unweighted, errors from the scatter).

    Returns:
        A :class:`LineFit`.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size < (2 if y_se is not None else 3):
        raise ValueError(
            "need at least 3 points to fit a line with errors (2 when their errors y_se are given)"
        )
    if y_se is None:
        coef, cov = np.polyfit(x, y, 1, cov=True)
    else:
        se = np.asarray(y_se, float)
        coef, cov = np.polyfit(x, y, 1, w=1.0 / se, cov="unscaled")
        if x.size > 2:
            chi2_dof = float(np.sum(((y - np.polyval(coef, x)) / se) ** 2)) / (x.size - 2)
            cov = cov * max(1.0, chi2_dof)
    return LineFit(
        float(coef[0]), float(np.sqrt(cov[0, 0])), float(coef[1]), float(np.sqrt(cov[1, 1]))
    )


def fit_power_law(x, y, y_se=None) -> LineFit:
    """``y ~ exp(intercept) x^slope``: :func:`fit_line` of ``log y`` on ``log x``.

    ``se(log y) = y_se / y`` (delta method), so relative errors set the weights.

    Arguments:
        x: positive abscissae, a 1-D array-like of at least 3 points.
        y: positive ordinates, same length.
        y_se: the standard errors of ``y``, default ``None`` (unweighted).

    Returns:
        A :class:`LineFit` on log-log axes: ``slope`` the exponent, ``intercept`` the log of the
        prefactor.
    """
    y = np.asarray(y, float)
    log_se = None if y_se is None else np.asarray(y_se, float) / y
    return fit_line(np.log(np.asarray(x, float)), np.log(y), log_se)


def fit_power_law_samples(x, samples) -> LineFit:
    """Power law through the geometric means of positive samples: ``samples[i]`` at ``x[i]``.

    Fits ``mean_j log samples[i, j] ~ intercept + slope log x[i]`` by :func:`fit_line`, each
    point weighted by the standard error of its mean log (so the slope's error comes from
    the spread of the samples, e.g. over random networks). Use it when the samples spread over
    decades, where an arithmetic mean would follow the largest few.

    Arguments:
        x: positive abscissae, at least 2 points (with 2, the line through them).
        samples: positive, finite samples, shape ``(len(x), k)`` with ``k >= 2`` (else
            ``ValueError``); row ``i`` belongs to ``x[i]``.

    Returns:
        A :class:`LineFit` on log-log axes, as :func:`fit_power_law`.
    """
    s = np.asarray(samples, float)
    if s.ndim != 2 or s.shape[0] != np.size(x) or s.shape[1] < 2:
        raise ValueError(f"samples must have shape (len(x), k >= 2), got {s.shape}")
    if not np.all(np.isfinite(s) & (s > 0)):
        raise ValueError("samples must be positive and finite")
    mean, se = mean_and_se(np.log(s), axis=1)
    return fit_line(np.log(np.asarray(x, float)), mean, se)


def small_time_order(t, curves) -> tuple[float, float, float]:
    """The leading order ``p`` of positive curves ``e(t) ~ C t^p (1 + b t + d t^2 + ...)`` at
    small ``t``: for each curve, least squares of

        log e = p log t + c + b t + d t^2      (and, to measure the model, without d t^2),

    (:func:`numpy.linalg.lstsq`). Returns the mean of ``p`` over the curves, its standard error
    (ddof = 1), and ``|mean p - mean p without the t^2 term|``, what the fitted form leaves
    out (to add to a tolerance).

    Arguments:
        t: the times, shape (T,), positive, T >= 4.
        curves: the curves at those times, shape (n, T), positive, n >= 2.

    Returns:
        ``(p, p_se, model)``, three floats.
    """
    t = np.asarray(t, float)
    e = np.asarray(curves, float)
    if t.ndim != 1 or t.size < 4 or np.any(t <= 0):
        raise ValueError("t: need at least 4 positive times")
    if e.ndim != 2 or e.shape[1] != t.size or e.shape[0] < 2 or np.any(~(e > 0)):
        raise ValueError(f"curves: need shape (n >= 2, {t.size}), positive values")
    design = np.stack([np.log(t), np.ones_like(t), t, t**2], 1)
    fits = np.array(
        [[np.linalg.lstsq(design[:, :k], np.log(c), rcond=None)[0][0] for k in (3, 4)] for c in e]
    )
    p = fits[:, 1]
    return (
        float(p.mean()),
        float(p.std(ddof=1) / np.sqrt(len(p))),
        float(abs(p.mean() - fits[:, 0].mean())),
    )


def bonferroni_z(m: int, alpha: float = 0.01) -> float:
    """The ``|z|`` threshold ``Phi^-1(1 - alpha / (2 m))`` below which ``m`` independent
    standard normal scores all fall with probability at least ``1 - alpha`` (Bonferroni's
    union bound over ``m`` two-sided tests): :func:`scipy.stats.norm.isf`.

    Arguments:
        m: the number of scores, at least 1 (else ``ValueError``).
        alpha: the family-wise error rate, in (0, 1), default 0.01.

    Returns:
        the threshold, a float (2.576 for ``m = 1``, 3.291 for ``m = 10`` at the default).
    """
    if int(m) != m or m < 1:
        raise ValueError(f"m = {m!r}: need an integer >= 1")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha = {alpha!r}: need 0 < alpha < 1")
    return float(_sps.norm.isf(alpha / (2 * m)))


def moment_ratio(samples) -> tuple[float, float]:
    """``r = E[X^2] / E[X]^2`` from samples, with its delta-method standard error.

    With ``m1, m2`` the sample moments and their covariance estimated from the pairs ``(X,
    X^2)`` (ddof = 1, divided by ``n``),
    ``var(r) = r^2 (var m2 / m2^2 - 4 cov(m1, m2) / (m1 m2) + 4 var m1 / m1^2)``. The error
    needs the fourth moment, so it is itself unreliable when ``X`` is heavy tailed: use it
    only where the sample size is adequate (see :func:`ntklib.finite.networks_needed`).

    Arguments:
        samples: a 1-D array-like of at least 2 samples of ``X`` (else ``ValueError``).

    Returns:
        ``(r, se)``, two floats (``se`` is 0 where the estimated variance is negative).
    """
    x = np.asarray(samples, float)
    n = x.size
    if n < 2:
        raise ValueError("need at least 2 samples")
    m1, m2 = x.mean(), (x * x).mean()
    c = np.cov(np.stack([x, x * x]), ddof=1) / n
    r = m2 / m1**2
    var = r**2 * (c[1, 1] / m2**2 - 4 * c[0, 1] / (m1 * m2) + 4 * c[0, 0] / m1**2)
    return float(r), float(np.sqrt(max(var, 0.0)))


def bootstrap_ci(
    key: jax.Array, samples, statistic, *, n_boot: int = 1000, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(samples)``: :func:`scipy.stats.bootstrap`.

    Arguments:
        key: a ``jax.random`` key (typed, or raw ``uint32`` key data); the resampling
            generator is seeded from its data, so the interval is reproducible from the
            chapter's seed.
        samples: a 1-D sample of at least 2 values (else ``ValueError``), resampled with
            replacement.
        statistic: a function of a resampled 1-D array, returning a number (called once per
            resample: ``vectorized=False``).
        n_boot: the number of resamples, default 1000.
        level: the interval's coverage, in (0, 1) (else ``ValueError``), default 0.95.

    Returns:
        ``(low, high)``, two floats.
    """
    x = np.asarray(samples)
    if x.shape[0] < 2:
        raise ValueError("need at least 2 samples")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    data = (
        jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    )
    rng = np.random.default_rng(np.asarray(data, np.uint32))
    res = _sps.bootstrap(
        (x,),
        statistic,
        n_resamples=n_boot,
        confidence_level=level,
        method="percentile",
        vectorized=False,
        rng=rng,
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)
