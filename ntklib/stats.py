"""Small statistics for theorem checks: Monte Carlo errors, weighted line and power-law fits."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class LineFit(NamedTuple):
    """``y ~ intercept + slope x`` with standard errors."""

    slope: float
    slope_se: float
    intercept: float
    intercept_se: float


def mean_and_se(samples, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sample mean and its standard error ``std / sqrt(n)`` (ddof = 1) along ``axis``."""
    s = np.asarray(samples, dtype=float)
    n = s.shape[axis]
    if n < 2:
        raise ValueError("need at least 2 samples for a standard error")
    return s.mean(axis), s.std(axis, ddof=1) / np.sqrt(n)


def fit_line(x, y, y_se=None) -> LineFit:
    """Weighted least squares of ``y`` on ``x``.

    With ``y_se`` the weights are ``1 / y_se^2`` and the standard errors are those implied by
    ``y_se``, inflated by ``sqrt(chi^2 / dof)`` when the points scatter more than their errors
    allow (never deflated). Without ``y_se``: ordinary least squares and its usual errors.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size < 3:
        raise ValueError("need at least 3 points to fit a line with errors")
    w = np.ones_like(x) if y_se is None else 1.0 / np.asarray(y_se, float) ** 2
    a = np.stack([x, np.ones_like(x)], 1)
    cov = np.linalg.inv(a.T @ (w[:, None] * a))
    coef = cov @ (a.T @ (w * y))
    chi2_dof = float(np.sum(w * (y - a @ coef) ** 2)) / (x.size - 2)
    cov = cov * (chi2_dof if y_se is None else max(1.0, chi2_dof))
    return LineFit(
        float(coef[0]), float(np.sqrt(cov[0, 0])), float(coef[1]), float(np.sqrt(cov[1, 1]))
    )


def fit_power_law(x, y, y_se=None) -> LineFit:
    """``y ~ exp(intercept) x^slope``: :func:`fit_line` on log-log axes.

    ``se(log y) = y_se / y`` (delta method), so relative errors set the weights.
    """
    y = np.asarray(y, float)
    log_se = None if y_se is None else np.asarray(y_se, float) / y
    return fit_line(np.log(np.asarray(x, float)), np.log(y), log_se)


def fit_power_law_samples(x, samples) -> LineFit:
    """Power law through the geometric means of positive samples: ``samples[i]`` at ``x[i]``.

    Fits ``mean_j log samples[i, j] ~ intercept + slope log x[i]`` by :func:`fit_line`, each
    point weighted by the standard error of its mean log (so the slope's error comes from
    the spread of the samples, e.g. over random networks). ``samples`` has shape
    ``(len(x), k)`` with ``k >= 2``; use it when the samples spread over decades, where an
    arithmetic mean would follow the largest few.
    """
    s = np.asarray(samples, float)
    if s.ndim != 2 or s.shape[0] != np.size(x) or s.shape[1] < 2:
        raise ValueError(f"samples must have shape (len(x), k >= 2), got {s.shape}")
    if not np.all(np.isfinite(s) & (s > 0)):
        raise ValueError("samples must be positive and finite")
    logs = np.log(s)
    mean, se = mean_and_se(logs, axis=1)
    return fit_line(np.log(np.asarray(x, float)), mean, se)


def moment_ratio(samples) -> tuple[float, float]:
    """``E[X^2] / E[X]^2`` from samples, with its delta-method standard error.

    With ``m1, m2`` the sample moments and their covariance from ``(X, X^2)``,
    ``var(r) = r^2 (var m2 / m2^2 - 4 cov(m1, m2) / (m1 m2) + 4 var m1 / m1^2)``. The error
    needs the fourth moment, so it is itself unreliable when ``X`` is heavy tailed: use it
    only where the sample size is adequate (see ``ntklib.finite.networks_needed``).
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
    key, samples, statistic, *, n_boot: int = 1000, level: float = 0.95, block: int = 50
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(samples)`` (resampling with replacement).

    Resampling indices come from ``jax.random`` under ``key`` (reproducible); ``block``
    replicates are drawn at a time to bound memory at ``block * len(samples)`` indices.
    """
    import jax

    x = np.asarray(samples)
    if x.shape[0] < 2:
        raise ValueError("need at least 2 samples")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    stats = []
    for i in range(0, n_boot, block):
        b = min(block, n_boot - i)
        idx = np.asarray(
            jax.random.randint(jax.random.fold_in(key, i), (b, x.shape[0]), 0, x.shape[0])
        )
        stats.extend(float(statistic(x[row])) for row in idx)
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
