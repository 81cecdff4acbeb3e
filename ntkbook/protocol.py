"""The protocol between the runner and a chapter's kernel, defined in one place.

The runner executes a chapter in a Jupyter kernel (a separate process). The chapter's
parameters reach it by one channel, papermill's injected cell; environment variables tell it
which chapter and profile run, where its files go and how to rerun it (:func:`run_environment`).
The chapter's :func:`ntkbook.check` and :func:`ntkbook.save_figure` read those back
(:func:`context`) and attach their records to the notebook's output metadata under
:data:`METADATA_KEY`, which the runner collects (:func:`records`) once the notebook has run,
adding the parameters it ran the chapter with (:func:`attach_parameters`).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

METADATA_KEY = "ntkbook"
"""Key of the output metadata that carries a ``{"check": ...}`` or ``{"figure": ...}`` record."""

_ENV = {
    "chapter": "NTKBOOK_CHAPTER",
    "profile": "NTKBOOK_PROFILE",
    "outdir": "NTKBOOK_OUTDIR",
    "command": "NTKBOOK_COMMAND",
    "git_commit": "NTKBOOK_GIT_COMMIT",
}


def git_commit(root: Path | str = ".", paths: tuple[str, ...] = ("ntklib", "notebooks")) -> str:
    """``HEAD``'s commit of the repository at ``root``, ``-dirty`` when ``paths`` have
    uncommitted changes, or ``"unknown"`` outside a git checkout."""
    try:
        git = ["git", "-C", str(root)]
        run = dict(capture_output=True, text=True, timeout=5, check=False)
        commit = subprocess.run([*git, "rev-parse", "HEAD"], **run).stdout.strip()
        if not commit:
            return "unknown"
        dirty = subprocess.run([*git, "status", "--porcelain", "--", *paths], **run).stdout
        return commit + ("-dirty" if dirty.strip() else "")
    except OSError:
        return "unknown"


def run_environment(
    *,
    chapter: str,
    profile: str,
    outdir: Path,
    command: str,
    git_commit: str,
) -> dict[str, str]:
    """The environment variables the runner sets for a chapter's kernel."""
    values = {
        "chapter": chapter,
        "profile": profile,
        "outdir": str(outdir),
        "command": command,
        "git_commit": git_commit,
    }
    return {_ENV[k]: v for k, v in values.items()}


def context() -> dict[str, Any]:
    """The run's context as the chapter sees it: chapter, profile, output folder,
    rerun command and commit. Run by hand (no runner), files go to ``./ntkbook_output``."""
    env = os.environ.get
    return {
        "chapter": env(_ENV["chapter"], "interactive"),
        "profile": env(_ENV["profile"], ""),
        "outdir": Path(env(_ENV["outdir"], "ntkbook_output")),
        "command": env(_ENV["command"], ""),
        "git_commit": env(_ENV["git_commit"]) or git_commit(),
    }


def records(nb) -> tuple[list[dict], list[dict], list[dict]]:
    """The check, figure and declined-check records (a bound a profile cannot resolve:
    :func:`ntkbook.record.can_exclude`) attached to an executed notebook's outputs."""
    checks, figures, declined = [], [], []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            rec = out.get("metadata", {}).get(METADATA_KEY)
            if not rec:
                continue
            if "check" in rec:
                checks.append(rec["check"])
            if "figure" in rec:
                figures.append(rec["figure"])
            if "declined" in rec:
                declined.append(rec["declined"])
    return checks, figures, declined


def attach_parameters(
    outdir: Path, checks: list[dict[str, Any]], parameters: dict[str, Any]
) -> None:
    """Record the parameters a chapter ran with in its checks (those that name none of their
    own) and in the provenance file of each figure in ``outdir/figures`` (``parameters`` and
    ``seed``, after ``profile``): the runner's side of the one channel, papermill's cell."""
    for c in checks:  # keys sorted, as the notebook's metadata stores the rest of the record
        items = sorted({"parameters": parameters, **c}.items())
        c.clear()
        c.update(items)
    for path in sorted((outdir / "figures").glob("*.json")):
        prov = json.loads(path.read_text())
        head = {k: prov.pop(k) for k in ("figure", "caption", "chapter", "profile") if k in prov}
        extra = {"parameters": parameters, "seed": parameters.get("seed")}
        path.write_text(json.dumps({**head, **extra, **prov}, indent=2))
