"""`eugen-zipnerf`: Zip-NeRF in torch (tiny-cuda-nn's hash grid where it can), with EUGen layers in the
NeRF MLP and the proposal MLPs; `layer="dense"` is its dense twin.

Zip-NeRF = mip-NeRF 360's frame (L2 contraction, two proposal levels, distortion loss; shared in
`proposal_base`) with Instant-NGP's hash-grid features made scale-aware:
- each sample's conical frustum becomes six isotropic Gaussians (`multisample`), contracted with
  their std scaled by the contraction's Jacobian (`contraction.L2SceneContraction`);
- each grid level's features are downweighted by the Gaussians' size against the level's cells and
  averaged over the six (`hashgrid`);
- samples are spaced in a power-transformed distance, the interlevel loss is the anti-aliased one,
  and the grids get Zip-NeRF's normalised weight decay (`zipnerf_losses`, `hashgrid`).

The NeRF MLP, Zip-NeRF's sizes: grid features -> 64 (ReLU) -> the linear 256-wide bottleneck -> density;
[view direction, bottleneck] -> view-dependent head -> RGB. By default an EUGen layer replaces the
second head layer; the first head layer and the bottleneck can be EUGen too (`eugen_head_layers`,
`eugen_base_layers`). The first base layer reads a few dozen grid features and stays dense. The head
reads the raw direction, not Zip-NeRF's 4-frequency encoding (`direction_frequencies`); an EUGen first
head layer takes it through a dense term (`eugen_linear_direction`). Why these defaults, and every
deviation from the reference: docs/methods/eugen-zipnerf.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from nerfstudio.cameras.rays import RaySamples
from nerfstudio.field_components.spatial_distortions import SpatialDistortion
from torch import Tensor

from eugen_nerf.errors import InputError
from eugen_nerf.nerf.components.contraction import L2SceneContraction
from eugen_nerf.nerf.components.encodings import SampleEncoding
from eugen_nerf.nerf.components.hashgrid import ScaleAwareHashGrid, check_backend_name
from eugen_nerf.nerf.components.multisample import multisample_frustums
from eugen_nerf.nerf.components.zipnerf_losses import PowerTransformSampler, antialiased_interlevel_loss
from eugen_nerf.nerf.methods.proposal_base import ProposalNeRFModel, ProposalNeRFModelConfig

CONTRACTED_RADIUS = 2.0  # the L2 contraction maps the whole scene into the ball of radius 2


class MultisampledGridEncoding(SampleEncoding):
    """Frustums -> six multisamples -> contraction -> scale-aware hash grid, averaged over the six.

    Args:
        grid: the scale-aware hash grid over [0, 1]^3, onto which the contracted ball of radius 2 is mapped.
        contraction: the L2 contraction of the multisamples' means (*batch, 6, 3) and stds (*batch, 6).
    """

    def __init__(self, grid: ScaleAwareHashGrid, contraction: L2SceneContraction) -> None:
        super().__init__()
        self.grid = grid
        self.contraction = contraction

    def get_out_dim(self) -> int:
        return self.grid.get_out_dim()

    def forward(self, ray_samples: RaySamples) -> Float[Tensor, "*bs encoding"]:
        means, stds = multisample_frustums(ray_samples.frustums, randomize=self.training)
        means, stds = self.contraction.contract_isotropic(means, stds)
        # the contracted ball [-2, 2]^3 onto the grid's [0, 1]^3 (stds scale alike)
        scale = 2 * CONTRACTED_RADIUS
        return self.grid((means + CONTRACTED_RADIUS) / scale, stds / scale)


@dataclass
class EUGenZipNeRFModelConfig(ProposalNeRFModelConfig):
    """Zip-NeRF (paper scale by default) with the layer flags of every method here."""

    _target: type = field(default_factory=lambda: EUGenZipNeRFModel)
    collider_params: dict[str, float] | None = field(default_factory=lambda: {"near_plane": 0.2, "far_plane": 1000.0})
    """Ray bounds in the normalised scene (Zip-NeRF's 360 scenes: near plane 0.2)."""
    base_mlp_num_layers: int = 2
    """Layers of the density MLP: grid features -> width -> bottleneck."""
    base_mlp_layer_width: int = 64
    """Hidden width of the density MLP (Zip-NeRF: 64)."""
    bottleneck_width: int = 256
    """Width of the bottleneck that the density and the view head read (Zip-NeRF: 256)."""
    bottleneck_relu: bool = False
    """Zip-NeRF's bottleneck is linear (no ReLU after it)."""
    skip_connections: tuple[int, ...] = ()
    """Density-MLP layers that see the grid features again (Zip-NeRF: none)."""
    eugen_base_layers: tuple[int, ...] = ()
    """Density-MLP layers that become EUGen layers (1 = the bottleneck; none by default)."""
    head_mlp_num_layers: int = 2
    """Layers of the view-dependent head (Zip-NeRF: 2 x 256)."""
    head_mlp_layer_width: int = 256
    """Width of the view-dependent head."""
    eugen_head_layers: tuple[int, ...] = (1,)
    """View-dependent head layers that become EUGen layers (the second by default)."""
    eugen_linear_direction: bool = True
    """An EUGen first head layer takes the direction through a dense term, y = A f(bottleneck) + B d + c."""
    position_frequencies: int = 0
    """Unused: eugen-zipnerf encodes positions with the hash grid."""
    direction_frequencies: int = 0
    """Frequencies of the view-direction encoding; 0 = the raw unit direction (Zip-NeRF: 4)."""
    hash_grid: str = "auto"
    """auto | tcnn | torch: tiny-cuda-nn's hash grid when it imports and CUDA is there (auto), else torch."""
    grid_num_levels: int = 10
    """Levels of the NeRF MLP's hash grid (Zip-NeRF: 10, resolution doubling from 16 to 8192)."""
    grid_features_per_level: int = 4
    """Features per level of the NeRF MLP's grid."""
    grid_min_resolution: int = 16
    """Cells per unit of the coarsest level (over the contracted scene's [-2, 2] cube)."""
    grid_max_resolution: int = 8192
    """Cells per unit of the finest level of the NeRF MLP's grid."""
    grid_log2_hashmap_size: int = 21
    """log2 of the hash table entries per level (Zip-NeRF: 21)."""
    proposal_grid_num_levels: tuple[int, ...] = (6, 8)
    """Levels of each proposal level's grid (Zip-NeRF: to 512 and to 2048, doubling from 16)."""
    proposal_grid_max_resolutions: tuple[int, ...] = (512, 2048)
    """Finest resolution of each proposal level's grid."""
    proposal_grid_features_per_level: int = 1
    """Features per level of the proposal grids (Zip-NeRF: 1)."""
    proposal_mlp_num_layers: int = 1
    """Hidden layers of each proposal MLP (Zip-NeRF: one of 64); a dense output layer follows."""
    proposal_mlp_layer_width: int = 64
    """Width of the proposal MLPs."""
    eugen_proposal_layers: tuple[int, ...] = ()
    """Proposal-MLP hidden layers that become EUGen layers (none: 1x64 on 6-8 grid features is cheaper dense)."""
    interlevel_blur_radii: tuple[float, ...] = (0.03, 0.003)
    """Half-width of each proposal level's box blur in the interlevel loss (Zip-NeRF: 0.03, 0.003)."""
    interlevel_loss_mult: float = 0.01
    """Weight of the anti-aliased interlevel loss per proposal level (Zip-NeRF: 0.01)."""
    hash_decay_mult: float = 0.05
    """Weight of the grids' normalised weight decay, sum over levels of the mean squared stored value
    (camp_zipnerf: 0.1 on half the mean square)."""
    grid_feature_scale: float = 10.0
    """The grids' stored values are multiplied by this and start this many times smaller, so Adam moves the
    features this many times faster than the MLPs (camp_zipnerf's precondition_scaling: 10)."""
    dense_init: str = "he"
    """torch | he: the dense layers' initial weights (Zip-NeRF: He-uniform weights, zero biases)."""

    def __setstate__(self, state: dict) -> None:
        # A run written before the grid's feature scale existed trained without it, and must render so.
        super().__setstate__({"grid_feature_scale": 1.0, "dense_init": "torch", "interlevel_loss_mult": 1.0,
                              "hash_decay_mult": 0.1, **state})

    def __post_init__(self) -> None:
        super().__post_init__()
        levels = len(self.num_proposal_samples_per_ray)
        for name in ("proposal_grid_num_levels", "proposal_grid_max_resolutions", "interlevel_blur_radii"):
            if len(getattr(self, name)) != levels:
                flag = "--pipeline.model." + name.replace("_", "-")
                raise InputError(f"{flag} has {len(getattr(self, name))} entries for {levels} proposal levels "
                                 f"(--pipeline.model.num-proposal-samples-per-ray)")
        check_backend_name(self.hash_grid)  # whether tiny-cuda-nn is usable is asked when the grid is built


class EUGenZipNeRFModel(ProposalNeRFModel):
    """Zip-NeRF: multisampled scale-aware hash grids, power-spaced samples, anti-aliased interlevel loss, grid decay.

    Built by nerfstudio from a `EUGenZipNeRFModelConfig`."""

    config: EUGenZipNeRFModelConfig

    def field_encoding(self, contraction: SpatialDistortion) -> MultisampledGridEncoding:
        config = self.config
        return self.grid_encoding(config.grid_num_levels, config.grid_features_per_level,
                                  config.grid_max_resolution, contraction)

    def proposal_encoding(self, level: int, contraction: SpatialDistortion) -> MultisampledGridEncoding:
        config = self.config
        return self.grid_encoding(config.proposal_grid_num_levels[level], config.proposal_grid_features_per_level,
                                  config.proposal_grid_max_resolutions[level], contraction)

    def grid_encoding(self, num_levels: int, features_per_level: int, max_resolution: int,
                      contraction: SpatialDistortion) -> MultisampledGridEncoding:
        """A multisampled scale-aware grid; the NeRF's and the proposals' differ only in these sizes."""
        config = self.config
        grid = ScaleAwareHashGrid(num_levels, features_per_level, config.grid_min_resolution, max_resolution,
                                  config.grid_log2_hashmap_size, config.hash_grid, config.grid_feature_scale)
        assert isinstance(contraction, L2SceneContraction)
        return MultisampledGridEncoding(grid, contraction)

    def initial_sampler(self) -> PowerTransformSampler:
        return PowerTransformSampler()

    def interlevel_loss(self, weights_list: list[Tensor], samples_list: list[RaySamples]) -> Tensor:
        return antialiased_interlevel_loss(weights_list, samples_list, self.config.interlevel_blur_radii)

    def regularization_losses(self) -> dict[str, Tensor]:
        grids = [self.field.position_encoding.grid, *(net.encoding.grid for net in self.proposal_networks)]
        return {"hash_decay_loss": self.config.hash_decay_mult * torch.stack([g.weight_decay() for g in grids]).sum()}
