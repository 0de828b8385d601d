"""mip-NeRF 360's L2 scene contraction with its Jacobian in closed form.

nerfstudio's `SceneContraction` maps a Gaussian's covariance through the contraction's Jacobian,
which it computes by automatic differentiation (`vmap(jacrev(...))`) for every sample: on a CPU that
was the largest single cost of rendering an eugen-mipnerf360 image, shared by both twins. For
f(x) = (2 - 1/r) x/r (r = |x| > 1) the Jacobian is, with u = x/r and g = 2 - 1/r,

    J = (g/r) I + (1/r^2 - g/r) u u^T        (J = I inside the unit ball).

Zip-NeRF contracts isotropic Gaussians (its multisamples) and keeps them isotropic: the std is scaled
by the cube root of |det J| = (g/r)^2 / r^2 (two tangential directions scaled by g/r, the radial one
by 1/r^2).
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from nerfstudio.field_components.spatial_distortions import SceneContraction
from nerfstudio.utils.math import Gaussians
from torch import Tensor


class L2SceneContraction(SceneContraction):
    """`SceneContraction(order=None)` (same outputs) with the Gaussians' Jacobian in closed form."""

    def __init__(self) -> None:
        super().__init__(order=None)

    def contract_isotropic(
        self, means: Float[Tensor, "*bs 3"], stds: Float[Tensor, "*bs"]
    ) -> tuple[Float[Tensor, "*bs 3"], Float[Tensor, "*bs"]]:
        """Means (*batch, 3) and stds (*batch) of isotropic Gaussians -> contracted means and stds."""
        radius = means.norm(dim=-1, keepdim=True)
        safe = radius.clamp(min=1.0)
        scale = 2.0 - 1.0 / safe
        contracted = torch.where(radius >= 1, scale * means / safe, means)
        cube_root_det = ((scale / safe).square() / safe.square()).pow(1.0 / 3.0)  # 1 inside the ball
        return contracted, stds * cube_root_det[..., 0]

    def forward(self, positions):
        if not isinstance(positions, Gaussians):
            return super().forward(positions)
        mean = positions.mean
        radius = mean.norm(dim=-1, keepdim=True)
        outside = radius >= 1
        safe = radius.clamp(min=1.0)
        unit = mean / safe
        scale = 2.0 - 1.0 / safe
        contracted = torch.where(outside, scale * unit, mean)
        # J = a I + b u u^T, so J S J^T = a^2 S + a b (u u^T S + S u u^T) + b^2 (u^T S u) u u^T
        a = (scale / safe)[..., None]
        b = (1.0 / safe.square() - scale / safe)[..., None]
        cov = positions.cov
        u = unit[..., :, None]
        cov_u = cov @ u
        outer = u @ u.transpose(-1, -2)
        mapped = (a.square() * cov + a * b * (u @ cov_u.transpose(-1, -2) + cov_u @ u.transpose(-1, -2))
                  + b.square() * (u.transpose(-1, -2) @ cov_u) * outer)
        return Gaussians(mean=contracted, cov=torch.where(outside[..., None], mapped, cov))
