"""Encodings of whole ray samples (conical frustums) rather than of points.

mip-NeRF 360 encodes each sample's frustum as a Gaussian (integrated positional encoding); Zip-NeRF
as six multisamples looked up in a hash grid (`eugen_nerf.nerf.methods.zipnerf`). Fields and proposal MLPs
take either through the one `SampleEncoding` interface.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from nerfstudio.cameras.rays import RaySamples
from nerfstudio.field_components.encodings import Encoding
from nerfstudio.field_components.spatial_distortions import SpatialDistortion
from torch import Tensor, nn


class SampleEncoding(nn.Module):
    """Encodes RaySamples (*batch) -> (*batch, get_out_dim())."""

    def get_out_dim(self) -> int:
        raise NotImplementedError

    def forward(self, ray_samples: RaySamples) -> Float[Tensor, "*bs encoding"]:
        raise NotImplementedError


class IntegratedEncoding(SampleEncoding):
    """mip-NeRF's integrated positional encoding of each sample's conical frustum (as a Gaussian),
    after the scene contraction (which maps the Gaussian through its linearisation).

    Args:
        encoding: a point encoding that takes covariances (`encoding(means, covs=...)`), e.g. `NeRFEncoding`.
        contraction: maps each Gaussian (mean [*bs, 3], cov [*bs, 3, 3]) before encoding; None: no contraction.
    """

    def __init__(self, encoding: Encoding, contraction: SpatialDistortion | None) -> None:
        super().__init__()
        self.encoding = encoding
        self.contraction = contraction

    def get_out_dim(self) -> int:
        return self.encoding.get_out_dim()

    def forward(self, ray_samples: RaySamples) -> Float[Tensor, "*bs encoding"]:
        gaussians = ray_samples.frustums.get_gaussian_blob()
        if self.contraction is not None:
            gaussians = self.contraction(gaussians)
        return self.encoding(gaussians.mean, covs=gaussians.cov)


def icosahedron_basis(subdivisions: int = 2) -> Float[Tensor, "3 directions"]:
    """Unit directions spread over the sphere: the vertices of an icosahedron whose faces are each split
    into subdivisions^2 triangles, pushed onto the sphere, one of each antipodal pair (mip-NeRF 360's
    position basis: 21 directions for 2 subdivisions)."""
    golden = (1 + 5**0.5) / 2
    corners = torch.tensor([(-1, 0, golden), (1, 0, golden), (-1, 0, -golden), (1, 0, -golden), (0, golden, 1),
                            (0, golden, -1), (0, -golden, 1), (0, -golden, -1), (golden, 1, 0), (-golden, 1, 0),
                            (golden, -1, 0), (-golden, -1, 0)], dtype=torch.float64)
    faces = [(0, 4, 1), (0, 9, 4), (9, 5, 4), (4, 5, 8), (4, 8, 1), (8, 10, 1), (8, 3, 10), (5, 3, 8), (5, 2, 3),
             (2, 7, 3), (7, 10, 3), (7, 6, 10), (7, 11, 6), (11, 0, 6), (0, 1, 6), (6, 1, 10), (9, 0, 11),
             (9, 11, 2), (9, 2, 5), (7, 2, 11)]
    steps = subdivisions
    weights = torch.tensor([(i, j, steps - i - j) for i in range(steps + 1) for j in range(steps + 1 - i)],
                           dtype=torch.float64) / steps
    points = torch.cat([weights @ corners[list(face)] for face in faces])
    points = points / points.norm(dim=-1, keepdim=True)
    directions: list[Tensor] = []
    for point in points:  # each direction once, and not its antipode
        if all(min(float((point - d).norm()), float((point + d).norm())) > 1e-6 for d in directions):
            directions.append(point)
    return torch.stack(directions).T.float()


class BasisIntegratedEncoding(nn.Module):
    """mip-NeRF 360's integrated positional encoding: each Gaussian (mean, covariance) projected on a set of
    directions (`basis`), then sin and cos of 2^k times each projection (k = 0 .. frequencies - 1), each
    damped by exp(-2^(2k) var / 2), the expected value of sin over the Gaussian; no input appended.

    Args:
        frequencies: number of octaves k.
        basis: (3, D) unit directions to project on (`icosahedron_basis()`: mip-NeRF 360's 21).
    """

    def __init__(self, frequencies: int, basis: Float[Tensor, "3 directions"]) -> None:
        super().__init__()
        self.frequencies = frequencies
        self.register_buffer("basis", basis, persistent=False)
        self.register_buffer("scales", 2.0 ** torch.arange(frequencies, dtype=torch.float32), persistent=False)

    def get_out_dim(self) -> int:
        return 2 * self.frequencies * self.basis.shape[1]

    def forward(
        self, in_tensor: Float[Tensor, "*bs 3"], covs: Float[Tensor, "*bs 3 3"]
    ) -> Float[Tensor, "*bs encoding"]:
        means = in_tensor @ self.basis  # (*bs, D)
        variances = ((covs @ self.basis) * self.basis).sum(dim=-2)  # diag(B^T C B)
        scaled = (means[..., None, :] * self.scales[:, None]).flatten(-2)  # (*bs, K * D)
        damping = torch.exp(-0.5 * (variances[..., None, :] * self.scales[:, None] ** 2).flatten(-2))
        return torch.cat([torch.sin(scaled) * damping, torch.cos(scaled) * damping], dim=-1)
