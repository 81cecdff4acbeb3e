"""The runner under faults: determinism, interruption, no network."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import DEMO, ROOT, ntkbook, snapshot

from ntkbook import cli
from ntkbook.project import Project

pytestmark = pytest.mark.xdist_group("book")  # one worker builds the book once


def _figure_bytes(project, chapter):
    figs = project / "book" / "chapters" / chapter / "figures"
    return {p.name: p.read_bytes() for p in sorted(figs.glob("*")) if p.suffix in (".png", ".svg")}


def _check_values(project, chapter):
    checks = json.loads((project / "book" / "chapters" / chapter / "checks.json").read_text())
    return [
        (c["name"], c["measured"], c["uncertainty"], c["predicted"], c["passed"]) for c in checks
    ]


def test_same_parameters_give_identical_checks_and_figures(book_project):
    """A real chapter rerun with the parameters of the book's build (conftest) gives the same
    checks and the same figure bytes; every test that reruns it uses those parameters."""
    checks1, figs1 = (
        _check_values(book_project, "infinite_width"),
        _figure_bytes(book_project, "infinite_width"),
    )
    again = ntkbook(book_project, "run", "infinite_width", "--profile", "ci", "--force")
    assert again.returncode == 0, again.stderr
    assert _check_values(book_project, "infinite_width") == checks1
    figs2 = _figure_bytes(book_project, "infinite_width")
    assert figs2.keys() == figs1.keys() and len(figs1) == 6
    for name in figs1:
        assert figs2[name] == figs1[name], f"{name} differs between two identical runs"


def _start(project, *args):
    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.Popen(
        [sys.executable, "-m", "ntkbook", *args],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_for_kernel_work(project, proc, chapter, seconds=120):
    """Wait until the chapter is executing (its temporary folder has a notebook in it)."""
    t0 = time.time()
    while time.time() - t0 < seconds:
        if list((project / "_build" / "tmp").glob(f"{chapter}-*/*.ipynb")):
            time.sleep(3)  # well inside the chapter's computation
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("the chapter never started")


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_killed_run_leaves_previous_results_and_next_run_succeeds(book_project, how):
    """The demo chapter, told to wait 60 s inside its computation, is killed there."""
    out = book_project / "book" / "chapters" / "demo"
    before = snapshot(out)
    proc = _start(book_project, "run", "demo", "--profile", "ci", "--force", "-p", "sleep=60")
    _wait_for_kernel_work(book_project, proc, "demo")
    if how == "SIGTERM":
        proc.send_signal(signal.SIGTERM)  # the runner alone: it must clean up after itself
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and "previous results untouched" in err
        assert not list((book_project / "_build" / "tmp").glob("demo-*"))
    else:
        os.killpg(proc.pid, signal.SIGKILL)  # the runner and its kernel, no chance to clean up
        proc.communicate(timeout=60)
    assert snapshot(out) == before
    again = ntkbook(book_project, "run", "demo", "--profile", "ci", "--force")
    assert again.returncode == 0, again.stderr
    assert not list((book_project / "_build" / "tmp").glob("demo-*"))
    assert (out / "demo.ipynb").exists() and len(list((out / "figures").glob("*.png"))) == 1


def test_whole_build_succeeds_without_network(book_project):
    """The book's cold build (conftest), every chapter and the site, ran in a network
    namespace with nothing reachable, and passed."""
    log = (book_project / "offline.txt").read_text()
    if log.startswith("not offline: "):
        pytest.skip(f"cannot make a network namespace: {log.removeprefix('not offline: ')}")
    assert "NETWORK_REACHABLE" not in log
    assert "checks pass" in log and "infinite_width: done in" in log and "demo: done in" in log


def test_a_build_killed_between_chapters_keeps_the_finished_one(tmp_path):
    """`build` runs chapters one by one: killed inside the second, it keeps the first, and the
    next build reruns only the unfinished one; each chapter prints a progress line."""
    root = tmp_path / "two"
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / "_config.yml", root / "_config.yml")
    (root / "notebooks" / "demo.md").write_text(DEMO)
    (root / "notebooks" / "demo_b.md").write_text(DEMO.replace("# Demo", "# Demo B"))
    profiles = root / "notebooks" / "profiles.yml"
    profiles.write_text("demo:\n  ci: {}\ndemo_b:\n  ci: {sleep: 6}\n")
    proc = _start(root, "build", "--profile", "ci", "--no-site")
    _wait_for_kernel_work(root, proc, "demo_b")
    os.killpg(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    assert "demo: running (no earlier ci run)" in out and "demo: done in" in out
    run = json.loads((root / "book" / "chapters" / "demo" / "run.json").read_text())
    assert set(run["times"]) == {"ci"} and run["times"]["ci"]["seconds"] > 0
    assert not (root / "book" / "chapters" / "demo_b").exists()
    profiles.write_text("demo:\n  ci: {}\ndemo_b:\n  ci: {sleep: 0}\n")  # no need to wait now
    again = ntkbook(root, "build", "--profile", "ci", "--no-site")
    assert again.returncode == 0, again.stderr
    assert "demo: done (cached" in again.stdout and "demo_b: running" in again.stdout
    assert again.stdout.count("running (") == 1
    assert json.loads((root / "book" / "chapters" / "demo" / "run.json").read_text()) == run


def test_a_running_chapter_reports_its_cells(tmp_path, capsys):
    """While a chapter runs, its progress line counts the cells it has finished."""
    root = tmp_path / "one"
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / "_config.yml", root / "_config.yml")
    (root / "notebooks" / "demo.md").write_text(DEMO)
    (root / "notebooks" / "profiles.yml").write_text("demo:\n  ci: {sleep: 4}\n")
    project = Project(root)
    ch = project.chapter("demo")
    rec = cli._run_one(project, ch, "ci", ch.resolve("ci", {}), {}, False, heartbeat=1.0)
    out = capsys.readouterr().out
    assert rec["checks_failed"] == 0
    assert re.search(r"demo: running, cell 2 of 3, \d+ s \(no earlier ci run\)", out), out


def test_a_source_edited_during_a_run_is_not_stamped_fresh(tmp_path):
    """The cache key is the executed source's: edited while it runs, the chapter is stale."""
    root = tmp_path / "edit"
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / "_config.yml", root / "_config.yml")
    (root / "notebooks" / "demo.md").write_text(DEMO)
    (root / "notebooks" / "profiles.yml").write_text("demo:\n  ci: {sleep: 4}\n")
    proc = _start(root, "run", "demo", "--profile", "ci")
    _wait_for_kernel_work(root, proc, "demo")
    (root / "notebooks" / "demo.md").write_text(DEMO + "\nEdited during the run.\n")
    proc.communicate(timeout=120)
    assert proc.returncode == 0
    again = ntkbook(root, "build", "--profile", "ci", "--no-site")
    assert again.returncode == 0 and "demo: running" in again.stdout, again.stdout


CACHED_PROGRAM = """
import jax, jax.numpy as jnp, ntklib as nl
jax.config.update("jax_enable_x64", True)
x = jax.random.normal(jax.random.PRNGKey(3), (4, 3))
k = nl.kernels(x, depth=3, activation="tanh", w_std=1.5, b_std=0.1)
net = nl.MLP(3, (16, 16), activation="tanh")
params = nl.init(net, jax.random.PRNGKey(4))
print(jnp.concatenate([k.ntk.ravel(), nl.ntk(net, params, x).ravel()]).tobytes().hex())
"""


def test_a_program_loaded_from_the_compile_cache_gives_the_compilers_bits(tmp_path):
    """The chapters' persistent compilation cache (ntkbook.runner.compile_cache) serves the
    executable XLA compiled: a run that loads every program gives the bits of the run that
    compiled them (the alternative: a deserialized program that differs, e.g. by fast math)."""
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "cache"))
    runs = []
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-c", CACHED_PROGRAM],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        runs.append((proc.stdout, sorted(p.name for p in (tmp_path / "cache").iterdir())))
    (cold, entries), (warm, entries_after) = runs
    assert entries and entries_after == entries  # the second run compiled nothing new
    assert warm == cold
