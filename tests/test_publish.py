"""``make publish`` (``python -m ntkbook publish``) at ``ci`` scale, in a throw-away book.

The book holds two copies of the tiny demo chapter, so that "change one chapter, rerun only
that one" can be seen; each test starts from the previous one's published site.
"""

import json
import re
import shutil

import pytest
from conftest import DEMO, ROOT, ntkbook, ntkbook_here, snapshot
from conftest import TOC as CONFTEST_TOC

# conftest's book with the second demo chapter in place of the first real one (and no API page)
TOC = CONFTEST_TOC.replace("infinite_width/infinite_width", "demo_b/demo_b").replace(
    "  - file: book/api\n", ""
)

PROFILES = """
demo:
  ci: {seed: 2}
demo_b:
  ci: {}
"""

pytestmark = pytest.mark.xdist_group("publish")  # one worker builds this book once


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    """A book of two demo chapters, published once at ``ci`` (the cold publish)."""
    root = tmp_path_factory.mktemp("publish")
    shutil.copy(ROOT / "_config.yml", root / "_config.yml")
    (root / "_toc.yml").write_text(TOC)
    shutil.copytree(
        ROOT / "book",
        root / "book",
        ignore=shutil.ignore_patterns("chapters", "_generated", "_static", "ledger"),
    )
    (root / "notebooks").mkdir()
    (root / "notebooks" / "demo.md").write_text(DEMO)
    (root / "notebooks" / "demo_b.md").write_text(DEMO.replace("# Demo", "# Demo B"))
    (root / "notebooks" / "profiles.yml").write_text(PROFILES)
    cold = ntkbook(root, "publish", "--profile", "ci")
    assert cold.returncode == 0, cold.stdout + cold.stderr
    assert "2 of 2 chapters rerun" in cold.stdout
    return root


def published(root):
    return root / "_build" / "publish"


def test_cold_publish_produces_the_site_with_provenance_on_every_chapter(book):
    site = published(book)
    assert (site / "index.html").exists() and (site / ".ntkbook-publish").exists()
    assert not (site / ".site-key").exists()
    assert all(c["passed"] for c in json.loads((site / "checks.json").read_text()))
    for name in ("demo", "demo_b"):
        run = json.loads((book / "book" / "chapters" / name / "run.json").read_text())
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", run["computed_at"])
        page = (site / "book" / "chapters" / name / f"{name}.html").read_text()
        note = page.index("Computed on " + run["computed_at"][:10])
        assert page.index("<h1") < note < page.index("demo check"), "the note tops the page"
        assert run["git_commit"][:12] in page[note : note + 600]
        assert ">ci<" in page[note : note + 600]
    assert (book / "_build" / "publish").is_dir() and not (
        book / "_build" / ".publish-tmp"
    ).exists()


def test_second_publish_with_nothing_changed_reruns_no_chapter(book):
    chapters, site = snapshot(book / "book" / "chapters"), snapshot(published(book))
    again = ntkbook(book, "publish", "--profile", "ci")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 of 2 chapters rerun" in again.stdout and again.stdout.count("cached") == 3
    assert snapshot(book / "book" / "chapters") == chapters
    assert snapshot(published(book)) == site


def test_changing_one_chapter_reruns_only_that_chapter(book):
    src = book / "notebooks" / "demo_b.md"
    demo = snapshot(book / "book" / "chapters" / "demo")
    key = ntkbook(book, "cache-key", "--profile", "ci").stdout.strip()
    src.write_text(src.read_text() + "\nOne more sentence.\n")
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert ntkbook(book, "cache-key", "--profile", "ci").stdout.strip() != key
    proc = ntkbook(book, "publish", "--profile", "ci")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 of 2 chapters rerun (demo_b)" in proc.stdout
    assert snapshot(book / "book" / "chapters" / "demo") == demo
    assert (
        "One more sentence."
        in (published(book) / "book" / "chapters" / "demo_b" / "demo_b.html").read_text()
    )


def test_failing_check_refuses_to_publish_and_keeps_the_previous_site(book):
    profiles = book / "notebooks" / "profiles.yml"
    site = snapshot(published(book))
    profiles.write_text(PROFILES.replace("ci: {seed: 2}", "ci: {seed: 2, good: false}"))
    try:
        proc = ntkbook(book, "publish", "--profile", "ci")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "FAIL" in proc.stdout and "NOT published" in proc.stderr
        assert "the site in _build/publish is unchanged" in proc.stderr
        assert snapshot(published(book)) == site
        profiles.write_text(PROFILES.replace("ci: {seed: 2}", "ci: {seed: 2, fail: true}"))
        raised = ntkbook(book, "publish", "--profile", "ci")  # a chapter that raises
        assert raised.returncode == 1 and "asked to fail" in raised.stderr, raised.stderr
        assert snapshot(published(book)) == site
    finally:
        profiles.write_text(PROFILES)


def test_a_capped_chapter_is_published_at_its_cap_and_says_why(book):
    caps = book / "notebooks" / "publish.yml"
    profiles = book / "notebooks" / "profiles.yml"
    profiles.write_text(PROFILES + "  quick: {seed: 5}\n")
    caps.write_text("demo_b: {profile: ci, why: its quick profile is too slow for the demo}\n")
    try:
        proc = ntkbook(book, "publish", "--profile", "quick")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "(ci profile: see notebooks/publish.yml)" in proc.stdout
        run_b = json.loads((book / "book" / "chapters" / "demo_b" / "run.json").read_text())
        assert run_b["profile"] == "ci" and run_b["parameters"]["seed"] == 0
        run_a = json.loads((book / "book" / "chapters" / "demo" / "run.json").read_text())
        assert run_a["profile"] == "quick"
        reproduce = (published(book) / "book" / "reproduce.html").read_text()
        assert "too slow for the demo" in reproduce
    finally:
        caps.unlink()
        profiles.write_text(PROFILES)


@pytest.mark.parametrize(
    "caps, message",
    [
        ("nope: {profile: quick, why: x}\n", "unknown chapter 'nope'"),
        ("demo: {profile: huge, why: x}\n", "unknown profile 'huge'"),
        ("demo: {profile: quick}\n", "must be {profile: ..., why: ...}"),
        ("demo: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_publish_file_is_refused_before_anything_runs(book, caps, message, capsys, monkeypatch):
    path = book / "notebooks" / "publish.yml"
    chapters, site = snapshot(book / "book" / "chapters"), snapshot(published(book))
    path.write_text(caps)
    try:
        for command in ("publish", "cache-key"):
            code, _, err = ntkbook_here(
                book, command, "--profile", "ci", capsys=capsys, monkeypatch=monkeypatch
            )
            assert code == 2 and message in err, err
            assert len(err.strip().splitlines()) == 1
    finally:
        path.unlink()
    assert snapshot(book / "book" / "chapters") == chapters
    assert snapshot(published(book)) == site


def test_publish_never_replaces_a_folder_it_did_not_write(book, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    proc = ntkbook(book, "publish", "--profile", "ci", "--out", str(tmp_path))
    assert proc.returncode == 2 and "is not a published site" in proc.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"
