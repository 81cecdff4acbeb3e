"""The GitHub workflow, parsed: two jobs, publish after test, deploy only from main, the
chapters' cache keyed by ``python -m ntkbook cache-key``."""

from pathlib import Path

import pytest
import yaml

WORKFLOW = Path(__file__).resolve().parents[1] / ".github" / "workflows" / "book.yml"


@pytest.fixture(scope="module")
def flow():
    data = yaml.safe_load(WORKFLOW.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as true
    return data


def step(job, uses=None, run=None):
    found = [
        s
        for s in job["steps"]
        if (uses and s.get("uses", "").startswith(uses)) or (run and run in s.get("run", ""))
    ]
    assert len(found) == 1, f"expected one step using {uses or run!r}, found {len(found)}"
    return found[0]


def test_triggers_and_the_two_jobs(flow):
    assert set(flow["on"]) == {"push", "pull_request", "workflow_dispatch"}
    assert flow["on"]["push"] is None or "branches" not in flow["on"]["push"]  # every push
    assert set(flow["jobs"]) == {"test", "publish"}
    for job in flow["jobs"].values():
        assert job["runs-on"] and job["timeout-minutes"] > 0
        assert all(("uses" in s) != ("run" in s) for s in job["steps"])


def test_the_test_job_runs_ci_on_every_event(flow):
    test = flow["jobs"]["test"]
    assert "if" not in test
    step(test, run="bash .ci/run")
    assert not any("pages" in s.get("uses", "") for s in test["steps"])


def test_publish_needs_test_and_runs_on_main_only(flow):
    publish = flow["jobs"]["publish"]
    needs = publish["needs"]
    assert needs == "test" or needs == ["test"]
    cond = publish["if"]
    assert "github.ref == 'refs/heads/main'" in cond and "workflow_dispatch" in cond
    assert "pull_request" not in cond
    assert publish["permissions"]["pages"] == "write"
    assert publish["permissions"]["id-token"] == "write"
    assert flow["permissions"] == {"contents": "read"}  # only publish may write Pages


def test_publish_restores_the_cache_builds_full_and_deploys_only_from_main(flow):
    steps = flow["jobs"]["publish"]["steps"]
    key = step({"steps": steps}, run="ntkbook cache-key --profile full")
    restore = step({"steps": steps}, uses="actions/cache/restore@")
    build = step({"steps": steps}, run="make publish PROFILE=full")
    save = step({"steps": steps}, uses="actions/cache/save@")
    upload = step({"steps": steps}, uses="actions/upload-pages-artifact@")
    deploy = step({"steps": steps}, uses="actions/deploy-pages@")
    order = [steps.index(s) for s in (key, restore, build, save, upload, deploy)]
    assert order == sorted(order)
    expected = "chapters-full-${{ steps." + key["id"] + ".outputs.key }}"
    for s in (restore, save):
        assert s["with"]["path"] == "book/chapters" and s["with"]["key"] == expected
    assert restore["with"]["restore-keys"].strip() == "chapters-full-"
    assert "always()" in save["if"] and "cache-hit != 'true'" in save["if"]
    assert upload["with"]["path"] == "_build/publish"
    assert deploy["if"] == "github.ref == 'refs/heads/main'"
    assert "if" not in build and "if" not in upload  # a failed publish stops before them
