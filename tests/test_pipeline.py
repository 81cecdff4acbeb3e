"""The chapter pipeline end to end, at a small scale, in a throw-away copy of the book.

One module-scoped build runs the real first chapter (tiny profile) and a small demo chapter,
then the tests poke the runner: cache, bad input, a failing chapter, a failing check.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

DEMO = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
    format_version: 0.13
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# Demo

```{code-cell} ipython3
:tags: [parameters]

seed = 0  # int, >= 0: root key
fail = False  # bool: raise in the next cell
good = True  # bool: whether the check passes
```

```{code-cell} ipython3
import matplotlib.pyplot as plt

import ntklib as nl

if fail:
    raise RuntimeError("asked to fail")
fig, ax = plt.subplots()
ax.plot([0, 1], [seed, 1])
nl.save_figure(fig, "line")
plt.show()
nl.check("demo check", paper="jacot2018ntk", theorem="none", measured=1.0 if good else 2.0,
         predicted=1.0, tolerance=0.1, why="demo");
```
"""

PROFILES = """
infinite_width:
  ci: {widths: [32, 64, 128, 256], n_nets: 8, n_angles: 6, depth: 2}
demo:
  ci: {}
"""

TOC = """format: jb-book
root: book/intro
chapters:
  - file: book/chapters/infinite_width/infinite_width
  - file: book/chapters/demo/demo
  - file: book/dashboard
  - file: book/reproduce
  - file: book/bibliography
"""


def ntkbook(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.run(
        [sys.executable, "-m", "ntklib.book", *args],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("book")
    for f in ("_config.yml",):
        shutil.copy(ROOT / f, root / f)
    (root / "_toc.yml").write_text(TOC)
    shutil.copytree(
        ROOT / "book", root / "book", ignore=shutil.ignore_patterns("chapters", "_generated")
    )
    (root / "notebooks").mkdir()
    shutil.copy(ROOT / "notebooks" / "infinite_width.md", root / "notebooks")
    (root / "notebooks" / "demo.md").write_text(DEMO)
    (root / "notebooks" / "profiles.yml").write_text(PROFILES)
    build = ntkbook(root, "build", "--profile", "ci")
    assert build.returncode == 0, build.stdout + build.stderr
    return root


@pytest.mark.slow
def test_build_produces_site_checks_and_figures(project):
    html = project / "_build" / "html"
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
    assert "demo check" in dash and "NTK fluctuations shrink" in dash
    page = (html / "book" / "chapters" / "infinite_width" / "infinite_width.html").read_text()
    assert page.count("<img") >= 3 and "Regenerate with" in page
    assert "python -m ntklib.book run infinite_width --profile ci" in page
    figs = project / "book" / "chapters" / "infinite_width" / "figures"
    for name in ("ntk_vs_angle", "error_vs_width", "extrapolation"):
        prov = json.loads((figs / f"{name}.json").read_text())
        assert prov["parameters"]["depth"] == 2 and prov["seed"] == 0 and prov["git_commit"]
        assert (figs / f"{name}.png").stat().st_size > 0 and (
            figs / f"{name}.svg"
        ).stat().st_size > 0
        assert (html / "figures" / "infinite_width" / f"{name}.png").exists()


@pytest.mark.slow
def test_unchanged_chapters_are_cached(project):
    before = snapshot(project / "book" / "chapters")
    again = ntkbook(project, "build", "--profile", "ci", "--no-site")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("cached") == 2
    assert snapshot(project / "book" / "chapters") == before


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
]


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message", BAD_INPUTS, ids=lambda a: " ".join(a) if isinstance(a, list) else ""
)
def test_bad_input_is_refused_and_writes_nothing(project, args, message):
    before = snapshot(project / "book" / "chapters")
    proc = ntkbook(project, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert snapshot(project / "book" / "chapters") == before
    assert not list((project / "_build" / "tmp").glob("*"))


@pytest.mark.slow
def test_malformed_profiles_file_is_refused(project):
    prof = project / "notebooks" / "profiles.yml"
    good = prof.read_text()
    try:
        for text, message in [
            ("demo: [unclosed", "not valid YAML"),
            ("demo:\n  tiny: {}\n", "unknown profile 'tiny'"),
            ("demo:\n  ci: {fail: maybe}\n", "must be true or false"),
            ("demo:\n  ci: {colour: 3}\n", "unknown parameter 'colour'"),
        ]:
            prof.write_text(text)
            proc = ntkbook(project, "run", "demo", "--profile", "ci")
            assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    finally:
        prof.write_text(good)


@pytest.mark.slow
def test_failed_chapter_keeps_previous_results(project):
    before = snapshot(project / "book" / "chapters" / "demo")
    proc = ntkbook(project, "run", "demo", "--profile", "ci", "-p", "fail=true")
    assert proc.returncode == 1
    assert "asked to fail" in proc.stderr and "previous results untouched" in proc.stderr
    assert snapshot(project / "book" / "chapters" / "demo") == before
    assert (project / "_build" / "failed" / "demo.ipynb").exists()


@pytest.mark.slow
def test_failing_check_is_shown_and_fails_checks_command(project):
    proc = ntkbook(project, "run", "demo", "--profile", "ci", "-p", "good=false")
    assert proc.returncode == 0 and "1 of 1 checks FAIL" in proc.stdout
    nb = (project / "book" / "chapters" / "demo" / "demo.ipynb").read_text()
    assert "FAIL" in nb
    checks = ntkbook(project, "checks")
    assert checks.returncode == 1 and "FAIL  demo" in checks.stdout
    restore = ntkbook(project, "run", "demo", "--profile", "ci")
    assert restore.returncode == 0
    assert ntkbook(project, "checks").returncode == 0


@pytest.mark.slow
def test_list_shows_parameters_and_profiles(project):
    proc = ntkbook(project, "list")
    assert proc.returncode == 0
    assert "widths" in proc.stdout and "list[int]" in proc.stdout and "profile ci" in proc.stdout
