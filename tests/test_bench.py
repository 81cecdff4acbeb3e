"""The benchmarks keep working: a tiny run, side by side with neural-tangents where its
environment is available (CI creates it: NTKBOOK_REQUIRE_PEER=1). Timings are never asserted;
agreement between the libraries is."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_benchmarks_run_and_agree_at_tiny_size():
    with_peer = (
        os.environ.get("NTKBOOK_REQUIRE_PEER") == "1"
        or (ROOT / ".peer-venv" / ".installed").exists()
    )
    cmd = [sys.executable, "benchmarks/run.py", "--size", "tiny"] + (
        [] if with_peer else ["--no-peer"]
    )
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((ROOT / "_build" / "bench.json").read_text())
    rows = report["rows"]
    assert {r["bench"] for r in rows} >= {"gram", "kernel", "mc", "k3"}
    for r in rows:
        if r["bench"] == "k3":
            assert r["agreement"] < 1e-10  # the jvp route and the Hessian route agree
            assert "peak memory" in r["note"]
        if r["bench"] == "mc":
            assert r["ntklib"] > 0 and "networks/s" in r["note"]
    if with_peer:
        peers = {r["peer"] for r in rows if r["bench"] == "gram"}
        assert {
            "nt jacobian contraction",
            "nt ntk-vector products",
            "nt structured derivatives",
        } <= peers
        for r in rows:
            if (
                r["bench"] == "gram"
                and r["workload"].endswith("float64")
                and r["agreement"] is not None
            ):
                assert r["agreement"] < 1e-10, r
            if r["bench"] == "kernel":
                assert r["agreement"] < 1e-10, r  # off the diagonal
                if "ntklib " in r["note"]:  # ntklib is exact on the diagonal
                    assert float(r["note"].split("ntklib ")[1].split(",")[0]) < 1e-12, r["note"]
    page = (ROOT / "book" / "_generated" / "performance.md").read_text()
    assert (
        "| gram |" in page and (ROOT / "book" / "_generated" / "performance.png").stat().st_size > 0
    )
