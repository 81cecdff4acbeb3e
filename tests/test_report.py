import json
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from ntkbook import check, save_figure  # noqa: E402
from ntkbook.cli import check_line  # noqa: E402
from ntkbook.numbers import comparison_text, power_hint, with_error  # noqa: E402
from ntkbook.protocol import attach_parameters  # noqa: E402
from ntkbook.record import Alternative, can_exclude  # noqa: E402
from ntkbook.site import dashboard_markdown  # noqa: E402

BASE = dict(paper="jacot2018ntk", theorem="Thm. 1", why="test")
FAR = (1e6, "far away")  # an alternative every finite measurement here rules out


@pytest.mark.parametrize(
    "measured, predicted, tol, comparison, passed",
    [
        (1.0, 1.05, 0.1, "within", True),
        (1.0, 1.2, 0.1, "within", False),
        (0.9, 1.0, 0.01, "at_most", True),
        (1.2, 1.0, 0.1, "at_most", False),
        (1.2, 1.0, 0.01, "at_least", True),
        (float("nan"), 1.0, 1e9, "within", False),
        (float("inf"), 1.0, 1e9, "at_least", False),
        (1.0, float("nan"), 1.0, "within", False),
    ],
)
def test_check_outcomes(measured, predicted, tol, comparison, passed, capsys):
    rec = check(
        "c",
        measured=measured,
        predicted=predicted,
        tolerance=tol,
        comparison=comparison,
        alternative=(1e7, "far above") if comparison == "at_most" else (-1e7, "far below"),
        **BASE,
    )
    assert rec["passed"] is passed
    assert ("[PASS]" if passed else "[FAIL]") in capsys.readouterr().out
    json.dumps(rec)  # records are JSON-serialisable


def test_a_check_that_passes_under_its_alternative_is_powerless():
    weak = check(
        "c",
        measured=0.52,
        predicted=0.5,
        tolerance=0.3,
        alternative=(0.7, "another exponent"),
        **BASE,
    )
    assert weak["powerless"] and not weak["rules_out"] and not weak["passed"]
    strong = check(
        "c",
        measured=0.52,
        predicted=0.5,
        tolerance=0.05,
        alternative=(0.7, "another exponent"),
        **BASE,
    )
    assert strong["rules_out"] and strong["passed"] and not strong["powerless"]
    # the alternative's own statistic (a z-score against its value) is used when given
    z = check(
        "c",
        measured=1.1,
        predicted=0.0,
        tolerance=3.0,
        comparison="at_most",
        alternative=Alternative(0.0, "infinite width", measured=9.4),
        **BASE,
    )
    assert z["passed"] and z["alternative"]["measured"] == 9.4
    # a bound: the alternative is a violation, excluded only by the measurement with its
    # tolerance; a violation inside the tolerance leaves the check powerless, and it fails
    bound = dict(predicted=-1.0, comparison="at_most", **BASE)
    weak = check("c", measured=-0.97, tolerance=0.57, alternative=(-0.5, "m^-1/2"), **bound)
    assert weak["passed"] is False and weak["powerless"] and not weak["rules_out"]
    strong = check("c", measured=-0.97, tolerance=0.2, alternative=(-0.5, "m^-1/2"), **bound)
    assert strong["passed"] and strong["rules_out"]
    # ... and the mirror image for a lower bound
    low = dict(predicted=1.0, comparison="at_least", **BASE)
    assert check("c", measured=1.77, tolerance=0.11, alternative=(0.5, "L^-1/2"), **low)["passed"]
    assert check("c", measured=1.77, tolerance=1.3, alternative=(0.5, "L^-1/2"), **low)["powerless"]
    # an alternative on the claim's side (a stronger bound) is refused, whatever the numbers
    with pytest.raises(ValueError, match="claim's side"):
        check("c", measured=-0.97, tolerance=0.2, alternative=(-2.0, "m^-2"), **bound)
    with pytest.raises(ValueError, match="claim's side"):
        check("c", measured=1.77, tolerance=0.1, alternative=(2.0, "L^-2"), **low)
    # another hypothesis's statistic is judged against the same threshold, or refused
    hyp = dict(measured=0.1, predicted=1.0, tolerance=0.01, comparison="at_most", **BASE)
    assert check("c", alternative=(1.0, "no effect", 0.005), **hyp)["powerless"]
    assert check("c", alternative=(1.0, "no effect", 5.0), **hyp)["passed"]
    with pytest.raises(ValueError, match="same threshold"):
        check("c", alternative=(0.0, "no effect", 0.005), **hyp)


