"""Batching over random keys, sharded over every device, resumable; it imports no model.

* :func:`map_keys` evaluates ``fn(key)`` for ``n`` keys split from one root key, ``vmap``-ed in
  chunks, each chunk laid out over all devices on a 1-D mesh (``jax.sharding``, axis
  ``"nets"``). Network ``i`` always gets ``jax.random.split(key, n)[i]``, so the result does not
  depend on the chunk size or on the number of devices. The Monte Carlo engines of the models
  (:func:`ntklib.empirical.ntk_diagonal_mc`, :func:`ntklib.empirical.ntk_gram_mc`) are built
  on it.
* :func:`map_points` runs a grid of such computations, saving each finished point under a
  folder so an interrupted sweep resumes where it stopped, with a progress line on stderr;
  within one long point, ``map_keys(..., store=folder)`` saves and skips finished chunks the
  same way.

On several GPUs of one machine this works unchanged (``jax.devices()`` lists them); on a CPU,
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (set before JAX starts) splits it into N
devices, which is how the tests check that sharding changes no number. On several hosts, call
``jax.distributed.initialize(coordinator_address, num_processes, process_id)`` first on every
host and run the same program everywhere: ``jax.devices()`` then lists every host's devices,
the mesh spans them all, and each chunk's results are gathered to every host
(``multihost_utils.process_allgather``); CPU hosts also need
``jax.config.update("jax_cpu_collectives_implementation", "gloo")``. The tests run this path
with two processes on one machine (2 CPU devices each) and get the single-device numbers.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ntklib._io import atomic_write


def _mesh(devices: Sequence[jax.Device] | None) -> Mesh:
    devs = list(jax.devices() if devices is None else devices)
    return Mesh(np.array(devs), ("nets",))


def map_keys(
    fn: Callable[..., Any],
    key: jax.Array,
    n: int,
    *,
    args: tuple = (),
    chunk: int = 256,
    fixed_chunk: bool = False,
    devices: Sequence[jax.Device] | None = None,
    store: Path | str | None = None,
    progress: bool = False,
    compiler_options: dict[str, Any] | None = None,
) -> Any:
    """``stack([fn(k, *args) for k in jax.random.split(key, n)])``, vmapped, chunked, sharded.

    ``args`` are shared by every network (arrays, replicated on every device): passing them
    here instead of closing over them lets one compiled function serve many configurations.
    ``chunk`` is rounded up to a multiple of the number of devices; the last chunk is padded
    (with extra keys whose results are dropped), so every compiled shape is the same. With
    ``fixed_chunk`` a run of fewer than ``chunk`` networks is padded to ``chunk`` as well, so
    calls with different ``n`` share one compiled function.

    With ``store`` (a folder, one per computation) each finished chunk is saved there and a
    rerun loads it instead of computing it again, so a long Monte Carlo killed half-way
    resumes; the folder records ``n``, the chunk size and the key and refuses a different
    call. ``progress`` prints a progress bar on stderr.

    Arguments:
        fn: the computation ``fn(key, *args)`` for one network, returning a pytree of arrays.
            Its compiled form is cached by identity: pass the same callable each time.
        key: the root key; network ``i`` gets ``jax.random.split(key, n)[i]``.
        n: the number of keys (``>= 1``).
        args: arrays shared by every network (replicated, not mapped), default ``()``.
        chunk: networks vmapped at a time, default 256; capped at ``n`` (unless
            ``fixed_chunk``) and rounded up to a multiple of the number of devices.
        fixed_chunk: pad a run of fewer than ``chunk`` networks to ``chunk``, default
            ``False``.
        devices: the devices of the mesh, default ``None`` (all of ``jax.devices()``).
        store: a folder to save finished chunks in and resume from, default ``None``
            (nothing saved).
        progress: print a progress bar on stderr, default ``False``.
        compiler_options: XLA options for this program, default ``None`` (the process's
            ``XLA_FLAGS``); e.g. ``{"xla_backend_optimization_level": 0}`` for a program that
            compiles longer than it runs (about 40 % of the compile time; results change by
            rounding only, and the same options give the same bits).

    Returns:
        ``fn``'s pytree with NumPy leaves, each with a new first axis of length ``n``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    mesh = _mesh(devices)
    nd = mesh.devices.size
    chunk = max(nd, -(-(chunk if fixed_chunk else min(chunk, n)) // nd) * nd)
    keys = jax.random.split(key, n)
    pad = (-n) % chunk
    if pad:
        keys = jnp.concatenate([keys, jax.random.split(jax.random.fold_in(key, 1), pad)])
    run = _compiled(fn, mesh, len(args), compiler_options)
    starts = range(0, n + pad, chunk)
    saved = _ChunkStore(store, n, chunk, key) if store is not None else None
    outs, t0 = [], time.perf_counter()
    for c, i in enumerate(starts):
        out = saved.load(c, run, keys[i : i + chunk], args) if saved else None
        if out is None:
            out = _gather(run(keys[i : i + chunk], *args))
            if saved:
                saved.save(c, out)
        outs.append(out)
        if progress:
            _bar(c + 1, len(starts), time.perf_counter() - t0, "chunks")
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs)[:n], *outs)


