"""Files and folders the publishing wing writes whole or not at all (a killed run never leaves
half of one).

The library has its own helper for its resumable sweeps (``ntklib._io``); this one keeps the
command line free of JAX: ``python -m ntkbook`` validates and refuses in about a second.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` on a fresh temporary file in ``path``'s folder, with ``path``'s
    suffix (savers that add a suffix keep it), then rename it onto ``path``.

    Arguments:
        path: the file to write.
        write: writes the content to the path it is given.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_write`."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def replace_folder(tmp: Path, final: Path, tmp_root: Path) -> None:
    """Replace the folder ``final`` by ``tmp`` with two renames (same file system): ``final``
    moves to ``tmp_root/old-<name>-<random>`` (where a killed run's leftovers are found and
    restored by :func:`ntkbook.runner.recover`), ``tmp`` takes its place, the old one is
    removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = tmp_root / f"old-{final.name}-{uuid.uuid4().hex[:8]}"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
