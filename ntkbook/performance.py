"""The book's Performance page, from a benchmark report (``benchmarks/run.py``).

A report is the JSON ``benchmarks/run.py`` writes: the machine, the size, every timing record
and one summary row per (benchmark, workload, compared implementation). Runs of size ``small``
or ``full`` are kept in ``benchmarks/results/`` (committed: the page shows a real run, with its
machine and date, not the tiny one CI makes to keep the benchmarks working); the page shows
the largest size there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ntkbook.files import atomic_write, atomic_write_bytes
from ntkbook.numbers import cell

RESULTS = Path("benchmarks") / "results"
SIZES_SHOWN = ("full", "small")  # preference order of the committed runs

Row = dict[str, Any]


def latest_report(root: Path) -> dict[str, Any] | None:
    """The committed benchmark report the page shows (``full`` if there is one, else ``small``)."""
    for size in SIZES_SHOWN:
        path = root / RESULTS / f"{size}.json"
        if path.exists():
            return json.loads(path.read_text())
    return None


def accuracy_report(root: Path, report: dict[str, Any] | None) -> dict[str, Any] | None:
    """The accuracy rows to show: the shown report's own, else the last run that measured them
    (``benchmarks/results/accuracy.json``, written by every ``make bench``)."""
    if report and any(r["bench"] == "accuracy" for r in report["rows"]):
        return report
    path = root / RESULTS / "accuracy.json"
    return json.loads(path.read_text()) if path.exists() else None


def accuracy_table(report: dict[str, Any]) -> str:
    """Markdown: per activation, each implementation's largest error against the nested
    adaptive quadrature, and the time per layer of both ntklib rules and of neural-tangents (its
    own rule for the activation) on the same run."""
    rows = [r for r in report["rows"] if r["bench"] == "accuracy"]
    lines = [
        f"Measured {report['time']} on {report['machine']} (size `{report['size']}`). Error: the "
        "largest |K - K_ref| / sqrt(K(x,x) K(x',x')) of the NTK on the same inputs, against a "
        "nested adaptive quadrature in float64 (tolerance 1e-13, `benchmarks/gauss_reference.py`); "
        "time: one layer of the recursion on the same batch.",
        "",
        "| activation | inputs | ntklib (Gauss–Kronrod) | ntklib, old 64-point Gauss–Hermite "
        "| neural-tangents | time per layer: Gauss–Kronrod / Gauss–Hermite / neural-tangents |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        peer = (
            "—"
            if r.get("peer_error") is None
            else f"{fmt(r['peer_error'], '.1e')} ({r['peer_impl']})"
        )
        lines.append(
            f"| {r['activation']} | {cell(r['workload'])} | {fmt(r['ntklib_error'], '.1e')} "
            f"| {fmt(r['hermite_error'], '.1e')} | {peer} | {fmt(r['seconds_per_layer'])} s / "
            f"{fmt(r['hermite_seconds_per_layer'])} s / {fmt(r.get('peer_seconds_per_layer'))} s "
            f"({r['timing']}) |"
        )
    return "\n".join(lines) + "\n"


def fmt(v: float | None, spec: str = ".3g") -> str:
    return "—" if v is None else format(v, spec)


def table(rows: list[Row]) -> str:
    """Markdown: one line per row (ratio = the other implementation's time / ntklib's; compile =
    first call minus a steady-state call, ntklib's / the other's)."""
    lines = [
        "| benchmark | workload | ntklib (s) | compared with | its time (s) | ratio (its / ntklib) | compile (s) | agreement | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        note = r.get("note") or (
            f"{100 * r['matmul_fraction']:.1f} % of matmul peak" if r.get("matmul_fraction") else ""
        )
        lines.append(
            f"| {r['bench']} | {cell(r['workload'])} | {fmt(r['ntklib'])} | {r['peer'] or '—'} | "
            f"{fmt(r['peer_seconds'])} | {fmt(r['ratio'])} | {_compile(r)} | "
            f"{fmt(r['agreement'], '.1e')} | {cell(note)} |"
        )
    return "\n".join(lines) + "\n"


def workload_table(rows: list[Row]) -> str:
    """Markdown: one line per workload, ``ntklib``'s time and each other implementation's time
    with its ratio (its time / ntklib's; above 1, ``ntklib`` is faster) in one cell."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r["bench"], r["workload"]), []).append(r)
    lines = [
        "| benchmark | workload | ntklib (s) | others: time (s) and ratio |",
        "|---|---|---|---|",
    ]
    for (bench, workload), rs in groups.items():
        others = "; ".join(
            f"{r['peer']} {fmt(r['peer_seconds'])} ({_ratio(r['ratio'])})"
            if r["peer_seconds"] is not None
            else f"{r['peer']}: not run (see the record)"
            for r in rs
            if r["peer"]
        )
        lines.append(
            f"| {bench} | {cell(workload)} | {fmt(rs[0]['ntklib'])} | {cell(others) or '—'} |"
        )
    return "\n".join(lines) + "\n"


def _ratio(v: float | None) -> str:
    """``160×``, ``4.8×``, ``0.52×``: whole numbers from 10 on, two digits below."""
    return "—" if v is None else (f"{v:.0f}×" if v >= 10 else f"{v:.2g}×")


def _compile(r: Row) -> str:
    if r.get("ntklib_compile") is None and r.get("peer_compile") is None:
        return "—"
    return f"{fmt(r.get('ntklib_compile'), '.2g')} / {fmt(r.get('peer_compile'), '.2g')}"


def _worst(rows: list[Row], key: str = "ratio") -> Row | None:
    rows = [r for r in rows if r.get(key) is not None]
    return min(rows, key=lambda r: r[key]) if rows else None


def _target(name: str, worst: Row | None, value: float | None, holds: bool | None, n: int):
    where = worst["workload"] if worst else "—"
    return dict(target=name, worst=value, where=where, holds=holds, rows=n)


def _at_least(name: str, candidates: list[Row], minimum: float) -> dict[str, Any]:
    """The target ``ratio >= minimum``, judged on the worst ratio among ``candidates``."""
    w = _worst(candidates)
    n = len([r for r in candidates if r["ratio"] is not None])
    return _target(name, w, w and w["ratio"], None if w is None else w["ratio"] >= minimum, n)


def _at_most(name: str, candidates: list[Row], key: str, maximum: float) -> dict[str, Any]:
    """The target ``row[key] <= maximum``, judged on the largest value among ``candidates``."""
    measured = [r for r in candidates if r.get(key) is not None]
    w = max(measured, key=lambda r: r[key]) if measured else None
    return _target(name, w, w and w[key], None if w is None else w[key] <= maximum, len(measured))


def _gram_targets(rows: list[Row]) -> list[dict[str, Any]]:
    grams = [r for r in rows if r["bench"] == "gram" and (r["peer"] or "").startswith("nt ")]
    fastest: dict[str, Row] = {}
    for r in grams:
        if r["peer_seconds"] is not None:
            best = fastest.get(r["workload"])
            if best is None or r["peer_seconds"] < best["peer_seconds"]:
                fastest[r["workload"]] = r
    jac = [
        r
        for r in grams
        if r["peer"] == "nt jacobian contraction" and r.get("params") and r["params"][1] >= 1024
    ]
    return [
        _at_least(
            "gram: at least as fast as neural-tangents' fastest implementation, every size (ratio >= 1)",
            list(fastest.values()),
            1,
        ),
        _at_least(
            "gram: at least 5x neural-tangents' Jacobian contraction at width >= 1024 (where it runs)",
            jac,
            5,
        ),
    ]


def _kernel_targets(rows: list[Row]) -> list[dict[str, Any]]:
    deep = [
        r for r in rows if r["bench"] == "kernel" and r.get("params") and r["params"][1] >= 1000
    ]
    out = [
        _at_least("kernel: at least 10x stax's kernel_fn at depth >= 1000", deep, 10),
        _at_most(
            "kernel: agreement 1e-10 (float64) at depth >= 1000, off the diagonal",
            deep,
            "agreement",
            1e-10,
        ),
    ]
    # Which library is off when they disagree: each against the same recursion in extended
    # precision (benchmarks/workloads.py:reference_pairs), on the same pairs.
    for key, who in (("ntklib_error", "ntklib"), ("peer_error", "neural-tangents")):
        out.append(
            _at_most(
                f"kernel: {who} within 1e-10 of the extended-precision recursion at depth >= 1000",
                deep,
                key,
                1e-10,
            )
        )
    return out


def _mc_targets(rows: list[Row]) -> list[dict[str, Any]]:
    mc = [r for r in rows if r["bench"] == "mc" and r["peer"] == "per-network loop"]
    return [
        _at_least(
            "mc: at least 20x the per-network loop (ntklib's fastest exact sampler)",
            [r for r in mc if r.get("fastest_ntklib")],
            20,
        )
    ]


def _book_targets(rows: list[Row]) -> list[dict[str, Any]]:
    book = [r for r in rows if r["bench"] == "book"]
    w = book[0] if book else None
    frac = w and w["ntklib"] / w["peer_seconds"]
    holds = None if w is None else frac < 0.1
    return [
        _target(
            "book: the no-change rebuild under 10 % of the cold build", w, frac, holds, len(book)
        )
    ]


def targets(rows: list[Row]) -> list[dict[str, Any]]:
    """Each target of the benchmarks issue, evaluated on a report's rows: the worst measured
    ratio over the sizes it covers, and whether it holds (None: not measured in this run)."""
    return _gram_targets(rows) + _kernel_targets(rows) + _mc_targets(rows) + _book_targets(rows)


def targets_table(rows: list[Row]) -> str:
    lines = ["| target | worst measured | at | holds |", "|---|---|---|---|"]
    for t in targets(rows):
        holds = {True: "yes", False: "**no**", None: "not measured"}[t["holds"]]
        lines.append(f"| {t['target']} | {fmt(t['worst'])} | {t['where']} | {holds} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: Path) -> None:
    """Time against size for both libraries: NTK Gram at depth 3, infinite-width NTK."""
    # matplotlib (0.5 s to import) only where the page is drawn: every `python -m ntkbook`
    # call imports this module through the site, and the test suite makes about 60 of them
    from matplotlib.figure import Figure

    # stacked, each the column's width: every legend and label reads at 100 % zoom
    fig = Figure(figsize=(8, 9))  # no pyplot: no backend, no global figure state
    axes = fig.subplots(2, 1)
    grams = [r for r in rows if r["bench"] == "gram" and r["peer_seconds"] is not None]
    for dt, style in (("float32", "-"), ("float64", "--")):
        sel = [r for r in grams if r["params"][0] == 3 and r["params"][3] == dt]
        if not sel:
            continue
        batch = min(r["params"][2] for r in sel)
        sel = [r for r in sel if r["params"][2] == batch]
        widths = sorted({r["params"][1] for r in sel})
        ours = {r["params"][1]: r["ntklib"] for r in sel}
        axes[0].plot(
            widths, [ours[w] for w in widths], "k" + style, marker="o", label=f"ntklib, {dt}"
        )
        for impl in sorted({r["peer"] for r in sel}):
            theirs = {r["params"][1]: r["peer_seconds"] for r in sel if r["peer"] == impl}
            axes[0].plot(
                widths, [theirs.get(w) for w in widths], style, marker=".", label=f"{impl}, {dt}"
            )
    axes[0].set(xscale="log", yscale="log", xlabel="width", ylabel="seconds")
    axes[0].set_title("empirical NTK Gram, depth 3, smallest batch")
    axes[0].legend(fontsize=9)
    kernels = [r for r in rows if r["bench"] == "kernel"]
    batch = min((r["params"][2] for r in kernels), default=None)
    for act in ("relu", "erf"):
        sel = [r for r in kernels if r["params"][0] == act and r["params"][2] == batch]
        depths = [r["params"][1] for r in sel]
        axes[1].plot(depths, [r["ntklib"] for r in sel], "o-", label=f"ntklib, {act}")
        if sel and all(r["peer_seconds"] for r in sel):
            axes[1].plot(
                depths, [r["peer_seconds"] for r in sel], "s--", label=f"stax kernel_fn, {act}"
            )
        if sel and all(r.get("floor_seconds") for r in sel):
            axes[1].plot(
                depths,
                [r["floor_seconds"] for r in sel],
                ":",
                color="grey",
                label=f"floor: one atan2 per entry and layer, {act}",
            )
    axes[1].set(xscale="log", yscale="log", xlabel="depth", ylabel="seconds")
    axes[1].set_title(f"infinite-width NTK, batch {batch}")
    axes[1].legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})


