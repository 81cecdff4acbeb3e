"""``python -m ntkbook`` (also ``ntkbook``): list, run and build the chapters; show checks.

    ntkbook list
    ntkbook run CHAPTER [--profile ci|quick|full] [-p NAME=VALUE ...] [--force]
    ntkbook build [--profile ci|quick|full] [--force] [--reset] [--no-site]
    ntkbook checks [--json]
    ntkbook publish [--profile ci|quick|full] [--out DIR] [--force]
    ntkbook cache-key [--profile ci|quick|full]

Bad input (unknown chapter, profile or parameter; a value of the wrong type or out of its
declared range; a malformed profiles file) is reported in one line with exit status 2
before anything runs or is written. A chapter whose code fails exits 1 and leaves its
previous results in place. ``build`` keeps a chapter's latest run made with your own values
(``run -p``) at that profile and says so on its page (``--reset`` reruns it at the profile's
values). ``build`` and ``checks`` exit 1 when a theorem check fails;
``publish`` then exits 1 too and leaves the published site (``_build/publish``) as it was.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ntkbook.cache_keys import cache_key, tree_key
from ntkbook.numbers import comparison_text, power_hint, status_word
from ntkbook.params import ParameterError, unknown_message
from ntkbook.project import DEFAULT_PROFILE, PROFILES, Chapter, Project, UsageError
from ntkbook.publish import check_destination, plan, swap_in
from ntkbook.runner import (
    ChapterFailed,
    is_fresh,
    last_times,
    override_args,
    run_chapter,
)
from ntkbook.site import build_site, collect_checks, write_dashboard


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        self.exit(2, f"ntkbook: error: {message}\n")


def find_root(start: Path | None = None) -> Path:
    """The nearest folder (from ``start`` up) holding ``_config.yml`` and ``notebooks/``."""
    here = (start or Path.cwd()).resolve()
    for p in (here, *here.parents):
        if (p / "_config.yml").exists() and (p / "notebooks").is_dir():
            return p
    pkg_root = Path(__file__).resolve().parents[2]
    if (pkg_root / "_config.yml").exists():
        return pkg_root
    raise UsageError(
        "cannot find the book (a folder with _config.yml and notebooks/); run from the repository"
    )


def parse_overrides(chapter: Chapter, items: list[str]) -> dict[str, Any]:
    specs = chapter.specs()
    out: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UsageError(f"-p expects NAME=VALUE, got {item!r}")
        if name not in specs:
            raise UsageError(unknown_message(name, specs, f"chapter {chapter.name!r}"))
        try:
            out[name] = specs[name].parse(text)
        except ParameterError as e:
            raise UsageError(str(e)) from None
    return out


def cmd_list(project: Project, args) -> int:
    for name in project.chapter_names():
        ch = project.chapter(name)
        print(f"{name}  ({ch.source.relative_to(project.root)})")
        for spec in ch.specs().values():
            cons = spec.describe()
            print(
                f"    {spec.name:<16} {spec.type:<12} default {spec.default!r}"
                + (f"  [{cons}]" if cons else "")
            )
            print(f"    {'':<16} {spec.doc}")
        rules = ch.rules()
        for expr, msg in rules.requires:
            print(f"    requires         {expr}  ({msg})")
        if rules.memory:
            print(f"    memory estimate  {rules.memory} bytes")
        profs = project.profiles().get(name, {})
        for prof in PROFILES:
            vals = profs.get(prof) or {}
            shown = ", ".join(f"{k}={v}" for k, v in vals.items()) or "(defaults)"
            print(f"    profile {prof:<8} {shown}")
    return 0


def _last_time_text(ch: Chapter, profile: str) -> str:
    last = last_times(ch).get(profile)
    return f"last {profile} run {last['seconds']:.0f} s" if last else f"no earlier {profile} run"


def _cells_done(project: Project, ch: Chapter) -> str:
    """``", cell k of n"`` from the notebook this process is executing (papermill saves it
    after each cell); ``""`` when it cannot be read yet (absent, or being written)."""
    for nb in (project.build / "tmp").glob(f"{ch.name}-{os.getpid()}-*/{ch.name}.ipynb"):
        try:
            cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
        except (OSError, ValueError, KeyError):
            return ""
        done = sum(c["metadata"].get("papermill", {}).get("status") == "completed" for c in cells)
        return f", cell {done} of {len(cells)}"
    return ""


def _run_one(
    project: Project,
    ch: Chapter,
    profile: str,
    values,
    overrides,
    force: bool,
    *,
    started: float | None = None,
    heartbeat: float = 30.0,
) -> dict | None:
    """Run one chapter unless fresh, with a progress line when it starts, one every
    ``heartbeat`` seconds while it runs (elapsed, against its last measured time at this
    profile), and one when it is done; ``started`` is the build's start (its total elapsed)."""
    t_build = time.perf_counter() if started is None else started
    key = cache_key(ch, profile, values)
    if not force and is_fresh(ch, key):
        print(
            f"{ch.name}: done (cached: unchanged since its last successful run; --force reruns); "
            f"{time.perf_counter() - t_build:.0f} s elapsed",
            flush=True,
        )
        return json.loads((ch.outdir / "run.json").read_text())
    t0 = time.perf_counter()
    last = _last_time_text(ch, profile)
    print(f"{ch.name}: running ({last})", flush=True)
    stop = threading.Event()

    def beat():
        while not stop.wait(heartbeat):
            print(
                f"  {ch.name}: running{_cells_done(project, ch)}, "
                f"{time.perf_counter() - t0:.0f} s ({last}); "
                f"{time.perf_counter() - t_build:.0f} s elapsed in all",
                flush=True,
            )

    threading.Thread(target=beat, daemon=True).start()
    try:
        rec = run_chapter(ch, profile, values, overrides)
    finally:
        stop.set()
    status = (
        "all checks pass"
        if rec["checks_failed"] == 0
        else f"{rec['checks_failed']} of {rec['checks']} checks FAIL"
        + (f", {rec['checks_powerless']} of them powerless" if rec.get("checks_powerless") else "")
    )
    print(
        f"{ch.name}: done in {time.perf_counter() - t0:.1f} s ({last}); {rec['checks']} checks "
        f"({status}), {len(rec['figures'])} figures -> {ch.outdir.relative_to(project.root)}; "
        f"{time.perf_counter() - t_build:.0f} s elapsed",
        flush=True,
    )
    return rec


