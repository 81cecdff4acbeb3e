"""Empirical NTKs:  Theta(x, x') = <df(x)/dtheta, df(x')/dtheta>.

One entry point, :func:`ntk`, for any network: an :class:`~ntklib.mlp.MLP` or an apply
function ``f(params, x)``, with an ``implementation`` switch. For an MLP these exact routes
exist, cheapest first (``"auto"`` takes the structured one):

* :func:`ntk_diagonal` -- ``Theta(x, x)`` for each input from one forward and one backward pass.
* :func:`ntk_gram` -- the Gram matrix from the layer structure (Jacot et al. 2018, proof of
  Thm. 1): with ``a_l`` the input of dense layer ``l`` and ``delta_{l+1} = df/dh_{l+1}``,

      Theta(x, x') = sum_{l=0}^{L} <delta_{l+1}(x), delta_{l+1}(x')>
                                   * (c_l^2 <a_l(x), a_l(x')> + c_b^2),

  which costs ``O(B^2 sum_l n_l)`` after one forward/backward pass for the whole batch,
  instead of the ``O(B^2 P)`` of a Jacobian contraction over ``P`` parameters.
* ``implementation="jacobian"`` -- the plain Jacobian contraction, kept as the reference.

For any other apply function, ``"gradients"`` (one gradient per input, contracted leaf by
leaf: memory ``O(B P)``) or ``"jacobian"`` (reverse-mode Jacobian of the batch).
:func:`ntk_gram_mc` and :func:`ntk_diagonal_mc` draw many MLPs (:func:`ntklib.sweep.map_keys`).

All are pure and ``jit``/``vmap``-able (``vmap`` over ``params`` batches networks). Under
float32 the structured and Jacobian routes agree to ~1e-6 relative; use float64 for tests
and moment ratios.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from ntklib.mlp import MLP, Params, forward, init
from ntklib.sweep import map_keys

ApplyFn = Callable[[Any, jax.Array], jax.Array]
Implementation = Literal["auto", "structured", "gradients", "jacobian"]


def layer_signals(net: MLP, params: Params, x: jax.Array) -> tuple[list, list]:
    """Layer inputs ``[a_0..a_L]`` and backprop signals ``[delta_1..delta_{L+1}]`` for batch x.

    One reverse pass for the whole batch: the examples do not interact, so the gradient of
    ``sum_x f(x)`` with respect to a per-example perturbation of ``h_{l+1}`` is ``delta_{l+1}(x)``.

    Arguments:
        net: the architecture.
        params: its parameters (:func:`ntklib.mlp.init`).
        x: a batch of inputs, shape (B, n_0).

    Returns:
        ``(acts, deltas)``: ``acts[l] = a_l`` of shape (B, n_l) for ``l = 0..L`` and
        ``deltas[l] = delta_{l+1}`` of shape (B, n_{l+1}) (the last (B, 1), all ones).
    """
    b = x.shape[0]
    eps = [jnp.zeros((b, n), x.dtype) for n in net.dims[1:]]

    def total(e):
        out, acts = forward(net, params, x, e)
        return out.sum(), acts

    deltas, acts = jax.grad(total, has_aux=True)(eps)
    return acts, deltas


@partial(jax.jit, static_argnums=0)
def ntk_gram(net: MLP, params: Params, x1: jax.Array, x2: jax.Array | None = None) -> jax.Array:
    """Empirical NTK Gram matrix ``Theta(x1_i, x2_j)`` of shape (B1, B2), layer-structured.

    The sum over layers of the module docstring (Jacot et al. 2018, proof of Thm. 1); jitted
    with ``net`` static.

    Arguments:
        net: the architecture.
        params: its parameters (:func:`ntklib.mlp.init`).
        x1: inputs, shape (B1, n_0).
        x2: inputs, shape (B2, n_0), default ``None`` (``x2 = x1``, one pass for both).
    """
    a1, d1 = layer_signals(net, params, x1)
    a2, d2 = (a1, d1) if x2 is None else layer_signals(net, params, x2)
    cws, cb2 = net.weight_multipliers(), net.bias_multiplier() ** 2
    out = 0.0
    for l in range(net.depth + 1):
        out = out + (d1[l] @ d2[l].T) * (cws[l] ** 2 * (a1[l] @ a2[l].T) + cb2)
    return out


@partial(jax.jit, static_argnums=0)
def ntk_diagonal(net: MLP, params: Params, x: jax.Array) -> jax.Array:
    """``Theta(x_i, x_i)`` for each row of ``x``, shape (B,): one forward and backward pass.

    ``Theta(x, x) = |df/dtheta|^2 = sum_l |delta_{l+1}|^2 (c_l^2 |a_l|^2 + c_b^2)``.

    Arguments:
        net: the architecture.
        params: its parameters (:func:`ntklib.mlp.init`).
        x: inputs, shape (B, n_0).
    """
    acts, deltas = layer_signals(net, params, x)
    cws, cb2 = net.weight_multipliers(), net.bias_multiplier() ** 2
    out = 0.0
    for l in range(net.depth + 1):
        out = out + jnp.sum(deltas[l] ** 2, -1) * (cws[l] ** 2 * jnp.sum(acts[l] ** 2, -1) + cb2)
    return out


def _per_input_gradients(apply_fn: ApplyFn, params: Any, x: jax.Array, output: int | None):
    """``d f(x_i) / d params`` for each row of ``x``: a pytree whose leaves have a leading
    batch axis (one reverse pass per input, ``vmap``-ed)."""

    def f(p, xi):
        out = apply_fn(p, xi[None])[0]
        return out if output is None else out[output]

    return jax.vmap(jax.grad(f), in_axes=(None, 0))(params, x)


def _batch_jacobian(apply_fn: ApplyFn, params: Any, x: jax.Array, output: int | None):
    """``d f(x) / d params`` of the whole batch by one reverse-mode Jacobian."""

    def f(p):
        out = apply_fn(p, x)
        return out if output is None else out[:, output]

    return jax.jacrev(f)(params)


def _contract(g1, g2) -> jax.Array:
    """``sum over leaves of G1 G2^T`` with each leaf flattened to (batch, parameters)."""
    leaves = zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2), strict=True)
    return sum(a.reshape(a.shape[0], -1) @ b.reshape(b.shape[0], -1).T for a, b in leaves)


def _mlp_output(net: MLP) -> ApplyFn:
    return lambda p, x: forward(net, p, x)[0]


def ntk(
    f: MLP | ApplyFn,
    params: Any,
    x1: jax.Array,
    x2: jax.Array | None = None,
    *,
    output: int | None = None,
    implementation: Implementation = "auto",
) -> jax.Array:
    """Empirical NTK Gram matrix ``Theta(x1_i, x2_j) = <df(x1_i)/dtheta, df(x2_j)/dtheta>``.

    Arguments:
        f: an :class:`~ntklib.mlp.MLP`, or an apply function ``f(params, x)`` returning shape
            ``(B,)`` (or ``(B, k)``, with ``output`` choosing the column).
        params: the parameters (any pytree).
        x1: inputs ``(B1, ...)``.
        x2: inputs ``(B2, ...)``, default ``None`` (``x2 = x1``).
        output: the output column of a vector-valued ``f``, default ``None`` (scalar output).
        implementation: ``"auto"`` (default: ``"structured"`` for an MLP, else
            ``"gradients"``), ``"structured"`` (MLP only: :func:`ntk_gram`, the layer sums),
            ``"gradients"`` (one gradient per input) or ``"jacobian"`` (the batch's Jacobian).

    Returns:
        The (B1, B2) Gram matrix. Every route is exact; they differ in cost and memory.
    """
    if implementation not in ("auto", "structured", "gradients", "jacobian"):
        raise ValueError(
            "implementation must be 'auto', 'structured', 'gradients' or 'jacobian', "
            f"got {implementation!r}"
        )
    is_mlp = isinstance(f, MLP)
    if implementation == "structured" and not is_mlp:
        raise ValueError("implementation='structured' needs an MLP (its layer structure)")
    if is_mlp and output is not None:
        raise ValueError("an MLP has one output: leave output=None")
    if is_mlp and implementation in ("auto", "structured"):
        return ntk_gram(f, params, x1, x2)
    apply_fn = _mlp_output(f) if is_mlp else f
    route = _batch_jacobian if implementation == "jacobian" else _per_input_gradients
    g1 = route(apply_fn, params, x1, output)
    g2 = g1 if x2 is None else route(apply_fn, params, x2, output)
    return _contract(g1, g2)


def ntk_gram_mc(net: MLP, key: jax.Array, n_nets: int, x: jax.Array, chunk: int = 8) -> jax.Array:
    """Empirical NTK Gram matrices of ``n_nets`` independent networks, shape (n_nets, B, B).

    Network ``i`` is initialized from ``jax.random.split(key, n_nets)[i]``, so the result
    does not depend on ``chunk`` (networks vmapped at a time, default 8, to bound memory) nor
    on the number of devices: this is :func:`ntklib.sweep.map_keys`, sharded over all devices.

    Arguments:
        net: the architecture.
        key: the root key, split into one key per network.
        n_nets: the number of networks (``>= 1``).
        x: inputs, shape (B, n_0); the parameters are drawn in its dtype.
        chunk: networks vmapped at a time, default 8.

    Returns:
        A NumPy array of shape (n_nets, B, B).
    """
    if n_nets < 1:
        raise ValueError(f"n_nets must be >= 1, got {n_nets}")
    return map_keys(lambda k: ntk_gram(net, init(net, k, x.dtype), x), key, n_nets, chunk=chunk)


@functools.lru_cache(maxsize=64)
def _diagonal_fn(net: MLP, x_bytes: bytes, shape: tuple[int, ...], dtype: str):
    x = jnp.asarray(np.frombuffer(x_bytes, dtype=dtype).reshape(shape))
    return lambda k: ntk_diagonal(net, init(net, k, x.dtype), x)


def ntk_diagonal_mc(
    net: MLP,
    key: jax.Array,
    n_nets: int,
    x: jax.Array,
    *,
    chunk: int = 256,
    devices: Sequence[jax.Device] | None = None,
) -> np.ndarray:
    """``Theta(x_i, x_i)`` of ``n_nets`` independent networks, shape (n_nets, B).

    One forward and one backward pass per network (:func:`ntk_diagonal`); network ``i`` is
    initialized from ``jax.random.split(key, n_nets)[i]``; ``chunk`` (default 256) networks
    are vmapped at a time over ``devices`` (default: all). The compiled function is cached per
    ``(net, x)``, so repeated calls with the same inputs do not recompile.

    Arguments:
        net: the architecture.
        key: the root key, split into one key per network.
        n_nets: the number of networks (``>= 1``).
        x: inputs, shape (B, n_0); the parameters are drawn in its dtype.
        chunk: networks vmapped at a time, default 256.
        devices: the devices to shard each chunk over, default ``None`` (all of
            ``jax.devices()``).

    Returns:
        A NumPy array of shape (n_nets, B).
    """
    xs = np.asarray(x)
    fn = _diagonal_fn(net, xs.tobytes(), xs.shape, xs.dtype.str)  # one callable per (net, x)
    return map_keys(fn, key, n_nets, chunk=chunk, devices=devices)
