"""Execute one chapter with papermill and publish its results atomically.

jupytext text -> notebook -> papermill (values injected after the ``parameters`` cell) in a
temporary folder under ``_build/tmp``; only when execution succeeds and every promised file
exists is the chapter's output folder replaced by the new one. A failed or interrupted run
leaves the previous notebook, figures and checks untouched.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shlex
import shutil
import sys
import time
import uuid
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jupytext
import nbformat
import papermill

from ntkbook.cache_keys import cache_key
from ntkbook.files import atomic_write_bytes, replace_folder
from ntkbook.numbers import cell, comparison_text, status_mark
from ntkbook.params import PARAMETER_LINE, canonical
from ntkbook.project import XLA_LEVEL, Chapter
from ntkbook.protocol import attach_parameters, git_commit, records, run_environment


class ChapterFailed(Exception):
    """The chapter's code raised; the previous results are kept."""


KEY_PACKAGES = ("jax", "jaxlib", "numpy", "scipy")


def library_versions() -> dict[str, str]:
    """The installed versions of the packages a chapter's numbers depend on most (the whole
    environment is pinned by ``constraints.txt`` and hashed by :func:`environment_hash`)."""
    return {p: importlib.metadata.version(p) for p in KEY_PACKAGES}


def is_fresh(chapter: Chapter, key: str) -> bool:
    """True when the last successful run had this cache key and its files are all there."""
    try:
        run = json.loads((chapter.outdir / "run.json").read_text())
    except (OSError, ValueError):
        return False
    return run.get("cache_key") == key and chapter.notebook_out.exists()


