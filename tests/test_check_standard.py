"""The check standard, on every chapter's checks at the ci profile: each names an alternative
that it rules out (none is powerless), each tolerance is finite and positive or an exact
equality that says why, each says where its tolerance comes from, and labels what is ours."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT

from ntkbook.project import Project

# the slow tier: it needs every chapter run at ci (.ci/run runs `make book PROFILE=ci` first)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checks():
    """Every chapter's checks at the ci profile (the chapters run unless already fresh: after
    `make book PROFILE=ci`, as in .ci/run, this only reads them)."""
    proc = subprocess.run(
        [sys.executable, "-m", "ntkbook", "build", "--profile", "ci", "--no-site"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    project = Project(ROOT)
    out = []
    for name in project.chapter_names():
        recs = json.loads((project.chapters_out / name / "checks.json").read_text())
        assert recs, f"{name} records no check"
        assert {r["profile"] for r in recs} == {"ci"}, name
        out += recs
    return out


def test_every_check_names_an_alternative_it_rules_out(checks):
    bad = [
        f"{c['chapter']}: {c['name']}"
        for c in checks
        if not c.get("alternative") or not c["alternative"]["meaning"].strip() or not c["rules_out"]
    ]
    assert not bad, "no alternative, or one the check does not rule out:\n" + "\n".join(bad)


def test_every_tolerance_is_justified(checks):
    bad = [f"{c['chapter']}: {c['name']}" for c in checks if not c.get("tolerance_ok")]
    assert not bad, (
        "tolerance not finite and > 0, nor an exact equality that says why:\n" + "\n".join(bad)
    )
    assert all(c["why"].strip() for c in checks)


def test_what_is_ours_is_labelled(checks):
    assert all(c.get("source") in ("paper", "derived", "measured") for c in checks)
    assert any(c["source"] == "paper" for c in checks)


def test_no_bound_names_an_alternative_on_its_claims_side(checks):
    """A bound's alternative is a violation (above an upper bound, below a lower one), or
    another hypothesis's own statistic against the same threshold (ntkbook.record.rules_out)."""
    bad = []
    for c in checks:
        alt = c.get("alternative")
        if c["comparison"] == "within" or not alt:
            continue
        own = alt["measured"] != c["measured"]
        side = (
            alt["value"] > c["predicted"]
            if c["comparison"] == "at_most"
            else alt["value"] < c["predicted"]
        )
        if not (side or (own and alt["value"] == c["predicted"])):
            bad.append(f"{c['chapter']}: {c['name']}")
    assert not bad, "a bound's alternative on the claim's side:\n" + "\n".join(bad)
