"""`eugen-dnerf`: D-NeRF, a canonical NeRF plus a deformation network (encoded position and time ->
offset of the sample), both with EUGen layers; `layer="dense"` is its dense twin.

nerfstudio's `dnerf` is `NeRFModel` with a `DNeRFDistortion` (MLP 4x256 on encoded position and
time); NeRFModel already applies the offsets to both sampling passes, so only the deformation MLP
changes here. Scenes come through nerfstudio's `dnerf-data` (Blender layout plus a per-frame time).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from nerfstudio.field_components.encodings import NeRFEncoding
from nerfstudio.field_components.temporal_distortions import TemporalDistortion
from torch import Tensor

from eugen_nerf.layers.mlp import EUGenConfig, EUGenMLP
from eugen_nerf.nerf.methods.nerf import EUGenNeRFModel, EUGenNeRFModelConfig


class EUGenDNeRFDistortion(TemporalDistortion):
    """nerfstudio's DNeRFDistortion with its MLP dense or EUGen per layer (same encodings and sizes;
    all dense it has DNeRFDistortion's parameters).

    Args:
        layer_kinds: 'dense' or 'eugen' per hidden layer; a dense linear layer to the 3-d offset follows.
        layer_width: width of the hidden layers.
        eugen: order k, features m, feature map and projections of the EUGen layers.
        frequencies: L, frequencies 2^0 .. 2^(L-2) of both the position and the time encoding.
    """

    def __init__(self, layer_kinds: list[str], layer_width: int, eugen: EUGenConfig, frequencies: int = 10) -> None:
        super().__init__()
        self.position_encoding = NeRFEncoding(in_dim=3, num_frequencies=frequencies, min_freq_exp=0.0,
                                              max_freq_exp=frequencies - 2.0, include_input=True)
        self.temporal_encoding = NeRFEncoding(in_dim=1, num_frequencies=frequencies, min_freq_exp=0.0,
                                              max_freq_exp=frequencies - 2.0, include_input=True)
        # The last layer (to the 3-d offset) is linear and stays dense, as in DNeRFDistortion's MLP.
        self.mlp_deform = EUGenMLP(
            in_dim=self.position_encoding.get_out_dim() + self.temporal_encoding.get_out_dim(),
            num_layers=len(layer_kinds) + 1, layer_width=layer_width, out_dim=3,
            layer_kinds=[*layer_kinds, "dense"], eugen=eugen,
        )

    def forward(self, positions: Tensor, times: Tensor | None) -> Tensor:
        if times is None:
            raise ValueError("eugen-dnerf needs a time per ray (a D-NeRF scene through dnerf-data)")
        encoded = torch.cat([self.position_encoding(positions), self.temporal_encoding(times)], dim=-1)
        flat = encoded.reshape(-1, encoded.shape[-1])
        return self.mlp_deform(flat).reshape(*encoded.shape[:-1], 3)


@dataclass
class EUGenDNeRFModelConfig(EUGenNeRFModelConfig):
    """eugen-nerf's settings plus the deformation network (on by default)."""

    _target: type = field(default_factory=lambda: EUGenDNeRFModel)
    enable_temporal_distortion: bool = True
    deformation_mlp_num_layers: int = 3
    """Hidden layers of the deformation MLP (nerfstudio's dnerf: 3 of 256, then a linear layer to the offset)."""
    deformation_mlp_layer_width: int = 256
    """Width of the deformation MLP."""
    eugen_deformation_layers: tuple[int, ...] = (1, 2)
    """Indices of the deformation MLP's hidden layers that become EUGen layers (0 = the first, fed by the encodings)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.deformation_layer_kinds()

    def deformation_layer_kinds(self) -> list[str]:
        return self.layer_kinds(self.deformation_mlp_num_layers, self.eugen_deformation_layers,
                                "eugen-deformation-layers")


class EUGenDNeRFModel(EUGenNeRFModel):
    """eugen-nerf's model with the deformation network `EUGenDNeRFDistortion` of its config.

    Built by nerfstudio from a `EUGenDNeRFModelConfig`."""

    config: EUGenDNeRFModelConfig

    def make_temporal_distortion(self) -> EUGenDNeRFDistortion | None:
        if not self.config.enable_temporal_distortion:
            return None
        return EUGenDNeRFDistortion(self.config.deformation_layer_kinds(), self.config.deformation_mlp_layer_width,
                                    self.config.eugen)
