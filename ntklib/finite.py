"""The NTK of deep ReLU networks at finite width, on the diagonal (Hanin & Nica 2019).

**The network.** Depth ``d`` counts weight layers: input ``n_0``, hidden widths
``n_1..n_{d-1}``, scalar output. He initialization, biases zero at initialization but trained:

    h_j = W_j a_{j-1} / sqrt(n_{j-1}) + b_j / sqrt(2),  a_0 = x,  a_j = relu(h_j),  f = h_d,

with every entry of ``W_j`` drawn from ``N(0, 2)``. The kernel is
``K(x, x) = |df/d(W, b)|^2 = K_w + K_b`` with

    K_w = sum_j |delta_j|^2 |a_{j-1}|^2 / n_{j-1},     K_b = sum_j |delta_j|^2 / 2,

``delta_j = df/dh_j``. This is the normalization of the paper's appendix ("Overall Scaling":
its weight term ``(d |x|^2 / n_0)^2`` and cross term ``d^2 |x|^2 / n_0`` fix ``E[K_w] = d
|x|^2/n_0`` and ``E[K_b] = d/2``). In ntklib terms it is :func:`he_net` (NTK
parameterization, ``sigma_w^2 = 2``, ``sigma_b = 1``, zero-initialized biases) with every
parameter multiplied by ``sqrt 2``: the same function, half the NTK, half the learning rate.

**Exact facts used for checks** (derived in the chapter):

* ``E[K(x, x)] = d (1/2 + |x|^2 / n_0)`` for every choice of widths, up to ``O(d 2^{-n})``
  from dead layers, which :func:`mean_kernel` includes exactly.
* One layer: ``xi = 2 |a_j|^2 / (n_j |a_{j-1}|^2 * 2 / n_{j-1})`` is ``(2/n) chi^2_B`` with
  ``B ~ Binomial(n, 1/2)``, independent across layers, so ``E[xi] = 1`` and
  ``E[xi^2] = 1 + 5/n`` (:func:`layer_moment`): the origin of ``exp(5 beta)``.

**Monte Carlo.** :func:`diagonal_parts` computes ``(K_w, K_b)`` of a real network from one
forward and one backward pass (``vmap`` it over networks with :func:`ntklib.sweep.map_keys`).
:func:`sample_diagonal` draws the *same joint law* of ``(K_w, K_b, f)`` at one input without
forming any weight matrix. By rotation invariance, given ``a_{j-1}`` with direction ``u``,
``W_j = g_j u^T + W_j (I - u u^T)``: the forward pass sees only ``g_j = W_j u ~ N(0, 2 I)``
(so only the number ``k_j ~ Bin(n_j, 1/2)`` of active units and a ``chi^2_{k_j}`` norm), and
the backward pass sees the independent second term only through a Gaussian vector on the
``k_{j-1} - 1`` active directions orthogonal to ``u``. The whole network reduces to a chain of
``3 (d - 1) + 1`` scalar random variables (:func:`_one_network`), instead of
``sum_j n_j n_{j-1}`` weights. The tests check that both routes agree in distribution. Use
float64: the moments here are ratios of heavy-tailed sums.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ntklib import _checks
from ntklib.empirical import layer_signals
from ntklib.mlp import MLP, Params, forward, init
from ntklib.sweep import map_keys

BIAS_SCALE2 = 0.5  # the paper's bias normalization: E[K_b] = d / 2


def he_net(in_dim: int, widths: Sequence[int], *, bias: bool = True) -> MLP:
    """The paper's network as an ntklib :class:`~ntklib.mlp.MLP` (ReLU, He, zero biases).

    ``widths`` are the hidden widths ``n_1..n_{d-1}``; the depth in the paper's sense is
    ``len(widths) + 1``. Its ntklib NTK is twice the paper's ``K`` (see the module docstring).

    Arguments:
        in_dim: the input dimension ``n_0``.
        widths: the hidden widths ``n_1..n_{d-1}``.
        bias: whether the layers have (zero-initialized, trained) biases, default ``True``;
            ``False`` leaves ``K_b`` out.
    """
    return MLP(
        in_dim=in_dim,
        widths=tuple(widths),
        activation="relu",
        parameterization="ntk",
        w_std=math.sqrt(2.0),
        b_std=1.0,
        bias=bias,
        bias_init="zero",
    )


def _check_he(net: MLP) -> None:
    if (
        net.activation != "relu"
        or net.parameterization != "ntk"
        or not math.isclose(net.w_std, math.sqrt(2.0))
        or (net.bias and (net.b_std != 1.0 or net.bias_init != "zero"))
    ):
        raise ValueError("expected the network of ntklib.finite.he_net (ReLU, He, zero biases)")


def diagonal_parts(net: MLP, params: Params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(K_w, K_b)`` of the paper's kernel for each row of ``x`` (one forward/backward pass).

    ``K_w = sum_j |delta_j|^2 |a_{j-1}|^2 / n_{j-1}``, ``K_b = sum_j |delta_j|^2 / 2`` (zero
    if ``net.bias`` is False); ``K_w + K_b = ntk_diagonal(net, params, x) / 2``.

    Arguments:
        net: the network, as from :func:`he_net` (anything else raises ``ValueError``).
        params: its parameters (:func:`ntklib.mlp.init`).
        x: inputs, shape (B, n_0).

    Returns:
        ``(K_w, K_b)``, each of shape (B,).
    """
    _check_he(net)
    acts, deltas = layer_signals(net, params, x)
    kw, kb = 0.0, 0.0
    for l in range(net.depth + 1):
        d2 = jnp.sum(deltas[l] ** 2, -1)
        kw = kw + d2 * jnp.sum(acts[l] ** 2, -1) / net.dims[l]
        kb = kb + BIAS_SCALE2 * d2
    return kw, (kb if net.bias else jnp.zeros_like(kw))


