"""Parameter declarations and validation: the runner's first line of defence."""

import math

import pytest
from conftest import ROOT
from papermill.translators import PythonTranslator

from ntkbook.params import ParameterError, parse_declaration, parse_parameters_cell, resolve
from ntkbook.project import Project

CELL = """
# comment lines are fine
seed: int = 0  # >= 0: root key
depth: int = 3  # >= 1, <= 1000: hidden layers
widths: list[int] = [64, 128, 256]  # >= 1, len >= 3: width sweep
act: str = "relu"  # in {relu, erf}: nonlinearity
lr: float = 0.5  # > 0, < 2: learning rate
flag: bool = True  # a switch: on or off
"""


@pytest.fixture
def specs():
    return parse_parameters_cell(CELL)


def test_cell_is_parsed_in_order(specs):
    assert list(specs) == ["seed", "depth", "widths", "act", "lr", "flag"]
    assert specs["depth"].bounds == ((">=", 1.0), ("<=", 1000.0))
    assert specs["widths"].length == ((">=", 3),)
    assert specs["act"].choices == ("relu", "erf")
    assert specs["lr"].doc == "learning rate"
    assert specs["flag"].doc == "a switch: on or off" and specs["flag"].bounds == ()


def test_good_command_line_values(specs):
    assert specs["depth"].parse("7") == 7
    assert specs["widths"].parse("[8, 16, 32, 64]") == [8, 16, 32, 64]
    assert specs["act"].parse("erf") == "erf"
    assert specs["lr"].parse("1") == 1.0 and isinstance(specs["lr"].parse("1"), float)
    assert specs["lr"].parse("1e-3") == 1e-3
    assert specs["flag"].parse("false") is False


BAD = [
    ("depth", "0", "must be >= 1"),
    ("depth", "-3", "must be >= 1"),
    ("depth", "abc", "must be an integer"),
    ("depth", "2.5", "must be an integer"),
    ("depth", "true", "must be an integer"),
    ("depth", "1001", "must be <= 1000"),
    ("depth", "", "must be an integer"),
    ("seed", "[1]", "must be an integer"),
    ("widths", "[8, 0, 16]", "must be >= 1"),
    ("widths", "[8, 16]", "len >= 3"),
    ("widths", "64", r"must be a list\[int\]"),
    ("widths", "[8, 16, x]", "must be an integer"),
    ("widths", "[8, 16", "cannot parse"),
    ("act", "sigmoid", "must be one of"),
    ("lr", "nan", "must be finite"),
    ("lr", "inf", "must be finite"),
    ("lr", "-inf", "must be finite"),
    ("lr", "0", "must be > 0"),
    ("lr", "2", "must be < 2"),
    ("lr", "fast", "must be a number"),
    ("flag", "maybe", "must be true or false"),
    ("flag", "1", "must be true or false"),
]


@pytest.mark.parametrize("name, text, message", BAD)
def test_bad_command_line_values(specs, name, text, message):
    with pytest.raises(ParameterError, match=message) as e:
        specs[name].parse(text)
    assert "\n" not in str(e.value) and name in str(e.value)


def test_resolve_layers_and_unknown_names(specs):
    values = resolve(specs, ("profile", {"depth": 5}), ("cli", {"depth": 6, "lr": 1}))
    assert values["depth"] == 6 and values["lr"] == 1.0 and values["seed"] == 0
    with pytest.raises(ParameterError, match=r"unknown parameter 'dpeth'.*did you mean 'depth'"):
        resolve(specs, ("profile", {"dpeth": 5}))
    with pytest.raises(ParameterError, match="profile"):
        resolve(specs, ("profile", {"depth": 0}))


@pytest.mark.parametrize(
    "cell, message",
    [
        ("depth: int = 0  # >= 1: layers", "its default"),
        ("depth: integer = 3  # layers", "unknown type"),
        ("depth: int = 3  # >= one: layers", "cannot read constraint"),
        ("depth: int = 3  # >= 1:", "needs a meaning"),
        ("depth = 3  # int, >= 1: layers", "cannot read"),
        ("depth: int = 3", "cannot read"),
        ("depth: int = f(3)  # layers", "not a literal"),
        ("print(3)", "cannot read"),
        ("a: int = 1  # x\na: int = 2  # y", "declared twice"),
        ("x: float = nan  # x", "not a literal"),
    ],
)
def test_bad_declarations(cell, message):
    with pytest.raises(ParameterError, match=message):
        parse_parameters_cell(cell)


def test_float_default_must_be_finite():
    with pytest.raises(ParameterError, match="finite"):
        parse_declaration("x", "float", math.inf, "x")


def test_papermill_reads_every_declared_parameter():
    """The annotated declarations are what papermill's own inspector reads: every chapter's
    parameters come out of it by name (a second '=' on a line would make it give up)."""
    project = Project(ROOT)
    for name in project.chapter_names():
        chapter = project.chapter(name)
        cell = [c for c in chapter.read().cells if "parameters" in c.metadata.get("tags", [])][0]
        found = [p.name for p in PythonTranslator.inspect(cell)]
        assert found == list(chapter.specs()), name