def cmd_run(project: Project, args) -> int:
    ch = project.chapter(args.chapter)
    overrides = parse_overrides(ch, args.param)
    values = ch.resolve(args.profile, overrides)
    _run_one(project, ch, args.profile, values, overrides, args.force)
    return 0


def _your_run(ch: Chapter, profile: str) -> str | None:
    """``"-p a=1 -p b=2"`` when the chapter's latest successful run is at ``profile`` with
    values of your own (``run -p``) and still fresh for them; else ``None``."""
    try:
        run = json.loads((ch.outdir / "run.json").read_text())
    except (OSError, ValueError):
        return None
    overrides = run.get("overrides") or {}
    if not overrides or run.get("profile") != profile:
        return None
    try:
        fresh = is_fresh(ch, cache_key(ch, profile, ch.resolve(profile, overrides)))
    except UsageError:  # a parameter the chapter no longer has: rerun at the profile
        return None
    return shlex.join(override_args(overrides)) if fresh else None


def cmd_build(project: Project, args) -> int:
    chapters = [project.chapter(n) for n in project.chapter_names()]
    resolved = [(ch, ch.resolve(args.profile, {})) for ch in chapters]  # validate all first
    t0 = time.perf_counter()
    for i, (ch, values) in enumerate(resolved, 1):
        print(f"[{i}/{len(resolved)}] ", end="")
        yours = None if args.reset or args.force else _your_run(ch, args.profile)
        if yours:
            print(
                f"{ch.name}: kept your run ({yours}; its page says so; --reset reruns it at "
                f"the {args.profile} profile); {time.perf_counter() - t0:.0f} s elapsed",
                flush=True,
            )
            continue
        _run_one(project, ch, args.profile, values, {}, args.force, started=t0)
    if args.no_site:
        checks = write_dashboard(project)
    else:
        index = build_site(project, force=args.force)
        checks = json.loads((index.parent / "checks.json").read_text())
        print(f"site: {index.relative_to(project.root)} (open it in a browser)")
    failed = [c for c in checks if not c["passed"]]
    print(
        f"build finished in {time.perf_counter() - t0:.1f} s: {len(checks) - len(failed)}/{len(checks)} checks pass"
    )
    for c in failed:
        print(f"  {check_line(c)}")
    return 1 if failed else 0