def page(report: dict[str, Any], image: str, accuracy: dict[str, Any] | None = None) -> str:
    """The page's generated part: provenance, the targets, the plot, the accuracy of the
    kernel maps (when measured), the full table."""
    envs = "; ".join(r["impl"] for r in report["records"] if r["bench"] == "env")
    acc = (
        ""
        if accuracy is None
        else "## Accuracy of the infinite-width kernel maps\n\n" + accuracy_table(accuracy) + "\n"
    )
    return (
        f"Measured {report['time']} on {report['machine']} (size `{report['size']}`; {envs}).\n\n"
        "## Targets\n\n" + targets_table(report["rows"]) + "\n## Time against size\n\n"
        f"```{{image}} {image}\n:alt: time against size for ntklib and neural-tangents\n```\n\n"
        + acc
        + "## Every workload\n\n"
        + workload_table(report["rows"])
        + "\n````{dropdown} Every record (compile times, agreement, notes)\n\n"
        + table(report["rows"])
        + "````\n"
    )


def write_page(
    report: dict[str, Any] | None, generated: Path, accuracy: dict[str, Any] | None = None
) -> None:
    """Write ``performance.md`` (and its plot) into ``generated``, each by write-then-rename;
    ``accuracy`` (default ``None``: the report's own rows, if any) is the run whose accuracy rows
    the page shows (:func:`accuracy_report`)."""
    generated.mkdir(parents=True, exist_ok=True)
    md = generated / "performance.md"
    if report is None:
        text = "No benchmark run is recorded in `benchmarks/results/`: run `make bench`.\n"
    else:
        png = generated / "performance.png"
        atomic_write(png, lambda p: plot(report["rows"], p))
        text = page(report, f"_generated/{png.name}", accuracy or accuracy_report(Path(), report))
    atomic_write_bytes(md, text.encode())
