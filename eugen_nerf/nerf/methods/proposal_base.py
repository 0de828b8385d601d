"""What eugen-mipnerf360 and eugen-zipnerf share: a NeRF MLP fed by an encoding of whole frustums,
the L2 scene contraction, proposal MLPs that resample each ray (their weights annealed over the first
steps, mip-NeRF 360 eq. 18), the density bias -1, the interlevel and distortion losses,
nerfstudio's renderers and metrics. Each method supplies its encodings (and may change the initial
sampler, the interlevel loss and add regularisers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from nerfstudio.cameras.rays import RayBundle, RaySamples
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.field_components.spatial_distortions import SpatialDistortion
from nerfstudio.model_components.losses import (
    MSELoss,
    distortion_loss,
    interlevel_loss,
    scale_gradients_by_distance_squared,
)
from nerfstudio.model_components.ray_samplers import Sampler
from nerfstudio.model_components.renderers import AccumulationRenderer, DepthRenderer, RGBRenderer
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.utils import colormaps
from torchmetrics.functional import structural_similarity_index_measure
from torchmetrics.image import PeakSignalNoiseRatio

from eugen_nerf.errors import InputError, check_flag_choice
from eugen_nerf.nerf.components.contraction import L2SceneContraction
from eugen_nerf.nerf.components.encodings import SampleEncoding
from eugen_nerf.nerf.components.proposal_sampler import (
    PROPOSAL_DENSITY_ACTIVATIONS,
    FrustumProposalSampler,
    ProposalDensityField,
)
from eugen_nerf.nerf.engine.checkpoints import checked_state
from eugen_nerf.nerf.engine.finite import FiniteRenders
from eugen_nerf.nerf.engine.metrics import OptionalLPIPS, drop_unavailable
from eugen_nerf.nerf.fields.field_flags import ChecksModelTarget, EUGenFieldFlags, initialise_dense_layers


@dataclass
class ProposalNeRFModelConfig(ChecksModelTarget, ModelConfig, EUGenFieldFlags):
    """Flags of the proposal-sampled, contracted methods (eugen-mipnerf360, eugen-zipnerf)."""

    collider_params: dict[str, float] | None = field(default_factory=lambda: {"near_plane": 0.05, "far_plane": 1000.0})
    """Ray bounds in the normalised scene (nerfstudio-data scales poses into [-1, 1])."""
    density_bias: float = -1.0
    """Added to the NeRF MLP's raw density before its softplus (mip-NeRF 360 and Zip-NeRF: -1)."""
    proposal_mlp_num_layers: int = 4
    """Hidden layers of each proposal MLP; a dense output layer follows."""
    proposal_mlp_layer_width: int = 256
    """Width of the proposal MLPs."""
    eugen_proposal_layers: tuple[int, ...] = (1, 2, 3)
    """Indices of the proposal MLPs' hidden layers that become EUGen layers."""
    num_proposal_samples_per_ray: tuple[int, ...] = (64, 64)
    """Samples per ray at each proposal level (its length is the number of proposal levels)."""
    num_nerf_samples_per_ray: int = 32
    """Samples per ray seen by the NeRF MLP."""
    interlevel_loss_mult: float = 1.0
    """Weight of the interlevel (proposal) loss."""
    distortion_loss_mult: float = 0.01
    """Weight of the distortion loss (mip-NeRF 360 and Zip-NeRF: 0.01)."""
    use_proposal_weight_anneal: bool = True
    """Anneal the proposal weights' exponent from 0 to 1 in the first steps (mip-NeRF 360 eq. 18)."""
    proposal_weights_anneal_slope: float = 10.0
    """Slope b of the schedule b x / ((b - 1) x + 1), x the fraction of the annealing steps done."""
    proposal_weights_anneal_max_num_iters: int = 1000
    """Steps over which the exponent reaches 1 (nerfacto's 1000; mip-NeRF 360 anneals over the whole run)."""
    proposal_dilation_multiplier: float = 0.0
    """Before each resampling, spread the proposal histogram by bias + multiplier / (samples per ray so far)
    along the sampling coordinate in [0, 1] (mip-NeRF 360: 0.5; 0 with a bias of 0: no dilation)."""
    proposal_dilation_bias: float = 0.0
    """The dilation's constant part (mip-NeRF 360: 0.0025)."""
    proposal_density_activation: str = "exp"
    """exp | softplus: the proposal MLPs' density, exp(raw - 1) (nerfstudio's nerfacto) or softplus(raw - 1)
    (mip-NeRF 360's)."""
    use_gradient_scaling: bool = False
    """Scale the NeRF field's gradients by the squared ray distance, as nerfacto's flag of this name."""
    background_color: str = "last_sample"
    """last_sample | black | white | random: colour behind the contracted scene's last sample."""

    def __post_init__(self) -> None:
        self.check_field_flags()
        self.proposal_layer_kinds()
        check_flag_choice("--pipeline.model.proposal-density-activation", self.proposal_density_activation,
                          PROPOSAL_DENSITY_ACTIVATIONS)
        for name in ("proposal_dilation_multiplier", "proposal_dilation_bias"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise InputError(f"--pipeline.model.{name.replace('_', '-')} must be a finite number, 0 or more, "
                                 f"got {value}")
        if self.proposal_weights_anneal_slope <= 0:
            raise InputError("--pipeline.model.proposal-weights-anneal-slope must be above 0, got "
                             f"{self.proposal_weights_anneal_slope}")
        if self.proposal_weights_anneal_max_num_iters < 1:
            raise InputError("--pipeline.model.proposal-weights-anneal-max-num-iters must be 1 or more, got "
                             f"{self.proposal_weights_anneal_max_num_iters}")

    def __setstate__(self, state: dict) -> None:
        # PyYAML fills fields missing from a config.yml with the class defaults: a run written before
        # these two flags existed loads with what it trained with, not the current defaults.
        self.__dict__.update({"density_bias": 0.0, "use_proposal_weight_anneal": False, **state})

    def proposal_layer_kinds(self) -> list[str]:
        return self.layer_kinds(self.proposal_mlp_num_layers, self.eugen_proposal_layers, "eugen-proposal-layers")


class ProposalNeRFModel(FiniteRenders, Model):
    """The proposal-sampled, contracted model; a method supplies `field_encoding` and `proposal_encoding`.

    Built by nerfstudio from a `ProposalNeRFModelConfig`."""

    config: ProposalNeRFModelConfig

    # --- what a method supplies -------------------------------------------------------------------
    def field_encoding(self, contraction: SpatialDistortion) -> SampleEncoding:
        raise NotImplementedError

    def proposal_encoding(self, level: int, contraction: SpatialDistortion) -> SampleEncoding:
        raise NotImplementedError

    def initial_sampler(self) -> Sampler | None:
        """The first proposal level's sampler; None: mip-NeRF 360's linear-then-disparity spacing."""
        return None

    def interlevel_loss(self, weights_list: list[torch.Tensor], samples_list: list[RaySamples]) -> torch.Tensor:
        return interlevel_loss(weights_list, samples_list)

    def regularization_losses(self) -> dict[str, torch.Tensor]:
        return {}

    # --- shared -------------------------------------------------------------------------------------
    def populate_modules(self) -> None:
        super().populate_modules()  # the collider
        config = self.config
        config.__post_init__()  # again: a config loaded from config.yml or edited in code skips the constructor
        contraction = L2SceneContraction()  # SceneContraction(order=None), Jacobian in closed form
        self.field = config.make_field(self.field_encoding(contraction))
        self.proposal_networks = torch.nn.ModuleList(
            ProposalDensityField(self.proposal_encoding(level, contraction), config.proposal_layer_kinds(),
                                 config.proposal_mlp_layer_width, config.eugen, config.proposal_density_activation)
            for level in range(len(config.num_proposal_samples_per_ray))
        )
        initialise_dense_layers(self.proposal_networks, config.dense_init)
        self.proposal_sampler = FrustumProposalSampler(
            config.num_proposal_samples_per_ray, config.num_nerf_samples_per_ray, self.initial_sampler(),
            dilation_multiplier=config.proposal_dilation_multiplier, dilation_bias=config.proposal_dilation_bias)
        self.renderer_rgb = RGBRenderer(background_color=config.background_color)
        self.renderer_accumulation = AccumulationRenderer()
        self.renderer_depth = DepthRenderer(method="expected")
        self.rgb_loss = MSELoss()
        self.psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.ssim = structural_similarity_index_measure
        object.__setattr__(self, "lpips", OptionalLPIPS())  # not a submodule: see OptionalLPIPS

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> list[TrainingCallback]:
        if not self.config.use_proposal_weight_anneal:
            return []
        return [TrainingCallback(where_to_run=[TrainingCallbackLocation.BEFORE_TRAIN_ITERATION],
                                 update_every_num_iters=1, func=self.set_proposal_anneal)]

    def set_proposal_anneal(self, step: int) -> None:
        done = min(max(step / self.config.proposal_weights_anneal_max_num_iters, 0.0), 1.0)
        slope = self.config.proposal_weights_anneal_slope
        self.proposal_sampler.set_anneal(slope * done / ((slope - 1) * done + 1))

    def get_param_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        return {"fields": list(self.field.parameters()), "proposal_networks": list(self.proposal_networks.parameters())}

    def get_outputs(self, ray_bundle: RayBundle) -> dict:
        proposals = list(self.proposal_networks)
        samples, weights_list, samples_list = self.proposal_sampler(ray_bundle, density_fns=proposals)
        field_outputs = self.field(samples)
        if self.config.use_gradient_scaling:
            field_outputs = scale_gradients_by_distance_squared(field_outputs, samples)
        weights = samples.get_weights(field_outputs[FieldHeadNames.DENSITY])
        weights_list.append(weights)
        samples_list.append(samples)
        outputs = {
            "rgb": self.renderer_rgb(rgb=field_outputs[FieldHeadNames.RGB], weights=weights),
            "accumulation": self.renderer_accumulation(weights=weights),
            "depth": self.renderer_depth(weights=weights, ray_samples=samples),
        }
        if self.training:
            outputs["weights_list"] = weights_list
            outputs["ray_samples_list"] = samples_list
        else:  # where each proposal level puts the surface (viewer, ns-render); not needed to train
            for level in range(len(proposals)):
                outputs[f"prop_depth_{level}"] = self.renderer_depth(weights=weights_list[level],
                                                                     ray_samples=samples_list[level])
        return outputs

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> dict[str, torch.Tensor]:
        image = batch["image"].to(self.device)
        predicted, target = self.renderer_rgb.blend_background_for_loss_computation(
            pred_image=outputs["rgb"], pred_accumulation=outputs["accumulation"], gt_image=image)
        losses = {"rgb_loss": self.rgb_loss(target, predicted)}
        if self.training:
            losses["interlevel_loss"] = self.config.interlevel_loss_mult * self.interlevel_loss(
                outputs["weights_list"], outputs["ray_samples_list"])
            losses["distortion_loss"] = self.config.distortion_loss_mult * distortion_loss(
                outputs["weights_list"], outputs["ray_samples_list"])
            losses.update(self.regularization_losses())
        return losses

    def get_metrics_dict(self, outputs, batch) -> dict[str, torch.Tensor]:
        image = self.renderer_rgb.blend_background(batch["image"].to(self.device))
        return {"psnr": self.psnr(outputs["rgb"], image)}

    def get_image_metrics_and_images(self, outputs, batch):
        image = self.renderer_rgb.blend_background(batch["image"].to(self.device))
        rgb = outputs["rgb"]
        # [H, W, C] -> [1, C, H, W] for torchmetrics
        image_nchw, rgb_nchw = (torch.moveaxis(x, -1, 0)[None] for x in (image, rgb))
        metrics = {
            "psnr": float(self.psnr(image_nchw, rgb_nchw)),
            "ssim": float(self.ssim(image_nchw, rgb_nchw)),
            "lpips": float(self.lpips(image_nchw, rgb_nchw)),
        }
        depth = colormaps.apply_depth_colormap(outputs["depth"], accumulation=outputs["accumulation"])
        images = {"img": torch.cat([image, rgb], dim=1), "depth": depth,
                  "accumulation": colormaps.apply_colormap(outputs["accumulation"])}
        return drop_unavailable(metrics, self.lpips), images

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return super().load_state_dict(checked_state(self, state_dict, strict), strict=strict, assign=assign)
