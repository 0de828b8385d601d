"""`eugen-mipnerf360`: mip-NeRF 360 from nerfstudio parts, with EUGen layers in the NeRF MLP and the
proposal MLPs; `layer="dense"` is its dense twin.

mip-NeRF 360 = integrated positional encoding of conical frustums, the L2 scene contraction
(`SceneContraction`, order None: the scene beyond the unit ball is squeezed into radius 2), two
proposal levels (small density-only MLPs that resample each ray, trained by the interlevel loss),
the distortion loss, and one large NeRF MLP (8x1024 with a skip at 4 in the paper). The parts shared
with eugen-zipnerf are in `eugen_nerf.nerf.methods.proposal_base`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nerfstudio.field_components.encodings import NeRFEncoding
from nerfstudio.field_components.spatial_distortions import SpatialDistortion
from nerfstudio.model_components.ray_samplers import LinearDisparitySampler, Sampler
from nerfstudio.model_components.scene_colliders import NearFarCollider

from eugen_nerf.errors import check_flag_choice
from eugen_nerf.nerf.components.encodings import BasisIntegratedEncoding, IntegratedEncoding, icosahedron_basis
from eugen_nerf.nerf.methods.proposal_base import ProposalNeRFModel, ProposalNeRFModelConfig


@dataclass
class EUGenMipNeRF360ModelConfig(ProposalNeRFModelConfig):
    """mip-NeRF 360 (paper scale by default) with the layer flags of every method here."""

    _target: type = field(default_factory=lambda: EUGenMipNeRF360Model)
    eugen_base_layers: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7)
    """Indices of the NeRF MLP's base layers that become EUGen layers (0 = the first, fed by the encoding)."""
    eugen_head_layers: tuple[int, ...] = (0,)
    """Indices of the view-direction head layers that become EUGen layers."""
    base_mlp_layer_width: int = 1024
    """Width of the NeRF MLP (mip-NeRF 360: 1024)."""
    head_mlp_num_layers: int = 1
    """Layers of the view-direction head (mip-NeRF 360: one of 128 after the bottleneck)."""
    position_frequencies: int = 12
    """Frequencies 2^0 .. 2^(L-1) of the integrated position encoding (mip-NeRF 360: 12, max_deg_point)."""
    proposal_frequencies: int = 12
    """Frequencies of the proposal MLPs' integrated position encoding (mip-NeRF 360: the same 12)."""
    position_basis: str = "icosahedron"
    """icosahedron | axes: the directions the integrated encoding projects each Gaussian on: mip-NeRF 360's 21
    directions of a twice-split icosahedron (sin(2^k x), nothing appended), or nerfstudio's 3 axes
    (sin(2 pi 2^k x), the mean appended), for the NeRF and proposal MLPs alike."""
    collider_params: dict[str, float] | None = field(default_factory=lambda: {"near_plane": 0.2, "far_plane": 1000.0})
    """Ray bounds in the normalised scene (mip-NeRF 360: near 0.2; a far bound of 1000 costs no more samples
    under the contraction than the reference's 1e6)."""
    initial_sampling: str = "piecewise"
    """piecewise | disparity: the first proposal level's samples: nerfstudio's, linear up to distance 1 then
    uniform in disparity, or mip-NeRF 360's, uniform in disparity from the near to the far plane."""
    dense_init: str = "he"
    """he | torch: the dense layers' initial weights (mip-NeRF 360: He-uniform weights, zero biases)."""

    def __setstate__(self, state: dict) -> None:
        # A run written before the reference recipe became the default trained on the 3 axes with torch's
        # init, and must render so.
        super().__setstate__({"position_basis": "axes", "dense_init": "torch", **state})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_flag_choice("--pipeline.model.position-basis", self.position_basis, ("axes", "icosahedron"))
        check_flag_choice("--pipeline.model.initial-sampling", self.initial_sampling, ("piecewise", "disparity"))


def integrated_positional_encoding(frequencies: int, contraction: SpatialDistortion,
                                   basis: str = "axes") -> IntegratedEncoding:
    if basis == "icosahedron":
        return IntegratedEncoding(BasisIntegratedEncoding(frequencies, icosahedron_basis()), contraction)
    return IntegratedEncoding(NeRFEncoding(in_dim=3, num_frequencies=frequencies, min_freq_exp=0.0,
                                           max_freq_exp=frequencies - 1.0, include_input=True), contraction)


class EUGenMipNeRF360Model(ProposalNeRFModel):
    """mip-NeRF 360: the NeRF MLP and the proposal MLPs read integrated positional encodings.

    Built by nerfstudio from a `EUGenMipNeRF360ModelConfig`."""

    config: EUGenMipNeRF360ModelConfig

    def field_encoding(self, contraction: SpatialDistortion) -> IntegratedEncoding:
        return integrated_positional_encoding(self.config.position_frequencies, contraction,
                                              self.config.position_basis)

    def populate_modules(self) -> None:
        super().populate_modules()
        if self.config.initial_sampling == "disparity" and isinstance(self.collider, NearFarCollider):
            # nerfstudio moves the near plane to 0 outside training, where disparity 1/0 has no samples to give
            self.collider.reset_near_plane = False

    def initial_sampler(self) -> Sampler | None:
        if self.config.initial_sampling == "disparity":
            return LinearDisparitySampler(single_jitter=True)
        return None

    def proposal_encoding(self, level: int, contraction: SpatialDistortion) -> IntegratedEncoding:
        return integrated_positional_encoding(self.config.proposal_frequencies, contraction,
                                              self.config.position_basis)
