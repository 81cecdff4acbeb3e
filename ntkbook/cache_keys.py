"""Every hash that decides whether something is rebuilt, in one place.

- :func:`cache_key`: a chapter's run (its executed source, resolved values, ``ntklib``'s
  sources, the installed environment), recorded in its ``run.json``;
- :func:`tree_key`: every chapter of a publish plan (CI's cache of ``book/chapters/``);
- :func:`site_key`: the site (pages, executed chapters, configuration, ``ntkbook``'s code).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ntkbook.params import canonical
from ntkbook.project import Chapter, Project, library_root


def library_hash() -> str:
    """SHA-256 over the relative paths and bytes of every ``*.py`` file of ``ntklib``: the
    chapters' cache key covers the library they import, not ``ntkbook``."""
    root = library_root()
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(p.relative_to(root.parent).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def cache_key(
    chapter: Chapter, profile: str, values: dict[str, Any], source: bytes | None = None
) -> str:
    """Hash of the chapter's source (``source``, default the file as it is now), its resolved
    parameters, the profile's compile setting (:meth:`Chapter.xla_level`), the ``ntklib``
    sources and the installed environment (:func:`environment_hash`)."""
    h = hashlib.sha256()
    h.update(chapter.source.read_bytes() if source is None else source)
    h.update(canonical(values).encode())
    level = chapter.xla_level(profile)
    if level is not None:
        h.update(f"xla level {level}".encode())
    h.update(library_hash().encode())  # the ntklib the chapters import, not ntkbook
    h.update(environment_hash().encode())
    return h.hexdigest()


@functools.cache
def environment_hash() -> str:
    """SHA-256 over the Python version and the name and version of every installed
    distribution: a chapter reruns when any package (JAX, NumPy, ...) is upgraded.
    ``constraints.txt`` pins the environment; this hashes what is installed, which is what
    the chapters ran with."""
    dists = {
        (d.metadata["Name"] or "").lower().replace("_", "-") + "==" + d.version
        for d in importlib.metadata.distributions()
    }
    h = hashlib.sha256(sys.version.encode())
    for line in sorted(dists):
        h.update(line.encode() + b"\n")
    return h.hexdigest()


def tree_key(plan: Iterable[tuple[Chapter, str, dict[str, Any]]]) -> str:
    """SHA-256 over every chapter's name, publish profile and cache key, for a publish
    plan (:func:`ntkbook.publish.plan`): what CI keys its cache of ``book/chapters/`` on."""
    h = hashlib.sha256()
    for ch, used, values in plan:
        h.update(f"{ch.name} {used} {cache_key(ch, used, values)}\n".encode())
    return h.hexdigest()


def site_key(project: Project) -> str:
    """Hash of everything the site is built from: the book's pages and generated files, the
    executed chapters, the configuration, ntkbook's code and ntklib's sources (the API page)."""
    h = hashlib.sha256(library_hash().encode())
    files = [project.root / "_config.yml", project.root / "_toc.yml"]
    files += sorted(
        p for p in (project.root / "book").rglob("*") if p.is_file() and "_static" not in p.parts
    )
    here = Path(__file__).parent  # ntkbook
    files += sorted(here.glob("*.py")) + sorted(here.glob("static/*"))  # ntkbook: code, style
    for p in files:
        if p.exists():
            base = project.root if p.is_relative_to(project.root) else here.parent
            h.update(p.relative_to(base).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()