def test_tolerance_must_be_positive_unless_exact():
    for tol in (-1.0, float("nan"), float("inf")):
        rec = check("c", measured=1.0, predicted=1.0, tolerance=tol, alternative=FAR, **BASE)
        assert not rec["passed"] and not rec["tolerance_ok"], tol
    zero = check("c", measured=1.0, predicted=1.0, tolerance=0.0, alternative=FAR, **BASE)
    assert not zero["tolerance_ok"]  # recorded, and refused by tests/test_check_standard.py
    rec = check(
        "c",
        measured=1.0,
        predicted=1.0,
        tolerance=0.0,
        alternative=FAR,
        exact="integer counts",
        **BASE,
    )
    assert rec["passed"] and rec["tolerance_ok"] and rec["exact"] == "integer counts"
    with pytest.raises(ValueError, match="alternative"):
        check("c", measured=1.0, predicted=1.0, tolerance=0.1, alternative=(2.0, " "), **BASE)
    with pytest.raises(ValueError, match="source"):
        check(
            "c", measured=1.0, predicted=1.0, tolerance=0.1, alternative=FAR, source="mine", **BASE
        )


def test_nan_uncertainty_fails():
    rec = check(
        "c",
        measured=1.0,
        predicted=1.0,
        tolerance=1.0,
        uncertainty=math.nan,
        alternative=FAR,
        **BASE,
    )
    assert rec["passed"] is False


def test_numbers_carry_the_digits_their_error_supports():
    assert with_error(3.82024, 0.0831406) == "3.820 ± 0.083"
    assert with_error(-0.5123, 0.0213) == "-0.512 ± 0.021"
    assert with_error(1234.5, 56.0) == "1234 ± 56"
    assert with_error(2.5, None) == "2.5"
    rec = check(
        "z",
        measured=2.69,
        predicted=0.0,
        tolerance=3.88,
        comparison="at_most",
        alternative=FAR,
        **BASE,
    )
    assert comparison_text(rec) == "2.69 ≤ 3.88"


def test_save_figure_writes_files_and_provenance(tmp_path, monkeypatch):
    monkeypatch.setenv("NTKBOOK_OUTDIR", str(tmp_path))
    monkeypatch.setenv("NTKBOOK_CHAPTER", "demo")
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
    assert saved["chapter"] == "demo" and saved["ntklib_version"]
    assert saved["command"] == "python -m ntkbook run demo"
    # the parameters reach a chapter through papermill's cell alone; the runner adds them
    assert "parameters" not in saved and "seed" not in saved
    rec = check("c", measured=1.0, predicted=1.0, tolerance=0.1, alternative=FAR, **BASE)
    assert "parameters" not in rec
    own = check("o", measured=1.0, predicted=1.0, tolerance=0.1, alternative=FAR,
                parameters={"depth": 9}, **BASE)  # fmt: skip
    attach_parameters(tmp_path, [rec, own], {"seed": 3, "depth": 2})
    assert rec["parameters"] == {"seed": 3, "depth": 2} and own["parameters"] == {"depth": 9}
    attached = json.loads((tmp_path / "figures" / "line.json").read_text())
    assert attached["seed"] == 3 and attached["parameters"]["depth"] == 2
    assert list(attached)[:6] == ["figure", "caption", "chapter", "profile", "parameters", "seed"]
    rest = lambda d: {k: v for k, v in d.items() if k not in ("parameters", "seed", "time")}  # noqa: E731
    assert rest(attached) == rest(saved)
    with pytest.raises(ValueError):
        save_figure(fig, "../escape")


def test_dashboard_lists_failures_first_with_their_alternative():
    bad = check(
        "bad",
        measured=float("nan"),
        predicted=1.0,
        tolerance=0.1,
        uncertainty=0.2,
        alternative=FAR,
        **BASE,
    )
    weak = check(
        "weak",
        measured=1.0,
        predicted=1.0,
        tolerance=0.5,
        alternative=(1.2, "a skeptic's value"),
        **BASE,
    )
    good = check(
        "good", measured=1.0, predicted=1.0, tolerance=0.1, alternative=(2.0, "twice"), **BASE
    )
    page = dashboard_markdown([good, bad, weak])
    assert "1 of 3 checks pass; 2 FAIL (1 powerless" in page
    fail_part = page.split("## Failing checks")[1].split("\n## ")[0]
    assert "bad" in fail_part and "weak" in fail_part and "good" not in fail_part
    assert "nan" in page and "✗ POWERLESS" in page and "rules out *twice*" in page
    assert "**Power:** powerless: a tolerance below 0.2 (now 0.5)" in page  # |1.2 - 1.0|
    assert "**would also pass under** *a skeptic's value*" in page
    mine = dict(good, name="mine", overrides={"seed": 3})
    assert "mine: " in (page := dashboard_markdown([mine])) and "(your values: seed=3)" in page


