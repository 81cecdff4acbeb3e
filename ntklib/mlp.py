"""Fully connected networks in NTK and standard parameterization.

A network with ``depth = L`` hidden layers of widths ``n_1..n_L`` on inputs of dimension
``n_0`` computes, for ``l = 0..L`` (the last layer is the scalar read-out ``n_{L+1} = 1``),

    h_{l+1} = c_l W_l a_l + c_b b_l,    a_0 = x,    a_{l+1} = phi(h_{l+1}),    f(x) = h_{L+1}.

* ``"ntk"`` parameterization (Jacot et al. 2018, eq. (1); neural-tangents' ``stax.Dense``
  default): ``W_l, b_l ~ N(0, 1)``, ``c_l = w_std / sqrt(n_l)``, ``c_b = b_std``.
* ``"standard"`` parameterization: ``W_l ~ N(0, w_std^2 / n_l)``, ``b_l ~ N(0, b_std^2)``,
  ``c_l = c_b = 1``.

Both give the same distribution of ``f`` at initialization; they differ in the gradient
and hence in the NTK. ``depth`` counts hidden layers, as in neural-tangents.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp

from ntklib import _checks
from ntklib.activations import get_activation

Params = list[tuple[jax.Array, jax.Array]]
Parameterization = Literal["ntk", "standard"]


@dataclasses.dataclass(frozen=True)
class MLP:
    """A fully connected network with scalar output (hashable, so it can be a static arg).

    Attributes:
        in_dim: input dimension ``n_0`` (an int ``>= 1``).
        widths: hidden widths ``(n_1, ..., n_L)``; ``L = len(widths)`` is the depth (>= 1).
            Any sequence of ints ``>= 1``; stored as a tuple.
        activation: name of the nonlinearity (see :mod:`ntklib.activations`), default
            ``"relu"``.
        parameterization: ``"ntk"`` or ``"standard"`` (module docstring), default ``"ntk"``.
        w_std: weight standard deviation ``sigma_w`` (``>= 0``), default 1.0.
        b_std: bias standard deviation ``sigma_b`` (``>= 0``), default 0.0: under ``"ntk"``
            ``c_b = 0`` takes the biases out of the function and the NTK; under
            ``"standard"`` they start at zero but are trained and count in the NTK.
        bias: whether the layers have biases at all (``False``: no bias parameters, so they
            contribute nothing to the NTK), default ``True``.
        bias_init: ``"normal"`` (the parameterization's draw: ``b_l ~ N(0, 1)`` under
            ``"ntk"``, ``N(0, b_std^2)`` under ``"standard"``) or ``"zero"``: biases start at
            zero but are still trained and still count in the NTK (He et al. 2015; Hanin &
            Nica 2019); default ``"normal"``.
    """

    in_dim: int
    widths: tuple[int, ...]
    activation: str = "relu"
    parameterization: Parameterization = "ntk"
    w_std: float = 1.0
    b_std: float = 0.0
    bias: bool = True
    bias_init: Literal["normal", "zero"] = "normal"

    def __post_init__(self) -> None:
        _checks.integer("in_dim", self.in_dim)
        object.__setattr__(self, "widths", _checks.widths(self.widths))
        get_activation(self.activation)
        _checks.choice("parameterization", self.parameterization, ("ntk", "standard"))
        _checks.choice("bias_init", self.bias_init, ("normal", "zero"))
        for name in ("w_std", "b_std"):
            _checks.number(name, getattr(self, name))

    @property
    def depth(self) -> int:
        """The number of hidden layers ``L = len(widths)``."""
        return len(self.widths)

    @property
    def dims(self) -> tuple[int, ...]:
        """Layer dimensions ``(n_0, n_1, ..., n_L, 1)``, the read-out's 1 last."""
        return (self.in_dim, *self.widths, 1)

    def weight_multipliers(self) -> tuple[float, ...]:
        """``c_l`` for each of the ``L + 1`` dense layers: ``w_std / sqrt(n_l)`` in NTK
        parameterization, 1 in standard."""
        if self.parameterization == "ntk":
            return tuple(self.w_std / math.sqrt(n) for n in self.dims[:-1])
        return (1.0,) * (self.depth + 1)

    def bias_multiplier(self) -> float:
        """``c_b``: ``b_std`` in NTK parameterization, 1 in standard, 0 without biases."""
        if not self.bias:
            return 0.0
        return self.b_std if self.parameterization == "ntk" else 1.0


