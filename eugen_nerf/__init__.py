"""eugen-nerf: neural 3D reconstruction with EUGen random-feature layers."""

from eugen_nerf.layers import (
    DistillReport,
    EUGenConfig,
    EUGenLinear,
    EUGenMLP,
    Factored,
    distill_linear,
    evaluate_polynomial,
    fit_activation_polynomial,
)

__version__ = "0.1.0"

__all__ = [
    "DistillReport",
    "EUGenConfig",
    "EUGenLinear",
    "EUGenMLP",
    "Factored",
    "distill_linear",
    "evaluate_polynomial",
    "fit_activation_polynomial",
]
