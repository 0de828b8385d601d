"""`eugen-nerf`: nerfstudio's vanilla NeRF (coarse and fine fields, 64 + 128 samples) with EUGen
layers in the field MLPs; `layer="dense"` is its dense twin, vanilla-nerf parameter for parameter."""

from __future__ import annotations

from dataclasses import dataclass, field

from nerfstudio.field_components.encodings import NeRFEncoding
from nerfstudio.model_components.losses import MSELoss
from nerfstudio.model_components.ray_samplers import PDFSampler, UniformSampler
from nerfstudio.model_components.renderers import AccumulationRenderer, DepthRenderer, RGBRenderer
from nerfstudio.models.base_model import Model
from nerfstudio.models.vanilla_nerf import NeRFModel, VanillaModelConfig
from torch import nn
from torchmetrics.functional import structural_similarity_index_measure
from torchmetrics.image import PeakSignalNoiseRatio

from eugen_nerf.errors import check_flag_choice
from eugen_nerf.nerf.engine.checkpoints import checked_state
from eugen_nerf.nerf.engine.finite import FiniteRenders
from eugen_nerf.nerf.engine.metrics import OptionalLPIPS, drop_unavailable
from eugen_nerf.nerf.fields.field_flags import ChecksModelTarget, EUGenFieldFlags
from eugen_nerf.nerf.fields.nerf_field import EUGenNeRFField


@dataclass
class EUGenNeRFModelConfig(ChecksModelTarget, VanillaModelConfig, EUGenFieldFlags):
    """vanilla-nerf's model settings plus the choice of layers (EUGenFieldFlags, vanilla NeRF's sizes)."""

    _target: type = field(default_factory=lambda: EUGenNeRFModel)
    eval_background_color: str = "white"
    """white | black: background of evaluated and rendered images when --pipeline.model.background-color is random."""

    def __post_init__(self) -> None:
        self.check_field_flags()
        check_flag_choice("--pipeline.model.eval-background-color", self.eval_background_color, ("white", "black"))


class EUGenNeRFModel(FiniteRenders, NeRFModel):
    """NeRFModel whose fields are `EUGenNeRFField`s; everything else is vanilla-nerf's.

    Built by nerfstudio from a `EUGenNeRFModelConfig`."""

    config: EUGenNeRFModelConfig

    def populate_modules(self) -> None:
        Model.populate_modules(self)  # the collider; NeRFModel's own would build nerfstudio's fields
        config = self.config
        config.__post_init__()  # again: a config loaded from config.yml or edited in code skips the constructor
        self.field_coarse = self.make_field()
        self.field_fine = self.make_field()

        self.sampler_uniform = UniformSampler(num_samples=config.num_coarse_samples)
        self.sampler_pdf = PDFSampler(num_samples=config.num_importance_samples)
        self.renderer_rgb = RGBRenderer(background_color=config.background_color)
        self.renderer_accumulation = AccumulationRenderer()
        self.renderer_depth = DepthRenderer()
        self.rgb_loss = MSELoss()
        self.psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.ssim = structural_similarity_index_measure
        object.__setattr__(self, "lpips", OptionalLPIPS())  # not a submodule: see OptionalLPIPS
        self.temporal_distortion = self.make_temporal_distortion()

    def make_field(self) -> EUGenNeRFField:
        frequencies = self.config.position_frequencies
        # vanilla-nerf's position encoding: frequencies 2^0 .. 2^(L-2)
        return self.config.make_field(NeRFEncoding(in_dim=3, num_frequencies=frequencies, min_freq_exp=0.0,
                                                   max_freq_exp=frequencies - 2.0, include_input=True))

    def make_temporal_distortion(self) -> nn.Module | None:
        """The deformation of a dynamic scene (see eugen_nerf.nerf.methods.dnerf); none for a static one."""
        if self.config.enable_temporal_distortion:
            params = dict(self.config.temporal_distortion_params)
            return params.pop("kind").to_temporal_distortion(params)
        return None

    def train(self, mode: bool = True):
        # A random training background supervises opacity through the images' alpha; evaluation and
        # rendering composite on the test images' own background.
        super().train(mode)
        if hasattr(self, "renderer_rgb"):
            random_training = self.config.background_color == "random"
            self.renderer_rgb.background_color = (
                self.config.eval_background_color if random_training and not mode else self.config.background_color
            )
        return self

    def get_outputs(self, ray_bundle):
        outputs = super().get_outputs(ray_bundle)
        # The fine pass under the names ns-render, ns-export and the viewer ask for by default
        # (vanilla-nerf has only *_coarse / *_fine, so `ns-render` fails on it without flags).
        for name in ("rgb", "depth", "accumulation"):
            outputs[name] = outputs[f"{name}_fine"]
        return outputs

    def get_image_metrics_and_images(self, outputs, batch):
        metrics, images = super().get_image_metrics_and_images(outputs, batch)
        return drop_unavailable(metrics, self.lpips), images

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return super().load_state_dict(checked_state(self, state_dict, strict), strict=strict, assign=assign)
