"""Where things are: the repository root, the chapters, their parameters and profiles."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from pathlib import Path
from typing import Any

import jupytext
import yaml

from ntkbook.params import (
    ParameterError,
    ParamSpec,
    Rules,
    available_memory,
    check_rules,
    parse_parameters_cell,
    parse_rules,
    resolve,
)

PROFILES = ("ci", "quick", "full")
# A profile's compile setting, beside its parameters in profiles.yml (never passed to the
# chapter): XLA's backend optimization level, 0 to 3 (default XLA's own, 2).
XLA_LEVEL = "xla_backend_optimization_level"
DEFAULT_PROFILE = "quick"


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit status 2, nothing written."""


@dataclasses.dataclass(frozen=True)
class Project:
    root: Path

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    @property
    def profiles_file(self) -> Path:
        return self.notebooks / "profiles.yml"

    @property
    def chapters_out(self) -> Path:
        """Executed chapters: ``book/chapters/<name>/{<name>.ipynb, figures/, checks.json}``."""
        return self.root / "book" / "chapters"

    @property
    def generated(self) -> Path:
        return self.root / "book" / "_generated"

    @property
    def build(self) -> Path:
        return self.root / "_build"

    def chapter_names(self) -> list[str]:
        return sorted(p.stem for p in self.notebooks.glob("*.md") if not p.stem.startswith("_"))

    def chapter(self, name: str) -> Chapter:
        if name not in self.chapter_names():
            raise UsageError(
                f"unknown chapter {name!r}; chapters: {', '.join(self.chapter_names())}"
            )
        return Chapter(self, name)

    def profiles(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``{chapter: {profile: {param: value}}}`` from ``notebooks/profiles.yml``, validated."""
        return _load_profiles(self.profiles_file, self.profiles_file.stat().st_mtime_ns)


def library_root() -> Path:
    """The folder of the installed ``ntklib`` package, found without importing it."""
    spec = importlib.util.find_spec("ntklib")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("ntklib is not installed: run `make book` (it installs it)")
    return Path(next(iter(spec.submodule_search_locations)))


@functools.lru_cache(maxsize=4)
def _load_profiles(path: Path, _mtime: int) -> dict[str, dict[str, dict[str, Any]]]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise UsageError(f"profiles file {path} is missing") from None
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        at = f" at line {line + 1}" if line is not None else ""
        raise UsageError(f"profiles file {path.name} is not valid YAML{at}") from None
    if not isinstance(data, dict):
        raise UsageError(f"profiles file {path.name} must map chapter names to profiles")
    for chapter, profs in data.items():
        if not isinstance(profs, dict):
            raise UsageError(f"profiles file: chapter {chapter!r} must map profile names to values")
        for prof, values in profs.items():
            if prof not in PROFILES:
                raise UsageError(
                    f"profiles file: unknown profile {prof!r} for {chapter!r}; profiles: {', '.join(PROFILES)}"
                )
            if values is not None and not isinstance(values, dict):
                raise UsageError(f"profiles file: {chapter}.{prof} must map parameters to values")
            level = (values or {}).get(XLA_LEVEL, 2)
            if type(level) is not int or not 0 <= level <= 3:
                raise UsageError(
                    f"profiles file: {chapter}.{prof}.{XLA_LEVEL} must be an int from 0 to 3, "
                    f"got {level!r}"
                )
    return data


@dataclasses.dataclass(frozen=True)
class Chapter:
    project: Project
    name: str

    @property
    def source(self) -> Path:
        return self.project.notebooks / f"{self.name}.md"

    @property
    def outdir(self) -> Path:
        return self.project.chapters_out / self.name

    @property
    def notebook_out(self) -> Path:
        return self.outdir / f"{self.name}.ipynb"

    def read(self):
        return jupytext.read(self.source)

    def _parameters_cell(self) -> str:
        nb = self.read()
        cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        if len(cells) != 1:
            raise UsageError(
                f"chapter {self.name!r} must have exactly one cell tagged 'parameters'"
            )
        return cells[0].source

    def specs(self) -> dict[str, ParamSpec]:
        try:
            return parse_parameters_cell(self._parameters_cell())
        except ParameterError as e:
            raise UsageError(f"chapter {self.name!r}: {e}") from None

    def rules(self) -> Rules:
        try:
            return parse_rules(self._parameters_cell(), set(self.specs()))
        except ParameterError as e:
            raise UsageError(f"chapter {self.name!r}: {e}") from None

    def _profile_entry(self, profile: str) -> dict[str, Any]:
        """The chapter's entry for ``profile`` in profiles.yml, as written (a copy)."""
        if profile not in PROFILES:
            raise UsageError(f"unknown profile {profile!r}; profiles: {', '.join(PROFILES)}")
        return dict(self.project.profiles().get(self.name, {}).get(profile) or {})

    def profile_values(self, profile: str) -> dict[str, Any]:
        values = self._profile_entry(profile)
        values.pop(XLA_LEVEL, None)
        return values

    def xla_level(self, profile: str) -> int | None:
        """XLA's backend optimization level of this chapter at ``profile`` (``None``: the
        caller's, by default XLA's 2). Level 0 compiles a program in about 40 % of the time and
        changes results by rounding only; a profile whose run is mostly compiling (a ``ci`` run
        of small programs) sets it, one whose programs run long keeps 2 (their loops run slower
        at 0). Part of the cache key and of ``run.json``: the same profile gives the same bits."""
        return self._profile_entry(profile).get(XLA_LEVEL)

    def resolve(self, profile: str, overrides: dict[str, Any]) -> dict[str, Any]:
        """Defaults, then the profile, then ``overrides`` (already typed), all validated."""
        specs, rules = self.specs(), self.rules()
        try:
            values = resolve(
                specs,
                (f"profile {profile!r} of profiles.yml", self.profile_values(profile)),
                ("the command line", overrides),
            )
            check_rules(rules, values, available_memory())
        except ParameterError as e:
            raise UsageError(f"chapter {self.name!r}: {e}") from None
        return values
