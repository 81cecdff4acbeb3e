"""``make publish``: the book at one profile, every check passing, swapped in whole.

1. every chapter's parameters are resolved at its publish profile (:func:`plan`: the asked
   profile, or the lower one ``notebooks/publish.yml`` names for it) -- bad input stops here
   with exit status 2, before anything runs;
2. each chapter whose cache key (:func:`ntkbook.cache_keys.cache_key`) differs from its last
   successful run's reruns; the others are kept as they are in ``book/chapters/``;
3. the site is built into ``_build/html`` (Jupyter Book, warnings as errors);
4. if any check fails, or a chapter or the site build fails, the command exits 1 and the
   published folder (``_build/publish``) is left exactly as it was; otherwise a copy of the
   new site replaces it with two renames.

:func:`ntkbook.cache_keys.tree_key` over :func:`plan` is the one hash over every chapter's
key that CI keys its cache of ``book/chapters/`` on (``python -m ntkbook cache-key``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from ntkbook.files import replace_folder
from ntkbook.project import PROFILES, Chapter, Project, UsageError
from ntkbook.runner import recover
from ntkbook.site import publish_caps


def plan(project: Project, profile: str) -> list[tuple[Chapter, str, dict[str, Any]]]:
    """``(chapter, profile it is built at, resolved values)`` for every chapter, all
    validated before anything runs: a chapter capped in ``publish.yml`` below ``profile``
    is built at its cap."""
    caps = publish_caps(project)
    out = []
    for name in project.chapter_names():
        ch = project.chapter(name)
        cap = caps.get(name, {}).get("profile", profile)
        used = min(profile, cap, key=PROFILES.index)
        out.append((ch, used, ch.resolve(used, {})))
    return out


MARKER = ".ntkbook-publish"
"""File in every published folder: ``publish`` replaces only a folder that has it (or none)."""


def check_destination(dest: Path) -> None:
    """Refuse to replace a folder that is not an earlier ``publish``'s output."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        if not (dest / MARKER).exists():
            raise UsageError(
                f"{dest} exists and is not a published site (no {MARKER}); refusing to replace it"
            )


def swap_in(project: Project, html: Path, dest: Path) -> None:
    """Copy the built site ``html`` next to ``dest`` and replace ``dest`` by it (two renames
    on one file system; a kill in between is undone by the next run)."""
    tmp_root = dest.parent / ".publish-tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    recover(tmp_root, dest)
    staging = tmp_root / f"{dest.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        shutil.copytree(html, staging, ignore=shutil.ignore_patterns(".site-key", ".buildinfo"))
        (staging / MARKER).write_text("written by `python -m ntkbook publish`\n")
        replace_folder(staging, dest, tmp_root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        with contextlib.suppress(OSError):
            tmp_root.rmdir()
