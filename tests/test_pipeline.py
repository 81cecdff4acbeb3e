"""The chapter pipeline end to end, at a small scale, in a throw-away copy of the book.

One module-scoped build runs the real first chapter (tiny profile) and a small demo chapter,
then the tests poke the runner: cache, bad input, a failing chapter, a failing check.
"""

import inspect
import json
import pkgutil
import re
from html import escape

import pytest
from conftest import ntkbook, ntkbook_here, snapshot

import ntklib
from ntkbook.runner import xla_flags

pytestmark = pytest.mark.xdist_group("book")  # one worker builds the book once


def test_build_produces_site_checks_and_figures(book_project):
    html = book_project / "_build" / "html"
    assert (html / "index.html").exists()
    checks = json.loads((html / "checks.json").read_text())
    assert {c["chapter"] for c in checks} == {"infinite_width", "demo"}
    assert all(c["passed"] for c in checks)
    for c in checks:
        assert set(c) >= {
            "chapter",
            "paper",
            "theorem",
            "measured",
            "uncertainty",
            "predicted",
            "tolerance",
            "passed",
            "parameters",
        }
    dash = (html / "book" / "dashboard.html").read_text()
    for c in checks:  # the dashboard shows every recorded check
        assert escape(c["name"], quote=False) in dash, c["name"]
    page = (html / "book" / "chapters" / "infinite_width" / "infinite_width.html").read_text()
    assert page.count("<img") >= 4 and "Regenerate with" in page  # 3 figures + the headline
    # the page opens with the chapter's question and headline figure, before any code
    question = page.index("The question.")
    assert question < page.index("error_vs_width.png") < page.index("highlight-ipython3")
    # the parameters once: the declared cell with this run's values; papermill's cell hidden
    assert page.count("the values of this run (profile ci)") == 1
    assert "Parameters</span>" not in page and "injected-parameters" not in page
    assert "hide-input" in page  # long code cells are folded behind "show code"
    assert "python -m ntkbook run infinite_width --profile ci" in page
    figs = book_project / "book" / "chapters" / "infinite_width" / "figures"
    for name in ("ntk_vs_angle", "error_vs_width", "extrapolation"):
        prov = json.loads((figs / f"{name}.json").read_text())
        assert prov["parameters"]["depth"] == 2 and prov["seed"] == 0 and prov["git_commit"]
        assert (figs / f"{name}.png").stat().st_size > 0 and (
            figs / f"{name}.svg"
        ).stat().st_size > 0
        assert (html / "figures" / "infinite_width" / f"{name}.png").exists()
    # the demo's ci profile sets XLA's optimization level: its kernel ran with it, instead of
    # the suite's level 0, and run.json says so; the infinite_width profile sets none
    demo = book_project / "book" / "chapters" / "demo"
    assert "--xla_backend_optimization_level=1" in (demo / "demo.ipynb").read_text()
    assert "--xla_backend_optimization_level=0" not in (demo / "demo.ipynb").read_text()
    assert json.loads((demo / "run.json").read_text())["xla_backend_optimization_level"] == 1
    iw = book_project / "book" / "chapters" / "infinite_width" / "run.json"
    assert json.loads(iw.read_text())["xla_backend_optimization_level"] is None


def test_xla_flags_set_the_level_and_keep_the_callers_other_flags():
    env = {
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=3"
    }
    assert xla_flags(0, env) == {
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0"
    }
    assert xla_flags(None, env) == {} and xla_flags(2, {}) == {
        "XLA_FLAGS": "--xla_backend_optimization_level=2"
    }


def test_unchanged_chapters_are_cached(book_project):
    before = snapshot(book_project / "book" / "chapters")
    again = ntkbook(book_project, "build", "--profile", "ci", "--no-site")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("cached") == 2
    assert snapshot(book_project / "book" / "chapters") == before


