"""Deep narrow networks at infinite depth (No, Ryu, Lee & Choi 2022): MLP and CNN.

The construction is read from the authors' public code (``models.py`` of
``github.com/lthilnklover/deep-narrow-NTK``), since the paper's full text was not reachable
here; the kernel formulas below are derived from that construction (derivation in the
chapter ``notebooks/deep_narrow.md``), not quoted from the paper.

**MLP.** Width ``w = d_in + 1 + d_out`` at every hidden layer; ``depth = L`` hidden layers
(a head ``d_in -> w``, ``L - 1`` body layers ``w -> w``), a linear tail ``w -> d_out``, ReLU
after every hidden layer, ``h -> W h + b``. The initialization with scale ``C = C_L``:

* head: rows ``0..d_in-1`` are ``C I`` (the *input channels* carry ``C x_+``); row ``d_in``
  (the *random channel*) has weights ``N(0, sigma^2 / d_in)`` and bias ``N(0, C^2 beta^2)``;
  rows ``d_in+1..`` (the *output channels*) have weight 0 and bias ``C``;
* body: ``W = I`` and ``b = 0``, except the random channel's row: weights on the input
  channels ``N(0, sigma^2/d_in)``, 0 elsewhere, bias ``N(0, C^2 beta^2)``;
* tail: reads the output channels with ``I``, bias ``-C``.

So at initialization the network computes exactly 0, every hidden layer holds
``[C x_+, C phi_l(x), C 1]`` with ``phi_l(x) = relu(w_l . x_+ + beta xi_l)`` i.i.d. over
layers, and only the output channels' rows have a gradient. The NTK (identical for each
output, zero between outputs) is

    Theta_L(x, x') = <x, x'> + 1 + L (C^2 (<x_+, x'_+> + d_out) + 1)
                     + a_0(x) a_0(x') + C^2 sum_{l=1}^{L-1} phi_l(x) phi_l(x'),

with ``a_0`` the head's random channel. Divided by ``L C^2`` it tends, as ``L -> inf``, to

    Theta_inf(x, x') = <x_+, x'_+> + d_out + 1/C^2 + kappa(x, x'),
    kappa = E[relu(u) relu(u')],  Var u = sigma^2 |x_+|^2 / d_in + beta^2,
    Cov(u, u') = sigma^2 <x_+, x'_+> / d_in + beta^2,

at the Monte Carlo rate: its standard deviation is ``sqrt(L-1) sd(phi phi') / L``.

**CNN** (the same idea with channels): ``c_in + 1 + c_out`` channels, 3x3 ``same`` convolutions,
identity = the centre tap, the random channel reads the input channels with weights
``N(0, sigma^2 / (c_in k^2))``, and a global average pool after the tail. The authors' code has
``c_in = 1`` (and average-pools the image first); ``c_in`` input channels is our
generalization, identical for ``c_in = 1``.

``init(..., scheme="torch")`` gives the same architecture with PyTorch's default
initialization of ``nn.Linear`` and ``nn.Conv2d`` (weights and biases uniform on
``[-1/sqrt(fan_in), 1/sqrt(fan_in)]``, variance ``1/(3 fan_in)``): the authors' contrast, what
their code runs without ``--init custom``. ``scheme="standard"`` is He initialization
(``W ~ N(0, 2/fan_in)``, ``b = 0``; tail ``N(0, 1/fan_in)``), a second contrast.

:func:`authors_scale` and :func:`authors_rate` give the authors' NTK-convergence setting
(``ntk_convergence.py`` and the README's example: depths 100 and 10^4 with ``C_L = 5`` and
``5 10^4``, learning rates ``1e-4`` and ``1e-14``): ``C_L = L^2 / 2000`` and ``eta = 0.25 /
(L C_L^2)`` on the mean squared error.

Everything is float64-safe; a ``lax.scan`` over the body layers keeps compile time flat in L.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache, partial, wraps
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ntklib import _checks
from ntklib.empirical import ntk
from ntklib.kernel_maps import relu_map
from ntklib.sweep import map_keys
from ntklib.train import descend

Params = dict[str, Any]
Scheme = Literal["narrow", "standard", "torch"]


class NarrowMLP(NamedTuple):
    """A deep narrow MLP: ``depth`` hidden layers of width ``d_in + 1 + d_out``.

    Build it with :func:`narrow_mlp`, which checks the fields.

    Attributes:
        d_in: the input dimension.
        d_out: the number of outputs.
        depth: the number of hidden layers ``L >= 1`` (a head and ``L - 1`` body layers).
        scale: the initialization scale ``C = C_L > 0``.
        sigma: the random channel's weight scale, weights ``N(0, sigma^2 / d_in)``, default
            1.0.
        beta: the random channel's bias scale, bias ``N(0, C^2 beta^2)``, default 1.0.
    """

    d_in: int
    d_out: int
    depth: int
    scale: float  # C_L
    sigma: float = 1.0
    beta: float = 1.0

    @property
    def width(self) -> int:
        """The hidden width ``d_in + 1 + d_out``."""
        return self.d_in + 1 + self.d_out


class NarrowCNN(NamedTuple):
    """A deep narrow CNN on ``size x size`` images: ``c_in + 1 + c_out`` channels.

    Build it with :func:`narrow_cnn`, which checks the fields.

    Attributes:
        c_in: the number of input channels.
        c_out: the number of outputs (output channels, average-pooled).
        depth: the number of hidden layers ``L >= 1`` (a head and ``L - 1`` body layers).
        scale: the initialization scale ``C = C_L > 0``.
        size: the image side ``H = W``, recorded with the architecture (:func:`init_cnn` and
            :func:`apply_cnn` do not use it: any image size goes through).
        kernel: the (odd) convolution size ``k``, default 3.
        sigma: the random channel's weight scale, weights ``N(0, sigma^2 / (c_in k^2))``,
            default 1.0.
        beta: the random channel's bias scale, bias ``N(0, C^2 beta^2)``, default 1.0.
    """

    c_in: int
    c_out: int
    depth: int
    scale: float
    size: int
    kernel: int = 3
    sigma: float = 1.0
    beta: float = 1.0

    @property
    def width(self) -> int:
        """The number of channels ``c_in + 1 + c_out``."""
        return self.c_in + 1 + self.c_out


def narrow_mlp(
    d_in: int, d_out: int, depth: int, scale: float, sigma: float = 1.0, beta: float = 1.0
) -> NarrowMLP:
    """Validated :class:`NarrowMLP` (``depth >= 1``, ``scale = C_L > 0``).

    Arguments:
        d_in: the input dimension, an int ``>= 1``.
        d_out: the number of outputs, an int ``>= 1``.
        depth: the number of hidden layers ``L``, an int ``>= 1``.
        scale: the initialization scale ``C_L > 0``.
        sigma: the random channel's weight scale (``> 0``), default 1.0.
        beta: the random channel's bias scale (``> 0``), default 1.0.
    """
    return NarrowMLP(
        _checks.integer("d_in", d_in),
        _checks.integer("d_out", d_out),
        _checks.integer("depth", depth),
        _checks.number("scale", scale, strict=True),
        _checks.number("sigma", sigma, strict=True),
        _checks.number("beta", beta, strict=True),
    )


def narrow_cnn(
    c_in: int,
    c_out: int,
    depth: int,
    scale: float,
    size: int,
    kernel: int = 3,
    sigma: float = 1.0,
    beta: float = 1.0,
) -> NarrowCNN:
    """Validated :class:`NarrowCNN` (odd ``kernel``, so the centre tap is the identity).

    Arguments:
        c_in: the number of input channels, an int ``>= 1``.
        c_out: the number of outputs, an int ``>= 1``.
        depth: the number of hidden layers ``L``, an int ``>= 1``.
        scale: the initialization scale ``C_L > 0``.
        size: the image side, an int ``>= 1``.
        kernel: the convolution size, an odd int, default 3.
        sigma: the random channel's weight scale (``> 0``), default 1.0.
        beta: the random channel's bias scale (``> 0``), default 1.0.
    """
    k = _checks.integer("kernel", kernel)
    if k % 2 == 0:
        raise ValueError(f"kernel must be odd (its centre tap is the identity), got {k}")
    return NarrowCNN(
        _checks.integer("c_in", c_in),
        _checks.integer("c_out", c_out),
        _checks.integer("depth", depth),
        _checks.number("scale", scale, strict=True),
        _checks.integer("size", size),
        k,
        _checks.number("sigma", sigma, strict=True),
        _checks.number("beta", beta, strict=True),
    )


_NUMBERS = ("depth", "scale", "sigma", "beta")  # a network's fields that shapes do not depend on


def _jit_numbers_traced(fn: Callable) -> Callable:
    """``jax.jit`` of ``fn(net, *arrays, **static)`` with the network's numbers (depth, scale,
    sigma, beta) traced: one compile per architecture, input shape and keyword, not one per
    depth or scale (nor one per operation, as eagerly)."""

    @partial(jax.jit, static_argnums=(0, 1, 2))
    def run(cls, fixed, static, numbers, *args):
        return fn(
            cls(**dict(fixed), **dict(zip(_NUMBERS, numbers, strict=True))), *args, **dict(static)
        )

    @wraps(fn)
    def wrapper(net, *args, **static):
        fixed = tuple((k, v) for k, v in net._asdict().items() if k not in _NUMBERS)
        numbers = tuple(
            jnp.asarray(getattr(net, k), jnp.float64 if jax.config.jax_enable_x64 else None)
            for k in _NUMBERS
        )
        return run(type(net), fixed, tuple(sorted(static.items())), numbers, *args)

    return wrapper


def _dtype(dtype):
    return jnp.float64 if dtype is None and jax.config.jax_enable_x64 else (dtype or jnp.float32)


def _he(key: jax.Array, shape: tuple[int, ...], fan_in: int, dtype) -> jax.Array:
    """He initialization ``N(0, 2 / fan_in)`` (the ``standard`` scheme's contrast)."""
    return jax.random.normal(key, shape, dtype) * jnp.sqrt(2.0 / fan_in)


def _torch_default(key: jax.Array, shape: tuple[int, ...], fan_in: int, dtype) -> jax.Array:
    """PyTorch's default ``nn.Linear``/``nn.Conv2d`` draw: uniform on ``+-1/sqrt(fan_in)``."""
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def _check_scheme(scheme: str) -> None:
    _checks.choice("scheme", scheme, ("narrow", "standard", "torch"))


def authors_scale(depth: int) -> float:
    """The authors' scale ``C_L = L^2 / 2000`` (``C_100 = 5``, ``C_10000 = 5 10^4``).

    Arguments:
        depth: the number of hidden layers ``L`` (an int ``>= 1``).
    """
    return _checks.integer("depth", depth) ** 2 / 2000.0


def authors_rate(depth: int, scale: float) -> float:
    """The authors' learning rate ``0.25 / (L C_L^2)`` on the mean squared error (``1e-4`` at
    ``L = 100, C = 5``; ``1e-14`` at ``L = 10^4, C = 5 10^4``).

    Arguments:
        depth: the number of hidden layers ``L`` (an int ``>= 1``).
        scale: the scale ``C_L`` (``> 0``), e.g. :func:`authors_scale`.
    """
    return 0.25 / (
        _checks.integer("depth", depth) * _checks.number("scale", scale, strict=True) ** 2
    )


# --------------------------------------------------------------------------- MLP


def init_mlp(net: NarrowMLP, key: jax.Array, scheme: Scheme = "narrow", dtype=None) -> Params:
    """Parameters ``{head, body, tail}``, each ``{"w": (out, in), "b": (out,)}``; the body's
    arrays are stacked over its ``depth - 1`` layers. See the module docstring.

    Arguments:
        net: the architecture.
        key: a ``jax.random`` key.
        scheme: ``"narrow"`` (the construction of the module docstring), ``"torch"``
            (PyTorch's default, uniform with variance ``1/(3 fan_in)``) or ``"standard"`` (He
            initialization, biases zero), default ``"narrow"``.
        dtype: the parameters' dtype, default ``None``: float64 under ``jax_enable_x64``, else
            float32.
    """
    _check_scheme(scheme)
    dt = _dtype(dtype)
    d, o, n_body, w, c = net.d_in, net.d_out, net.depth - 1, net.width, net.scale
    k_hw, k_hb, k_bw, k_bb, k_tw = jax.random.split(key, 5)
    if scheme == "torch":
        u = partial(_torch_default, dtype=dt)
        return {
            "head": {"w": u(k_hw, (w, d), d), "b": u(k_hb, (w,), d)},
            "body": {"w": u(k_bw, (n_body, w, w), w), "b": u(k_bb, (n_body, w), w)},
            "tail": {"w": u(k_tw, (o, w), w), "b": u(jax.random.fold_in(k_tw, 1), (o,), w)},
        }
    if scheme == "standard":
        he = partial(_he, dtype=dt)
        return {
            "head": {"w": he(k_hw, (w, d), d), "b": jnp.zeros(w, dt)},
            "body": {"w": he(k_bw, (n_body, w, w), w), "b": jnp.zeros((n_body, w), dt)},
            "tail": {"w": he(k_tw, (o, w), w) / jnp.sqrt(2.0), "b": jnp.zeros(o, dt)},
        }
    sd_w = net.sigma / math.sqrt(d)
    head_w = jnp.zeros((w, d), dt).at[:d, :].set(c * jnp.eye(d, dtype=dt))
    head_w = head_w.at[d, :].set(sd_w * jax.random.normal(k_hw, (d,), dt))
    head_b = jnp.zeros(w, dt).at[d].set(c * net.beta * jax.random.normal(k_hb, (), dt))
    head_b = head_b.at[d + 1 :].set(c)
    body_w = jnp.broadcast_to(jnp.eye(w, dtype=dt), (n_body, w, w))
    body_w = body_w.at[:, d, :].set(0.0)
    body_w = body_w.at[:, d, :d].set(sd_w * jax.random.normal(k_bw, (n_body, d), dt))
    body_b = jnp.zeros((n_body, w), dt)
    body_b = body_b.at[:, d].set(c * net.beta * jax.random.normal(k_bb, (n_body,), dt))
    tail_w = jnp.zeros((o, w), dt).at[:, d + 1 :].set(jnp.eye(o, dtype=dt))
    tail_b = jnp.full(o, -c, dt)
    return {
        "head": {"w": head_w, "b": head_b},
        "body": {"w": body_w, "b": body_b},
        "tail": {"w": tail_w, "b": tail_b},
    }


def _dense(h: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """The MLP's affine layer ``h W^T + b``."""
    return h @ w.T + b


def hidden_mlp(params: Params, x: jax.Array) -> jax.Array:
    """The last hidden layer ``h_{L-1}`` for inputs ``x`` of shape ``(..., d_in)``.

    The ReLU output of the head and the ``L - 1`` body layers, shape ``(..., width)``.

    Arguments:
        params: the parameters, as from :func:`init_mlp`.
        x: inputs, shape ``(..., d_in)``.
    """
    return _walk(params, x, _dense)[0]


def _walk(params: Params, x: jax.Array, lin: Callable, observe: Callable | None = None):
    """The hidden layers of an MLP (``lin = _dense``) or CNN (``lin = _conv``): the head's
    ReLU output, then one ``lax.scan`` over the body's layers. Returns the last hidden layer
    and, with ``observe``, ``observe(h)`` after the head and after every body layer, stacked
    (``None`` without it)."""
    h = jax.nn.relu(lin(x, params["head"]["w"], params["head"]["b"]))

    def layer(h, wb):
        h = jax.nn.relu(lin(h, *wb))
        return h, None if observe is None else observe(h)

    last, seen = jax.lax.scan(layer, h, (params["body"]["w"], params["body"]["b"]))
    if observe is None:
        return last, None
    return last, jax.tree_util.tree_map(
        lambda a, b: jnp.concatenate([a[None], b]), observe(h), seen
    )


def apply_mlp(params: Params, x: jax.Array) -> jax.Array:
    """Network outputs ``(..., d_out)``: the linear tail on :func:`hidden_mlp`.

    One ``lax.scan`` over the body's layers: the cost of a step at depth is one small matmul
    per layer, and reverse mode (training, the NTK's gradients) holds one ``(batch, width)``
    array per layer for the backward pass, about ``1.4 x 8 L B width`` bytes in float64 (XLA's
    memory analysis of the loss gradient: 0.7 MB at ``L = 1000``, ``B = 16``, width 4; 2.8 MB
    at ``L = 4000``), beside the parameters and their gradient, ``2 x 8 (L - 1)(width^2 +
    width)`` bytes.

    Arguments:
        params: the parameters, as from :func:`init_mlp`.
        x: inputs, shape ``(..., d_in)``.
    """
    return _dense(hidden_mlp(params, x), params["tail"]["w"], params["tail"]["b"])


def ntk_mlp(
    net: NarrowMLP, params: Params, x1: jax.Array, x2: jax.Array | None = None, output: int = 0
) -> jax.Array:
    """Empirical NTK ``Theta_L(x1, x2)`` of output ``output`` (one gradient per input),
    divided by ``L C^2``: the scaled kernel whose depth limit is :func:`limit_kernel`.

    Arguments:
        net: the architecture (for ``L`` and ``C``).
        params: its parameters, as from :func:`init_mlp`.
        x1: inputs, shape (B1, d_in).
        x2: inputs, shape (B2, d_in), default ``None`` (``x2 = x1``).
        output: the output whose NTK is taken, ``0 <= output < d_out``, default 0.
    """
    return ntk(apply_mlp, params, x1, x2, output=output) / (net.depth * net.scale**2)


def ntk_output_rows_mlp(
    net: NarrowMLP, params: Params, x1: jax.Array, x2: jax.Array | None = None, output: int = 0
) -> jax.Array:
    """The part of :func:`ntk_mlp` that the body's output-channel rows carry (their weights and
    biases, all ``L - 1`` layers), divided by ``L C^2`` as :func:`ntk_mlp`:

        Theta_out(x, x') = sum_{l, o} <d f / d(W_l[o], b_l[o])(x), d f / d(W_l[o], b_l[o])(x')>
                           / (L C^2),    o = d_in + 1, ..., d_in + d_out.

    At initialization these rows carry all but the head's and tail's ``O(1/L)`` share of the
    kernel (the module docstring); ``ntk_mlp - ntk_output_rows_mlp`` is the rest, the part of
    the rows that gain a gradient only in training.

    Arguments:
        net: the architecture (for ``d_in``, ``L`` and ``C``).
        params: its parameters, as from :func:`init_mlp`.
        x1: inputs, shape (B1, d_in).
        x2: inputs, shape (B2, d_in), default ``None`` (``x2 = x1``).
        output: the output whose NTK is taken, ``0 <= output < d_out``, default 0.
    """
    rows = slice(net.d_in + 1, None)
    body = params["body"]

    def apply_rows(wb, x):
        w, b = body["w"].at[:, rows, :].set(wb[0]), body["b"].at[:, rows].set(wb[1])
        return apply_mlp({**params, "body": {"w": w, "b": b}}, x)

    wb = (body["w"][:, rows, :], body["b"][:, rows])
    return ntk(apply_rows, wb, x1, x2, output=output) / (net.depth * net.scale**2)


def channel_covariance(
    net: NarrowMLP, x1, x2, bias_var: float | None = None, rectify: bool = True
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(s12, q1, q2)``: covariance and variances of a random channel's pre-activation
    ``u = w . z + b``, ``w ~ N(0, sigma^2 / d_in)``, at two batches of inputs:

        s12 = sigma^2 / d_in z1 . z2 + Var b,   q_i = sigma^2 / d_in |z_i|^2 + Var b,

    the body's channel (``z = x_+``, ``Var b = beta^2``) by default, the head's with
    ``rectify=False`` (``z = x``) and ``bias_var = C^2 beta^2``. :func:`relu_moments` takes them.

    Arguments:
        net: the network (:func:`narrow_mlp`): ``sigma``, ``beta``, ``d_in``.
        x1: inputs, shape (n1, d_in).
        x2: inputs, shape (n2, d_in).
        bias_var: the bias variance, default ``None`` (``beta^2``).
        rectify: whether the channel sees ``x_+`` (the body), default ``True``.

    Returns:
        ``s12`` of shape (n1, n2), ``q1`` of shape (n1, 1), ``q2`` of shape (1, n2).
    """
    p1, p2 = (jnp.maximum(x1, 0.0), jnp.maximum(x2, 0.0)) if rectify else (x1, x2)
    v = net.sigma**2 / net.d_in
    b2 = net.beta**2 if bias_var is None else bias_var
    s12 = v * p1 @ p2.T + b2
    q1 = v * jnp.sum(p1**2, -1) + b2
    q2 = v * jnp.sum(p2**2, -1) + b2
    return s12, q1[:, None], q2[None, :]


def relu_moments(s12, q1, q2) -> tuple[jax.Array, jax.Array]:
    """``E[relu(u) relu(v)]`` and ``E[relu(u)^2 relu(v)^2]`` for centred Gaussians with
    ``Var u = q1``, ``Var v = q2``, ``Cov = s12``: Cho & Saul's arc-cosine kernels,
    ``E[relu(u)^n relu(v)^n] = (q1 q2)^{n/2} J_n(theta) / (2 pi)`` with
    ``J_1 = sin t + (pi - t) cos t``, ``J_2 = 3 sin t cos t + (pi - t)(1 + 2 cos^2 t)``,
    ``cos t = s12 / sqrt(q1 q2)``.

    Arguments:
        s12: the covariance ``Cov(u, v)``.
        q1: the variance of ``u`` (``> 0``), broadcastable with ``s12``.
        q2: the variance of ``v`` (``> 0``), broadcastable with ``s12``.
    """
    m1, _ = relu_map(s12, q1, q2)
    r = jnp.sqrt(q1 * q2)
    cos = jnp.clip(s12 / r, -1.0, 1.0)
    t = jnp.arccos(cos)
    j2 = 3.0 * jnp.sin(t) * cos + (jnp.pi - t) * (1.0 + 2.0 * cos**2)
    return m1, q1 * q2 * j2 / (2.0 * jnp.pi)


def _limit(net: NarrowMLP, x1: jax.Array, x2: jax.Array) -> tuple[jax.Array, jax.Array]:
    kappa, _ = relu_moments(*channel_covariance(net, x1, x2))
    lin = jnp.maximum(x1, 0.0) @ jnp.maximum(x2, 0.0).T
    return lin + net.d_out + 1.0 / net.scale**2 + kappa, kappa


@_jit_numbers_traced
def limit_kernel(net: NarrowMLP, x1: jax.Array, x2: jax.Array | None = None) -> jax.Array:
    """``Theta_inf(x, x') = <x_+, x'_+> + d_out + 1/C^2 + kappa(x, x')``: the ``L -> inf``
    limit of :func:`ntk_mlp` at fixed ``C`` (derived; module docstring). Use float64.

    Arguments:
        net: the architecture (``d_out``, ``C``, ``sigma``, ``beta``; not the depth).
        x1: inputs, shape (B1, d_in).
        x2: inputs, shape (B2, d_in), default ``None`` (``x2 = x1``).
    """
    return _limit(net, x1, x1 if x2 is None else x2)[0]


@_jit_numbers_traced
def mean_kernel(net: NarrowMLP, x1: jax.Array, x2: jax.Array | None = None) -> jax.Array:
    """Exact ``E[Theta_L] / (L C^2)`` at finite depth: the limit plus the ``O(1/L)`` head
    terms, ``(<x, x'> + 1 + kappa_0 - C^2 kappa) / (L C^2)``, where ``kappa_0`` is ``kappa``
    for the head's random channel (raw ``x``, bias variance ``C^2 beta^2``).

    Arguments:
        net: the architecture.
        x1: inputs, shape (B1, d_in).
        x2: inputs, shape (B2, d_in), default ``None`` (``x2 = x1``).
    """
    x2 = x1 if x2 is None else x2
    limit, kappa = _limit(net, x1, x2)
    c2 = net.scale**2
    kappa0, _ = relu_moments(
        *channel_covariance(net, x1, x2, bias_var=c2 * net.beta**2, rectify=False)
    )
    return limit + (x1 @ x2.T + 1.0 + kappa0 - c2 * kappa) / (net.depth * c2)


@_jit_numbers_traced
def kernel_sd(net: NarrowMLP, x1: jax.Array, x2: jax.Array | None = None) -> jax.Array:
    """Standard deviation of :func:`ntk_mlp` over initializations, body layers only:
    ``sqrt(L - 1) sd(phi phi') / L``. The head's random channel (``a_0 ~ C``) adds a variance
    ``Var(a_0 a_0') / (L C^2)^2 = O(1/L^2)``, a relative ``O(1/L)`` correction, left out.

    Arguments:
        net: the architecture.
        x1: inputs, shape (B1, d_in).
        x2: inputs, shape (B2, d_in), default ``None`` (``x2 = x1``).
    """
    x2 = x1 if x2 is None else x2
    m1, m2 = relu_moments(*channel_covariance(net, x1, x2))
    return jnp.sqrt((net.depth - 1) * jnp.maximum(m2 - m1**2, 0.0)) / net.depth


# --------------------------------------------------------------------------- CNN


def _conv(h: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """``same`` convolution (zero padding), ``h: (N, C, H, W)``, ``w: (out, in, k, k)``, as one
    matmul against the ``k^2`` shifted copies of the padded ``h``: per-example gradients (the
    NTK) then stay batched matmuls, many times faster on a CPU than XLA's convolution under
    ``vmap``. (A sum of ``k^2`` separate matmuls, the previous form, was miscomputed by
    XLA:CPU in jaxlib 0.10.2 inside ``jit(vmap(init + apply))``: in 6 of 60 compiles every
    output was wrong, e.g. 2.9e220 for an exact 0; this form, 0 of 60: ``tests/test_narrow.py``.)"""
    k = w.shape[-1]
    m = k // 2
    hh, ww = h.shape[-2:]
    hp = jnp.pad(h, ((0, 0), (0, 0), (m, m), (m, m)))
    taps = jnp.stack([hp[:, :, a : a + hh, c : c + ww] for a in range(k) for c in range(k)], 2)
    out = jnp.einsum("ocd,ncdhw->nohw", w.reshape(w.shape[0], w.shape[1], k * k), taps)
    return out + b[None, :, None, None]


def init_cnn(net: NarrowCNN, key: jax.Array, scheme: Scheme = "narrow", dtype=None) -> Params:
    """CNN parameters ``{head, body, tail}`` with ``"w": (out, in, k, k)``. See module doc.

    The body's arrays are stacked over its ``depth - 1`` layers.

    Arguments:
        net: the architecture.
        key: a ``jax.random`` key.
        scheme: ``"narrow"`` (the construction of the module docstring), ``"torch"``
            (PyTorch's default, uniform with variance ``1/(3 fan_in)``) or ``"standard"`` (He
            initialization, biases zero), default ``"narrow"``.
        dtype: the parameters' dtype, default ``None``: float64 under ``jax_enable_x64``, else
            float32.
    """
    _check_scheme(scheme)
    dt = _dtype(dtype)
    ci, co, n_body, w, k, c = net.c_in, net.c_out, net.depth - 1, net.width, net.kernel, net.scale
    k_hw, k_hb, k_bw, k_bb, k_tw = jax.random.split(key, 5)
    if scheme == "torch":
        u = partial(_torch_default, dtype=dt)
        fw = w * k * k
        return {
            "head": {"w": u(k_hw, (w, ci, k, k), ci * k * k), "b": u(k_hb, (w,), ci * k * k)},
            "body": {"w": u(k_bw, (n_body, w, w, k, k), fw), "b": u(k_bb, (n_body, w), fw)},
            "tail": {
                "w": u(k_tw, (co, w, k, k), fw),
                "b": u(jax.random.fold_in(k_tw, 1), (co,), fw),
            },
        }
    if scheme == "standard":
        he = partial(_he, dtype=dt)
        return {
            "head": {"w": he(k_hw, (w, ci, k, k), ci * k * k), "b": jnp.zeros(w, dt)},
            "body": {
                "w": he(k_bw, (n_body, w, w, k, k), w * k * k),
                "b": jnp.zeros((n_body, w), dt),
            },
            "tail": {
                "w": he(k_tw, (co, w, k, k), w * k * k) / jnp.sqrt(2.0),
                "b": jnp.zeros(co, dt),
            },
        }
    m = k // 2
    sd = net.sigma / (math.sqrt(ci) * k)
    eye_in = jnp.zeros((ci, ci, k, k), dt).at[:, :, m, m].set(jnp.eye(ci, dtype=dt))
    head_w = jnp.zeros((w, ci, k, k), dt).at[:ci].set(c * eye_in)
    head_w = head_w.at[ci].set(sd * jax.random.normal(k_hw, (ci, k, k), dt))
    head_b = jnp.zeros(w, dt).at[ci].set(c * net.beta * jax.random.normal(k_hb, (), dt))
    head_b = head_b.at[ci + 1 :].set(c)
    body_w = jnp.zeros((w, w, k, k), dt).at[:, :, m, m].set(jnp.eye(w, dtype=dt))
    body_w = jnp.broadcast_to(body_w, (n_body, w, w, k, k)).at[:, ci].set(0.0)
    body_w = body_w.at[:, ci, :ci].set(sd * jax.random.normal(k_bw, (n_body, ci, k, k), dt))
    body_b = jnp.zeros((n_body, w), dt)
    body_b = body_b.at[:, ci].set(c * net.beta * jax.random.normal(k_bb, (n_body,), dt))
    tail_w = jnp.zeros((co, w, k, k), dt).at[:, ci + 1 :, m, m].set(jnp.eye(co, dtype=dt))
    return {
        "head": {"w": head_w, "b": head_b},
        "body": {"w": body_w, "b": body_b},
        "tail": {"w": tail_w, "b": jnp.full(co, -c, dt)},
    }


def apply_cnn(params: Params, x: jax.Array) -> jax.Array:
    """Outputs ``(N, c_out)`` for images ``x: (N, c_in, H, W)``: the tail's output
    channels, average-pooled over the image.

    Arguments:
        params: the parameters, as from :func:`init_cnn`.
        x: images, shape (N, c_in, H, W).
    """
    out = _conv(_walk(params, x, _conv)[0], params["tail"]["w"], params["tail"]["b"])
    return out.mean(axis=(2, 3))


def ntk_cnn(
    net: NarrowCNN, params: Params, x1: jax.Array, x2: jax.Array | None = None, output: int = 0
) -> jax.Array:
    """Empirical NTK of output ``output`` divided by ``L C^2`` (as :func:`ntk_mlp`).

    Arguments:
        net: the architecture (for ``L`` and ``C``).
        params: its parameters, as from :func:`init_cnn`.
        x1: images, shape (B1, c_in, H, W).
        x2: images, shape (B2, c_in, H, W), default ``None`` (``x2 = x1``).
        output: the output whose NTK is taken, ``0 <= output < c_out``, default 0.
    """
    return ntk(apply_cnn, params, x1, x2, output=output) / (net.depth * net.scale**2)


def _shift_masks(h: int, w: int, k: int, dtype) -> jax.Array:
    """``M[d, p] = 1`` when pixel ``p - d`` (tap ``d`` of a same-padded ``k x k`` convolution
    centred at ``p``) lies in the ``h x w`` image: shape (k^2, h w)."""
    m, i, j = k // 2, jnp.arange(h)[:, None], jnp.arange(w)[None, :]
    taps = [
        ((i - a + m >= 0) & (i - a + m < h) & (j - b + m >= 0) & (j - b + m < w)).reshape(-1)
        for a in range(k)
        for b in range(k)
    ]
    return jnp.stack(taps).astype(dtype)


def _patch_means(z: jax.Array, k: int) -> jax.Array:
    """``P_d(z)[n, c]``: the mean over output pixels of what tap ``d`` reads, (N, c, k^2)."""
    n, c, h, w = z.shape
    return jnp.einsum("ncp,dp->ncd", z.reshape(n, c, h * w), _shift_masks(h, w, k, z.dtype)) / (
        h * w
    )


def _patches(z: jax.Array, k: int) -> jax.Array:
    """Zero-padded ``k x k`` patches centred at every pixel: (N, h w, c k^2)."""
    m, (n, c, h, w) = k // 2, z.shape
    zp = jnp.pad(z, ((0, 0), (0, 0), (m, m), (m, m)))
    cols = jnp.stack([zp[:, :, a : a + h, b : b + w] for a in range(k) for b in range(k)], -1)
    return cols.transpose(0, 2, 3, 1, 4).reshape(n, h * w, c * k * k)


def _random_channel_term(net: NarrowCNN, z1: jax.Array, z2: jax.Array, bias_var) -> jax.Array:
    """``kbar = sum_{p, q} n_pq kappa_pq / (h w h' w')``: the random channel's mean product
    after the readout's pooling, ``kappa_pq = E[relu(u_p) relu(u'_q)]`` with ``Cov(u_p, u'_q) =
    sigma^2 / (c_in k^2) <patch_p(z), patch_q(z')> + bias_var``; one image of ``z1`` at a
    time (memory ``B2 (h w)^2``)."""
    k, v = net.kernel, net.sigma**2 / (net.c_in * net.kernel**2)
    p2 = _patches(z2, k)
    q2 = v * jnp.sum(p2**2, -1) + bias_var  # (B2, hw)
    m1 = _shift_masks(*z1.shape[-2:], k, z1.dtype) / (z1.shape[-1] * z1.shape[-2])
    m2 = _shift_masks(*z2.shape[-2:], k, z2.dtype) / (z2.shape[-1] * z2.shape[-2])

    def one(p1):  # (hw, f): one image of z1 against every image of z2
        s12 = v * jnp.einsum("pf,bqf->bpq", p1, p2) + bias_var
        q1 = v * jnp.sum(p1**2, -1) + bias_var
        kappa, _ = relu_moments(s12, q1[None, :, None], q2[:, None, :])
        return jnp.einsum("bpq,dp,dq->b", kappa, m1, m2)

    return jax.lax.map(one, _patches(z1, k))


def _limit_cnn(net: NarrowCNN, x1: jax.Array, x2: jax.Array) -> tuple[jax.Array, jax.Array]:
    k, r1, r2 = net.kernel, jnp.maximum(x1, 0.0), jnp.maximum(x2, 0.0)
    lin = jnp.einsum("acd,bcd->ab", _patch_means(r1, k), _patch_means(r2, k))
    ones1 = _patch_means(jnp.ones((1, 1) + x1.shape[-2:], x1.dtype), k)[0, 0]
    ones2 = _patch_means(jnp.ones((1, 1) + x2.shape[-2:], x2.dtype), k)[0, 0]
    kbar = _random_channel_term(net, r1, r2, net.beta**2)
    return lin + net.c_out * (ones1 @ ones2) + 1.0 / net.scale**2 + kbar, kbar


@_jit_numbers_traced
def limit_kernel_cnn(net: NarrowCNN, x1: jax.Array, x2: jax.Array | None = None) -> jax.Array:
    """The ``L -> inf`` limit of :func:`ntk_cnn` at fixed ``C`` (derived here from the
    construction, as :func:`limit_kernel` for the MLP; the paper's CNN formula was not
    readable):

        Theta_inf(x, x') = <P x_+, P x'_+> + c_out nu + 1/C^2 + kbar(x, x'),

    with ``P_d(z)`` the mean over output pixels of what tap ``d`` of a same-padded ``k x k``
    convolution reads, ``<P z, P z'> = sum_{c, d} P_d(z_c) P_d(z'_c)``, ``nu = sum_d P_d(1)
    P_d(1)`` (the output channels' constant 1, 4.515625 for 4 x 4 images and ``k = 3``), and
    ``kbar`` the random channel's pooled mean product (:func:`_random_channel_term`). With
    ``k = 1`` on 1 x 1 images it is :func:`limit_kernel` exactly. Use float64.

    Arguments:
        net: the architecture (``c_in``, ``c_out``, ``C``, ``kernel``, ``sigma``, ``beta``;
            not the depth or the recorded size).
        x1: images, shape (B1, c_in, H, W).
        x2: images, shape (B2, c_in, H', W'), default ``None`` (``x2 = x1``).
    """
    return _limit_cnn(net, x1, x1 if x2 is None else x2)[0]


@_jit_numbers_traced
def mean_kernel_cnn(net: NarrowCNN, x1: jax.Array, x2: jax.Array | None = None) -> jax.Array:
    """Exact ``E[ntk_cnn]`` at depth ``L``: the limit plus the head's ``O(1/L)`` terms,

        Theta_inf + (<P x, P x'> + 1 + kbar_0 - C^2 kbar) / (L C^2),

    ``kbar_0`` the head's random channel (raw ``x``, bias variance ``C^2 beta^2``), as
    :func:`mean_kernel` for the MLP.

    Arguments:
        net: the architecture, its depth ``L`` included.
        x1: images, shape (B1, c_in, H, W).
        x2: images, shape (B2, c_in, H', W'), default ``None`` (``x2 = x1``).
    """
    x2 = x1 if x2 is None else x2
    limit, kbar = _limit_cnn(net, x1, x2)
    c2 = net.scale**2
    raw = jnp.einsum("acd,bcd->ab", _patch_means(x1, net.kernel), _patch_means(x2, net.kernel))
    head = _random_channel_term(net, x1, x2, c2 * net.beta**2)
    return limit + (raw + 1.0 + head - c2 * kbar) / (net.depth * c2)


def _layer_term_moments(net, z1, z2, bias_var, key, draws):
    """Variance of one random channel's pooled product ``T = sum_d A_d(z1) A_d(z2)``, ``A_d(z) =
    sum_p M_d[p] relu(w . patch_p(z) + b) / (h w)``, ``w ~ N(0, sigma^2 / (c_in k^2))``, ``b ~
    N(0, bias_var)``, over ``draws`` Monte Carlo layers about the exact mean
    (:func:`_random_channel_term`), and the standard error of that variance."""
    k, v = net.kernel, net.sigma**2 / (net.c_in * net.kernel**2)
    p1, p2 = _patches(z1, k), _patches(z2, k)
    m1 = _shift_masks(*z1.shape[-2:], k, z1.dtype) / (z1.shape[-1] * z1.shape[-2])
    m2 = _shift_masks(*z2.shape[-2:], k, z2.dtype) / (z2.shape[-1] * z2.shape[-2])
    mean = _random_channel_term(net, z1, z2, bias_var)

    def chunk(carry, keys):
        def one(key):
            kw, kb = jax.random.split(key)
            w = jnp.sqrt(v) * jax.random.normal(kw, (p1.shape[-1],), p1.dtype)
            b = jnp.sqrt(bias_var) * jax.random.normal(kb, (), p1.dtype)
            a1 = jnp.einsum("dp,np->nd", m1, jax.nn.relu(p1 @ w + b))
            a2 = jnp.einsum("dp,np->nd", m2, jax.nn.relu(p2 @ w + b))
            return a1 @ a2.T - mean

        d = jax.vmap(one)(keys)
        return (carry[0] + jnp.sum(d**2, 0), carry[1] + jnp.sum(d**4, 0)), None

    zero = jnp.zeros_like(mean)
    keys = jax.random.split(key, draws)
    keys = keys.reshape((draws // 256, 256) + keys.shape[1:])
    (s2, s4), _ = jax.lax.scan(chunk, (zero, zero), keys)
    var, m4 = s2 / draws, s4 / draws  # about the exact mean: no degree of freedom lost
    return var, jnp.sqrt(jnp.maximum(m4 - var**2, 0.0) / draws)


@_jit_numbers_traced
def kernel_sd_cnn(
    net: NarrowCNN, x1: jax.Array, x2: jax.Array | None, key: jax.Array, *, draws: int = 4096
) -> tuple[jax.Array, jax.Array]:
    """Standard deviation of :func:`ntk_cnn` over initializations (derived here):

        sd = sqrt((L - 1) Var T + Var T_0 / C^4) / L,

    ``T(x, x') = sum_d A_d(x) A_d(x')`` one body layer's random channel's pooled product,
    ``A_d(z) = sum_p M_d[p] relu(w . patch_p(z_+) + b) / (h w)``, ``w ~ N(0, sigma^2 / (c_in
    k^2))``, ``b ~ N(0, beta^2)`` (``E T`` is ``kbar`` of :func:`limit_kernel_cnn`), and
    ``T_0`` the head's (raw ``x``, ``b ~ N(0, C^2 beta^2)``). The ``L - 1`` body terms and the
    head's are independent and nothing else in the scaled NTK is random, so this is exact given
    the two variances; they have no closed form (four-variate ReLU moments) and are Monte
    Carlo over ``draws`` single layers each, about their exact means. (:func:`kernel_sd` for
    the MLP leaves the head out.) Memory grows with the output, not with ``draws``.

    Arguments:
        net: the architecture (its depth ``L`` and scale ``C``).
        x1: images, shape (B1, c_in, H, W).
        x2: images, shape (B2, c_in, H', W'), or ``None`` (``x2 = x1``).
        key: a ``jax.random`` key for the single-layer draws.
        draws: single-layer draws per term, a multiple of 256 (keyword), default 4096.

    Returns:
        ``(sd, se)``: the standard deviation, shape (B1, B2), and its Monte Carlo standard error
        (from the fourth central moments).
    """
    x2 = x1 if x2 is None else x2
    if draws < 256 or draws % 256:
        raise ValueError(f"draws must be a positive multiple of 256, got {draws}")
    k_body, k_head = jax.random.split(key)
    z1, z2 = jnp.maximum(x1, 0.0), jnp.maximum(x2, 0.0)
    var_t, se_t = _layer_term_moments(net, z1, z2, net.beta**2, k_body, draws)
    c4 = net.scale**4
    var_0, se_0 = _layer_term_moments(net, x1, x2, net.scale**2 * net.beta**2, k_head, draws)
    var = ((net.depth - 1) * var_t + var_0 / c4) / net.depth**2
    se_var = jnp.sqrt(((net.depth - 1) * se_t) ** 2 + (se_0 / c4) ** 2) / net.depth**2
    sd = jnp.sqrt(var)
    return sd, se_var / (2 * sd)


def _spread(out: jax.Array) -> jax.Array:
    """``(max - min) / max |out|`` over the inputs, and 0 where ``out`` is 0 everywhere."""
    size = jnp.max(jnp.abs(out))  # 0 for a dead He network (no biases): constant, r = 0
    return jnp.where(size > 0, jnp.ptp(out) / jnp.where(size > 0, size, 1.0), 0.0)


@partial(jax.jit, static_argnums=(0, 3, 4))
def output_spread(
    net: NarrowMLP | NarrowCNN,
    x: jax.Array,
    keys: jax.Array,
    scheme: Scheme = "standard",
    every_depth: bool = False,
) -> jax.Array:
    """Each network's output range over the inputs, relative to its size:

        r = (max_i f(x_i) - min_i f(x_i)) / max_i |f(x_i)|   (output 0; r = 0 exactly when
                                                              f is constant on x)

    for one network per key, drawn by :func:`init_mlp` or :func:`init_cnn` under ``scheme``.
    A narrow ReLU network under a standard initialization collapses with depth (its units die
    or its signals align), and gradient descent then cannot tell the inputs apart: ``r`` is
    the measure of it at initialization. Forward passes only, vmapped over the keys.

    With ``every_depth``, one pass through each network also reads ``r`` at every depth
    ``l = 1..L``: the network of depth ``l`` is the draw's head, its first ``l - 1`` body
    layers and its tail. Under ``"torch"`` and ``"standard"`` the body's layers are i.i.d.
    and no distribution depends on ``L`` or ``C``, so that prefix is a draw of the depth-``l``
    network: one compile and one pass serve every depth (the depths share their draws).

    Arguments:
        net: the architecture (:func:`narrow_mlp` or :func:`narrow_cnn`).
        x: inputs, shape (B, d) for an MLP or (B, c_in, H, W) for a CNN, ``B >= 2``.
        keys: ``jax.random`` keys, shape (K, 2): one network each.
        scheme: ``"standard"`` (He), ``"torch"`` or ``"narrow"`` (whose output is 0 at
            initialization: ``r = 0``, uninformative; not with ``every_depth``, whose
            prefixes are not draws of a shallower narrow network), default ``"standard"``.
        every_depth: return ``r`` at every depth, shape (K, L), instead of at ``L``, shape
            (K,), default ``False``.
    """
    _check_scheme(scheme)
    if every_depth and scheme == "narrow":
        raise ValueError(
            "every_depth needs scheme 'torch' or 'standard': the narrow scheme's scale C_L "
            "depends on L, so a prefix of a depth-L draw is not a draw at a smaller depth"
        )
    cnn = isinstance(net, NarrowCNN)
    init, apply = (init_cnn, apply_cnn) if cnn else (init_mlp, apply_mlp)

    def one(p):
        if not every_depth:
            return _spread(apply(p, x)[:, 0])
        lin = _conv if cnn else _dense

        def spread_of_tail(h):  # output 0 of the tail on the hidden layer h
            out = lin(h, p["tail"]["w"][:1], p["tail"]["b"][:1])
            return _spread((out.mean(axis=(2, 3)) if cnn else out)[:, 0])

        return _walk(p, x, lin, spread_of_tail)[1]

    # the draws one key at a time (vmapped, the random bits' program compiles 1.5-2 times
    # slower, and the draws are the same bits), the forward passes vmapped
    return jax.vmap(one)(jax.lax.map(lambda key: init(net, key, scheme), keys))


# --------------------------------------------------------------------------- training


@lru_cache(maxsize=32)
def _motion_fn(net: NarrowMLP, steps: int):
    """The per-network program of :func:`kernel_motion` (one callable per ``(net, steps)``,
    so :func:`ntklib.sweep.map_keys` compiles it once)."""

    def one(key, x, y, c):
        p0 = init_mlp(net, key, dtype=x.dtype)
        k0 = ntk_mlp(net, p0, x)
        lr = c * 2.0 / (jnp.linalg.eigvalsh(k0)[-1] * net.depth * net.scale**2)
        res = descend(apply_mlp, p0, x, y, lr, steps, steps)
        kt = ntk_mlp(net, res.params, x)
        return {
            "kernel_change": jnp.linalg.norm(kt - k0) / jnp.linalg.norm(k0),
            "loss_ratio": res.loss[-1] / res.loss[0],
        }

    return one


def kernel_motion(
    net: NarrowMLP,
    key: jax.Array,
    n_nets: int,
    x: jax.Array,
    y: jax.Array,
    *,
    steps: int,
    lr_fraction: float = 0.5,
    chunk: int = 8,
) -> dict[str, Any]:
    """Train ``n_nets`` networks of the special initialization by full-batch gradient descent
    and measure how far their NTK moves on the training inputs:

        change = ||Theta_T - Theta_0||_F / ||Theta_0||_F      (Gram on x, output 0),

    the measurement of :func:`ntklib.depth_width.training_mc` for a deep narrow MLP. Network
    ``i`` is ``init_mlp(net, jax.random.split(key, n_nets)[i])``; its learning rate is
    ``lr_fraction * 2 / lambda_max(Theta_0)`` of its own (unscaled) initial NTK on ``x``, the
    loss ``1/2 sum_i |f(x_i) - y_i|^2``, ``steps`` steps (:func:`ntklib.train.descend`).

    Arguments:
        net: the architecture (:func:`narrow_mlp`).
        key: the root key, split into one key per network.
        n_nets: the number of networks, an int ``>= 1``.
        x: the training inputs, shape (n, d_in), ``n >= 2``; float64 advised (the change is a
            difference of nearby Grams).
        y: the targets, shape (n,) or (n, d_out).
        steps: the number of gradient-descent steps, an int ``>= 1``.
        lr_fraction: ``c`` in the learning rate, in (0, 1), default 0.5.
        chunk: networks ``vmap``-ed at a time, default 8.

    Returns:
        ``{"kernel_change", "loss_ratio"}`` (final loss over initial), NumPy arrays of shape
        (n_nets,).
    """
    _checks.integer("n_nets", n_nets)
    _checks.integer("steps", steps)
    c = _checks.number("lr_fraction", lr_fraction, strict=True)
    if c >= 1.0:
        raise ValueError(f"lr_fraction must be < 1 (stable gradient descent), got {c}")
    x = jnp.asarray(x)
    y = jnp.asarray(y, x.dtype)
    y = y[:, None] if y.ndim == 1 else y
    if (
        x.ndim != 2
        or x.shape[1] != net.d_in
        or x.shape[0] < 2
        or y.shape != (x.shape[0], net.d_out)
    ):
        raise ValueError(
            f"need x of shape (n >= 2, {net.d_in}) and y of shape (n,) or (n, {net.d_out}), got "
            f"{x.shape} and {y.shape}"
        )
    out = map_keys(
        _motion_fn(net, steps), key, n_nets, args=(x, y, jnp.asarray(c, x.dtype)), chunk=chunk
    )
    return {k: np.asarray(v) for k, v in out.items()}