def test_a_powerless_check_says_what_would_give_it_power():
    weak = check("c", measured=0.52, predicted=0.5, tolerance=0.3, alternative=(0.7, "x"), **BASE)
    hint = power_hint(weak)  # the tolerance must fall below |0.7 - 0.52| = 0.18: (0.3/0.18)^2
    assert "below 0.18" in hint and "about 2.8 times" in hint
    assert check_line(weak).startswith("POWERLESS") and "about 2.8 times" in check_line(weak)
    failed = check("c", measured=2.0, predicted=0.5, tolerance=0.3, alternative=(0.7, "x"), **BASE)
    assert power_hint(failed) == "" and check_line(failed).startswith("FAIL")


def test_a_bound_too_imprecise_for_its_violation_is_not_made(capsys):
    args = dict(predicted=-1.0, alternative=-0.5, n=8, unit="networks per width")
    assert can_exclude("b", tolerance=0.3, **args)
    assert not can_exclude("b", tolerance=0.6, **args)  # 8 (0.6/0.5)^2 = 11.52 -> 12
    out = capsys.readouterr().out
    assert "[NOT CHECKED at this profile] b" in out and "about 12 networks per width" in out
    # with the standard error s, a check is made only with 90 % power: tolerance + 1.28 s < gap
    assert can_exclude("c", tolerance=0.3, uncertainty=0.1, **args)  # 0.43 < 0.5
    assert not can_exclude("c", tolerance=0.45, uncertainty=0.15, **args)  # 0.64: 8 * 1.28^2
    out = capsys.readouterr().out
    assert "with 90 % power" in out and "about 14 networks per width" in out


def test_a_chapter_opens_with_its_question_and_headline_figure(tmp_path):
    """The ``ntkbook:`` front matter's question and headline figure go under the title, the
    figure with the caption it was saved with; a headline the run did not save fails the
    chapter instead of publishing a page without it."""
    from ntkbook.runner import ChapterFailed, chapter_question

    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "line.json").write_text(json.dumps({"caption": "A line."}))
    meta = {"ntkbook": {"question": "Does it hold? Here it is measured.", "headline": "line"}}
    run = {"chapter": "demo", "figures": ["line"]}
    text = chapter_question(meta, run, tmp_path)
    assert "**The question.** Does it hold? Here it is measured." in text
    assert "![line](figures/line.png)" in text and "*A line.*" in text
    assert chapter_question({}, run, tmp_path) == ""
    with pytest.raises(ChapterFailed, match="headline figure 'other' was not saved"):
        chapter_question({"ntkbook": {"headline": "other"}}, run, tmp_path)


def test_figure_code_and_long_cells_are_folded_the_argument_stays_open(tmp_path):
    """stamp folds a code cell that draws a figure, however short, and one over FOLD_LINES;
    a short cell of the argument stays open, and so does one tagged show-input."""
    import nbformat

    from ntkbook.runner import FOLD_LINES, stamp

    cells = [
        nbformat.v4.new_markdown_cell("# Title"),
        nbformat.v4.new_code_cell("x = 1\nprint(x)"),
        nbformat.v4.new_code_cell('fig = plt.figure()\nsave_figure(fig, "f")'),
        nbformat.v4.new_code_cell("\n".join(["y = 0"] * (FOLD_LINES + 1))),
        nbformat.v4.new_code_cell('save_figure(fig, "g")', metadata={"tags": ["show-input"]}),
    ]
    path = tmp_path / "demo.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    run = {
        "chapter": "demo",
        "profile": "ci",
        "parameters": {},
        "overrides": {},
        "command": "python -m ntkbook run demo --profile ci",
        "computed_at": "2026-12-07T00:00:00Z",
        "git_commit": "0" * 40,
        "seconds": 1.0,
        "figures": [],
    }
    stamp(path, run)
    folded = ["hide-input" in c.metadata.get("tags", []) for c in nbformat.read(path, 4).cells]
    assert folded == [False, False, True, True, False]


def test_a_cell_ending_in_a_check_shows_it_once(capsys):
    """check() displays the check when made; the record it returns (a dict) displays nothing
    more when it is a cell's last expression (a split cell showed it again as a dict)."""
    from IPython.core.formatters import DisplayFormatter

    rec = check("c", measured=1.0, predicted=1.0, tolerance=0.1, alternative=(2.0, "far"), **BASE)
    assert "[PASS]" in capsys.readouterr().out
    assert rec["passed"] and json.loads(json.dumps(rec)) == dict(rec)
    assert DisplayFormatter().format(rec) == ({}, {})
