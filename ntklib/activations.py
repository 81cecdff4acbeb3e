"""Pointwise activations by name.

Every network and kernel in ntklib names its nonlinearity with a string, so a chapter
parameter such as ``activation="erf"`` reaches the library unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.scipy.special import erf as _erf

Activation = Callable[[jax.Array], jax.Array]

ACTIVATIONS: dict[str, Activation] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "erf": _erf,
    "identity": lambda x: x,
    "elu": jax.nn.elu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "softplus": jax.nn.softplus,
    "swish": jax.nn.swish,
}

HOMOGENEOUS = ("relu", "identity")
"""Positively homogeneous activations, ``phi(a x) = a phi(x)`` for ``a > 0``: their kernel maps
commute with scaling, ``V(t Sigma) = t V(Sigma)`` and ``Vd(t Sigma) = Vd(Sigma)``."""


def get_activation(name: str) -> Activation:
    """Return the activation called ``name``; raise ``ValueError`` listing the known ones.

    Arguments:
        name: one of ``"relu"``, ``"tanh"``, ``"erf"``, ``"identity"``, ``"elu"``,
            ``"gelu"`` (exact, not the tanh approximation), ``"softplus"``, ``"swish"``; a
            value that is not a string raises ``TypeError``.

    Returns:
        The elementwise function ``phi``, array to array.
    """
    if not isinstance(name, str):
        raise TypeError(f"activation must be a string, got {type(name).__name__}")
    try:
        return ACTIVATIONS[name]
    except KeyError:
        known = ", ".join(sorted(ACTIVATIONS))
        raise ValueError(f"unknown activation {name!r}; known: {known}") from None
