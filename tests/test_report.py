import json
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from ntkbook import check, save_figure  # noqa: E402

BASE = dict(paper="jacot2018ntk", theorem="Thm. 1", why="test")


@pytest.mark.parametrize(
    "measured, predicted, tol, comparison, passed",
    [
        (1.0, 1.05, 0.1, "within", True),
        (1.0, 1.2, 0.1, "within", False),
        (0.9, 1.0, 0.0, "at_most", True),
        (1.2, 1.0, 0.1, "at_most", False),
        (1.2, 1.0, 0.0, "at_least", True),
        (float("nan"), 1.0, 1e9, "within", False),
        (float("inf"), 1.0, 1e9, "at_least", False),
        (1.0, float("nan"), 1.0, "within", False),
        (1.0, 1.0, float("nan"), "within", False),
        (1.0, 1.0, -1.0, "within", False),
    ],
)
def test_check_outcomes(measured, predicted, tol, comparison, passed, capsys):
    rec = check(
        "c", measured=measured, predicted=predicted, tolerance=tol, comparison=comparison, **BASE
    )
    assert rec["passed"] is passed
    assert ("[PASS]" if passed else "[FAIL]") in capsys.readouterr().out
    json.dumps(rec)  # records are JSON-serialisable


def test_nan_uncertainty_fails():
    rec = check("c", measured=1.0, predicted=1.0, tolerance=1.0, uncertainty=math.nan, **BASE)
    assert rec["passed"] is False


def test_save_figure_writes_files_and_provenance(tmp_path, monkeypatch):
    monkeypatch.setenv("NTKBOOK_OUTDIR", str(tmp_path))
    monkeypatch.setenv("NTKBOOK_CHAPTER", "demo")
    monkeypatch.setenv("NTKBOOK_PARAMS", json.dumps({"seed": 3, "depth": 2}))
    monkeypatch.setenv("NTKBOOK_COMMAND", "python -m ntkbook run demo")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    assert save_figure(fig, "line") is None
    for f in ("line.png", "line.svg", "line.json"):
        assert (tmp_path / "figures" / f).stat().st_size > 0
    saved = json.loads((tmp_path / "figures" / "line.json").read_text())
    png = (tmp_path / "figures" / "line.png").read_bytes()
    save_figure(fig, "line")  # same figure, same bytes (no timestamps in the files)
    assert (tmp_path / "figures" / "line.png").read_bytes() == png
    assert saved["seed"] == 3 and saved["chapter"] == "demo" and saved["ntklib_version"]
    assert saved["command"] == "python -m ntkbook run demo"
    with pytest.raises(ValueError):
        save_figure(fig, "../escape")


def test_dashboard_shows_non_finite_values_as_failures():
    from ntkbook.site import dashboard_markdown

    rec = check("c", measured=float("nan"), predicted=1.0, tolerance=0.1, uncertainty=0.2, **BASE)
    page = dashboard_markdown([rec])
    assert "| nan ± 0.2 |" in page and "FAIL" in page and "0 of 1 checks pass" in page
