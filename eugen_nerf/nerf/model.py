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
from torchmetrics.functional import structural_similarity_index_measure
from torchmetrics.image import PeakSignalNoiseRatio

from eugen_nerf.errors import InputError, check_flag_choice, flag_errors
from eugen_nerf.layers.mlp import EUGenConfig
from eugen_nerf.nerf.checkpoints import check_state_fits
from eugen_nerf.nerf.field import EUGenNeRFField, layer_kinds
from eugen_nerf.nerf.metrics import OptionalLPIPS, drop_unavailable


@dataclass
class EUGenNeRFModelConfig(VanillaModelConfig):
    """vanilla-nerf's model settings plus the choice of layers."""

    _target: type = field(default_factory=lambda: EUGenNeRFModel)
    # Choice flags are plain strings checked in __post_init__: a bad value is then one line naming the
    # flag, where a Literal would give tyro's multi-line usage panel.
    layer: str = "eugen"
    """eugen | dense. eugen: the layers listed below are EUGen layers; dense: the dense twin (vanilla-nerf's field)."""
    eugen_base_layers: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7)
    """Indices (0-7) of the 8 base-MLP layers that become EUGen layers (with --pipeline.model.layer eugen)."""
    eugen_head_layers: tuple[int, ...] = (0, 1)
    """Indices (0-1) of the 2 view-direction head layers that become EUGen layers."""
    eugen: EUGenConfig = field(default_factory=EUGenConfig)
    """The EUGen layers' order k, features m, feature map and projections."""
    base_mlp_num_layers: int = 8
    """Layers of the base (density) MLP; vanilla NeRF: 8."""
    base_mlp_layer_width: int = 256
    """Width of the base MLP; vanilla NeRF: 256."""
    skip_connections: tuple[int, ...] = (4,)
    """Base-MLP layers that see the encoded position again; vanilla NeRF: (4,)."""
    head_mlp_num_layers: int = 2
    """Layers of the view-direction head; vanilla nerfstudio: 2."""
    head_mlp_layer_width: int = 128
    """Width of the view-direction head; vanilla NeRF: 128."""
    position_frequencies: int = 10
    """Frequencies of the position encoding (vanilla NeRF: 10, up to 2^8)."""
    direction_frequencies: int = 4
    """Frequencies of the direction encoding (vanilla NeRF: 4, up to 2^4)."""
    eval_background_color: str = "white"
    """white | black. Background of evaluated and rendered images when training uses --pipeline.model.background-color
    random (Blender test images are composited on white)."""

    def __post_init__(self) -> None:
        check_flag_choice("--pipeline.model.layer", self.layer, ("dense", "eugen"))
        check_flag_choice("--pipeline.model.eval-background-color", self.eval_background_color, ("white", "black"))
        with flag_errors("--pipeline.model.eugen"):
            self.eugen.validate()

    def base_layer_kinds(self) -> list[str]:
        return self._kinds(self.base_mlp_num_layers, self.eugen_base_layers, "eugen-base-layers")

    def head_layer_kinds(self) -> list[str]:
        return self._kinds(self.head_mlp_num_layers, self.eugen_head_layers, "eugen-head-layers")

    def _kinds(self, num_layers: int, indices: tuple[int, ...], flag: str) -> list[str]:
        if self.layer == "dense":
            return ["dense"] * num_layers
        try:
            return layer_kinds(num_layers, indices, flag)
        except ValueError as error:
            raise InputError(str(error)) from None


class EUGenNeRFModel(NeRFModel):
    """NeRFModel whose fields are `EUGenNeRFField`s; everything else is vanilla-nerf's."""

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
        if config.enable_temporal_distortion:
            params = dict(config.temporal_distortion_params)
            kind = params.pop("kind")
            self.temporal_distortion = kind.to_temporal_distortion(params)

    def make_field(self) -> EUGenNeRFField:
        config = self.config
        return EUGenNeRFField(
            # vanilla-nerf's encodings: frequencies 2^0 .. 2^(L-2) for positions, 2^0 .. 2^L for directions
            position_encoding=NeRFEncoding(in_dim=3, num_frequencies=config.position_frequencies, min_freq_exp=0.0,
                                           max_freq_exp=config.position_frequencies - 2.0, include_input=True),
            direction_encoding=NeRFEncoding(in_dim=3, num_frequencies=config.direction_frequencies, min_freq_exp=0.0,
                                            max_freq_exp=float(config.direction_frequencies), include_input=True),
            base_layer_kinds=config.base_layer_kinds(),
            head_layer_kinds=config.head_layer_kinds(),
            eugen=config.eugen,
            base_mlp_layer_width=config.base_mlp_layer_width,
            head_mlp_layer_width=config.head_mlp_layer_width,
            skip_connections=config.skip_connections,
        )

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
        # Checkpoints of stock nerfstudio models carry LPIPS's frozen backbone; ours never do.
        state = {key: value for key, value in state_dict.items() if not key.startswith("lpips.")}
        check_state_fits(self.state_dict(), state, "--pipeline.model.layer")
        return super().load_state_dict(state, strict=strict, assign=assign)