def _bar(done: int, total: int, seconds: float, what: str, status: str = "") -> None:
    bar = "#" * int(20 * done / total)
    print(
        f"\r[{bar:<20}] {done}/{total} {what} {status}{seconds:6.1f} s",
        end="\n" if done == total else "",
        file=sys.stderr,
        flush=True,
    )


class _ChunkStore:
    """The saved chunks of one :func:`map_keys` call: ``chunk-<c>.npz`` under a folder, with
    ``manifest.json`` naming the call (``n``, chunk size, key) so another call is refused."""

    def __init__(self, folder: Path | str, n: int, chunk: int, key: jax.Array):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
        manifest = {"n": n, "chunk": chunk, "key": np.asarray(data).tolist()}
        path = self.folder / "manifest.json"
        if path.exists():
            found = json.loads(path.read_text())
            if found != manifest:
                raise ValueError(
                    f"{self.folder} holds chunks of another call ({found}, this one {manifest});"
                    " use another folder, or delete it to start again"
                )
        else:
            atomic_write(path, lambda p: p.write_text(json.dumps(manifest)))

    def load(self, c: int, run, keys: jax.Array, args: tuple):
        path = self.folder / f"chunk-{c:06d}.npz"
        if not path.exists():
            return None
        with np.load(path) as f:
            leaves = [f[f"leaf{j}"] for j in range(len(f.files))]
        treedef = jax.tree_util.tree_structure(jax.eval_shape(run, keys, *args))
        return jax.tree_util.tree_unflatten(treedef, leaves)

    def save(self, c: int, out) -> None:
        leaves = jax.tree_util.tree_leaves(out)
        arrays = {f"leaf{j}": np.asarray(x) for j, x in enumerate(leaves)}
        atomic_write(self.folder / f"chunk-{c:06d}.npz", lambda p: np.savez(p, **arrays))


def _gather(out):
    """Bring a sharded result to this host (all hosts' shards when several processes run)."""
    if jax.process_count() > 1:  # several processes (tested with two on one machine)
        return multihost_utils.process_allgather(out, tiled=True)
    return jax.device_get(out)


_CACHE: dict = {}


def _compiled(fn, mesh: Mesh, n_args: int = 0, compiler_options: dict | None = None):
    """``jit(vmap(fn))`` sharded over ``mesh`` (with ``compiler_options``), cached so repeated
    calls do not recompile.

    ``fn`` is keyed by identity, so pass the same callable (see
    :func:`ntklib.empirical.ntk_diagonal_mc`).
    """
    options = tuple(sorted((compiler_options or {}).items()))
    cache_key = (fn, n_args, tuple(d.id for d in mesh.devices.flat), options)
    if cache_key not in _CACHE:
        sharding = NamedSharding(mesh, PartitionSpec("nets"))
        replicated = NamedSharding(mesh, PartitionSpec())
        _CACHE[cache_key] = jax.jit(
            jax.vmap(fn, in_axes=(0,) + (None,) * n_args),
            in_shardings=(sharding,) + (replicated,) * n_args,
            out_shardings=sharding,
            compiler_options=dict(options) or None,
        )
    return _CACHE[cache_key]


def _point_id(point: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(point, sort_keys=True).encode()).hexdigest()[:16]


def map_points(
    points: Sequence[dict[str, Any]],
    run_point: Callable[[dict[str, Any]], np.ndarray],
    store: Path | str | None = None,
    *,
    progress: bool = True,
) -> list[np.ndarray]:
    """``[run_point(p) for p in points]``, skipping points already saved under ``store``.

    Each finished point is written to ``store/<hash of the point>.npy`` (atomically), so a
    killed sweep resumes where it stopped; a progress line goes to stderr.

    Arguments:
        points: the grid, one dict of JSON-serializable parameters per point (the hash of
            its sorted JSON names the saved file).
        run_point: the computation of one point, returning an array.
        store: the folder of saved points, default ``None`` (nothing saved, nothing
            skipped).
        progress: print a progress line on stderr, default ``True``.

    Returns:
        The points' results as NumPy arrays, in the order of ``points``.
    """
    store = None if store is None else Path(store)
    if store is not None:
        store.mkdir(parents=True, exist_ok=True)
    out, t0 = [], time.perf_counter()
    for i, point in enumerate(points):
        path = None if store is None else store / f"{_point_id(point)}.npy"
        if path is not None and path.exists():
            out.append(np.load(path))
            status = "cached"
        else:
            res = np.asarray(run_point(point))
            if path is not None:
                atomic_write(path, lambda p, res=res: np.save(p, res))
            out.append(res)
            status = "done"
        if progress:
            _bar(i + 1, len(points), time.perf_counter() - t0, "points", status + " ")
    return out
