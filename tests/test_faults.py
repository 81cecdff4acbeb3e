"""The runner under faults: determinism, interruption, no network."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import ntkbook, snapshot


def _figure_bytes(project, chapter):
    figs = project / "book" / "chapters" / chapter / "figures"
    return {p.name: p.read_bytes() for p in sorted(figs.glob("*")) if p.suffix in (".png", ".svg")}


def _check_values(project, chapter):
    checks = json.loads((project / "book" / "chapters" / chapter / "checks.json").read_text())
    return [
        (c["name"], c["measured"], c["uncertainty"], c["predicted"], c["passed"]) for c in checks
    ]


@pytest.mark.slow
def test_same_parameters_give_identical_checks_and_figures(book_project):
    first = ntkbook(book_project, "run", "infinite_width", "--profile", "ci", "--force")
    assert first.returncode == 0, first.stderr
    checks1, figs1 = (
        _check_values(book_project, "infinite_width"),
        _figure_bytes(book_project, "infinite_width"),
    )
    second = ntkbook(book_project, "run", "infinite_width", "--profile", "ci", "--force")
    assert second.returncode == 0, second.stderr
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


def _wait_for_kernel_work(project, proc, seconds=120):
    """Wait until the chapter is executing (its temporary folder has a notebook in it)."""
    t0 = time.time()
    while time.time() - t0 < seconds:
        if list((project / "_build" / "tmp").glob("infinite_width-*/*.ipynb")):
            time.sleep(3)  # well inside the chapter's computation
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("the chapter never started")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_killed_run_leaves_previous_results_and_next_run_succeeds(book_project, how):
    out = book_project / "book" / "chapters" / "infinite_width"
    before = snapshot(out)
    proc = _start(book_project, "run", "infinite_width", "--profile", "ci", "--force")
    _wait_for_kernel_work(book_project, proc)
    if how == "SIGTERM":
        proc.send_signal(signal.SIGTERM)  # the runner alone: it must clean up after itself
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and "previous results untouched" in err
        assert not list((book_project / "_build" / "tmp").glob("infinite_width-*"))
    else:
        os.killpg(proc.pid, signal.SIGKILL)  # the runner and its kernel, no chance to clean up
        proc.communicate(timeout=60)
    assert snapshot(out) == before
    again = ntkbook(book_project, "run", "infinite_width", "--profile", "ci", "--force")
    assert again.returncode == 0, again.stderr
    assert not list((book_project / "_build" / "tmp").glob("infinite_width-*"))
    assert (out / "infinite_width.ipynb").exists() and len(
        list((out / "figures").glob("*.png"))
    ) == 3


def _netns_available() -> str | None:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "unshare or ip (util-linux, iproute2) is not installed"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    return (
        None if probe.returncode == 0 else f"unshare -n is not allowed here: {probe.stderr.strip()}"
    )


@pytest.mark.slow
def test_whole_build_succeeds_without_network(book_project):
    why = _netns_available()
    if why:
        pytest.skip(f"cannot make a network namespace: {why}")
    # A fresh network namespace has only a loopback interface, down: bring it up for the
    # kernel's local ZeroMQ sockets; nothing else can be reached.
    probe = "import socket; socket.create_connection(('pypi.org', 443), timeout=3)"
    script = (
        "ip link set lo up; "
        f'{sys.executable} -c "{probe}" 2>/dev/null && echo NETWORK_REACHABLE; '
        f"exec {sys.executable} -m ntkbook build --profile ci --force"
    )
    proc = subprocess.run(
        ["unshare", "-n", "sh", "-c", script],
        cwd=book_project,
        capture_output=True,
        text=True,
        env=dict(os.environ, MPLBACKEND="Agg"),
        timeout=900,
    )
    assert "NETWORK_REACHABLE" not in proc.stdout
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "checks pass" in proc.stdout