BAD_INPUTS = [
    (["run", "infinite_width", "--profile", "ci", "-p", "depth=0"], "must be >= 1"),
    (["run", "infinite_width", "--profile", "ci", "-p", "widht=3"], "did you mean 'widths'"),
    (["run", "infinite_width", "--profile", "ci", "-p", "depth=abc"], "must be an integer"),
    (["run", "infinite_width", "-p", "w_std=nan"], "must be finite"),
    (["run", "infinite_width", "-p", "widths=[64,0,128]"], "must be >= 1"),
    (["run", "infinite_width", "-p", "n_nets=1"], "must be >= 2"),
    (["run", "infinite_width", "-p", "activation=sigmoid"], "must be one of"),
    (["run", "infinite_width", "-p", "depth"], "NAME=VALUE"),
    (["run", "no_such_chapter"], "unknown chapter"),
    (["run", "infinite_width", "--profile", "huge"], "invalid choice"),
    (["frobnicate"], "invalid choice"),
    (["run"], "required: chapter"),
    (["run", "infinite_width", "-p", "=3"], "NAME=VALUE"),
    (["run", "infinite_width", "-p", "seed=-1"], "must be >= 0"),
    (["run", "infinite_width", "-p", "depth=1.5"], "must be an integer"),
    (["run", "infinite_width", "-p", "widths=[]"], "len >= 3"),
    (["run", "infinite_width", "-p", "widths=64"], "must be a list[int]"),
    (["run", "infinite_width", "-p", "b_std=-0.1"], "must be >= 0"),
    (["run", "infinite_width", "-p", "w_std=inf"], "must be finite"),
    (["run", "infinite_width", "-p", "w_std=-inf"], "must be finite"),
    (["run", "infinite_width", "-p", "n_angles=2"], "must be >= 4"),
    (["run", "infinite_width", "-p", "n_nets=many"], "must be an integer"),
    (["run", "infinite_width", "-p", "widths=[64,64,128]"], "invalid parameter combination"),
    (["run", "infinite_width", "-p", "widths=[64,128,10000000]"], "estimated memory"),
    (["run", "demo", "-p", "fail=maybe"], "must be true or false"),
    (["build", "--profile", "nope"], "invalid choice"),
    (["run", "../notebooks/demo"], "unknown chapter"),
]


@pytest.mark.parametrize(
    "args, message", BAD_INPUTS, ids=lambda a: " ".join(a) if isinstance(a, list) else ""
)
def test_bad_input_is_refused_and_writes_nothing(book_project, args, message, capsys, monkeypatch):
    before = snapshot(book_project / "book" / "chapters")
    code, out, err = ntkbook_here(book_project, *args, capsys=capsys, monkeypatch=monkeypatch)
    assert code == 2, out + err
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert snapshot(book_project / "book" / "chapters") == before
    assert not list((book_project / "_build" / "tmp").glob("*"))


def test_a_refusal_from_the_command_line_is_one_line_and_exit_status_2(book_project):
    """The refusals above, in this process; here one through the installed command."""
    before = snapshot(book_project / "book" / "chapters")
    proc = ntkbook(book_project, "run", "infinite_width", "-p", "widht=3")
    assert proc.returncode == 2 and "did you mean 'widths'" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert snapshot(book_project / "book" / "chapters") == before


def test_malformed_profiles_file_is_refused(book_project, capsys, monkeypatch):
    prof = book_project / "notebooks" / "profiles.yml"
    good = prof.read_text()
    try:
        for text, message in [
            ("demo: [unclosed", "not valid YAML"),
            ("demo:\n  tiny: {}\n", "unknown profile 'tiny'"),
            ("demo:\n  ci: {fail: maybe}\n", "must be true or false"),
            ("demo:\n  ci: {colour: 3}\n", "unknown parameter 'colour'"),
            ("demo:\n  ci: {xla_backend_optimization_level: 7}\n", "an int from 0 to 3"),
        ]:
            prof.write_text(text)
            code, _, err = ntkbook_here(
                book_project,
                "run",
                "demo",
                "--profile",
                "ci",
                capsys=capsys,
                monkeypatch=monkeypatch,
            )
            assert code == 2 and message in err, err
    finally:
        prof.write_text(good)


