"""Zip-NeRF's ray distance and its anti-aliased interlevel loss.

Power-transformed distance (Zip-NeRF section 3): samples and losses live in a normalised distance
s = g(t), with g(x) = P(2x, -1.5) and P(x, lam) = |lam - 1| / lam * ((x / |lam - 1| + 1)^lam - 1):
linear near the camera (P'(0) = 1), like an inverse beyond it, bounded (P(inf, -1.5) = 5/3). nerfstudio
samplers and losses already work in a `spacing_fn` distance, so it is a `SpacedSampler`.

Anti-aliased interlevel loss (section 3): mip-NeRF 360's loss compares step functions on different
intervals, which is discontinuous in the sample distances (z-aliasing). Zip-NeRF blurs the NeRF's
(stopped-gradient) weight density with a box of half-width r (0.03 for the first proposal level,
0.003 for the second) into a piecewise-linear function, integrates it onto each proposal level's
intervals, and penalises proposal weights w that fall below that resampled mass m:
sum max(0, m - w)^2 / (w + eps).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from nerfstudio.cameras.rays import RaySamples
from nerfstudio.model_components.losses import ray_samples_to_sdist
from nerfstudio.model_components.ray_samplers import SpacedSampler
from torch import Tensor

POWER_LAMBDA = -1.5


def power_transform(x: Float[Tensor, "*bs"], lam: float = POWER_LAMBDA) -> Float[Tensor, "*bs"]:
    shift = abs(lam - 1)
    return shift / lam * ((x / shift + 1) ** lam - 1)


def inverse_power_transform(y: Float[Tensor, "*bs"], lam: float = POWER_LAMBDA) -> Float[Tensor, "*bs"]:
    shift = abs(lam - 1)
    return shift * ((lam * y / shift + 1) ** (1 / lam) - 1)


def zip_distance(t: Float[Tensor, "*bs"]) -> Float[Tensor, "*bs"]:
    """Zip-NeRF's g(t) = P(2t, -1.5)."""
    return power_transform(2 * t)


def zip_distance_inverse(s: Float[Tensor, "*bs"]) -> Float[Tensor, "*bs"]:
    return inverse_power_transform(s) / 2


class PowerTransformSampler(SpacedSampler):
    """Samples uniform in Zip-NeRF's power-transformed distance between each ray's near and far.

    Args:
        num_samples: samples per ray; None: given at each call.
        train_stratified: jitter the samples within their intervals in training.
        single_jitter: one jitter per ray rather than per sample.
    """

    def __init__(
        self, num_samples: int | None = None, train_stratified: bool = True, single_jitter: bool = True
    ) -> None:
        super().__init__(spacing_fn=zip_distance, spacing_fn_inv=zip_distance_inverse, num_samples=num_samples,
                         train_stratified=train_stratified, single_jitter=single_jitter)


def blur_step_function(
    edges: Float[Tensor, "*bs n_plus_1"], densities: Float[Tensor, "*bs n"], radius: float
) -> tuple[Float[Tensor, "*bs knots"], Float[Tensor, "*bs knots"]]:
    """A step function (density `densities[i]` on [edges[i], edges[i+1]], zero outside) convolved with
    a normalised box of half-width `radius`: a piecewise-linear function, returned as sorted knots
    (*batch, 2n+2) and its values there.

    The blurred function's slope is (f(x + r) - f(x - r)) / 2r, so each jump d of the step function at
    an edge c adds d / 2r to the slope at c - r and takes it away at c + r."""
    padded = torch.nn.functional.pad(densities, (1, 1))
    jumps = padded[..., 1:] - padded[..., :-1]  # at each edge
    knots = torch.cat([edges - radius, edges + radius], dim=-1)
    slope_changes = torch.cat([jumps, -jumps], dim=-1) / (2 * radius)
    knots, order = torch.sort(knots, dim=-1)
    slopes = torch.cumsum(torch.gather(slope_changes, -1, order), dim=-1)  # slope right of each knot
    values = torch.cumsum(slopes[..., :-1] * torch.diff(knots, dim=-1), dim=-1)
    values = torch.cat([torch.zeros_like(values[..., :1]), values], dim=-1)
    return knots, values.clamp(min=0)  # rounding can dip a hair below zero


def integrate_piecewise_linear(
    knots: Float[Tensor, "*bs knots"], values: Float[Tensor, "*bs knots"], queries: Float[Tensor, "*bs q"]
) -> Float[Tensor, "*bs q"]:
    """The integral from -inf to each query (*batch, q) of the piecewise-linear function through
    (knots, values) (zero outside the knots); queries sorted."""
    widths = torch.diff(knots, dim=-1)
    areas = 0.5 * (values[..., 1:] + values[..., :-1]) * widths
    cumulative = torch.cat([torch.zeros_like(areas[..., :1]), torch.cumsum(areas, dim=-1)], dim=-1)
    index = torch.searchsorted(knots.contiguous(), queries.contiguous(), right=True) - 1
    index = index.clamp(0, widths.shape[-1] - 1)
    start = torch.gather(knots, -1, index)
    width = torch.gather(widths, -1, index)
    dx = (queries - start).clamp(min=0)
    dx = torch.minimum(dx, width)
    value = torch.gather(values, -1, index)
    slope = (torch.gather(values, -1, index + 1) - value) / width.clamp(min=1e-12)
    return torch.gather(cumulative, -1, index) + value * dx + 0.5 * slope * dx.square()


def antialiased_interlevel_loss(
    weights_list: list[Float[Tensor, "*rays samples 1"]],
    samples_list: list[RaySamples],
    blur_radii: Sequence[float],
    eps: float = 1e-7,
) -> Float[Tensor, ""]:
    """Zip-NeRF's interlevel loss; the last entries of the lists are the NeRF's, the others proposals'."""
    nerf_edges = ray_samples_to_sdist(samples_list[-1]).detach()
    nerf_weights = weights_list[-1][..., 0].detach()
    density = nerf_weights / torch.diff(nerf_edges, dim=-1).clamp(min=eps)
    loss = nerf_weights.new_zeros(())
    for weights, samples, radius in zip(weights_list[:-1], samples_list[:-1], blur_radii, strict=True):
        knots, values = blur_step_function(nerf_edges, density, radius)
        proposal_edges = ray_samples_to_sdist(samples).detach()
        resampled = torch.diff(integrate_piecewise_linear(knots, values, proposal_edges), dim=-1)
        proposal_weights = weights[..., 0]
        loss = loss + ((resampled - proposal_weights).clamp(min=0).square() / (proposal_weights + eps)).mean()
    return loss
