"""Named random keys for a computation with several independent parts.

Every random draw of a chapter comes from its ``seed``: :func:`named_keys` splits the root key
into one key per purpose (so adding a purpose at the end leaves the others unchanged) and
:func:`grid_key` derives the key of one cell of a sweep from a purpose's key.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax

from ntklib import _checks


def named_keys(key: jax.Array | int, names: Sequence[str]) -> dict[str, jax.Array]:
    """``{name: k}`` with ``k = jax.random.split(key, len(names))[i]`` for the i-th name.

    Arguments:
        key: a ``jax.random`` key, or an int seed ``>= 0`` (``jax.random.PRNGKey(seed)``).
        names: the purposes, distinct; their order fixes which split each one gets.
    """
    if len(set(names)) != len(names):
        raise ValueError(f"names must be distinct, got {list(names)}")
    root = jax.random.PRNGKey(_checks.integer("seed", key, 0)) if isinstance(key, int) else key
    return dict(zip(names, jax.random.split(root, len(names)), strict=True))


def grid_key(key: jax.Array, i: int, j: int | None = None, *, base: int = 100) -> jax.Array:
    """The key of item ``i`` of a sweep, or of cell ``(i, j)`` of a two-way sweep:
    ``jax.random.fold_in(key, i)``, or ``fold_in(key, base * i + j)``.

    Arguments:
        key: the sweep's key (one purpose of :func:`named_keys`).
        i: the item, or the row of a two-way sweep (e.g. the depth's index), ``>= 0``.
        j: the column, ``0 <= j < base``; default ``None`` (a one-way sweep).
        base: the row stride of a two-way sweep, default 100.
    """
    _checks.integer("i", i, 0)
    if j is None:
        return jax.random.fold_in(key, i)
    if not 0 <= _checks.integer("j", j, 0) < base:
        raise ValueError(f"j must be < base = {base}, got {j}")
    return jax.random.fold_in(key, base * i + j)
