"""The claims ledger: every numbered result of each paper, and whether the book checks it.

``book/ledger/<bibtex key>.yml`` (one file per paper) gives the version read and one row per
numbered result (theorem, proposition, lemma, corollary) and per claim of the abstract::

    hanin2020finite:
      version: arXiv:1909.05989v1 (LaTeX source)
      results:
        - result: Theorem 1
          claim: E[K] and E[K^2]/E[K]^2 = exp(5 beta) (1 + O(...))
          status: checked            # disagrees | checked | special-case | derived | not-checked
          checks: ["finite_width: one ReLU layer: E[xi^2] = 1 + 5/n"]
          case: ...                  # special-case: which case
          why: ...                   # not-checked: why not
          paper_says: ...            # disagrees: the paper's words
          we_find: ...               # disagrees: our number, from the named checks

A *disagrees* row (where a measurement contradicts the paper's statement: listed first on the
page) gives the paper's words and our number and names the checks behind the number. A
*checked*, *special-case* or *derived* row names its checks as ``"chapter: check name"``;
:func:`problems` reports a named check that is missing or does not pass, which fails the
build. :func:`markdown` renders the "What is checked" page, a table per paper.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ntkbook.numbers import cell

STATUSES = {
    "disagrees": "disagrees with the paper",
    "checked": "checked",
    "special-case": "checked in a special case",
    "derived": "derived here",
    "not-checked": "not checked",
}


def load(folder: Path) -> dict[str, Any]:
    """Every ``*.yml`` of ``folder`` merged, in file-name order, as ``{paper: {"version": str,
    "results": [row, ...]}}``; a paper defined in two files is an error."""
    out: dict[str, Any] = {}
    for path in sorted(folder.glob("*.yml")) if folder.is_dir() else []:
        for paper, entry in (yaml.safe_load(path.read_text()) or {}).items():
            if paper in out:
                raise ValueError(f"{path.name}: paper {paper!r} is already in the ledger")
            out[paper] = entry
    return out


def _key(check: dict[str, Any]) -> str:
    return f"{check['chapter']}: {check['name']}"


def problems(
    ledger: dict[str, Any], checks: list[dict[str, Any]], declined: list[dict[str, Any]] = ()
) -> list[str]:
    """Every way the ledger disagrees with the recorded checks (empty when it is sound). A
    named check that the run *declined* (its profile cannot resolve the violation it must
    exclude: ``ntkbook.record.can_exclude``) is not a problem; the page says so."""
    by_key = {_key(c): c for c in checks}
    gone = {_key(d) for d in declined}
    out = []
    for paper, entry in ledger.items():
        if not entry.get("version"):
            out.append(f"{paper}: no version of the paper named")
        for row in entry.get("results", []):
            where = f"{paper}, {row.get('result', '?')}"
            status = row.get("status")
            if status not in STATUSES:
                out.append(f"{where}: status {status!r} is not one of {', '.join(STATUSES)}")
                continue
            if status == "not-checked":
                if not row.get("why"):
                    out.append(f"{where}: a row not checked says why")
                continue
            if status == "disagrees" and not (row.get("paper_says") and row.get("we_find")):
                out.append(f"{where}: a disagreement gives the paper's words and our number")
            if status == "special-case" and not row.get("case"):
                out.append(f"{where}: a special case says which")
            if not row.get("checks"):
                out.append(f"{where}: a {status} row names its checks")
            for name in row.get("checks", []):
                c = by_key.get(name)
                if c is None and name not in gone:
                    out.append(f"{where}: check {name!r} is not recorded")
                elif c is None:
                    continue
                elif not c["passed"]:
                    out.append(f"{where}: check {name!r} does not pass")
    return out


def markdown(
    ledger: dict[str, Any], checks: list[dict[str, Any]], declined: list[dict[str, Any]] = ()
) -> str:
    """The "What is checked" tables, one per paper, each check linked to its chapter; a check
    its run declined shows why (the sample its tolerance would need)."""
    if not ledger:
        return "No claims ledger (`book/ledger/*.yml`).\n"
    by_key = {_key(c): c for c in checks}
    gone = {_key(d): d for d in declined}
    parts = []
    against = [
        (paper, r)
        for paper, entry in ledger.items()
        for r in entry.get("results", [])
        if r.get("status") == "disagrees"
    ]
    if against:
        parts += [
            "## Where the book disagrees with a paper",
            "",
            "| paper | result | the paper says | we find |",
            "|---|---|---|---|",
        ]
        parts += [
            f"| {{cite:t}}`{paper}` | {cell(r.get('result', ''))} | {cell(r['paper_says'])} "
            f"| {cell(r['we_find'])} |"
            for paper, r in against
        ]
        parts.append("")
    for paper, entry in ledger.items():
        rows = entry.get("results", [])
        counts = {s: sum(r.get("status") == s for r in rows) for s in STATUSES}
        summary = ", ".join(f"{n} {STATUSES[s]}" for s, n in counts.items() if n)
        parts += [
            f"## {{cite:t}}`{paper}`",
            "",
            f"Version read: {entry.get('version', '—')}. {len(rows)} results: {summary}.",
            "",
            "| result | claim | status | checks, or why not |",
            "|---|---|---|---|",
        ]
        for r in rows:
            status = r.get("status", "")
            detail = []
            if r.get("case"):
                detail.append(f"case: {r['case']}")
            if status == "disagrees":
                detail.append(f"paper: {cell(r['paper_says'])}; we find: {cell(r['we_find'])}")
            for name in r.get("checks", []):
                c = by_key.get(name)
                mark = "✓" if c and c["passed"] else "✗"
                chapter, _, check_name = name.partition(": ")
                doc = f"/book/chapters/{chapter}/{chapter}"
                d = gone.get(name) if c is None else None
                if d:
                    mark = "–"
                    check_name += (
                        f" (not made at profile {d['profile']}: its tolerance cannot exclude the "
                        f"violation; about {d['needed']} {d['unit']} instead of {d['n']} would)"
                    )
                detail.append(f"{mark} {{doc}}`{chapter} <{doc}>`: {cell(check_name)}")
            if r.get("why"):
                detail.append(cell(r["why"]))
            parts.append(
                f"| {cell(r.get('result', ''))} | {cell(r.get('claim', ''))} "
                f"| {STATUSES.get(status, status)} | {'<br>'.join(detail)} |"
            )
        parts.append("")
    return "\n".join(parts) + "\n"
