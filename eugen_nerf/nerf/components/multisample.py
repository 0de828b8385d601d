"""Zip-NeRF's multisampling of a conical frustum: six points on a rotated hexagonal pattern whose first
and second moments match the frustum's, each an isotropic Gaussian (Zip-NeRF section 2).

For an interval [t0, t1] of a cone with radius r per unit distance (r = sqrt(pixel area / pi), as
nerfstudio's Gaussian of a frustum), with t_m = (t0 + t1)/2 and t_d = (t1 - t0)/2, point j = 0..5 is at

    t_j = t0 + t_d / (t_d^2 + 3 t_m^2) * (t1^2 + 2 t_m^2 + 3/sqrt(7) (2j/5 - 1) sqrt((t_d^2 - t_m^2)^2 + 4 t_m^4))

along the ray, at angle theta_j = pi/3 * (0, 2, 4, 3, 5, 1)[j] around it and distance r t_j / sqrt(2)
from it; its std is r t_j / sqrt(2) / 2. Training rotates each pattern by a random angle and flips
half of them at random; evaluation rotates every other interval by 30 degrees and flips it, so renders
are deterministic.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from nerfstudio.cameras.rays import Frustums
from torch import Tensor

NUM_MULTISAMPLES = 6
_PATTERN_ANGLES = (0, 2, 4, 3, 5, 1)  # in units of pi/3


def perpendicular_basis(
    directions: Float[Tensor, "*bs 3"],
) -> tuple[Float[Tensor, "*bs 3"], Float[Tensor, "*bs 3"]]:
    """Two unit vectors orthogonal to each direction and to each other."""
    helper = torch.zeros_like(directions)
    use_y = directions[..., 0].abs() > 0.9  # x is nearly parallel: cross with y instead
    helper[..., 0] = (~use_y).to(directions.dtype)
    helper[..., 1] = use_y.to(directions.dtype)
    first = torch.nn.functional.normalize(torch.linalg.cross(directions, helper), dim=-1)
    second = torch.nn.functional.normalize(torch.linalg.cross(directions, first), dim=-1)
    return first, second


def multisample_frustums(
    frustums: Frustums, randomize: bool
) -> tuple[Float[Tensor, "*bs 6 3"], Float[Tensor, "*bs 6"]]:
    """Frustums (*batch) -> multisample means (*batch, 6, 3) and isotropic stds (*batch, 6)."""
    t0, t1 = frustums.starts, frustums.ends  # (*batch, 1)
    radius = torch.sqrt(frustums.pixel_area / math.pi)
    t_mid, t_half = (t0 + t1) / 2, (t1 - t0) / 2
    j = torch.arange(NUM_MULTISAMPLES, device=t0.device, dtype=t0.dtype)
    spread = torch.sqrt((t_half**2 - t_mid**2) ** 2 + 4 * t_mid**4)
    t = t0 + t_half / (t_half**2 + 3 * t_mid**2) * (t1**2 + 2 * t_mid**2 + 3 / math.sqrt(7) * (2 * j / 5 - 1) * spread)
    angles = (math.pi / 3) * torch.tensor(_PATTERN_ANGLES, device=t0.device, dtype=t0.dtype).expand(t.shape)
    if randomize:
        flip = torch.rand_like(t0) > 0.5
        angles = angles + 2 * math.pi * torch.rand_like(t0)
    else:
        flip = (torch.arange(t.shape[-2], device=t.device) % 2 == 1)[:, None].expand(t0.shape)
        angles = torch.where(flip, angles + math.pi / 6, angles)
    angles = torch.where(flip, 5 * math.pi / 3 - angles, angles)
    offset = radius * t / math.sqrt(2)  # distance of each point from the ray
    first, second = perpendicular_basis(frustums.directions)
    means = (frustums.origins[..., None, :] + t[..., None] * frustums.directions[..., None, :]
             + (offset * torch.cos(angles))[..., None] * first[..., None, :]
             + (offset * torch.sin(angles))[..., None] * second[..., None, :])
    return means, offset / 2
