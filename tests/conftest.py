import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

# The suite's programs are small: compiling them costs more than running them. LLVM at -O0
# compiles them in about 40 % of the time (a 3-layer MLP's diagonal NTK: 7.4 s -> 2.9 s) and
# changes results by rounding only (8e-15 relative on a depth-50 ReLU kernel), which every
# tolerance here allows. Set before JAX starts; subprocesses (chapters, sharded runs) inherit it.
FAST_COMPILE = "--xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()

from ntkbook.runner import use_compile_cache  # noqa: E402  (imports no JAX)

# The project's persistent compilation cache (ntkbook.runner.compile_cache), shared by both
# workers, their subprocesses and the throw-away books' chapters. About 40 % of the suite is
# compiling: on 2 cores, 400 s without the cache, 384 s with an empty one (a program compiled in
# one process is loaded in the others), 235 s warm (a second `make test`). Entries are keyed
# by program, versions and flags; set JAX_COMPILATION_CACHE_DIR to use another folder.
ROOT = Path(__file__).resolve().parents[1]
use_compile_cache(ROOT / "_build")

import jax  # noqa: E402
import pytest  # noqa: E402

from ntkbook import cli  # noqa: E402

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def key():
    return jax.random.PRNGKey(0)


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

seed: int = 0  # ≥ 0: root key
fail: bool = False  # raise in the next cell
good: bool = True  # whether the check passes
nan: bool = False  # make the check's measured value NaN
sleep: float = 0.0  # ≥ 0: seconds to wait inside the computation (to be killed there)
```

```{code-cell} ipython3
import matplotlib.pyplot as plt

import os
import time

from ntkbook import check, save_figure

time.sleep(sleep)
print("XLA_FLAGS:", os.environ.get("XLA_FLAGS"))
if fail:
    raise RuntimeError("asked to fail")
fig, ax = plt.subplots()
ax.plot([0, 1], [seed, 1])
save_figure(fig, "line")
measured = float("nan") if nan else (1.0 if good else 2.0)
check("demo check", paper="jacot2018ntk", theorem="none", measured=measured,
      predicted=1.0, tolerance=0.1, why="demo");
```
"""

PROFILES = """
infinite_width:
  ci: {widths: [32, 64, 128, 256], n_nets: 8, n_angles: 6, depth: 2}
demo:
  ci: {xla_backend_optimization_level: 1}
"""

TOC = """format: jb-book
root: book/intro
chapters:
  - file: book/chapters/infinite_width/infinite_width
  - file: book/chapters/demo/demo
  - file: book/dashboard
  - file: book/ledger
  - file: book/reproduce
  - file: book/api
  - file: book/bibliography
"""


def ntkbook(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.run(
        [sys.executable, "-m", "ntkbook", *args],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def ntkbook_here(project: Path, *args: str, capsys=None, monkeypatch=None) -> tuple[int, str, str]:
    """``python -m ntkbook ARGS`` in this process (for refusals, which run nothing): its exit
    status, stdout and stderr; ``capsys`` and ``monkeypatch`` are the test's fixtures."""
    monkeypatch.chdir(project)
    handler = signal.getsignal(signal.SIGTERM)
    try:
        code = cli.main(list(args))
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    finally:
        signal.signal(signal.SIGTERM, handler)
    out = capsys.readouterr()
    return code, out.out, out.err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="session")
def book_project(tmp_path_factory):
    """A throw-away copy of the book with a tiny profile, built once per test session: the
    tests that use it share one xdist worker (``xdist_group("book")``); a second build, on
    another worker, means the grouping broke, and fails here rather than costing a minute."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        flag = tmp_path_factory.getbasetemp().parent / "book_project.built"
        assert not flag.exists(), f"book_project built on {flag.read_text()} and again on {worker}"
        flag.write_text(worker)
    root = tmp_path_factory.mktemp("book")
    for f in ("_config.yml",):
        shutil.copy(ROOT / f, root / f)
    (root / "_toc.yml").write_text(TOC)
    shutil.copytree(
        ROOT / "book",
        root / "book",
        # what a build writes (the book's own build may be running beside the suite in CI)
        ignore=shutil.ignore_patterns("chapters", "_generated", "_static", "ledger"),
    )
    # the claims ledger of the one real chapter this book runs (the others' rows would name
    # checks of chapters it does not have, which fails the build, as it should in the real book)
    (root / "book" / "ledger").mkdir()
    shutil.copy(ROOT / "book" / "ledger" / "jacot2018ntk.yml", root / "book" / "ledger")
    (root / "notebooks").mkdir()
    shutil.copy(ROOT / "notebooks" / "infinite_width.md", root / "notebooks")
    (root / "notebooks" / "demo.md").write_text(DEMO)
    (root / "notebooks" / "profiles.yml").write_text(PROFILES)
    # built without a network where this machine can make a network namespace: a fresh one
    # has only a loopback interface, down; it is brought up for the kernel's local ZeroMQ
    # sockets, and nothing else can be reached (test_faults reads the probe's answer)
    why = netns_unavailable()
    if why:
        build = ntkbook(root, "build", "--profile", "ci")
        (root / "offline.txt").write_text(f"not offline: {why}")
    else:
        probe = "import socket; socket.create_connection(('pypi.org', 443), timeout=3)"
        script = (
            "ip link set lo up; "
            f'{sys.executable} -c "{probe}" 2>/dev/null && echo NETWORK_REACHABLE; '
            f"exec {sys.executable} -m ntkbook build --profile ci"
        )
        build = subprocess.run(
            ["unshare", "-n", "sh", "-c", script],
            cwd=root,
            capture_output=True,
            text=True,
            env=dict(os.environ, MPLBACKEND="Agg"),
            timeout=900,
        )
        (root / "offline.txt").write_text(build.stdout)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return root


def netns_unavailable() -> str | None:
    """Why this machine cannot make a network namespace, or None if it can."""
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "unshare or ip (util-linux, iproute2) is not installed"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    return (
        None if probe.returncode == 0 else f"unshare -n is not allowed here: {probe.stderr.strip()}"
    )


def pytest_collection_modifyitems(config, items):
    """The throw-away books' groups (``xdist_group``) first: each is one worker's serial chain,
    the fast tier's longest (the book's about 150 s of 385 s alone on 2 cores, 450 s of 650 s
    beside the chapters in CI), so xdist starts them at once and spreads the short tests
    around them. Where the CPU is the limit it changes nothing (CI on 2 cores, 0 % idle
    throughout: 781 and 788 s before and after); with more workers than cores busy, the chain
    is what ends the tier."""
    items.sort(key=lambda item: item.get_closest_marker("xdist_group") is None)  # stable
