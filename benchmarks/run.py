"""Benchmarks of ntklib against neural-tangents, side by side in one invocation.

    python benchmarks/run.py [--size tiny|small|full] [--no-peer]     (``make bench``)

Creates the peer environment (neural-tangents 0.6.5 with its JAX 0.4.23) once under
``.peer-venv/`` (ignored by git), runs the same workloads on the same numbers in both
environments one after the other, and reports each timing as a ratio measured in this run:

1. empirical NTK Gram matrix of an MLP: ntklib's structured method against each of
   neural-tangents' three implementations (steady state; compile time separately), and
   ntklib's fraction of the machine's matmul throughput, timed in the same run;
2. infinite-width NTK of deep MLPs: ``ntklib.kernels`` against ``stax``'s ``kernel_fn``;
3. Monte Carlo of ``K(x, x)``: networks per second against a per-network loop and against
   neural-tangents' empirical NTK in a ``vmap``;
4. the hierarchy kernel ``K3``: time and peak memory against a full-Hessian contraction;
5. the whole book at the ``quick`` profile: cold, and again with nothing changed.

Writes ``_build/bench.json``; a ``small`` or ``full`` run is also kept in
``benchmarks/results/SIZE.json``, which the book's Performance page shows (commit it).
Timings are never asserted anywhere; CI runs ``--size tiny`` only to keep this working.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
import gauss_reference as G  # noqa: E402
import workloads as W  # noqa: E402
from peer_env import peer_python  # noqa: E402

from ntkbook import performance  # noqa: E402
from ntkbook.files import atomic_write_bytes  # noqa: E402


def run_side(python: Path | str, script: str, size: str, outdir: Path) -> list[dict]:
    env = dict(os.environ, PYTHONPATH="")
    env.pop("XLA_FLAGS", None)
    errfile = outdir / f"{script}.stderr"
    proc = subprocess.Popen(
        [str(python), str(Path(__file__).parent / script), size, str(outdir)],
        stdout=subprocess.PIPE,
        stderr=errfile.open("w"),  # a file, not a pipe: a chatty stderr cannot block the child
        text=True,
        env=env,
        cwd=ROOT,
    )
    records = []
    for line in proc.stdout:  # progress as each workload finishes
        if line.startswith("{"):
            rec = json.loads(line)
            records.append(rec)
            if "seconds" in rec:
                print(
                    f"  {rec['bench']:<7} {rec['workload']:<42} {rec['impl']:<36} {rec['seconds']:.3g} s",
                    file=sys.stderr,
                )
    if proc.wait() != 0:
        err = errfile.read_text()
        raise SystemExit(f"{script} failed:\n{err[-3000:]}")
    return records


def agreement(
    outdir: Path, bench: str, wl: tuple, peer_tag: str, off_diagonal: bool = False
) -> float | None:
    """Max relative difference of the two results (off the diagonal only, if asked)."""
    a, b = W.result_file(outdir, bench, wl, "ntklib"), W.result_file(outdir, bench, wl, peer_tag)
    if not (a.exists() and b.exists()):
        return None
    x, y = np.load(a).astype(float), np.load(b).astype(float)
    rel = np.abs(x - y) / np.abs(y)
    if off_diagonal:
        rel = rel[~np.eye(len(rel), dtype=bool)]
    return float(rel.max())


def diagonal_errors(outdir: Path, wl: tuple) -> str:
    """Each library's relative error on the diagonal against the exact one-variable recursion."""
    act, depth, batch = wl
    with np.errstate(over="ignore", invalid="ignore"):
        exact = W.exact_diagonal(act, depth, W.inputs(batch, "float64"))
    if not np.all(np.isfinite(exact)):
        return "the exact diagonal overflows float64 here (the NTK grows exponentially with depth)"
    errs = []
    for tag, name in (("ntklib", "ntklib"), ("nt", "neural-tangents")):
        p = W.result_file(outdir, "kernel", wl, tag)
        if p.exists():
            errs.append(f"{name} {np.max(np.abs(np.diag(np.load(p)) - exact) / exact):.1e}")
    return "diagonal vs exact: " + ", ".join(errs)


def reference_errors(outdir: Path, wl: tuple) -> dict[str, float]:
    """Each library's largest relative error, off the diagonal (256 pairs), against the
    extended-precision recursion (:func:`workloads.reference_pairs`)."""
    act, depth, batch = wl
    pairs = W.reference_sample(batch)
    ref = W.reference_pairs(act, depth, W.inputs(batch, "float64"), pairs)
    errs = {}
    for tag in ("ntklib", "nt"):
        p = W.result_file(outdir, "kernel", wl, tag)
        if p.exists():
            got = np.load(p)[pairs[:, 0], pairs[:, 1]].astype(np.longdouble)
            errs[tag] = float(np.max(np.abs(got - ref) / np.abs(ref)))
    return errs


