"""What a chapter records: theorem checks and figures with provenance.

A chapter calls :func:`check` once per theorem it verifies and :func:`save_figure` for every
figure. Both display something readable in the notebook and attach a machine-readable record
to the output's metadata (:data:`ntkbook.protocol.METADATA_KEY`), which the chapter runner
collects into the dashboard and ``checks.json``. Under ``python -m ntkbook`` the runner says
where to write and which parameters are in force (:mod:`ntkbook.protocol`); run by hand, files
go to ``./ntkbook_output``.
"""

from __future__ import annotations

import datetime as _dt
import html
import io
import json
import math
from typing import Any, Literal

import matplotlib
import matplotlib.pyplot as plt
from IPython import get_ipython
from IPython.display import display, publish_display_data

from ntkbook.protocol import METADATA_KEY, context
from ntklib import __version__
from ntklib._io import atomic_write_bytes

Comparison = Literal["within", "at_most", "at_least"]


def _finite(*values: float | None) -> bool:
    return all(v is None or math.isfinite(v) for v in values)


def check(
    name: str,
    *,
    paper: str,
    theorem: str,
    measured: float,
    predicted: float,
    tolerance: float,
    why: str,
    uncertainty: float | None = None,
    comparison: Comparison = "within",
    parameters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Record a theorem check and display it; return the record.

    ``comparison="within"`` passes when ``|measured - predicted| <= tolerance``;
    ``"at_most"`` when ``measured <= predicted + tolerance`` (an upper bound);
    ``"at_least"`` when ``measured >= predicted - tolerance``. A NaN or infinite measured
    value, prediction or tolerance never passes. ``paper`` is a bibtex key of
    ``book/references.bib``; ``theorem`` names the statement (e.g. "Thm. 1, eq. (4)").
    """
    measured, predicted, tolerance = float(measured), float(predicted), float(tolerance)
    unc = None if uncertainty is None else float(uncertainty)
    if comparison not in ("within", "at_most", "at_least"):
        raise ValueError(f"comparison must be within, at_most or at_least, got {comparison!r}")
    ok = _finite(measured, predicted, tolerance, unc) and tolerance >= 0
    if ok:
        if comparison == "within":
            ok = abs(measured - predicted) <= tolerance
        elif comparison == "at_most":
            ok = measured <= predicted + tolerance
        else:
            ok = measured >= predicted - tolerance
    ctx = context()
    record = {
        "chapter": ctx["chapter"],
        "name": name,
        "paper": paper,
        "theorem": theorem,
        # JSON has no NaN or infinity: a non-finite number is stored as null and named in
        # "nonfinite" with its value as text, so every reader sees it and it can never pass.
        "measured": _json_num(measured),
        "uncertainty": _json_num(unc),
        "predicted": _json_num(predicted),
        "tolerance": _json_num(tolerance),
        "nonfinite": {
            k: str(v)
            for k, v in (
                ("measured", measured),
                ("uncertainty", unc),
                ("predicted", predicted),
                ("tolerance", tolerance),
            )
            if v is not None and not math.isfinite(v)
        },
        "comparison": comparison,
        "why": why,
        "passed": bool(ok),
        "profile": ctx["profile"],
        "parameters": ctx["parameters"] if parameters is None else parameters,
    }
    _display_check(record)
    return record


def _json_num(v: float | None) -> float | None:
    return v if v is None or math.isfinite(v) else None


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.6g}"


def _display_check(record: dict[str, Any]) -> None:
    rec = {**record, **{k: float(v) for k, v in record["nonfinite"].items()}}
    status = "PASS" if rec["passed"] else "FAIL"
    op = {"within": "≈", "at_most": "≤", "at_least": "≥"}[rec["comparison"]]
    pm = "" if rec["uncertainty"] is None else f" ± {_fmt(rec['uncertainty'])}"
    text = (
        f"[{status}] {rec['name']} ({rec['theorem']}): measured {_fmt(rec['measured'])}{pm}"
        f" {op} predicted {_fmt(rec['predicted'])} (tolerance {_fmt(rec['tolerance'])})"
    )
    color = "#1a7f37" if rec["passed"] else "#cf222e"
    body = (
        f'<div class="ntklib-check" style="border-left:4px solid {color};padding:0.3em 0.8em;'
        f'margin:0.5em 0"><b style="color:{color}">{status}</b> '
        f"<b>{html.escape(rec['name'])}</b> — {html.escape(rec['theorem'])}<br>"
        f"measured <code>{_fmt(rec['measured'])}{html.escape(pm)}</code> {op} predicted "
        f"<code>{_fmt(rec['predicted'])}</code>, tolerance <code>{_fmt(rec['tolerance'])}"
        f"</code><br><small>{html.escape(rec['why'])}</small></div>"
    )
    _emit({"text/plain": text, "text/html": body}, {METADATA_KEY: {"check": record}})


def _emit(data: dict[str, str], metadata: dict[str, Any]) -> None:
    if get_ipython() is None:  # plain Python: print what a notebook would show
        print(data["text/plain"])
        return
    publish_display_data(data, metadata=metadata)


def save_figure(fig: Any, name: str, caption: str = "") -> None:
    """Save a matplotlib figure as PNG and SVG with a provenance record ``name.json``.

    Files go to ``<outdir>/figures/``; each is written to a temporary name and moved into
    place. In a notebook the figure is then shown, followed by its caption and the command
    that regenerates it, and closed (so the chapter needs no ``plt.show()``). The provenance
    record goes to ``<name>.json``; the PNG and SVG are byte-for-byte reproducible (no
    timestamps, fixed SVG ids).
    """
    if not name or any(c in name for c in "/\\ ") or name.startswith("."):
        raise ValueError(f"figure name must be a plain file stem, got {name!r}")
    ctx = context()
    figdir = ctx["outdir"] / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    for ext in ("png", "svg"):
        buf = io.BytesIO()
        meta = {"Date": None} if ext == "svg" else {"Software": None}
        with matplotlib.rc_context({"svg.hashsalt": name}):
            fig.savefig(buf, format=ext, dpi=120, bbox_inches="tight", metadata=meta)
        atomic_write_bytes(figdir / f"{name}.{ext}", buf.getvalue())
    prov = {
        "figure": name,
        "caption": caption,
        "chapter": ctx["chapter"],
        "profile": ctx["profile"],
        "parameters": ctx["parameters"],
        "seed": ctx["parameters"].get("seed"),
        "ntklib_version": __version__,
        "git_commit": ctx["git_commit"],
        "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "files": [f"{name}.png", f"{name}.svg"],
        "command": ctx["command"],
    }
    atomic_write_bytes(figdir / f"{name}.json", json.dumps(prov, indent=2).encode())
    cmd = ctx["command"] or "(run this chapter with python -m ntkbook run)"
    cap = f"{caption} " if caption else ""
    text = f"Figure {name}: {cap}({name}.png, {name}.svg). Regenerate with: {cmd}"
    body = (
        f'<p class="ntklib-figure"><small><b>Figure <code>{html.escape(name)}</code>.</b> '
        f"{html.escape(cap)}(PNG and SVG, provenance in <code>{html.escape(name)}.json</code>.) "
        f"Regenerate with: <code>{html.escape(cmd)}</code></small></p>"
    )
    _show(fig)
    _emit({"text/plain": text, "text/html": body}, {METADATA_KEY: {"figure": prov}})


def _show(fig: Any) -> None:
    """Display ``fig`` in a notebook (then close it, so it is not shown twice)."""
    if get_ipython() is not None:
        display(fig)
        plt.close(fig)
