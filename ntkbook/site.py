"""The book's generated pages and the Jupyter Book build.

* :func:`collect_checks` gathers every chapter's ``checks.json``;
* :func:`write_dashboard` writes ``book/_generated/dashboard_table.md`` (included by
  ``book/dashboard.md``), ``book/_generated/runs_table.md`` and the Performance page's
  table and plot (:mod:`ntkbook.performance`, from ``benchmarks/results/``);
* :func:`build_site` runs Jupyter Book 1.x with warnings as errors, then writes
  ``_build/html/checks.json`` and verifies every chapter page shows its figures.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from html import escape as html_escape
from pathlib import Path
from typing import Any

import mathjax
import yaml

from ntkbook import ledger
from ntkbook.cache_keys import site_key
from ntkbook.files import atomic_write_bytes
from ntkbook.numbers import cell, comparison_text, number, power_hint, sig, status_mark
from ntkbook.performance import accuracy_report, latest_report, write_page
from ntkbook.project import PROFILES, Project, UsageError


def collect_checks(project: Project) -> list[dict[str, Any]]:
    records = []
    for name in project.chapter_names():
        path = project.chapters_out / name / "checks.json"
        if path.exists():
            records += json.loads(path.read_text())
    return records


def collect_runs(project: Project) -> list[dict[str, Any]]:
    runs = []
    for name in project.chapter_names():
        path = project.chapters_out / name / "run.json"
        if path.exists():
            runs.append(json.loads(path.read_text()))
    return runs


def _check_block(c: dict[str, Any]) -> str:
    alt = c.get("alternative")
    rules = (
        f"rules out *{cell(alt['meaning'])}* ({sig(alt['value'])})"
        if alt and c.get("rules_out")
        else (
            f"**would also pass under** *{cell(alt['meaning'])}*"
            if alt
            else "**no alternative named**"
        )
    )
    source = {"derived": " (derived here)", "measured": " (measured here)"}.get(c.get("source"), "")
    params = _assignments(c.get("parameters", {}))
    lines = [
        f"````{{dropdown}} {status_mark(c)} {cell(c['name'])}: {comparison_text(c)}"
        + (f" (your values: {cell(_assignments(c['overrides']))})" if c.get("overrides") else ""),
        f"- **Statement:** {{cite:t}}`{c['paper']}`, {cell(c['theorem'])}{source}",
        f"- **Tolerance:** {sig(number(c, 'tolerance'), 3)}; {cell(c['why'])}"
        + (f" (exact: {cell(c['exact'])})" if c.get("exact") else "")
        + (" **(a tolerance of 0 without a reason)**" if c.get("tolerance_ok") is False else ""),
        f"- **Alternative:** {rules}"
        + (
            ""
            if not alt or alt.get("measured") in (None, c.get("measured"))
            else f"; under it the measurement reads {sig(alt['measured'])}"
        ),
        *([f"- **Power:** {cell(hint)}"] if (hint := power_hint(c)) else []),
        f"- **Run:** profile `{c['profile']}`; {cell(params)}",
        "````",
        "",
    ]
    return "\n".join(lines)


def _assignments(values: dict[str, Any]) -> str:
    """``"a=1, b=[2, 3]"``: a check's parameters, or the reader's own values among them."""
    return ", ".join(f"{k}={v}" for k, v in values.items())


def dashboard_markdown(checks: list[dict[str, Any]]) -> str:
    """One line per check (status, what, the comparison in words), grouped by chapter with
    its counts, the failing ones first; each line opens on its statement, tolerance,
    alternative and parameters."""
    if not checks:
        return "No chapter has been run yet: run `python -m ntkbook build`.\n"
    failed = [c for c in checks if not c["passed"]]
    powerless = sum(bool(c.get("powerless")) for c in checks)
    head = (
        f"**{len(checks) - len(failed)} of {len(checks)} checks pass"
        + (f"; {len(failed)} FAIL" if failed else "")
        + (
            f" ({powerless} powerless: they would pass under their alternative)"
            if powerless
            else ""
        )
        + ".**\n\n"
    )
    parts = [head]
    if failed:
        parts += ["## Failing checks\n\n"] + [_check_block(c) for c in failed]
    chapters: dict[str, list[dict[str, Any]]] = {}
    for c in checks:
        chapters.setdefault(c["chapter"], []).append(c)
    for chapter, cs in chapters.items():
        n_pass = sum(c["passed"] for c in cs)
        doc = f"/book/chapters/{chapter}/{chapter}"
        parts.append(f"## {{doc}}`{chapter} <{doc}>`: {n_pass} of {len(cs)} pass\n\n")
        parts += [_check_block(c) for c in cs]
    return "".join(parts)


def _times_cell(r: dict[str, Any]) -> str:
    times = r.get("times") or {}
    return " / ".join(
        f"{times[p]['seconds']:.0f} s" if p in times else "—" for p in ("ci", "quick", "full")
    )


def runs_markdown(runs: list[dict[str, Any]], caps: dict[str, dict[str, str]] | None = None) -> str:
    """The runs behind the site, with each chapter's last measured time at every profile
    (from its ``run.json``, as the runner recorded it); a chapter that ``make publish`` builds
    below the asked profile (``notebooks/publish.yml``) says so, and why, under the table."""
    rows = [
        "| chapter | profile | computed (UTC) | seconds | last ci / quick / full | checks "
        "| figures | git commit | jax, numpy, scipy | rerun |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        when = r.get("computed_at", "—").replace("T", " ").removesuffix("Z")
        v = r.get("versions") or {}
        versions = ", ".join(v.get(p, "?") for p in ("jax", "numpy", "scipy")) if v else "—"
        rows.append(
            f"| {r['chapter']} | {r['profile']} | {when} | {r['seconds']} | {_times_cell(r)} "
            f"| {r['checks'] - r['checks_failed']}/"
            f"{r['checks']} pass | {len(r['figures'])} | `{r['git_commit'][:12]}` | {versions} "
            f"| `{cell(r['command'])}` |"
        )
    notes = [
        f"- `make publish PROFILE=full` builds {name} at `{cap['profile']}`: {cell(cap['why'])}"
        for name, cap in (caps or {}).items()
    ]
    return "\n".join(rows) + "\n" + ("\n" + "\n".join(notes) + "\n" if notes else "")


def publish_caps(project: Project) -> dict[str, dict[str, str]]:
    """``notebooks/publish.yml``: ``{chapter: {"profile": p, "why": text}}``, the highest
    profile ``make publish`` runs a chapter at (one whose ``full`` does not fit the CI runner's
    time limit says ``quick``, and why). Missing file: no chapter is capped. A malformed
    file raises :class:`UsageError`."""
    path = project.notebooks / "publish.yml"
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        raise UsageError(f"{path.name} is not valid YAML") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path.name} must map chapter names to {{profile: ..., why: ...}}")
    for name, cap in data.items():
        if name not in project.chapter_names():
            raise UsageError(f"{path.name}: unknown chapter {name!r}")
        if not isinstance(cap, dict) or set(cap) != {"profile", "why"}:
            raise UsageError(f"{path.name}: {name} must be {{profile: ..., why: ...}}")
        if cap["profile"] not in PROFILES:
            raise UsageError(
                f"{path.name}: {name}: unknown profile {cap['profile']!r}; profiles: {', '.join(PROFILES)}"
            )
        if not isinstance(cap["why"], str) or not cap["why"].strip():
            raise UsageError(f"{path.name}: {name} must say why it is not published at full")
    return data


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode())


def write_dashboard(project: Project) -> list[dict[str, Any]]:
    """Write the generated pages (dashboard, runs, claims ledger, performance); return the
    checks. A ledger that names a missing or failing check raises: the build fails."""
    checks = collect_checks(project)
    _write(project.generated / "dashboard_table.md", dashboard_markdown(checks))
    claims = ledger.load(project.root / "book" / "ledger")
    declined = [d for r in collect_runs(project) for d in r.get("declined", [])]
    _write(project.generated / "ledger_table.md", ledger.markdown(claims, checks, declined))
    wrong = ledger.problems(claims, checks, declined)
    if wrong:
        raise RuntimeError(
            "the claims ledger (book/ledger/) disagrees with the checks:\n  " + "\n  ".join(wrong)
        )
    _write(
        project.generated / "runs_table.md",
        runs_markdown(collect_runs(project), publish_caps(project)),
    )
    report = latest_report(project.root)
    write_page(report, project.generated, accuracy_report(project.root, report))
    return checks


def stage_mathjax(project: Project) -> Path:
    """Copy MathJax 3 (from the ``django-static-mathjax`` wheel) into ``book/_static/mathjax``.

    The site then renders math with no network: ``_config.yml`` points Sphinx's
    ``mathjax_path`` at this copy instead of a CDN.
    """
    src = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    dst = project.root / "book" / "_static" / "mathjax"
    if (dst / "tex-mml-chtml.js").exists():
        return dst
    tmp = dst.with_name(".mathjax-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    keep = {"tex-mml-chtml.js", "input", "output", "ui", "a11y", "sre", "adaptors"}
    shutil.copytree(
        src, tmp, ignore=lambda d, names: [n for n in names if Path(d) == src and n not in keep]
    )
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)
    return dst


def build_site(project: Project, *, force: bool = False, log=print) -> Path:
    """Run ``jupyter-book build`` (warnings are errors) and finish ``_build/html``.

    Skipped when nothing the site is built from changed since the last successful build
    (:func:`site_key`), unless ``force``.
    """
    checks = write_dashboard(project)
    html = project.build / "html"
    key, stamp = site_key(project), html / ".site-key"
    if (
        not force
        and stamp.exists()
        and stamp.read_text() == key
        and (html / "checks.json").exists()
    ):
        log("site: unchanged since its last build (cached; --force rebuilds)")
        return html / "index.html"
    log("building the site")
    stamp.unlink(missing_ok=True)
    stage_mathjax(project)
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [
        str(jb) if jb.exists() else "jupyter-book",
        "build",
        str(project.root),
        "-W",
        "-n",
        "--keep-going",
    ]
    log("  " + " ".join(cmd[1:]))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
        tail = "\n".join(lines[-40:]) or "(no output)"
        raise RuntimeError(f"jupyter-book build failed (exit status {proc.returncode}):\n{tail}")
    (html / "checks.json").write_text(json.dumps(checks, indent=2))
    write_root_page(project, html)
    verify_figures(project, html)
    stamp.write_text(key)
    return html / "index.html"


def write_root_page(project: Project, html: Path) -> None:
    """Replace the one-line redirect Jupyter Book writes as ``index.html`` by a complete page:
    the same redirect, plus a title, the site's icon (without it browsers request
    ``/favicon.ico``, which the site does not have) and a link for readers without refresh."""
    old = (html / "index.html").read_text()
    m = re.search(r'url=([^"\s]+)', old)
    if not m:
        raise RuntimeError(f"unexpected root page from jupyter-book: {old[:200]!r}")
    target = m.group(1)
    config = yaml.safe_load((project.root / "_config.yml").read_text())
    title = html_escape(config["title"])
    icon = "_static/" + Path(config["html"]["favicon"]).name
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Refresh" content="0; url={target}">\n'
        f'<link rel="icon" href="{icon}">\n'
        f"<title>{title}</title>\n</head>\n"
        f'<body><p><a href="{target}">{title}</a></p></body>\n'
        "</html>\n"
    )
    atomic_write_bytes(html / "index.html", page.encode())


def verify_figures(project: Project, html: Path) -> None:
    """Every chapter page exists and every figure its run saved appears on it as an image."""
    for run in collect_runs(project):
        page = html / "book" / "chapters" / run["chapter"] / f"{run['chapter']}.html"
        if not page.exists():
            raise RuntimeError(
                f"chapter page missing from the site: {page.relative_to(project.root)}"
            )
        text = page.read_text()
        imgs = re.findall(r'<img[^>]+src="([^"]+)"', text)
        missing = [s for s in imgs if not (page.parent / s).resolve().exists()]
        if missing:
            raise RuntimeError(f"{page.name}: images missing from the site: {missing}")
        if len(imgs) < len(run["figures"]):
            raise RuntimeError(
                f"{page.name} shows {len(imgs)} images but the run saved {len(run['figures'])} figures"
            )
        for fig in run["figures"]:
            src = project.chapters_out / run["chapter"] / "figures" / f"{fig}.png"
            dst = html / "figures" / run["chapter"]
            dst.mkdir(parents=True, exist_ok=True)
            for ext in ("png", "svg", "json"):
                shutil.copy(src.with_suffix(f".{ext}"), dst / f"{fig}.{ext}")