def accuracy_rows(records: list[dict], outdir: Path) -> list[dict]:
    """One row per activation of the accuracy benchmark: each implementation's largest error on
    the NTK of :func:`workloads.accuracy_inputs`, relative to ``sqrt(K(x,x) K(x',x'))``, against
    the nested adaptive quadrature of ``gauss_reference`` (float64, tolerance 1e-13), and the
    time per layer of the Gauss-Kronrod map next to the 64-point Gauss-Hermite rule."""
    rows = []
    for act in sorted({r["activation"] for r in records if r["bench"] == "accuracy"}):
        rs = {r["impl"]: r for r in records if r["bench"] == "accuracy" and r["activation"] == act}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref, origin = G.accuracy_reference(act, W.accuracy_inputs(), W.ACC_W_STD, W.ACC_B_STD)
        scale = np.sqrt(np.outer(np.diag(ref), np.diag(ref)))
        errs = {}
        for tag in ("gauss-kronrod", "gauss-hermite", "nt"):
            p = W.result_file(outdir, "accuracy", (act,), tag)
            if p.exists():
                errs[tag] = float(np.max(np.abs(np.load(p) - ref) / scale))
        new, old = rs.get("ntklib gauss-kronrod"), rs.get("ntklib gauss-hermite 64")
        nt_impl = next((k for k in rs if k.startswith("nt ")), None)
        rows.append(
            dict(
                bench="accuracy",
                workload=rs[next(iter(rs))]["workload"],
                activation=act,
                ntklib=new and new["seconds_per_layer"],
                peer="ntklib gauss-hermite 64 (time per layer)",
                peer_seconds=old and old["seconds_per_layer"],
                ratio=new and old and old["seconds_per_layer"] / new["seconds_per_layer"],
                agreement=None,
                ntklib_error=errs.get("gauss-kronrod"),
                hermite_error=errs.get("gauss-hermite"),
                peer_error=errs.get("nt"),
                peer_impl=nt_impl,
                seconds_per_layer=new and new["seconds_per_layer"],
                hermite_seconds_per_layer=old and old["seconds_per_layer"],
                peer_seconds_per_layer=rs.get(nt_impl, {}).get("seconds_per_layer"),
                timing=new and new["timing"],
                note=f"max |K - ref| / sqrt(K(x,x) K(x',x')) vs nested adaptive quadrature ({origin}): "
                + ", ".join(f"{k} {v:.1e}" for k, v in errs.items())
                + (f"; time per layer ({new['timing']})" if new else "")
                + (
                    f"; {nt_impl} {rs[nt_impl]['seconds_per_layer']:.3g} s per layer"
                    if nt_impl and "seconds_per_layer" in rs[nt_impl]
                    else ""
                ),
            )
        )
    return rows


def machine() -> str:
    """CPU model and core count (the model from /proc/cpuinfo where there is one)."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores"


def bench_book(profile: str) -> list[dict]:
    cmd = [sys.executable, "-m", "ntkbook", "build", "--profile", profile]
    out = []
    for label, extra in (("cold (--force)", ["--force"]), ("nothing changed", [])):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd + extra, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"the book build failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
        out.append(
            {
                "bench": "book",
                "workload": f"book, {profile} profile",
                "impl": label,
                "seconds": time.perf_counter() - t0,
            }
        )
    return out


def _ratio_row(bench, wl, ours, impl, theirs, agreement=None, **extra):
    """A table row: ntklib's record against another implementation's, timed in the same run."""
    return dict(
        bench=bench,
        workload=wl,
        ntklib=ours["seconds"],
        peer=impl,
        peer_seconds=theirs["seconds"],
        ratio=theirs["seconds"] / ours["seconds"],
        agreement=agreement,
        ntklib_compile=ours.get("compile_seconds"),
        peer_compile=theirs.get("compile_seconds"),
        **extra,
    )


def _companion(records: list[dict], bench: str, wl: str, key: str):
    """``key`` of the record of ``bench`` made for workload ``wl`` (None if there is none)."""
    return next((r[key] for r in records if r["bench"] == bench and r["workload"] == wl), None)


def _gram_rows(
    bench: str, wl: str, rs: list[dict], records: list[dict], outdir: Path
) -> list[dict]:
    """NTK Gram: ntklib's structured route against each neural-tangents route (or skipped)."""
    timed = {r["impl"]: r for r in rs if "seconds" in r}
    rows = []
    ours = timed.get("ntklib structured")
    params = tuple(ours["params"])
    for impl, r in timed.items():
        if impl.startswith("nt "):
            rows.append(
                _ratio_row(
                    bench,
                    wl,
                    ours,
                    impl,
                    r,
                    agreement=agreement(outdir, bench, params, impl.split()[1]),
                    params=params,
                    matmul_fraction=ours.get("matmul_fraction"),
                )
            )
    for r in rs:
        if "skipped" in r:
            rows.append(
                dict(
                    bench=bench,
                    workload=wl,
                    ntklib=ours["seconds"],
                    peer=r["impl"],
                    peer_seconds=None,
                    ratio=None,
                    agreement=None,
                    note=r["skipped"],
                    params=params,
                )
            )
    if not any(impl.startswith("nt ") for impl in timed) and ours:
        rows.append(
            dict(
                bench=bench,
                workload=wl,
                ntklib=ours["seconds"],
                peer=None,
                peer_seconds=None,
                ratio=None,
                agreement=None,
                matmul_fraction=ours.get("matmul_fraction"),
            )
        )
    return rows