def last_times(chapter: Chapter) -> dict[str, dict[str, Any]]:
    """The chapter's last measured run time per profile, from its ``run.json``:
    ``{profile: {"seconds": s, "computed_at": when, "git_commit": c}}`` (empty before a run)."""
    try:
        run = json.loads((chapter.outdir / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    times = run.get("times")
    if isinstance(times, dict):
        return times
    if "profile" in run and "seconds" in run and not run.get("overrides"):  # an older record
        return {run["profile"]: {"seconds": run["seconds"], "computed_at": run.get("computed_at")}}
    return {}


def measured_times(
    chapter: Chapter, profile: str, overrides: dict[str, Any], seconds: float, commit: str = ""
) -> dict[str, dict[str, Any]]:
    """:func:`last_times` with this run's time filed under ``profile``; a run with ``-p``
    overrides is not the profile's run and leaves the record as it was."""
    times = dict(last_times(chapter))
    if not overrides:
        times[profile] = {
            "seconds": round(seconds, 1),
            "computed_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "git_commit": commit,
        }
    return times


def override_args(overrides: dict[str, Any]) -> list[str]:
    """``["-p", "name=value", ...]``: the command-line form of a run's own values."""
    parts = []
    for k, v in overrides.items():
        parts += ["-p", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
    return parts


def rerun_command(chapter: str, profile: str, overrides: dict[str, Any]) -> str:
    parts = ["python", "-m", "ntkbook", "run", chapter, "--profile", profile]
    return shlex.join(parts + override_args(overrides))


def compile_cache(build: Path) -> dict[str, str]:
    """JAX's persistent compilation cache for the chapters' kernels, in ``_build/jax-cache``.

    A rerun with other values at the same shapes (another seed, a checked-out commit) or a
    second chapter with the same programs loads XLA's executables instead of compiling them
    (a warm cache takes the fast test tier from 400 s to 235 s on 2 cores). JAX keys an entry by the
    program, the JAX and jaxlib versions, the backend and the XLA flags, so a stale entry is
    never served, and a loaded executable is the one the compiler gave (bit-identical results:
    ``tests/test_faults.py``). The caller's own ``JAX_COMPILATION_CACHE_DIR`` wins.
    """
    return {
        "JAX_COMPILATION_CACHE_DIR": str(build / "jax-cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
    }


def xla_flags(level: int | None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{"XLA_FLAGS": ...}``: ``environ``'s (default ``os.environ``) flags with the backend
    optimization level set to ``level`` (:meth:`ntkbook.project.Chapter.xla_level`); ``{}``
    when ``level`` is ``None`` (the caller's flags stand)."""
    if level is None:
        return {}
    environ = os.environ if environ is None else environ
    flags = [f for f in environ.get("XLA_FLAGS", "").split() if not f.startswith(f"--{XLA_LEVEL}=")]
    return {"XLA_FLAGS": " ".join([*flags, f"--{XLA_LEVEL}={level}"])}


def use_compile_cache(build: Path, environ: MutableMapping[str, str] | None = None) -> None:
    """Point JAX at :func:`compile_cache`'s folder in ``environ`` (default ``os.environ``),
    before JAX starts: a variable already set there is kept."""
    environ = os.environ if environ is None else environ
    for name, value in compile_cache(build).items():
        environ.setdefault(name, value)


def run_chapter(
    chapter: Chapter,
    profile: str,
    values: dict[str, Any],
    overrides: dict[str, Any],
    *,
    log=print,
) -> dict[str, Any]:
    """Run ``chapter`` with resolved ``values``; return its run record (also ``run.json``).

    Three steps: :func:`execute` the notebook in a temporary folder, :func:`verify` that every
    figure it promised is there, then :func:`record` its checks and run record; the folder
    then replaces the previous results (two renames). The source is read once: the notebook
    executed is the one the cache key hashes, even if the file is edited during the run.
    """
    project = chapter.project
    source = chapter.source.read_bytes()
    key = cache_key(chapter, profile, values, source)
    tmp_root = project.build / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    recover(tmp_root, chapter.outdir)
    tmp = tmp_root / f"{chapter.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    command = rerun_command(chapter.name, profile, overrides)
    commit = git_commit(project.root)
    env = run_environment(
        chapter=chapter.name,
        profile=profile,
        outdir=tmp,
        command=command,
        git_commit=commit,
    )
    t0 = time.perf_counter()
    try:
        executed = execute(chapter, profile, values, tmp, env, log, source=source)
        checks, figures, declined = records(executed)
        attach_parameters(tmp, checks, json.loads(canonical(values)))
        for c in checks:  # a reader's own values, marked wherever the check is shown
            c["overrides"] = overrides
        verify(chapter, tmp, figures)
        run = {
            "chapter": chapter.name,
            "profile": profile,
            "parameters": values,
            "overrides": overrides,
            "command": command,
            "cache_key": key,
            "git_commit": commit,
            "computed_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "seconds": round(time.perf_counter() - t0, 2),
            "versions": library_versions(),
            XLA_LEVEL: chapter.xla_level(profile),
            "times": measured_times(chapter, profile, overrides, time.perf_counter() - t0, commit),
            "checks": len(checks),
            "checks_failed": sum(not c["passed"] for c in checks),
            "checks_powerless": sum(bool(c.get("powerless")) for c in checks),
            "figures": [f["figure"] for f in figures],
            "declined": declined,
        }
        record(tmp, checks, run)
        stamp(tmp / f"{chapter.name}.ipynb", run, checks)
        replace_folder(tmp, chapter.outdir, tmp_root)
        return run
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def execute(
    chapter: Chapter,
    profile: str,
    values: dict[str, Any],
    tmp: Path,
    env: dict[str, str],
    log=print,
    *,
    source: bytes | None = None,
) -> nbformat.NotebookNode:
    """Convert the chapter (``source``, default its file as it is now) to a notebook and run
    it with papermill in ``tmp``, its kernel under ``env`` (the :mod:`ntkbook.protocol`
    variables); return the executed notebook.

    A failing cell raises :class:`ChapterFailed`, the executed notebook kept in
    ``_build/failed/`` for inspection.
    """
    project = chapter.project
    text = chapter.source.read_text() if source is None else source.decode()
    nb = jupytext.reads(text, fmt=chapter.source.suffix.lstrip("."))
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    src = tmp / f"{chapter.name}.source.ipynb"
    nbformat.write(nb, src)
    out = tmp / f"{chapter.name}.ipynb"
    log(f"  executing {chapter.source.relative_to(project.root)} ({profile} profile)")
    env_before = dict(os.environ)
    os.environ.update(
        env,
        **xla_flags(chapter.xla_level(profile)),
        PYTHONHASHSEED="0",
        # figures must reach the notebook whatever the caller's backend (CI often sets Agg)
        MPLBACKEND="module://matplotlib_inline.backend_inline",
    )
    use_compile_cache(project.build)
    try:
        papermill.execute_notebook(
            str(src),
            str(out),
            parameters=values,
            kernel_name="python3",
            cwd=str(tmp),
            progress_bar=sys.stderr.isatty(),
            report_mode=False,
            request_save_on_cell_execute=True,  # the progress line counts finished cells
            # quiet: the kernel app's own log (its "running over TCP without encryption" on a
            # local socket) says nothing about the chapter; the chapter's warnings are cell output
            extra_arguments=["--IPKernelApp.log_level=ERROR"],
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
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    src.unlink()
    return nbformat.read(out, as_version=4)


def verify(chapter: Chapter, tmp: Path, figures: list[dict[str, Any]]) -> None:
    """Every figure the chapter recorded has its PNG, SVG and provenance file, non-empty."""
    for fig in figures:
        for f in fig["files"] + [f"{fig['figure']}.json"]:
            p = tmp / "figures" / f
            if not p.exists() or p.stat().st_size == 0:
                raise ChapterFailed(f"chapter {chapter.name!r}: figure file {f} missing")


def record(tmp: Path, checks: list[dict[str, Any]], run: dict[str, Any]) -> None:
    """Write the chapter's ``checks.json`` and ``run.json`` beside its executed notebook."""
    atomic_write_bytes(tmp / "checks.json", json.dumps(checks, indent=2).encode())
    atomic_write_bytes(tmp / "run.json", json.dumps(run, indent=2).encode())


def provenance_note(run: dict[str, Any]) -> str:
    """The note at the top of a chapter's page: when, at which commit and at which profile
    its numbers and figures were computed, and the command that recomputes them."""
    when = run["computed_at"].replace("T", " ").removesuffix("Z") + " UTC"
    note = (
        ":::{note}\n"
        f"Computed on {when} at commit `{run['git_commit'][:12]}`, profile `{run['profile']}`, "
        f"in {run['seconds']:.0f} s. `{run['command']}` recomputes this page.\n"
        ":::\n"
    )
    yours = run.get("overrides") or {}
    if yours:
        values = ", ".join(f"`{k} = {v!r}`" for k, v in yours.items())
        note += (
            "\n:::{warning}\n"
            f"**Your values, not the book's:** this page was computed with {values} over the "
            f"`{run['profile']}` profile. `python -m ntkbook build --reset` returns it to the "
            "profile.\n:::\n"
        )
    return note


FOLD_LINES = 12  # code cells longer than this are folded behind "show code" on the page


def stamp(path: Path, run: dict[str, Any], checks: list[dict[str, Any]] = ()) -> None:
    """Dress the executed notebook at ``path`` for its page: :func:`provenance_note`,
    :func:`chapter_question` and :func:`checks_summary` under the title (in its first markdown
    cell, after the first ``#`` heading; first in the cell when it has none), the parameters
    shown once (:func:`show_parameters`), and code cells longer than ``FOLD_LINES`` lines or
    drawing a figure (``save_figure``) folded (Jupyter Book's ``hide-input``; a
    ``show-input`` tag keeps one open). Outputs and figures always stay visible."""
    nb = nbformat.read(path, as_version=4)
    show_parameters(nb, run)
    for c in nb.cells:
        tags = c.metadata.setdefault("tags", [])
        fold = len(c.source.splitlines()) > FOLD_LINES or "save_figure(" in c.source
        if c.cell_type == "code" and fold and not {"show-input", "parameters"} & set(tags):
            tags.append("hide-input")
    note = provenance_note(run) + chapter_question(nb.metadata, run, path.parent)
    note += checks_summary(checks)
    cell = next((c for c in nb.cells if c.cell_type == "markdown"), None)
    if cell is None:
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(note))
    else:
        lines = cell.source.split("\n")
        at = next((i + 1 for i, line in enumerate(lines) if line.startswith("# ")), 0)
        cell.source = "\n".join(lines[:at] + ["", note] + lines[at:])
    nbformat.write(nb, path)


def chapter_question(meta: dict[str, Any], run: dict[str, Any], outdir: Path) -> str:
    """The chapter's question and its headline figure, from the ``ntkbook:`` block of its
    front matter (``question``: two sentences; ``headline``: the name of a figure the chapter
    saves), for the top of its page: a reader can stop there. A headline the run did not
    save fails the chapter (its results are not published)."""
    info = meta.get("ntkbook") or {}
    out = ""
    if info.get("question"):
        out += f"\n**The question.** {info['question']}\n"
    name = info.get("headline")
    if name:
        if name not in run["figures"]:
            raise ChapterFailed(
                f"chapter {run['chapter']!r}: headline figure {name!r} was not saved "
                f"(saved: {', '.join(run['figures']) or 'none'})"
            )
        prov = json.loads((outdir / "figures" / f"{name}.json").read_text())
        caption = prov.get("caption") or name
        # an image and its caption, not a {figure}: Sphinx would number it book-wide
        out += f"\n![{name}](figures/{name}.png)\n\n*{caption}*\n"
    return out


def checks_summary(checks: list[dict[str, Any]]) -> str:
    """A box a reader can stop at: how many of the chapter's checks pass, one line each (its
    verdict, what it checks, the comparison in words); the checks themselves follow in the
    chapter, each under the result it tests."""
    if not checks:
        return ""
    n_pass = sum(c["passed"] for c in checks)
    lines = [f"- {status_mark(c)} {cell(c['name'])}: {cell(comparison_text(c))}" for c in checks]
    return (
        f"\n:::{{admonition}} This chapter's checks: {n_pass} of {len(checks)} pass\n\n"
        + "\n".join(lines)
        + "\n:::\n"
    )


def show_parameters(nb: nbformat.NotebookNode, run: dict[str, Any]) -> None:
    """Show a chapter's parameters once: the declared cell rewritten with the values this run
    used (a changed one says its default), headed by the profile and the command that changes
    them; papermill's injected cell, which set those values, hidden (``remove-cell``)."""
    values = run["parameters"]
    for c in nb.cells:
        tags = c.metadata.setdefault("tags", [])
        if "injected-parameters" in tags:
            tags.append("remove-cell")
        elif "parameters" in tags:
            lines = [
                f"# the values of this run (profile {run['profile']}); change one with",
                f"# {run['command']} -p NAME=VALUE",
            ]
            for raw in c.source.splitlines():
                m = PARAMETER_LINE.match(raw.strip())
                if not m or m["name"] not in values:
                    lines.append(raw)
                    continue
                used, was = values[m["name"]], m["value"]
                note = "" if repr(used) == was or str(used) == was else f" (default {was})"
                lines.append(f"{m['name']}: {m['type']} = {used!r}  # {m['decl']}{note}")
            c.source = "\n".join(lines)


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
    of :func:`ntkbook.files.replace_folder`, the previous results are moved back into place.
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
