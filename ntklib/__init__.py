"""ntklib: networks, empirical and infinite-width NTKs for the NTK depth/width compendium."""

from ntklib import depth, eoc, finite, narrow, nth, ode
from ntklib.activations import ACTIVATIONS, get_activation
from ntklib.empirical import (
    layer_signals,
    ntk_diagonal,
    ntk_gram,
    ntk_gram_jacobian,
    ntk_gram_mc,
)
from ntklib.hierarchy import hierarchy, k3, k3_hessian, k4, k4_hessian
from ntklib.infinite import Kernels, kernels
from ntklib.kernel_maps import kernel_map
from ntklib.mlp import MLP, apply, forward, init, mlp
from ntklib.report import check, save_figure
from ntklib.stats import (
    bootstrap_ci,
    fit_line,
    fit_power_law,
    fit_power_law_samples,
    mean_and_se,
    moment_ratio,
)
from ntklib.sweep import map_keys, ntk_diagonal_mc, sweep
from ntklib.train import descend, gradient_descent, gradient_flow, kernel_descent

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "Kernels",
    "apply",
    "forward",
    "get_activation",
    "init",
    "kernel_map",
    "kernels",
    "layer_signals",
    "mlp",
    "ntk_diagonal",
    "ntk_gram",
    "ntk_gram_jacobian",
    "ntk_gram_mc",
    "check",
    "save_figure",
    "fit_line",
    "fit_power_law",
    "fit_power_law_samples",
    "mean_and_se",
    "moment_ratio",
    "bootstrap_ci",
    "depth",
    "eoc",
    "finite",
    "descend",
    "gradient_descent",
    "kernel_descent",
    "narrow",
    "gradient_flow",
    "hierarchy",
    "k3",
    "k3_hessian",
    "k4",
    "k4_hessian",
    "nth",
    "ode",
    "map_keys",
    "ntk_diagonal_mc",
    "sweep",
]
