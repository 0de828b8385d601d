"""Encodings of whole ray samples (conical frustums) rather than of points.

mip-NeRF 360 encodes each sample's frustum as a Gaussian (integrated positional encoding); Zip-NeRF
as six multisamples looked up in a hash grid (`eugen_nerf.nerf.methods.zipnerf`). Fields and proposal MLPs
take either through the one `SampleEncoding` interface.
"""

from __future__ import annotations

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