def kernel(net: MLP, params: Params, x: jax.Array) -> jax.Array:
    """The paper's ``K(x_i, x_i)`` for each row of ``x``: ``K_w + K_b``, shape (B,).

    Arguments:
        net: the network, as from :func:`he_net` (anything else raises ``ValueError``).
        params: its parameters (:func:`ntklib.mlp.init`).
        x: inputs, shape (B, n_0).
    """
    kw, kb = diagonal_parts(net, params, x)
    return kw + kb


def sgd_step_change(
    net: MLP, params: Params, x: jax.Array, y: jax.Array | float, lr: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(K, Delta K, Delta K_lin)`` at ``x`` (shape (1, n_0)) for one exact SGD step.

    The step is on ``L = (f(x) - y)^2 / 2`` with learning rate ``lr`` in the paper's
    parameters, i.e. ``lr / 2`` in ntklib's (they differ by a factor ``sqrt 2``).
    ``Delta K`` recomputes the kernel at the new parameters (no linearization);
    ``Delta K_lin`` is its first-order part, the directional derivative of ``K`` along the step
    (``-lr (f - y) K3(x, x, x)``), which misses the units whose ReLU switches during the step.

    Arguments:
        net: the network, as from :func:`he_net` (anything else raises ``ValueError``).
        params: its parameters (:func:`ntklib.mlp.init`).
        x: the one input, shape (1, n_0).
        y: its target, a scalar.
        lr: the learning rate in the paper's parameters.

    Returns:
        Three scalars ``(K, Delta K, Delta K_lin)``, the paper's ``K`` (half ntklib's).
    """
    _check_he(net)

    def loss(p):
        return 0.5 * (forward(net, p, x)[0][0] - y) ** 2

    step = jax.tree_util.tree_map(lambda g: -0.5 * lr * g, jax.grad(loss)(params))
    k0, dlin = jax.jvp(lambda p: kernel(net, p, x)[0], (params,), (step,))
    new = jax.tree_util.tree_map(jnp.add, params, step)
    return k0, kernel(net, new, x)[0] - k0, dlin


# ---------------------------------------------------------------- exact reduced sampler


def _validate(in_dim: int, widths: Sequence[int]) -> tuple[int, ...]:
    _checks.integer("in_dim", in_dim)
    return _checks.widths(widths)


@jax.jit
def _one_network(key: jax.Array, widths: jax.Array, real: jax.Array, r0: jax.Array):
    """``(K_w, K_b, f)`` of one random network, as a chain of scalars (exact in law).

    ``widths``: hidden widths (float), ``real``: which of them are layers (the others are
    padding placed first, identity layers that add nothing, so that one compiled function
    serves every depth up to the padded length), ``r0 = |x|^2 / n_0``. With
    ``k_j ~ Bin(n_j, 1/2)`` active units and ``r_j = |a_j|^2 / n_j`` (module docstring),

        r_j = r_{j-1} * 2 chi^2_{k_j} / n_j,          f = sqrt(r_{d-1}) g,  g ~ N(0, 2),
        |delta_j|^2 = f^2 / (n_j r_j) + 2 |delta_{j+1}|^2 chi^2_{k_j - 1} / n_j,

    (the first term is the component of ``df/da_j`` along ``a_j``, equal to ``f / |a_j|`` by
    Euler's identity for the positively homogeneous ReLU network; the second its orthogonal
    part on the active set), ``|delta_d|^2 = 1``.
    """
    dt = r0.dtype
    n = widths
    k_bin, k_fwd, k_bwd, k_out = jax.random.split(key, 4)
    k = jax.random.binomial(k_bin, n, 0.5).astype(dt)
    fwd = jnp.where(k > 0, 2.0 * jax.random.gamma(k_fwd, jnp.maximum(k, 1.0) / 2.0, dtype=dt), 0.0)
    bwd = jnp.where(
        k > 1, 2.0 * jax.random.gamma(k_bwd, jnp.maximum(k - 1, 1.0) / 2.0, dtype=dt), 0.0
    )
    g = jnp.sqrt(2.0) * jax.random.normal(k_out, (), dt)

    r = r0 * jnp.concatenate([jnp.ones(1, dt), jnp.cumprod(jnp.where(real, 2.0 * fwd / n, 1.0))])
    f2 = r[-1] * g * g  # r_0..r_L above; f^2 = r_{d-1} g^2

    def back(delta2, inp):  # delta2 = |delta_{j+1}|^2  ->  |delta_j|^2
        r_j, n_j, bwd_j, real_j = inp
        alive = r_j > 0  # a dead layer (no active unit here or below) passes nothing back
        along = jnp.where(alive, f2 / jnp.where(alive, r_j * n_j, 1.0), 0.0)
        new = along + jnp.where(alive, 2.0 * delta2 * bwd_j / n_j, 0.0)
        new = jnp.where(real_j, new, delta2)  # padding: pass through
        return new, new

    _, d2 = jax.lax.scan(back, jnp.ones((), dt), (r[1:], n, bwd, real), reverse=True)
    delta2 = jnp.concatenate([d2, jnp.ones(1, dt)])  # |delta_j|^2, j = 1..d (and padding)
    weight = jnp.concatenate([real, jnp.ones(1, bool)]).astype(dt)
    return (
        jnp.sum(weight * delta2 * r),
        BIAS_SCALE2 * jnp.sum(weight * delta2),
        jnp.sqrt(r[-1]) * g,
    )


def sample_diagonal(
    key: jax.Array,
    in_dim: int,
    widths: Sequence[int],
    n_nets: int,
    *,
    x_norm2: float | None = None,
    chunk: int = 4096,
    pad_to: int | None = None,
) -> dict[str, np.ndarray]:
    """``K_w``, ``K_b``, ``K = K_w + K_b`` and ``f`` of ``n_nets`` random networks at one input.

    Exact in distribution (module docstring), float64 (under ``jax_enable_x64``), ``O(d)``
    work per network.
    ``x_norm2`` is ``|x|^2`` (default ``n_0``, i.e. ``|x|^2 / n_0 = 1``). Network ``i`` uses
    ``jax.random.split(key, n_nets)[i]``, vmapped in chunks of ``chunk`` over all devices.
    Compiled once per padded depth and per chunk size (a power of two up to ``chunk``; the
    last chunk is padded): the hidden layers are padded with identity layers to ``pad_to``
    (default: the next power of two), so a sweep that passes one ``pad_to`` compiles once for
    every width, depth and sample size.

    Arguments:
        key: the root key, split into one key per network.
        in_dim: the input dimension ``n_0``.
        widths: the hidden widths ``n_1..n_{d-1}``.
        n_nets: the number of networks (``>= 1``).
        x_norm2: ``|x|^2`` (``> 0``), default ``None`` (``n_0``, i.e. ``|x|^2 / n_0 = 1``).
        chunk: the most networks vmapped at a time, default 4096.
        pad_to: the padded number of hidden layers, ``>= len(widths)``, default ``None`` (the
            next power of two ``>= len(widths)``).

    Returns:
        A dict: ``"K_w"``, ``"K_b"``, ``"K"`` and ``"f"``, each a NumPy array of shape (n_nets,).
    """
    widths = _validate(in_dim, widths)
    x2 = _checks.number("x_norm2", in_dim if x_norm2 is None else x_norm2, strict=True)
    length = (1 << (len(widths) - 1).bit_length()) if pad_to is None else pad_to
    if length < len(widths):
        raise ValueError(f"pad_to={pad_to} is less than the {len(widths)} hidden layers")
    pad = length - len(widths)
    hidden = jnp.asarray((1,) * pad + widths, jnp.float64)
    real = jnp.asarray((False,) * pad + (True,) * len(widths))
    r0 = jnp.asarray(x2 / in_dim, jnp.float64)
    # chunks of a power of two (at most `chunk`): few compiled shapes, under 2x padding
    chunk = min(chunk, 1 << max(0, n_nets - 1).bit_length())
    kw, kb, f = map_keys(
        _one_network, key, n_nets, args=(hidden, real, r0), chunk=chunk, fixed_chunk=True
    )
    return {"K_w": kw, "K_b": kb, "K": kw + kb, "f": f}


# ---------------------------------------------------------------- exact formulas


def beta(widths: Sequence[int]) -> float:
    """``beta = sum_j 1 / n_j`` over the hidden widths.

    Arguments:
        widths: the hidden widths ``n_1..n_{d-1}``.
    """
    return float(sum(1.0 / n for n in widths))


def paper_mean_kernel(depth: int, in_dim: int, x_norm2: float) -> float:
    """The paper's mean, ``E[K(x, x)] = d (1/2 + |x|^2 / n_0)``.

    Arguments:
        depth: the paper's depth ``d`` (weight layers).
        in_dim: the input dimension ``n_0``.
        x_norm2: ``|x|^2``.
    """
    return depth * (BIAS_SCALE2 + x_norm2 / in_dim)


def mean_kernel(in_dim: int, widths: Sequence[int], x_norm2: float) -> tuple[float, float]:
    """Exact ``(E[K_w], E[K_b])`` at finite width, derived in the chapter:

        E[K_w] = d |x|^2 / n_0,
        E[K_b] = (1 + sum_{j=1}^{d-1} prod_{i<j} (1 - 2^{-n_i})) / 2.

    ``E[|delta_j|^2]`` is the probability that no layer below ``j`` is dead (all its units
    inactive, probability ``2^{-n_i}``): a dead layer zeroes every hidden bias gradient above
    it, while the weight gradients it zeroes multiply ``|a_{j-1}|^2 = 0`` anyway. The paper's
    ``d/2`` drops these ``O(d 2^{-n})`` terms.

    Arguments:
        in_dim: the input dimension ``n_0``.
        widths: the hidden widths ``n_1..n_{d-1}``.
        x_norm2: ``|x|^2``.
    """
    widths = _validate(in_dim, widths)
    alive = np.cumprod([1.0] + [1.0 - 2.0**-n for n in widths[:-1]])  # P(a_1..a_{j-1} alive)
    return (len(widths) + 1) * x_norm2 / in_dim, BIAS_SCALE2 * (1.0 + float(np.sum(alive)))


def layer_moment(n: int, k: int) -> float:
    """``E[xi^k]`` for ``xi = (2/n) chi^2_B``, ``B ~ Binomial(n, 1/2)``; exact (float64).

    ``E[(chi^2_b)^k] = b (b + 2) ... (b + 2k - 2)``; ``layer_moment(n, 2) = 1 + 5/n``.

    Arguments:
        n: the layer's width, an int ``>= 1``.
        k: the moment, an int ``>= 0``.
    """
    b = np.arange(n + 1, dtype=float)
    mom = np.ones_like(b)
    for i in range(k):
        mom = mom * (b + 2 * i)
    return float(np.sum(_active_units_pmf(n) * mom) * (2.0 / n) ** k)


def _active_units_pmf(n: int) -> np.ndarray:
    """``P(k = 0..n)`` for the number of active units of a layer, ``k ~ Binomial(n, 1/2)``."""
    logc = np.array(
        [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(n + 1)]
    )
    return np.exp(logc - n * math.log(2.0))


def forward_moment(widths: Sequence[int], k: int) -> float:
    """``E[(|a_{d-1}|^2 n_0 / (n_{d-1} |x|^2))^k] = prod_j E[xi_j^k]``; ``k = 2``: ``prod (1 + 5/n_j)``.

    Arguments:
        widths: the hidden widths ``n_1..n_{d-1}``.
        k: the moment, an int ``>= 0``.
    """
    return float(np.prod([layer_moment(int(n), k) for n in widths]))


def layer_xi(key: jax.Array, n: jax.Array, x: jax.Array, n_max: int) -> jax.Array:
    """``xi = (|a_1|^2 / n) / (|x|^2 / n_0)`` of one random He-ReLU layer of width ``n``.

    ``a_1 = relu(sqrt(2) W x / sqrt(n_0))`` with ``W`` standard Gaussian; ``E xi = 1`` and
    ``E xi^2 = 1 + 5/n`` (:func:`layer_moment`). Real Gaussian weights (not the reduced
    chain): the check of the chain's first letter.

    Arguments:
        key: the layer's random key.
        n: its width (a traced scalar, ``1 <= n <= n_max``).
        x: the input, shape ``(n_0,)``.
        n_max: rows drawn; those beyond ``n`` are masked, so one compiled function serves
            every width.
    """
    n0 = x.shape[-1]
    w = jax.random.normal(key, (n_max, n0)) * jnp.sqrt(2.0)
    h = w @ x / jnp.sqrt(n0)
    act2 = jnp.where(jnp.arange(n_max) < n, jax.nn.relu(h) ** 2, 0.0)
    return jnp.sum(act2) / n / (jnp.sum(x**2) / n0)


def last_layer_norm(
    key: jax.Array, widths: jax.Array, real: jax.Array, x: jax.Array, n_max: int
) -> jax.Array:
    """``(|a_{d-1}|^2 / n_{d-1}) / (|x|^2 / n_0)`` of a random He-ReLU network, real weights.

    ``E`` of its square is ``prod_j (1 + 5/n_j)`` (:func:`forward_moment` with ``k = 2``).

    Arguments:
        key: the network's key (layer ``j`` uses ``fold_in(key, j)``).
        widths: the hidden widths, padded at the front to a fixed length ``L`` (shape (L,)).
        real: which of the ``L`` layers are real (``False``: an identity layer, padding).
        x: the input, shape ``(n_0,)`` with ``n_0 <= n_max``.
        n_max: units drawn per layer (those beyond the layer's width are masked).
    """
    n0 = x.shape[-1]
    a, r_in = jnp.zeros(n_max).at[:n0].set(x), float(n0)
    for j in range(widths.shape[0]):
        w = jax.random.normal(jax.random.fold_in(key, j), (n_max, n_max)) * jnp.sqrt(2.0)
        h = jnp.where(jnp.arange(n_max) < widths[j], w @ a / jnp.sqrt(r_in), 0.0)
        a, r_in = jnp.where(real[j], jax.nn.relu(h), a), jnp.where(real[j], widths[j], r_in)
    return jnp.sum(a**2) / r_in / (jnp.sum(x**2) / n0)


def networks_needed(widths: Sequence[int], rel_err: float) -> float:
    """Networks for a sample second moment with relative standard error ``rel_err``.

    ``Var(X^2) / (E[X^2]^2 N) = rel_err^2`` with ``X`` the squared forward norm of
    :func:`forward_moment` (the log-normal-like factor that makes ``K`` heavy tailed) and
    ``m_k = E[X^k]``: ``N = (m4 / m2^2 - 1) / rel_err^2``.

    Arguments:
        widths: the hidden widths ``n_1..n_{d-1}``.
        rel_err: the target relative standard error (``> 0``).

    Returns:
        ``N`` as a float (not rounded).
    """
    return (forward_moment(widths, 4) / forward_moment(widths, 2) ** 2 - 1.0) / rel_err**2


def paper_second_moment(depth: int, widths: Sequence[int], in_dim: int, x_norm2: float) -> float:
    """The paper's expression for ``E[K(x,x)^2]`` (appendix, "Overall Scaling"):

        [d^2 |x|^4 / n_0^2 + d |x|^2 / n_0 sum_{j=1}^d e^{-5 beta_j}
         + sum_{1 <= j1 <= j2 <= d} e^{-5 beta_{j2}}] e^{5 beta},

    ``beta_j = sum_{i <= j} 1/n_i`` over hidden layers (``beta_d = beta``). The paper uses it
    up to constant factors (its ``≃``), not as an identity.

    Arguments:
        depth: the paper's depth ``d``, which must be ``len(widths) + 1``.
        widths: the hidden widths ``n_1..n_{d-1}``.
        in_dim: the input dimension ``n_0``.
        x_norm2: ``|x|^2``.
    """
    if depth != len(widths) + 1:
        raise ValueError("depth must be len(widths) + 1 (widths are the hidden widths)")
    bj = np.cumsum([1.0 / n for n in widths] + [0.0])  # beta_1..beta_d
    b = bj[-1]
    a = x_norm2 / in_dim
    cross = depth * a * np.sum(np.exp(-5 * bj))
    bias = np.sum(np.arange(1, depth + 1) * np.exp(-5 * bj))  # j1 <= j2: j2 choices of j1
    return float((depth**2 * a**2 + cross + bias) * np.exp(5 * b))


def paper_step_expression(in_dim: int, widths: Sequence[int], x_norm2: float) -> float:
    """The expression of the paper's Theorem 2 for ``E[Delta K(x, x)] / lambda``:

        [ |x|^4/n_0^2 sum_{i1<i2} sum_{l=i1}^{i2-1} (1/n_l) e^{-5/n_l - 6 sum_{i=i1}^{l} 1/n_i}
        + |x|^2/n_0 sum_{i1<i2} e^{-5 sum_{i<=i1} 1/n_i}
                      sum_{l=i1}^{i2-1} (1/n_l) e^{-6 sum_{i=i1+1}^{l-1} 1/n_i} ] e^{5 beta},

    ``1 <= i1 < i2 <= d`` (so ``l`` runs over hidden layers). The theorem bounds the mean
    first-order SGD update (one step on ``(f(x) - y)^2 / 2``, batch ``{x}``) above and below
    by universal constants times this, up to a factor ``1 + O(sum_j 1/n_j^2)``; for equal
    widths and small ``beta`` it is ``(r^2 + r) d (d^2 - 1) / (6 n)``, ``r = |x|^2 / n_0``.

    Arguments:
        in_dim: the input dimension ``n_0``.
        widths: the hidden widths ``n_1..n_{d-1}``.
        x_norm2: ``|x|^2``.
    """
    widths = _validate(in_dim, widths)
    d = len(widths) + 1
    inv = 1.0 / np.asarray(widths, float)  # inv[l - 1] = 1 / n_l
    cum = np.concatenate([[0.0], np.cumsum(inv)])  # cum[k] = sum_{i <= k} 1 / n_i
    r = x_norm2 / in_dim
    weights = cross = 0.0
    for i1 in range(1, d):
        for l in range(i1, d):  # every i2 in (l, d] sees this l: d - l of them
            mult = d - l
            weights += mult * inv[l - 1] * np.exp(-5 * inv[l - 1] - 6 * (cum[l] - cum[i1 - 1]))
            mixed = cum[l - 1] - cum[i1] if l - 1 > i1 else 0.0  # sum_{i=i1+1}^{l-1}
            cross += mult * np.exp(-5 * cum[i1]) * inv[l - 1] * np.exp(-6 * mixed)
    return float((r * r * weights + r * cross) * np.exp(5 * cum[-1]))


# ---------------------------------------------------------------- exact second moment
#
# Unrolling the chain of :func:`_one_network`, with per-layer letters
#   xi = 2 chi^2_k / n,  eta = 2 chi^2_{k-1} / n,  alpha = 1{k >= 1} / n,  lam = 1{k >= 1},
# K_w / r_0 and 2 K_b are sums of words, one letter per hidden layer, of the regular form
#   P^(j-1) eta^(m-j) [alpha xi^(d-1-m) * g^2]   (P = xi for K_w, lam for K_b),
# one word per pair (j, m): the term of delta_j whose component along a_{m} is taken (m = d:
# none); for K_b the word j = d is the constant |delta_d|^2 = 1. Layers are independent and a word uses one letter per layer, so E[K^2] is a sum over
# pairs of words of products of per-layer joint moments: a dynamic program over layers on
# pairs of automaton states.

_PRE_W, _PRE_B, _ETA, _POST = range(4)  # automaton states: prefix (K_w), prefix (K_b), eta, post
_XI, _ETA_L, _ALPHA, _LAM = range(4)  # letters


def _automaton() -> np.ndarray:
    """``M[s, t, a] = 1`` when state ``s`` may go to ``t`` emitting letter ``a``: prefix ->
    prefix, prefix or eta -> eta, prefix or eta -> post (emitting alpha), post -> post."""
    m = np.zeros((4, 4, 4))
    m[_PRE_W, _PRE_W, _XI] = m[_PRE_B, _PRE_B, _LAM] = m[_POST, _POST, _XI] = 1.0
    for s in (_PRE_W, _PRE_B, _ETA):
        m[s, _ETA, _ETA_L] = m[s, _POST, _ALPHA] = 1.0
    return m


@functools.lru_cache(maxsize=1024)
def _layer_operators(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer transfer operators for the first moment (4, 4) and second moment (4,4,4,4)."""
    k = np.arange(n + 1, dtype=float)
    p = _active_units_pmf(n)
    on = (k >= 1).astype(float)
    km1 = np.maximum(k - 1, 0.0)
    # conditional on k: c ~ chi^2_k and e ~ chi^2_{k-1} independent
    m1 = np.stack([2 * k / n, 2 * km1 / n, on / n, on])  # E[letter | k]
    m2 = m1[:, None, :] * m1[None, :, :]
    m2[_XI, _XI] = 4 * k * (k + 2) / n**2
    m2[_ETA_L, _ETA_L] = 4 * km1 * (km1 + 2) / n**2
    e1, e2 = m1 @ p, m2 @ p
    m = _automaton()
    return np.einsum("sta,a->st", m, e1), np.einsum("sta,uvb,ab->sutv", m, m, e2)


def exact_moments(
    in_dim: int, widths: Sequence[int], x_norm2: float
) -> dict[str, tuple[float, float]]:
    """Exact ``(E[X], E[X^2])`` for ``X`` in ``K_w``, ``K_b`` and ``K`` at finite width.

    ``O(d)`` work (a 16-state transfer operator per layer), float64; no Monte Carlo and no
    asymptotics: the reference the Monte Carlo estimates are checked against.

    Arguments:
        in_dim: the input dimension ``n_0``.
        widths: the hidden widths ``n_1..n_{d-1}``.
        x_norm2: ``|x|^2``.

    Returns:
        ``{"K_w": (m1, m2), "K_b": (m1, m2), "K": (m1, m2)}`` for the paper's kernel.
    """
    widths = _validate(in_dim, widths)
    r0 = x_norm2 / in_dim
    starts = {"K_w": np.array([r0, 0, 0, 0]), "K_b": np.array([0, BIAS_SCALE2, 0, 0])}
    starts["K"] = starts["K_w"] + starts["K_b"]
    g2, g4 = 2.0, 12.0  # moments of g^2, g ~ N(0, 2)
    # the output factor a word ends with, by state; a K_b word still in its prefix at the
    # end is delta_d = 1 (the output bias), added as the constant below instead
    end1 = np.array([1.0, 0.0, 1.0, g2])
    end2 = np.outer(end1, end1)
    end2[_POST, _POST] = g4
    names = list(starts)
    first = np.stack([starts[k] for k in names]).astype(float)  # (3, 4)
    second = np.einsum("ns,nu->nsu", first, first)  # (3, 4, 4)
    for n in widths:
        a1, a2 = _layer_operators(n)
        first = first @ a1
        second = np.einsum("nsu,sutv->ntv", second, a2)
    out = {}
    for i, name in enumerate(names):
        c = starts[name][_PRE_B]  # the output bias: |delta_d|^2 = 1 whatever happens below
        m1, m2 = float(first[i] @ end1), float(np.sum(second[i] * end2))
        out[name] = (float(m1 + c), float(m2 + 2 * c * m1 + c * c))
    return out


def first_step_mc(
    net: MLP, key: jax.Array, n_nets: int, x: jax.Array, y: float, lr: float, *, chunk: int = 512
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(K, Delta K, Delta K_lin)`` at ``x`` for ``n_nets`` networks, one SGD step each.

    Network ``i`` is initialized from ``jax.random.split(key, n_nets)[i]`` (``vmap``-ed,
    chunked, sharded: :func:`ntklib.sweep.map_keys`).

    Arguments:
        net: the network, as from :func:`he_net`.
        key: the root key, split into one key per network.
        n_nets: the number of networks (``>= 1``).
        x: the one input, ``n_0`` numbers (reshaped to (1, n_0)); its dtype is the parameters'.
        y: its target.
        lr: the learning rate in the paper's parameters (as :func:`sgd_step_change`).
        chunk: networks vmapped at a time, default 512.

    Returns:
        Three NumPy arrays of shape (n_nets,).
    """
    _check_he(net)
    x = jnp.asarray(x).reshape(1, net.in_dim)
    return map_keys(
        _step_fn(net),
        key,
        n_nets,
        args=(x, jnp.asarray(y, x.dtype), jnp.asarray(lr, x.dtype)),
        chunk=chunk,
    )


@functools.lru_cache(maxsize=64)
def _step_fn(net: MLP):
    return lambda k, x, y, lr: sgd_step_change(net, init(net, k, x.dtype), x, y, lr)


def diagonal_parts_mc(
    net: MLP, key: jax.Array, n_nets: int, x: jax.Array, *, chunk: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """``(K_w, K_b)`` of ``n_nets`` real networks (weight matrices drawn), shape (n_nets, B).

    :func:`diagonal_parts` of network ``i``, initialized from
    ``jax.random.split(key, n_nets)[i]`` (:func:`ntklib.sweep.map_keys`).

    Arguments:
        net: the network, as from :func:`he_net`.
        key: the root key, split into one key per network.
        n_nets: the number of networks (``>= 1``).
        x: inputs, shape (B, n_0); the parameters are drawn in its dtype.
        chunk: networks vmapped at a time, default 512.
    """
    _check_he(net)
    return map_keys(_parts_fn(net), key, n_nets, args=(jnp.asarray(x),), chunk=chunk)


@functools.lru_cache(maxsize=64)
def _parts_fn(net: MLP):
    return lambda k, x: diagonal_parts(net, init(net, k, x.dtype), x)
