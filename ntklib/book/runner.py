"""Execute one chapter with papermill and publish its results atomically.

jupytext text -> notebook -> papermill (values injected after the ``parameters`` cell) in a
temporary folder under ``_build/tmp``; only when execution succeeds and every promised file
exists is the chapter's output folder replaced by the new one. A failed or interrupted run
leaves the previous notebook, figures and checks untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from ntklib.book.params import canonical
from ntklib.book.project import Chapter


class ChapterFailed(Exception):
    """The chapter's code raised; the previous results are kept."""


def cache_key(chapter: Chapter, values: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(chapter.source.read_bytes())
    h.update(canonical(values).encode())
    h.update(chapter.project.source_hash().encode())
    return h.hexdigest()


def is_fresh(chapter: Chapter, key: str) -> bool:
    """True when the last successful run had this cache key and its files are all there."""
    try:
        run = json.loads((chapter.outdir / "run.json").read_text())
    except (OSError, ValueError):
        return False
    return run.get("cache_key") == key and chapter.notebook_out.exists()


def rerun_command(chapter: str, profile: str, overrides: dict[str, Any]) -> str:
    parts = ["python", "-m", "ntklib.book", "run", chapter, "--profile", profile]
    for k, v in overrides.items():
        parts += ["-p", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
    return shlex.join(parts)


def git_commit(root: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        commit = out.stdout.strip() or "unknown"
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "ntklib", "notebooks"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except OSError:
        return "unknown"


def collect_records(nb) -> tuple[list[dict], list[dict]]:
    """The check and figure records that ntklib.report attached to the notebook's outputs."""
    checks, figures = [], []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            rec = out.get("metadata", {}).get("ntklib")
            if not rec:
                continue
            if "check" in rec:
                checks.append(rec["check"])
            if "figure" in rec:
                figures.append(rec["figure"])
    return checks, figures


def run_chapter(
    chapter: Chapter,
    profile: str,
    values: dict[str, Any],
    overrides: dict[str, Any],
    *,
    log=print,
) -> dict[str, Any]:
    """Run ``chapter`` with resolved ``values``; return its run record (also ``run.json``)."""
    import logging

    import jupytext
    import nbformat
    import papermill

    # papermill infers parameter types from its own comment syntax and warns about ours;
    # our declarations are validated before this point, so its warnings are noise.
    logging.getLogger("papermill").setLevel(logging.ERROR)

    project = chapter.project
    tmp_root = project.build / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    recover(tmp_root, chapter.outdir)
    tmp = tmp_root / f"{chapter.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    command = rerun_command(chapter.name, profile, overrides)
    env_before = dict(os.environ)
    os.environ.update(
        NTKBOOK_CHAPTER=chapter.name,
        NTKBOOK_PROFILE=profile,
        NTKBOOK_PARAMS=canonical(values),
        NTKBOOK_OUTDIR=str(tmp),
        NTKBOOK_COMMAND=command,
        NTKBOOK_GIT_COMMIT=git_commit(project.root),
        PYTHONHASHSEED="0",
        # figures must reach the notebook whatever the caller's backend (CI often sets Agg)
        MPLBACKEND="module://matplotlib_inline.backend_inline",
    )
    t0 = time.perf_counter()
    try:
        nb = jupytext.read(chapter.source)
        nb.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        src = tmp / f"{chapter.name}.source.ipynb"
        nbformat.write(nb, src)
        out = tmp / f"{chapter.name}.ipynb"
        log(f"  executing {chapter.source.relative_to(project.root)} ({profile} profile)")
        try:
            papermill.execute_notebook(
                str(src),
                str(out),
                parameters=values,
                kernel_name="python3",
                cwd=str(tmp),
                progress_bar=sys.stderr.isatty(),
                report_mode=False,
                request_save_on_cell_execute=False,
            )
        except papermill.PapermillExecutionError as e:
            failed = project.build / "failed"
            failed.mkdir(parents=True, exist_ok=True)
            if out.exists():
                shutil.copy(out, failed / out.name)
            raise ChapterFailed(
                f"chapter {chapter.name!r} failed in cell {e.exec_count}: {e.ename}: {e.evalue} "
                f"(executed notebook kept in {failed.relative_to(project.root)}/{out.name}; "
                "previous results untouched)"
            ) from None
        src.unlink()
        executed = nbformat.read(out, as_version=4)
        checks, figures = collect_records(executed)
        for fig in figures:
            for f in fig["files"] + [f"{fig['figure']}.json"]:
                p = tmp / "figures" / f
                if not p.exists() or p.stat().st_size == 0:
                    raise ChapterFailed(f"chapter {chapter.name!r}: figure file {f} missing")
        elapsed = time.perf_counter() - t0
        record = {
            "chapter": chapter.name,
            "profile": profile,
            "parameters": values,
            "overrides": overrides,
            "command": command,
            "cache_key": cache_key(chapter, values),
            "git_commit": os.environ["NTKBOOK_GIT_COMMIT"],
            "seconds": round(elapsed, 2),
            "checks": len(checks),
            "checks_failed": sum(not c["passed"] for c in checks),
            "figures": [f["figure"] for f in figures],
        }
        (tmp / "checks.json").write_text(json.dumps(checks, indent=2))
        (tmp / "run.json").write_text(json.dumps(record, indent=2))
        _publish(tmp, chapter.outdir, tmp_root)
        return record
    finally:
        os.environ.clear()
        os.environ.update(env_before)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(tmp_root: Path, final: Path) -> None:
    """Clean up after a run that was killed (SIGKILL leaves no chance to clean up).

    Temporary folders of dead processes are removed; if a kill landed between the two renames
    of :func:`_publish`, the previous results are moved back into place.
    """
    for d in tmp_root.glob(f"{final.name}-*"):
        parts = d.name[len(final.name) + 1 :].split("-")
        if len(parts) == 2 and parts[0].isdigit() and not _alive(int(parts[0])):
            shutil.rmtree(d, ignore_errors=True)
    olds = sorted(tmp_root.glob(f"old-{final.name}-*"))
    if olds and not final.exists():
        os.replace(olds[-1], final)
    for d in tmp_root.glob(f"old-{final.name}-*"):
        shutil.rmtree(d, ignore_errors=True)


def _publish(tmp: Path, final: Path, tmp_root: Path) -> None:
    """Replace ``final`` by ``tmp`` with two renames (same file system)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = tmp_root / f"old-{final.name}-{uuid.uuid4().hex[:8]}"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