def test_failed_chapter_keeps_previous_results(book_project):
    before = snapshot(book_project / "book" / "chapters" / "demo")
    proc = ntkbook(book_project, "run", "demo", "--profile", "ci", "-p", "fail=true")
    assert proc.returncode == 1
    assert "asked to fail" in proc.stderr and "previous results untouched" in proc.stderr
    assert snapshot(book_project / "book" / "chapters" / "demo") == before
    assert (book_project / "_build" / "failed" / "demo.ipynb").exists()


def test_failing_check_is_shown_and_fails_checks_command(book_project):
    proc = ntkbook(book_project, "run", "demo", "--profile", "ci", "-p", "good=false")
    assert proc.returncode == 0 and "1 of 1 checks FAIL" in proc.stdout
    nb = (book_project / "book" / "chapters" / "demo" / "demo.ipynb").read_text()
    assert "FAIL" in nb
    checks = ntkbook(book_project, "checks")
    assert checks.returncode == 1 and re.search(r"^FAIL +demo ", checks.stdout, re.M)
    restore = ntkbook(book_project, "run", "demo", "--profile", "ci")
    assert restore.returncode == 0
    assert ntkbook(book_project, "checks").returncode == 0


def test_nan_measurement_can_never_pass(book_project):
    proc = ntkbook(book_project, "run", "demo", "--profile", "ci", "-p", "nan=true")
    assert proc.returncode == 0 and "1 of 1 checks FAIL" in proc.stdout
    checks = json.loads((book_project / "book" / "chapters" / "demo" / "checks.json").read_text())
    assert checks[0]["passed"] is False and checks[0]["measured"] is None
    assert checks[0]["nonfinite"] == {"measured": "nan"}
    listing = ntkbook(book_project, "checks")
    assert listing.returncode == 1 and re.search(r"^FAIL +demo .*\bnan\b", listing.stdout, re.M)
    build = ntkbook(book_project, "build", "--profile", "ci", "--no-site", "--reset")
    assert build.returncode == 0  # back to the ci profile's values: demo reruns and passes
    assert ntkbook(book_project, "checks").returncode == 0


def test_list_shows_parameters_and_profiles(book_project):
    proc = ntkbook(book_project, "list")
    assert proc.returncode == 0
    assert "widths" in proc.stdout and "list[int]" in proc.stdout and "profile ci" in proc.stdout


def test_api_page_documents_every_public_function(book_project):
    """The API reference, built by autodoc under -W, has an entry for every public function and
    class of every ntklib module (those it defines, not those it imports)."""
    page = (book_project / "_build" / "html" / "book" / "api.html").read_text()
    missing = []
    for info in pkgutil.iter_modules(ntklib.__path__):
        if info.name.startswith("_"):
            continue
        mod = __import__(f"ntklib.{info.name}", fromlist=["_"])
        for name, obj in vars(mod).items():
            defined_here = getattr(obj, "__module__", None) == mod.__name__
            if name.startswith("_") or not defined_here or not callable(obj):
                continue
            if f'id="ntklib.{info.name}.{name}"' not in page:
                missing.append(f"ntklib.{info.name}.{name}")
    assert not missing, missing
    assert inspect.getdoc(ntklib) and 'id="module-ntklib"' in page


def test_build_keeps_your_own_values_and_says_so(book_project):
    """A chapter rerun with your values stays in the book (marked) until ``build --reset``."""
    demo = book_project / "book" / "chapters" / "demo"
    mine = ntkbook(book_project, "run", "demo", "--profile", "ci", "-p", "seed=3")
    assert mine.returncode == 0, mine.stderr
    kept = ntkbook(book_project, "build", "--profile", "ci", "--no-site")
    assert kept.returncode == 0 and "demo: kept your run (-p seed=3;" in kept.stdout, kept.stdout
    assert "Your values, not the book's" in (demo / "demo.ipynb").read_text()
    assert json.loads((demo / "checks.json").read_text())[0]["overrides"] == {"seed": 3}
    reset = ntkbook(book_project, "build", "--profile", "ci", "--no-site", "--reset")
    assert reset.returncode == 0 and "demo: running" in reset.stdout, reset.stdout
    assert json.loads((demo / "checks.json").read_text())[0]["overrides"] == {}
    assert "Your values" not in (demo / "demo.ipynb").read_text()
