"""The NeRF field of nerfstudio's `vanilla-nerf` with each MLP layer dense or EUGen.

Same modules, names and sizes as `nerfstudio.fields.vanilla_nerf_field.NeRFField` (so an all-dense
field is vanilla-nerf's, parameter for parameter, and loads its checkpoints). What differs is the data
flow: the base MLP's output may stay factored (docs/eugen-math.md §4), and the density head, the
view-direction head and the RGB head fold it instead of forming the 256-wide feature vector.
"""

from __future__ import annotations

from collections.abc import Sequence

from jaxtyping import Float
from nerfstudio.cameras.rays import RaySamples
from nerfstudio.field_components.activations import trunc_exp
from nerfstudio.field_components.encodings import Encoding
from nerfstudio.field_components.field_heads import DensityFieldHead, FieldHead, FieldHeadNames, RGBFieldHead
from nerfstudio.field_components.spatial_distortions import SpatialDistortion
from nerfstudio.fields.base_field import Field
from torch import Tensor, nn

from eugen_nerf.errors import InputError
from eugen_nerf.layers.factored import Piece, linear_on_pieces
from eugen_nerf.layers.mlp import EUGenConfig, EUGenMLP
from eugen_nerf.nerf.components.encodings import SampleEncoding
from eugen_nerf.nerf.engine.finite import check_field_output


def layer_kinds(num_layers: int, eugen_layers: Sequence[int], name: str) -> list[str]:
    """'eugen' at the listed indices, 'dense' elsewhere; an index out of range is a flag error."""
    bad = [i for i in eugen_layers if not 0 <= i < num_layers]
    if bad:
        raise ValueError(f"--pipeline.model.{name} has {bad}: layer indices must lie in 0..{num_layers - 1}")
    return ["eugen" if i in set(eugen_layers) else "dense" for i in range(num_layers)]


def choose_layer_kinds(layer: str, num_layers: int, eugen_layers: Sequence[int], name: str) -> list[str]:
    """The kinds of an MLP's layers under a method's `--pipeline.model.layer` flag: all dense for the
    dense twin, else EUGen at the listed indices; a bad index is a one-line flag error."""
    if layer == "dense":
        return ["dense"] * num_layers
    try:
        return layer_kinds(num_layers, eugen_layers, name)
    except ValueError as error:
        raise InputError(str(error)) from None


def apply_head(head: FieldHead, features: Piece, shift: float = 0.0) -> Float[Tensor, "N out"]:
    """A field head (one linear layer + activation) on a dense or factored input; `shift` is added
    before the activation."""
    # the shift rides in the bias (one number per output, not a pass over the N x out result)
    bias = head.net.bias + shift if shift else head.net.bias
    out = linear_on_pieces(head.net.weight, bias, [features])
    return head.activation(out) if head.activation is not None else out