def cmd_publish(project: Project, args) -> int:
    """Every chapter at its publish profile (cached), the site, then -- only if every check
    passes -- the site swapped into ``--out`` (see :mod:`ntkbook.publish`)."""
    dest = Path(args.out).resolve() if args.out else project.build / "publish"
    check_destination(dest)
    chapters = plan(project, args.profile)  # validates every chapter before anything runs
    t0 = time.perf_counter()
    reran = []
    for i, (ch, used, values) in enumerate(chapters, 1):
        print(f"[{i}/{len(chapters)}] ", end="")
        if used != args.profile:
            print(f"({used} profile: see notebooks/publish.yml) ", end="")
        before = (ch.outdir / "run.json").read_bytes() if (ch.outdir / "run.json").exists() else b""
        _run_one(project, ch, used, values, {}, args.force, started=t0)
        if (ch.outdir / "run.json").read_bytes() != before:
            reran.append(ch.name)
    checks = collect_checks(project)
    failed = [c for c in checks if not c["passed"]]
    where = dest.relative_to(project.root) if dest.is_relative_to(project.root) else dest
    print(
        f"publish: {len(reran)} of {len(chapters)} chapters rerun"
        + (f" ({', '.join(reran)})" if reran else "")
        + f", {len(checks) - len(failed)}/{len(checks)} checks pass"
    )
    if failed:
        for c in failed:
            print(f"  {check_line(c)}")
        kept = f"the site in {where} is unchanged" if dest.exists() else "nothing published"
        print(f"ntkbook: NOT published: {len(failed)} checks fail; {kept}", file=sys.stderr)
        return 1
    index = build_site(project, force=args.force)
    swap_in(project, index.parent, dest)
    print(f"publish: site -> {where} (upload this folder), {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_cache_key(project: Project, args) -> int:
    print(tree_key(plan(project, args.profile)))
    return 0


def check_line(c: dict[str, Any]) -> str:
    """One line per check: status, chapter, name, the comparison in words, the alternative."""
    status = status_word(c)
    alt = c.get("alternative")
    against = (
        "no alternative named"
        if alt is None
        else f"{'rules out' if c['rules_out'] else 'does NOT rule out'} {alt['meaning']}"
    )
    hint = power_hint(c)
    return f"{status:<9} {c['chapter']:<15} {c['name']}: {comparison_text(c)}; {against}" + (
        f" ({hint})" if hint else ""
    )


def cmd_checks(project: Project, args) -> int:
    checks = collect_checks(project)
    if args.json:
        print(json.dumps(checks, indent=2))
    else:
        if not checks:
            print("no checks recorded yet: run `python -m ntkbook build` first")
        for c in checks:
            print(f"{check_line(c)}  [{c['profile']}]")
    if not checks:
        return 1
    return 1 if any(not c["passed"] for c in checks) else 0


def make_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="ntkbook", description="Run the chapters of the NTK compendium and build the book."
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="chapters and their parameters")
    r = sub.add_parser("run", help="run one chapter")
    r.add_argument("chapter")
    r.add_argument("--profile", default=DEFAULT_PROFILE, choices=PROFILES)
    r.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE")
    r.add_argument("--force", action="store_true", help="run even if cached")
    b = sub.add_parser("build", help="run every chapter (cached) and build the site")
    b.add_argument("--profile", default=DEFAULT_PROFILE, choices=PROFILES)
    b.add_argument("--force", action="store_true", help="rerun every chapter")
    b.add_argument(
        "--reset", action="store_true", help="rerun chapters last run with your -p values"
    )
    b.add_argument("--no-site", action="store_true", help="run the chapters, skip Jupyter Book")
    c = sub.add_parser("checks", help="print every recorded theorem check")
    c.add_argument("--json", action="store_true")
    pub = sub.add_parser(
        "publish", help="build every chapter and the site; publish it only if every check passes"
    )
    pub.add_argument("--profile", default="full", choices=PROFILES)
    pub.add_argument("--out", help="the published site's folder (default _build/publish)")
    pub.add_argument("--force", action="store_true", help="rerun every chapter")
    k = sub.add_parser("cache-key", help="one hash over every chapter's cache key (CI's cache)")
    k.add_argument("--profile", default="full", choices=PROFILES)
    return p


def _terminate(signum, frame):  # SIGTERM -> the same clean-up path as Ctrl-C
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    args = make_parser().parse_args(argv)
    try:
        project = Project(find_root())
        commands = {
            "list": cmd_list,
            "run": cmd_run,
            "build": cmd_build,
            "checks": cmd_checks,
            "publish": cmd_publish,
            "cache-key": cmd_cache_key,
        }
        return commands[args.command](project, args)
    except UsageError as e:
        print(f"ntkbook: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ntkbook: interrupted; previous results untouched", file=sys.stderr)
        return 130
    except Exception as e:  # chapter failures and site build failures
        if isinstance(e, ChapterFailed | RuntimeError):
            print(f"ntkbook: {e}", file=sys.stderr)
            return 1
        raise
