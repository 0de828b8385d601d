"""Polynomial stand-ins for non-polynomial activations (for `EUGenLinear.from_dense`)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from eugen_nerf.layers.eugen import check_positive_int

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "softplus": torch.nn.functional.softplus,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
}


def fit_activation_polynomial(
    activation: str | Callable[[torch.Tensor], torch.Tensor],
    degree: int,
    input_range: tuple[float, float] = (-3.0, 3.0),
    num_points: int = 2049,
) -> list[float]:
    """Least-squares coefficients a_0..a_degree of a polynomial fit to `activation` on `input_range`.

    Fitted in the Chebyshev basis on Chebyshev nodes (well conditioned), returned in the power basis.
    """
    check_positive_int("degree", degree)
    check_positive_int("num_points", num_points)
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)} or a callable; got {activation!r}")
        activation = ACTIVATIONS[activation]
    low, high = (float(v) for v in input_range)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"input_range must be two finite numbers, low < high; got {input_range!r}")
    nodes = np.cos(np.pi * (np.arange(num_points) + 0.5) / num_points)
    z = 0.5 * (high - low) * nodes + 0.5 * (high + low)
    values = activation(torch.as_tensor(z, dtype=torch.float64)).numpy()
    fit = np.polynomial.Chebyshev.fit(z, values, degree, domain=[low, high])
    return [float(c) for c in fit.convert(kind=np.polynomial.Polynomial, domain=[-1, 1], window=[-1, 1]).coef]


def evaluate_polynomial(coeffs: list[float], z: torch.Tensor) -> torch.Tensor:
    """sum_i coeffs[i] * z**i (Horner)."""
    out = torch.full_like(z, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        out = out * z + c
    return out