class EUGenNeRFField(Field):
    """NeRF field: position encoding -> base MLP (skip) -> density; [direction encoding, base
    features] -> head MLP -> RGB. The base MLP's last layer is the bottleneck.

    Args:
        position_encoding: a point encoding of the sample positions (after `spatial_distortion`), or a
            `SampleEncoding` of the whole frustums (mip-NeRF 360, Zip-NeRF), which contracts on its own.
        direction_encoding: encoding of the unit view directions [*bs, 3].
        base_layer_kinds: 'dense' or 'eugen' per base-MLP layer; its length is the number of layers.
        head_layer_kinds: 'dense' or 'eugen' per view-head layer; its length is the number of layers.
        eugen: order k, features m, feature map and projections of every EUGen layer.
        base_mlp_layer_width: hidden width of the base MLP.
        head_mlp_layer_width: width of the view head.
        skip_connections: base-MLP layers that see the encoded position again.
        bottleneck_width: width of the base MLP's last layer; the base width when None.
        bottleneck_relu: a ReLU after that last layer when it is dense (vanilla-nerf; Zip-NeRF's is linear).
        spatial_distortion: contraction of the positions before a point encoding (unused with a `SampleEncoding`).
        linear_direction: an EUGen first head layer takes the direction through a dense term.
        density_bias: added to the raw density before its activation.
        density_activation: "softplus" (vanilla-nerf, mip-NeRF 360) or "exp" (nerfstudio's truncated exp,
            nerfacto's) of the shifted raw density.
    """

    def __init__(
        self,
        position_encoding: Encoding | SampleEncoding,
        direction_encoding: Encoding,
        base_layer_kinds: Sequence[str],
        head_layer_kinds: Sequence[str],
        eugen: EUGenConfig,
        base_mlp_layer_width: int = 256,
        head_mlp_layer_width: int = 128,
        skip_connections: tuple[int, ...] = (4,),
        bottleneck_width: int | None = None,
        bottleneck_relu: bool = True,
        spatial_distortion: SpatialDistortion | None = None,
        linear_direction: bool = False,
        density_bias: float = 0.0,
        density_activation: str = "softplus",
    ) -> None:
        super().__init__()
        self.density_bias = density_bias
        self.position_encoding = position_encoding
        self.direction_encoding = direction_encoding
        self.spatial_distortion = spatial_distortion
        self.mlp_base = EUGenMLP(
            in_dim=position_encoding.get_out_dim(),
            num_layers=len(base_layer_kinds),
            layer_width=base_mlp_layer_width,
            out_dim=bottleneck_width,
            skip_connections=skip_connections,
            # An EUGen layer carries its own non-linearity; a ReLU after it would force the 256-wide
            # features to be formed. After a dense last layer the ReLU stays, as in vanilla-nerf,
            # unless the bottleneck is linear (Zip-NeRF).
            out_activation=nn.ReLU() if bottleneck_relu and base_layer_kinds[-1] == "dense" else None,
            layer_kinds=list(base_layer_kinds),
            eugen=eugen,
        )
        self.field_output_density = DensityFieldHead(
            in_dim=self.mlp_base.get_out_dim(), activation=trunc_exp if density_activation == "exp" else nn.Softplus())
        self.mlp_head = EUGenMLP(
            in_dim=self.mlp_base.get_out_dim() + direction_encoding.get_out_dim(),
            num_layers=len(head_layer_kinds),
            layer_width=head_mlp_layer_width,
            out_activation=None if head_layer_kinds[-1] == "eugen" else nn.ReLU(),
            layer_kinds=list(head_layer_kinds),
            eugen=eugen,
            # the head reads [direction, base features]: the direction is its first input coordinates
            linear_inputs=direction_encoding.get_out_dim() if linear_direction else 0,
        )
        self.field_heads = nn.ModuleList([RGBFieldHead()])
        for field_head in self.field_heads:
            field_head.set_in_dim(self.mlp_head.get_out_dim())

    def encode_positions(self, ray_samples: RaySamples) -> Float[Tensor, "*bs encoding"]:
        if isinstance(self.position_encoding, SampleEncoding):
            return self.position_encoding(ray_samples)
        positions = ray_samples.frustums.get_positions()
        if self.spatial_distortion is not None:
            positions = self.spatial_distortion(positions)
        return self.position_encoding(positions)

    def get_density(self, ray_samples: RaySamples) -> tuple[Float[Tensor, "*bs 1"], Piece]:
        """Density (*batch, 1) and the base features, flattened to (N, width) and possibly factored."""
        return self.density_from_encoding(self.encode_positions(ray_samples))

    def density_from_encoding(self, encoded: Float[Tensor, "*bs encoding"]) -> tuple[Float[Tensor, "*bs 1"], Piece]:
        """get_density after the position encoding: the base MLP and the density head only."""
        base = self.mlp_base.forward_pieces(encoded.reshape(-1, encoded.shape[-1]))
        density = apply_head(self.field_output_density, base, self.density_bias)
        if not self.training:
            check_field_output(density, "density")
        return density.reshape(*encoded.shape[:-1], 1), base

    def head_features(self, ray_samples: RaySamples, density_embedding: Piece) -> Piece:
        """The view head's output (N, width), which the RGB head reads, possibly factored."""
        directions = self.direction_encoding(ray_samples.frustums.directions)
        return self.mlp_head.forward_pieces([directions.reshape(-1, directions.shape[-1]), density_embedding])

    def get_outputs(
        self, ray_samples: RaySamples, density_embedding: Piece | None = None
    ) -> dict[FieldHeadNames, Float[Tensor, "*bs channels"]]:
        if density_embedding is None:
            raise ValueError("EUGenNeRFField.get_outputs needs the density embedding from get_density")
        leading = ray_samples.frustums.directions.shape[:-1]
        head = self.head_features(ray_samples, density_embedding)
        outputs = {field_head.field_head_name: apply_head(field_head, head).reshape(*leading, -1)
                   for field_head in self.field_heads}
        if not self.training:
            for name, values in outputs.items():
                check_field_output(values, name.value)
        return outputs
