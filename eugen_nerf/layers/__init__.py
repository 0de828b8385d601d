"""The EUGen layer and what is built directly on it (pure torch; no nerfstudio import)."""

from eugen_nerf.layers.distill import DistillReport, distill_linear, fit_linear
from eugen_nerf.layers.eugen import FEATURE_MAPS, SAMPLERS, EUGenLinear, NonFiniteInputError, sample_projection
from eugen_nerf.layers.factored import Factored
from eugen_nerf.layers.mlp import EUGenConfig, EUGenMLP
from eugen_nerf.layers.polynomial import evaluate_polynomial, fit_activation_polynomial

__all__ = [
    "FEATURE_MAPS",
    "SAMPLERS",
    "DistillReport",
    "EUGenConfig",
    "EUGenLinear",
    "EUGenMLP",
    "Factored",
    "NonFiniteInputError",
    "distill_linear",
    "fit_linear",
    "evaluate_polynomial",
    "fit_activation_polynomial",
    "sample_projection",
]
