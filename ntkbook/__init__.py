"""ntkbook: the compendium's publishing wing -- chapter runner, checks and figures, the site.

A chapter records its results with :func:`check` and :func:`save_figure`; ``python -m ntkbook``
(also ``ntkbook``) lists, runs and builds the chapters. The numerical library, :mod:`ntklib`,
imports nothing from here.

``check`` and ``save_figure`` are loaded on first use (PEP 562) so that the command-line tool
answers ``--help`` or a usage error without importing JAX and matplotlib.
"""

from __future__ import annotations

from typing import Any

__all__ = ["can_exclude", "check", "save_figure"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from ntkbook import record

        return getattr(record, name)
    raise AttributeError(f"module 'ntkbook' has no attribute {name!r}")