def mlp(in_dim: int, depth: int, width: int, **kwargs) -> MLP:
    """An :class:`MLP` with ``depth`` hidden layers of equal ``width``.

    Arguments:
        in_dim: input dimension ``n_0``.
        depth: number of hidden layers ``L`` (an int ``>= 1``).
        width: the width ``n_1 = ... = n_L`` of every hidden layer (an int ``>= 1``).
        kwargs: the other fields of :class:`MLP` (``activation``, ``parameterization``,
            ``w_std``, ``b_std``, ``bias``, ``bias_init``), with its defaults.
    """
    _checks.integer("depth", depth)
    _checks.integer("width", width)
    return MLP(in_dim=in_dim, widths=(width,) * depth, **kwargs)


def init(net: MLP, key: jax.Array, dtype: jnp.dtype | None = None) -> Params:
    """Draw parameters ``[(W_0, b_0), ..., (W_L, b_L)]`` with ``W_l`` of shape (n_{l+1}, n_l).

    Under ``"ntk"`` every entry is ``N(0, 1)``; under ``"standard"`` the weights are scaled by
    ``w_std / sqrt(n_l)`` and the biases by ``b_std``. Biases are zeros when ``net.bias`` is
    False or ``net.bias_init == "zero"`` (still returned, so the pytree keeps its structure).

    Arguments:
        net: the architecture.
        key: a ``jax.random`` key; one split of it per weight and per bias.
        dtype: the parameters' dtype, default ``None``: JAX's default float (float64 under
            ``jax_enable_x64``, else float32).

    Returns:
        A list of ``L + 1`` pairs ``(W_l, b_l)``, ``b_l`` of shape (n_{l+1},).
    """
    dtype = jnp.result_type(float) if dtype is None else dtype
    dims = net.dims
    keys = jax.random.split(key, 2 * (len(dims) - 1))
    params = []
    for l in range(len(dims) - 1):
        w = jax.random.normal(keys[2 * l], (dims[l + 1], dims[l]), dtype)
        b = jax.random.normal(keys[2 * l + 1], (dims[l + 1],), dtype)
        if net.parameterization == "standard":
            w = w * (net.w_std / math.sqrt(dims[l]))
            b = b * net.b_std
        if not net.bias or net.bias_init == "zero":
            b = jnp.zeros_like(b)
        params.append((w, b))
    return params


def forward(
    net: MLP, params: Params, x: jax.Array, eps: Sequence[jax.Array] | None = None
) -> tuple[jax.Array, list[jax.Array]]:
    """Outputs ``f(x)`` of shape (B,) and the layer inputs ``[a_0, ..., a_L]``.

    ``eps`` (optional) is added to each pre-activation ``h_{l+1}``; the gradient of ``f``
    with respect to it at zero is the backpropagated signal ``delta_{l+1} = df/dh_{l+1}``.

    Arguments:
        net: the architecture.
        params: its parameters, as from :func:`init`.
        x: a batch of inputs, shape (B, n_0).
        eps: perturbations of the pre-activations, one per dense layer, ``eps[l]`` of shape
            (B, n_{l+1}) (the last (B, 1)); default ``None`` (no perturbation).

    Returns:
        ``(f, acts)``: ``f`` of shape (B,) and ``acts = [a_0, ..., a_L]`` with ``a_0 = x`` and
        ``a_l`` of shape (B, n_l).
    """
    phi = get_activation(net.activation)
    cws, cb = net.weight_multipliers(), net.bias_multiplier()
    a, acts = x, [x]
    h = x
    for l, (w, b) in enumerate(params):
        h = cws[l] * (a @ w.T)
        if cb != 0.0:
            h = h + cb * b
        if eps is not None:
            h = h + eps[l]
        if l < len(params) - 1:
            a = phi(h)
            acts.append(a)
    return h[:, 0], acts


def apply(net: MLP, params: Params, x: jax.Array) -> jax.Array:
    """Network output ``f(x)`` for a batch ``x`` of shape (B, n_0); returns shape (B,).

    Arguments:
        net: the architecture.
        params: its parameters, as from :func:`init`.
        x: a batch of inputs, shape (B, n_0).
    """
    return forward(net, params, x)[0]
