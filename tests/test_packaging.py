"""The repository's own promises: environment.yml in step with pyproject, the toc complete."""

import importlib.metadata
import json
import re
import tomllib

import jsonschema
import yaml
from conftest import ROOT
from packaging.requirements import Requirement

import ntklib
from ntkbook.project import PROFILES, Project


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ]", req, maxsplit=1)[0].lower().replace("_", "-")


def _spec(req: str) -> str:
    return req.replace(" ", "").lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(py["dependencies"])
    for extra in py["optional-dependencies"].values():
        reqs += extra
    env = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    conda = [d for d in env if isinstance(d, str) and not d.startswith(("python", "pip"))]
    assert sorted(map(_spec, reqs)) == sorted(map(_spec, conda))


def test_every_chapter_is_in_the_toc_and_has_every_profile():
    project = Project(ROOT)
    toc = (ROOT / "_toc.yml").read_text()
    profiles = project.profiles()
    for name in project.chapter_names():
        assert f"book/chapters/{name}/{name}" in toc
        assert set(profiles[name]) == set(PROFILES), name
        for prof in PROFILES:  # every profile resolves against the chapter's declarations
            project.chapter(name).resolve(prof, {})


def test_the_version_figures_record_is_the_librarys():
    """Figures record the installed distribution's version (ntkbook.record, without importing
    JAX): it is the one pyproject.toml declares and ntklib.__version__ says."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert importlib.metadata.version("ntklib") == ntklib.__version__ == declared


def test_citation_file_is_valid_cff_and_cites_every_chapter_paper():
    """CITATION.cff against the Citation File Format 1.2.0 schema (tests/data, from the
    format's own repository as shipped in cffconvert 2.0.0; cffconvert itself pins
    jsonschema < 4, which the book's tools outgrew), its version the package's, and a
    reference for every paper the book's ledger covers."""
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    schema = json.loads((ROOT / "tests" / "data" / "cff-1.2.0.schema.json").read_text())
    jsonschema.Draft7Validator(schema).validate(json.loads(json.dumps(cff, default=str)))
    assert cff["version"] == ntklib.__version__
    titles = {r["title"].lower() for r in cff["references"]}
    bib = (ROOT / "book" / "references.bib").read_text()
    for ledger in sorted((ROOT / "book" / "ledger").glob("*.yml")):
        entry = re.search(r"@\w+\{" + ledger.stem + r",.*?title\s*=\s*\{(.*?)\},", bib, re.S)
        assert entry and entry[1].lower() in titles, ledger.stem
    intro = (ROOT / "book" / "intro.md").read_text()
    assert "How to cite" in intro and "CITATION.cff" in intro


def test_constraints_pin_every_dependency_within_its_range():
    """constraints.txt (the pinned environment) pins each of pyproject's requirements to one
    version inside the requirement's range, and is what is installed here."""
    pins = dict(
        line.split("==")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    pins = {_name(k): v for k, v in pins.items()}
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(py["dependencies"]) + [r for e in py["optional-dependencies"].values() for r in e]
    for r in map(Requirement, reqs):
        name = _name(r.name)
        assert name in pins, f"{name} is not pinned"
        assert r.specifier.contains(pins[name]), f"{name}=={pins[name]} outside {r.specifier}"
        assert importlib.metadata.version(name) == pins[name], f"{name}: installed is not pinned"
