"""ntklib: networks, empirical and infinite-width NTKs, and the theory of their depth and width.

The names below are the public API (``nl.ntk``, ``nl.kernels``, ...); the submodules hold the
rest of each paper's mathematics: :mod:`ntklib.depth` and :mod:`ntklib.eoc` (large depth, the
Edge of Chaos), :mod:`ntklib.finite` (exact finite-width moments), :mod:`ntklib.depth_width` (depth and width
together: trained networks on a grid of L and n), :mod:`ntklib.hierarchy` and
:mod:`ntklib.nth` (the neural tangent hierarchy), :mod:`ntklib.narrow` (deep narrow networks),
:mod:`ntklib.ode`, :mod:`ntklib.stats`, :mod:`ntklib.sweep`, :mod:`ntklib.trig`.
"""

from ntklib import (
    depth,
    depth_width,
    eoc,
    finite,
    hierarchy,
    keys,
    narrow,
    nth,
    ode,
    stats,
    sweep,
    trig,
)
from ntklib.activations import ACTIVATIONS, HOMOGENEOUS, get_activation
from ntklib.empirical import (
    layer_signals,
    ntk,
    ntk_diagonal,
    ntk_diagonal_mc,
    ntk_gram,
    ntk_gram_mc,
)
from ntklib.hierarchy import k3, k4, kernel_hierarchy
from ntklib.infinite import Kernels, kernels
from ntklib.kernel_maps import kernel_map
from ntklib.keys import grid_key, named_keys
from ntklib.mlp import MLP, apply, forward, init, mlp
from ntklib.stats import (
    LineFit,
    bonferroni_z,
    bootstrap_ci,
    fit_line,
    fit_power_law,
    fit_power_law_samples,
    mean_and_se,
    moment_ratio,
    small_time_order,
)
from ntklib.sweep import map_keys, map_points
from ntklib.train import (
    DescentResult,
    FlowResult,
    TrainResult,
    descend,
    gradient_descent,
    gradient_flow,
    kernel_descent,
    kernel_lr,
)

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "DescentResult",
    "FlowResult",
    "HOMOGENEOUS",
    "Kernels",
    "LineFit",
    "MLP",
    "TrainResult",
    "apply",
    "bonferroni_z",
    "bootstrap_ci",
    "depth",
    "depth_width",
    "descend",
    "eoc",
    "finite",
    "fit_line",
    "fit_power_law",
    "fit_power_law_samples",
    "forward",
    "get_activation",
    "gradient_descent",
    "gradient_flow",
    "grid_key",
    "hierarchy",
    "init",
    "k3",
    "k4",
    "kernel_descent",
    "kernel_hierarchy",
    "kernel_lr",
    "kernel_map",
    "kernels",
    "keys",
    "layer_signals",
    "map_keys",
    "map_points",
    "mean_and_se",
    "mlp",
    "moment_ratio",
    "named_keys",
    "narrow",
    "nth",
    "ntk",
    "ntk_diagonal",
    "ntk_diagonal_mc",
    "ntk_gram",
    "ntk_gram_mc",
    "ode",
    "small_time_order",
    "stats",
    "sweep",
    "trig",
]
