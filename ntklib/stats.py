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