def _kernel_rows(
    bench: str, wl: str, rs: list[dict], records: list[dict], outdir: Path
) -> list[dict]:
    """Infinite-width NTK: ntklib against stax, both against the extended-precision reference."""
    timed = {r["impl"]: r for r in rs if "seconds" in r}
    rows = []
    ours, theirs = timed.get("ntklib kernels"), timed.get("nt stax kernel_fn (repeat)")
    params = tuple(ours["params"])
    ref = reference_errors(outdir, params)
    vs_ref = ", ".join(
        f"{name} {ref[tag]:.1e}"
        for tag, name in (("ntklib", "ntklib"), ("nt", "neural-tangents"))
        if tag in ref
    )
    floor = _companion(records, "kernel-floor", wl, "seconds")
    floor_note = (
        ""
        if floor is None
        else f"; floor (one atan2 per entry and layer, nothing else) {floor:.3g} s"
        + (f" = stax / {theirs['seconds'] / floor:.1f}" if theirs else "")
    )
    rows.append(
        dict(
            bench=bench,
            workload=wl,
            ntklib=ours["seconds"],
            peer=theirs and theirs["impl"],
            peer_seconds=theirs and theirs["seconds"],
            ratio=theirs and theirs["seconds"] / ours["seconds"],
            agreement=agreement(outdir, bench, params, "nt", off_diagonal=True),
            ntklib_compile=ours.get("compile_seconds"),
            peer_compile=theirs and theirs.get("compile_seconds"),
            note="agreement off the diagonal; off the diagonal vs extended precision: "
            + vs_ref
            + "; "
            + diagonal_errors(outdir, params)
            + floor_note,
            params=params,
            ntklib_error=ref.get("ntklib"),
            peer_error=ref.get("nt"),
            floor_seconds=floor,
        )
    )
    return rows


def _mc_rows(bench: str, wl: str, rs: list[dict], records: list[dict], outdir: Path) -> list[dict]:
    """Monte Carlo of K(x, x): each ntklib sampler against the per-network loop and nt."""
    timed = {r["impl"]: r for r in rs if "seconds" in r}
    rows = []
    mine = {
        "scalar chain": timed.get("ntklib scalar chain (ntklib.finite, exact in law)"),
        "real networks, vmap": timed.get("ntklib vmap (sharded)"),
    }
    fastest = min((r["seconds"] for r in mine.values() if r), default=None)
    for name, ours in mine.items():
        for impl in ("per-network loop", "nt empirical NTK in vmap"):
            if ours and impl in timed:
                note = f"ntklib {name}: {ours['networks_per_s']:.0f} networks/s"
                rows.append(
                    _ratio_row(
                        bench,
                        wl,
                        ours,
                        impl,
                        timed[impl],
                        note=note,
                        fastest_ntklib=ours["seconds"] == fastest,
                    )
                )
    return rows


def _k3_rows(bench: str, wl: str, rs: list[dict], records: list[dict], outdir: Path) -> list[dict]:
    """K3: ntklib's nested jvp against the naive full-Hessian contraction."""
    timed = {r["impl"]: r for r in rs if "seconds" in r}
    rows = []
    ours = timed["ntklib k3 (jvp, contract as you go)"]
    naive = timed.get("naive full-Hessian contraction")
    skipped = next((r["skipped"] for r in rs if "skipped" in r), "")
    agree = _companion(records, "k3-agreement", wl, "value")
    mem = (
        f"peak memory {ours['peak_bytes'] / 1e6:.2f} MB vs {naive['peak_bytes'] / 1e6:.2f} MB"
        if naive and ours.get("peak_bytes") and naive.get("peak_bytes")
        else f"peak memory {ours['peak_bytes'] / 1e6:.2f} MB; naive route {skipped}"
    )
    rows.append(
        dict(
            bench=bench,
            workload=wl,
            ntklib=ours["seconds"],
            peer="naive full-Hessian contraction",
            peer_seconds=naive and naive["seconds"],
            ratio=naive and naive["seconds"] / ours["seconds"],
            agreement=agree,
            ntklib_compile=ours.get("compile_seconds"),
            peer_compile=naive and naive.get("compile_seconds"),
            note=mem,
        )
    )
    return rows


