"""The flags every NeRF-family method here shares: dense or EUGen layers, which ones, and the size of
the NeRF MLP (base MLP with skips -> density; [direction encoding, base features] -> view head -> RGB).

A mixin of the methods' model configs (eugen-nerf, eugen-dnerf, eugen-mipnerf360), so the flags have
the same names and meaning in all of them; each method sets its own defaults.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from nerfstudio.field_components.encodings import Encoding, NeRFEncoding
from nerfstudio.field_components.spatial_distortions import SpatialDistortion
from torch import nn

from eugen_nerf.errors import InputError, check_flag_choice, flag_errors
from eugen_nerf.layers.mlp import EUGenConfig
from eugen_nerf.nerf.components.encodings import SampleEncoding
from eugen_nerf.nerf.fields.nerf_field import EUGenNeRFField, choose_layer_kinds


class ChecksModelTarget:
    """First base of a method's model config: `setup` refuses a model class that is not the config's own."""

    def setup(self, **kwargs):
        self.check_model_target()
        return super().setup(**kwargs)

    def check_model_target(self) -> None:
        """The model class a config.yml names is this config's own (an edited `_target` would fail deep inside)."""
        default = next(f for f in dataclasses.fields(self) if f.name == "_target").default_factory()
        target = getattr(self, "_target", None)
        if target is not default:
            named = f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', target)}"
            raise InputError(f"pipeline.model._target is {named}, not {default.__qualname__}, the model of "
                             f"{type(self).__name__}: the run's config.yml was edited")


DENSE_INITS = ("torch", "he")
DIRECTION_SPACINGS = ("nerfstudio", "octaves")


def initialise_dense_layers(module: nn.Module, init: str) -> None:
    """Re-initialise every dense layer (`nn.Linear`) of `module` as `--pipeline.model.dense-init` says."""
    if init == "torch":  # what nn.Linear did when it was built
        return
    for layer in module.modules():
        if type(layer) is nn.Linear:
            nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")  # U(+-sqrt(6 / fan_in))
            nn.init.zeros_(layer.bias)


@dataclass
class EUGenFieldFlags:
    # Choice flags are plain strings checked in check_field_flags: a bad value is then one line naming
    # the flag, where a Literal would give tyro's multi-line usage panel.
    layer: str = "eugen"
    """eugen | dense: the listed layers are EUGen layers, or every layer is dense (the dense twin)."""
    eugen_base_layers: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7)
    """Indices of the base-MLP layers that become EUGen layers (0 = the first, fed by the encoding)."""
    eugen_head_layers: tuple[int, ...] = (0, 1)
    """Indices of the view-direction head layers that become EUGen layers."""
    eugen_linear_direction: bool = False
    """An EUGen first view-head layer takes the direction through a dense term, y = A f(features) + B d + c."""
    eugen: EUGenConfig = field(default_factory=EUGenConfig)
    """The EUGen layers' order k, features m, feature map and projections."""
    base_mlp_num_layers: int = 8
    """Layers of the base (density) MLP."""
    base_mlp_layer_width: int = 256
    """Width of the base MLP."""
    skip_connections: tuple[int, ...] = (4,)
    """Base-MLP layers that see the encoded position again."""
    bottleneck_width: int = 0
    """Width of the base MLP's last layer, which the density and the view head read; 0: the base width."""
    bottleneck_relu: bool = True
    """A ReLU after a dense last base layer, as in vanilla-nerf; Zip-NeRF's bottleneck is linear."""
    density_bias: float = 0.0
    """Added to the raw density before its activation (vanilla NeRF: 0; mip-NeRF 360 and Zip-NeRF: -1)."""
    density_activation: str = "softplus"
    """softplus | exp: the density of the shifted raw output: softplus (vanilla NeRF, mip-NeRF 360, Zip-NeRF)
    or exp (nerfacto's truncated exp, which reaches an opaque surface's density from a far smaller output)."""
    head_mlp_num_layers: int = 2
    """Layers of the view-direction head."""
    head_mlp_layer_width: int = 128
    """Width of the view-direction head."""
    position_frequencies: int = 10
    """Frequencies of the position encoding."""
    direction_frequencies: int = 4
    """Frequencies of the direction encoding; 0: the raw unit direction."""
    direction_spacing: str = "nerfstudio"
    """nerfstudio | octaves: the direction encoding's frequencies: nerfstudio's vanilla-nerf, 2 pi 2^t for L
    values of t spread evenly over [0, L] (up to 2 pi 2^L), or NeRF's and mip-NeRF 360's, 2^k for k = 0 .. L-1."""
    dense_init: str = "torch"
    """torch | he: the dense layers' initial weights: PyTorch's nn.Linear default, or He-uniform weights and
    zero biases (camp_zipnerf's); EUGen layers keep their own."""

    def check_field_flags(self) -> None:
        check_flag_choice("--pipeline.model.layer", self.layer, ("dense", "eugen"))
        check_flag_choice("--pipeline.model.dense-init", self.dense_init, DENSE_INITS)
        check_flag_choice("--pipeline.model.direction-spacing", self.direction_spacing, DIRECTION_SPACINGS)
        check_flag_choice("--pipeline.model.density-activation", self.density_activation, ("softplus", "exp"))
        with flag_errors("--pipeline.model.eugen"):
            self.eugen.validate()
        self.base_layer_kinds()
        self.head_layer_kinds()
        for name in ("position_frequencies", "direction_frequencies", "bottleneck_width"):
            if getattr(self, name) < 0:
                flag = "--pipeline.model." + name.replace("_", "-")
                raise InputError(f"{flag} must be 0 or more, got {getattr(self, name)}")

    def layer_kinds(self, num_layers: int, indices: tuple[int, ...], flag: str) -> list[str]:
        return choose_layer_kinds(self.layer, num_layers, indices, flag)

    def base_layer_kinds(self) -> list[str]:
        return self.layer_kinds(self.base_mlp_num_layers, self.eugen_base_layers, "eugen-base-layers")

    def head_layer_kinds(self) -> list[str]:
        return self.layer_kinds(self.head_mlp_num_layers, self.eugen_head_layers, "eugen-head-layers")

    def direction_encoding(self) -> Encoding:
        count = self.direction_frequencies
        if self.direction_spacing == "octaves":  # NeRFEncoding multiplies by 2 pi: shift the exponents by log2(2 pi)
            shift = math.log2(2 * math.pi)
            return NeRFEncoding(in_dim=3, num_frequencies=count, min_freq_exp=-shift,
                                max_freq_exp=count - 1 - shift, include_input=True)
        return NeRFEncoding(in_dim=3, num_frequencies=count, min_freq_exp=0.0, max_freq_exp=float(count),
                            include_input=True)

    def make_field(
        self, position_encoding: Encoding | SampleEncoding, contraction: SpatialDistortion | None = None
    ) -> EUGenNeRFField:
        field = EUGenNeRFField(
            position_encoding=position_encoding,
            direction_encoding=self.direction_encoding(),
            base_layer_kinds=self.base_layer_kinds(),
            head_layer_kinds=self.head_layer_kinds(),
            eugen=self.eugen,
            linear_direction=self.eugen_linear_direction,
            base_mlp_layer_width=self.base_mlp_layer_width,
            head_mlp_layer_width=self.head_mlp_layer_width,
            skip_connections=self.skip_connections,
            bottleneck_width=self.bottleneck_width or self.base_mlp_layer_width,
            bottleneck_relu=self.bottleneck_relu,
            density_bias=self.density_bias,
            density_activation=self.density_activation,
            spatial_distortion=contraction,
        )
        initialise_dense_layers(field, self.dense_init)
        return field
