"""The claims ledger: its rows name checks that exist and pass, or say why not."""

import pytest
from conftest import ROOT

from ntkbook import ledger

GOOD = {"chapter": "c", "name": "good", "passed": True}
BAD = {"chapter": "c", "name": "bad", "passed": False}


def _paper(*rows):
    return {"p": {"version": "v1", "results": list(rows)}}


def test_sound_ledger_has_no_problems():
    rows = [
        {"result": "Thm 1", "status": "checked", "checks": ["c: good"]},
        {"result": "Thm 2", "status": "special-case", "case": "d = 2", "checks": ["c: good"]},
        {"result": "Lemma 1", "status": "not-checked", "why": "a proof device"},
    ]
    assert ledger.problems(_paper(*rows), [GOOD]) == []
    page = ledger.markdown(_paper(*rows), [GOOD])
    assert "3 results: 1 checked, 1 checked in a special case, 1 not checked" in page
    assert "✓ {doc}`c </book/chapters/c/c>`: good" in page and "a proof device" in page


@pytest.mark.parametrize(
    "row, message",
    [
        ({"result": "T", "status": "checked", "checks": ["c: missing"]}, "is not recorded"),
        ({"result": "T", "status": "checked", "checks": ["c: bad"]}, "does not pass"),
        ({"result": "T", "status": "checked"}, "names its checks"),
        ({"result": "T", "status": "special-case", "checks": ["c: good"]}, "says which"),
        ({"result": "T", "status": "not-checked"}, "says why"),
        ({"result": "T", "status": "maybe"}, "is not one of"),
        ({"result": "T", "status": "disagrees", "checks": ["c: good"]}, "paper's words"),
    ],
)
def test_unsound_rows_are_reported(row, message):
    found = ledger.problems(_paper(row), [GOOD, BAD])
    assert len(found) == 1 and message in found[0], found


def test_the_book_ledger_is_well_formed(tmp_path):
    claims = ledger.load(ROOT / "book" / "ledger")
    assert "jacot2018ntk" in claims
    for paper, entry in claims.items():
        assert entry.get("version"), paper
        for row in entry["results"]:
            assert row.get("status") in ledger.STATUSES, (paper, row)
    (tmp_path / "a.yml").write_text("p: {version: v1, results: []}\n")
    (tmp_path / "b.yml").write_text("p: {version: v2, results: []}\n")
    with pytest.raises(ValueError, match="already in the ledger"):
        ledger.load(tmp_path)


def test_a_check_declined_for_want_of_power_is_not_a_problem_and_says_why():
    """A bound a profile cannot resolve is not made (ntkbook.record.can_exclude); its run
    records it as declined, and the ledger shows it with the sample it would need."""
    row = {"result": "T", "status": "checked", "checks": ["c: good", "c: weak bound"]}
    declined = [dict(chapter="c", name="weak bound", profile="ci", n=8, needed=13, unit="nets")]
    assert ledger.problems(_paper(row), [GOOD]) == ["p, T: check 'c: weak bound' is not recorded"]
    assert ledger.problems(_paper(row), [GOOD], declined) == []
    page = ledger.markdown(_paper(row), [GOOD], declined)
    assert "not made at profile ci" in page and "about 13 nets instead of 8 would" in page


def test_a_disagreement_is_listed_first_with_both_numbers():
    rows = [
        {"result": "Thm 1", "status": "checked", "checks": ["c: good"]},
        {"result": "Thm 2", "status": "disagrees", "checks": ["c: good"],
         "paper_says": "E = d/2", "we_find": "E = d/2 - 0.1 (z = 4.5 under d/2)"},
    ]  # fmt: skip
    assert ledger.problems(_paper(*rows), [GOOD]) == []
    page = ledger.markdown(_paper(*rows), [GOOD])
    assert page.startswith("## Where the book disagrees with a paper")
    assert "| E = d/2 | E = d/2 - 0.1 (z = 4.5 under d/2) |" in page
    assert "2 results: 1 disagrees with the paper, 1 checked" in page
