"""The repository's own promises: environment.yml in step with pyproject, the toc complete."""

import importlib.metadata
import re
import tomllib
from pathlib import Path

import yaml

import ntklib
from ntkbook.project import PROFILES, Project

ROOT = Path(__file__).resolve().parents[1]


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
