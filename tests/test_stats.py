import numpy as np
import pytest
from scipy import stats as sps

import ntklib as nl


def test_power_law_fit_recovers_known_exponent():
    rng = np.random.default_rng(0)
    x = np.geomspace(10, 1e4, 12)
    y = 3.0 * x**-0.7 * np.exp(0.02 * rng.standard_normal(12))
    fit = nl.fit_power_law(x, y, 0.02 * y)
    assert abs(fit.slope + 0.7) < 3 * fit.slope_se
    assert fit.slope_se < 0.02
    assert np.exp(fit.intercept) == pytest.approx(3.0, rel=0.1)


def test_line_fit_errors_are_calibrated():
    # Over many synthetic data sets, |intercept - truth| < 2 s.e. about 95 % of the time.
    rng = np.random.default_rng(1)
    x = np.linspace(0, 1, 8)
    hits = 0
    for _ in range(400):
        y = 1.0 + 0.5 * x + 0.1 * rng.standard_normal(8)
        f = nl.fit_line(x, y, np.full(8, 0.1))
        hits += abs(f.intercept - 1.0) < 2 * f.intercept_se
    assert 0.90 < hits / 400 < 0.99


def test_mean_and_se():
    m, se = nl.mean_and_se(np.array([1.0, 2.0, 3.0, 4.0]))
    assert m == 2.5 and se == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)
    with pytest.raises(ValueError):
        nl.mean_and_se(np.array([1.0]))
    with pytest.raises(ValueError):
        nl.fit_line([1, 2], [1, 2])


def test_power_law_through_sample_log_means_is_calibrated_and_refuses_bad_samples():
    # log-normal samples spread over decades (sd 1.5 in log) around c x^-2: the slope's
    # error comes from the spread, and |slope + 2| < 2 s.e. about 95 % of the time.
    rng = np.random.default_rng(2)
    x = np.array([64, 128, 256, 512, 1024])
    hits = 0
    for _ in range(300):
        s = 5.0 * x[:, None] ** -2.0 * np.exp(1.5 * rng.standard_normal((5, 12)))
        f = nl.fit_power_law_samples(x, s)
        hits += abs(f.slope + 2.0) < 2 * f.slope_se
    assert 0.90 < hits / 300 < 0.99
    with pytest.raises(ValueError, match="shape"):
        nl.fit_power_law_samples(x, np.ones((5, 1)))
    with pytest.raises(ValueError, match="positive"):
        nl.fit_power_law_samples(x, np.zeros((5, 3)))


def _normal_equations(x, y, y_se=None):
    """The weighted line fit as it was computed before it moved onto numpy.polyfit."""
    w = np.ones_like(x) if y_se is None else 1.0 / np.asarray(y_se) ** 2
    a = np.stack([x, np.ones_like(x)], 1)
    cov = np.linalg.inv(a.T @ (w[:, None] * a))
    coef = cov @ (a.T @ (w * y))
    chi2_dof = float(np.sum(w * (y - a @ coef) ** 2)) / (x.size - 2)
    cov = cov * (chi2_dof if y_se is None else max(1.0, chi2_dof))
    return coef[0], np.sqrt(cov[0, 0]), coef[1], np.sqrt(cov[1, 1])


@pytest.mark.parametrize("scatter", [0.3, 3.0])  # chi^2/dof below 1 (not deflated) and above
def test_polyfit_line_fit_equals_the_normal_equations(scatter):
    rng = np.random.default_rng(5)
    x = np.linspace(0.5, 3.0, 9)
    se = np.full(9, 0.05) * (1 + x)
    y = 0.2 - 1.3 * x + scatter * se * rng.standard_normal(9)
    for errors in (se, None):
        got = nl.fit_line(x, y, errors)
        np.testing.assert_allclose(got, _normal_equations(x, y, errors), rtol=1e-11)
    a = np.stack([x, np.ones_like(x)], 1)
    unscaled = np.sqrt(np.linalg.inv(a.T @ (a / se[:, None] ** 2))[0, 0])
    ratio = nl.fit_line(x, y, se).slope_se / unscaled
    if scatter < 1:
        assert ratio == pytest.approx(1.0)  # never deflated below what y_se implies
    else:
        assert ratio > 1.5  # inflated by sqrt(chi^2 / dof)


def test_two_points_with_errors_give_the_line_through_them():
    """slope = dy / dx, s.e. = sqrt(se1^2 + se2^2) / |dx|; without errors two points are refused;
    fit_power_law_samples on two depths is that line through the mean logs."""
    fit = nl.fit_line([1.0, 3.0], [2.0, 5.0], [0.3, 0.4])
    assert fit.slope == pytest.approx(1.5) and fit.slope_se == pytest.approx(0.25)
    assert fit.intercept == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least 3 points"):
        nl.fit_line([1.0, 3.0], [2.0, 5.0])
    rng = np.random.default_rng(3)
    s = np.exp(rng.standard_normal((2, 5)) * 0.1) * np.array([[1.0], [0.25]])
    got = nl.fit_power_law_samples([10.0, 20.0], s)
    logs = np.log(s)
    se = logs.std(axis=1, ddof=1) / np.sqrt(5)
    assert got.slope == pytest.approx((logs[1].mean() - logs[0].mean()) / np.log(2.0))
    assert got.slope_se == pytest.approx(np.hypot(*se) / np.log(2.0))


def test_bonferroni_threshold_keeps_the_family_wise_error_rate():
    """m independent two-sided normal scores: P(all |Z_i| < z) = (1 - 2 Phi(-z))^m, at least
    1 - alpha at the threshold (the union bound), and the threshold grows with m."""
    for m in (1, 2, 10, 240, 10_000):
        z = nl.bonferroni_z(m)
        all_pass = (1 - 2 * sps.norm.sf(z)) ** m
        assert all_pass >= 0.99 - 1e-12 and all_pass < 0.99 + 0.01 / 2, (m, all_pass)
        assert nl.bonferroni_z(m, alpha=0.05) < z < nl.bonferroni_z(m + 1)
    assert abs(nl.bonferroni_z(1) - 2.5758293035489) < 1e-12
    for bad in (0, 2.5, -1):
        with pytest.raises(ValueError):
            nl.bonferroni_z(bad)
    with pytest.raises(ValueError):
        nl.bonferroni_z(3, alpha=1.0)


def test_small_time_order_recovers_the_leading_power():
    """Curves C t^p (1 + b t + d t^2) with p = 2 and per-curve b, d: the fit with the t^2 term
    is exact, the one without leaves a model error; noise gives a standard error."""
    t = np.linspace(0.01, 0.2, 20)
    rng = np.random.default_rng(0)
    b, d = rng.uniform(-1, 1, (2, 8, 1))
    curves = 3.0 * t**2 * np.exp(b * t + d * t**2)
    p, p_se, model = nl.small_time_order(t, curves)
    assert abs(p - 2) < 1e-10 and p_se < 1e-10 and model > 1e-6
    noisy = curves * np.exp(1e-3 * rng.standard_normal(curves.shape))
    p, p_se, _ = nl.small_time_order(t, noisy)
    assert p_se > 0 and abs(p - 2) < 4 * p_se + 1e-6
    with pytest.raises(ValueError):
        nl.small_time_order(t[:3], curves[:, :3])
    with pytest.raises(ValueError):
        nl.small_time_order(t, -curves)