def _book_rows(records: list[dict]) -> list[dict]:
    """The book's cold build against a no-change rebuild."""
    rows = []
    book = [r for r in records if r["bench"] == "book"]
    if len(book) == 2:
        rows.append(
            dict(
                bench="book",
                workload=book[0]["workload"],
                ntklib=book[1]["seconds"],
                peer="cold build",
                peer_seconds=book[0]["seconds"],
                ratio=book[0]["seconds"] / book[1]["seconds"],
                agreement=None,
                note=f"no-change rebuild is {100 * book[1]['seconds'] / book[0]['seconds']:.1f} % of the cold build",
            )
        )

    return rows


_ROW_BUILDERS = {"gram": _gram_rows, "kernel": _kernel_rows, "mc": _mc_rows, "k3": _k3_rows}


def summarize(records: list[dict], outdir: Path) -> list[dict]:
    """One row per (benchmark, workload, compared implementation): ntklib time, the other's
    time, ratio, agreement (one row builder per benchmark), then the book's build row."""
    by: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        by.setdefault((r["bench"], r["workload"]), []).append(r)
    rows = []
    for (bench, wl), rs in by.items():
        if bench in _ROW_BUILDERS:
            rows += _ROW_BUILDERS[bench](bench, wl, rs, records, outdir)
    return rows + accuracy_rows(records, outdir) + _book_rows(records)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=list(W.SIZES), default="small")
    ap.add_argument("--no-peer", action="store_true", help="skip neural-tangents (ntklib only)")
    ap.add_argument(
        "--sides-at-once",
        action="store_true",
        help="run the ntklib and neural-tangents sides at the same time (--size tiny only: the "
        "test suite's smoke run, about half the wall time; timings that share the cores are not "
        "a comparison, and the report says so)",
    )
    ap.add_argument(
        "--keep-accuracy",
        action="store_true",
        help="keep this run's accuracy rows in benchmarks/results/accuracy.json (any size), "
        "which the Performance page shows when the committed run has none",
    )
    args = ap.parse_args(argv)
    if args.sides_at_once and args.size != "tiny":
        ap.error("--sides-at-once is for --size tiny: sides that share the cores time nothing")
    sides = [(sys.executable, "bench_ntklib.py")]
    if not args.no_peer:
        sides.append((peer_python(), "bench_peer.py"))
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        outdir = Path(tmp)
        print(
            f"{' and '.join(s.removeprefix('bench_').removesuffix('.py') for _, s in sides)} "
            f"side{'s at once' if args.sides_at_once else ', one after the other'} ({args.size})",
            file=sys.stderr,
        )
        with ThreadPoolExecutor(len(sides) if args.sides_at_once else 1) as pool:
            for side in pool.map(lambda s: run_side(*s, args.size, outdir), sides):
                records += side
        if W.SIZES[args.size]["book"]:
            print("the whole book", file=sys.stderr)
            records += bench_book(W.SIZES[args.size]["book"])
        rows = summarize(records, outdir)
    report = {
        "size": args.size,
        "sides": "at once (timings share the cores: not a comparison)"
        if args.sides_at_once
        else "one after the other",
        "machine": machine(),
        "python": platform.python_version(),
        "records": records,
        "rows": rows,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    text = json.dumps(report, indent=2)
    (ROOT / "_build").mkdir(exist_ok=True)
    (ROOT / "_build" / "bench.json").write_text(text)
    print(performance.targets_table(rows))
    print(performance.table(rows))
    kept = []
    if args.size in performance.SIZES_SHOWN:  # kept, and shown on the book's Performance page
        kept.append((ROOT / performance.RESULTS / f"{args.size}.json", report))
    accuracy = [r for r in rows if r["bench"] == "accuracy"]
    if accuracy and args.keep_accuracy:  # the page shows the newest accuracy rows of any size
        env = [r for r in records if r["bench"] in ("env", "accuracy")]
        kept.append(
            (
                ROOT / performance.RESULTS / "accuracy.json",
                {**report, "records": env, "rows": accuracy},
            )
        )
    for path, content in kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, (json.dumps(content, indent=2) + "\n").encode())
        print(f"wrote {path} (commit it: the Performance page shows it)", file=sys.stderr)
    print(f"wrote {ROOT / '_build' / 'bench.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
