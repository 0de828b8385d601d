"""A drop-in for nerfstudio's torch `MLP` in which each layer is dense or EUGen.

Same signature and state-dict layout as `nerfstudio.field_components.mlp.MLP` (layers.{i}.weight,
skip layers concatenate [input, hidden]); all-dense it computes exactly what nerfstudio's does. Pure
torch: nerfstudio is not imported here.

An EUGen layer stands for a dense layer *and* its activation (Phi and the polynomial order supply the
non-linearity), so no hidden activation is applied after it. `out_activation` is applied to the MLP's
output whatever the last layer is.

Bundled inference (docs/eugen-math.md §4): after an EUGen layer the hidden vector is kept factored as
(f, A, c); the next layer folds A into its own weights and never forms the 256-wide vector. A dense
last layer with nothing after it that widens its input (Zip-NeRF's linear 64 -> 256 bottleneck) is kept
factored the same way, (input, W, b), in the dense twin as in the EUGen one: its readers fold W.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from eugen_nerf.layers.eugen import (
    FEATURE_MAPS,
    SAMPLERS,
    EUGenLinear,
    check_choice,
    check_feature_map_order,
    check_positive_finite,
    check_positive_int,
)
from eugen_nerf.layers.factored import Factored, Piece, factored_linear, factored_width, linear_on_pieces, piece_width

LayerKind = Literal["dense", "eugen"]
BundleMode = Literal["auto", "always", "never"]


# What a run saved before a field existed trained with (soft normalisation came after the raw layer).
SAVED_BEFORE_THEY_EXISTED = {"soft_normalize": False}


@dataclass
class EUGenConfig:
    """Settings of the EUGen layers of a network (flags of every method)."""

    order: int = 2
    """k: highest order of the polynomial random features."""
    num_features: int = 16
    """m: random features per order."""
    # str, not Literal: the method configs check these and give a one-line flag error.
    feature_map: str = "identity"
    """Phi: identity, relu, trig or exp."""
    sampler: str = "orthogonal"
    """Distribution of the random projections: gaussian, orthogonal or rademacher."""
    norm_feature: bool = True
    """Append ||x|| to each layer's input (the EUGen x+)."""
    soft_normalize: bool = True
    """Divide each layer's x+ by sqrt(r^2 + ||x+||^2 / d+), which keeps stacked layers bounded."""
    normalize_floor: float = 1.0
    """r of the soft normalisation: 1 leaves small inputs as they are, smaller values rescale them to mean square 1."""
    constant_feature: bool = False
    """Append a constant 1 to each layer's input."""
    trainable_projection: bool = False
    """Train the random projections G too."""
    seed: int | None = None
    """Seed of the first layer's projections (layer i uses seed + i); None draws from torch's RNG."""

    def validate(self) -> None:
        check_positive_int("order", self.order)
        check_positive_int("num_features", self.num_features)
        check_positive_finite("normalize_floor", self.normalize_floor)
        check_choice("feature_map", self.feature_map, FEATURE_MAPS)
        check_choice("sampler", self.sampler, SAMPLERS)
        check_feature_map_order(self.feature_map, self.order)

    @classmethod
    def from_saved(cls, fields: dict) -> EUGenConfig:
        """The config a saved run (config.yml, run.json) holds; fields it predates take the value it trained with."""
        return cls(**{**SAVED_BEFORE_THEY_EXISTED, **fields})

    def __setstate__(self, state: dict) -> None:
        # PyYAML would fill the fields missing from an older config.yml with the current defaults.
        self.__dict__.update({**SAVED_BEFORE_THEY_EXISTED, **state})

    def make_layer(self, in_features: int, out_features: int, index: int = 0, linear_inputs: int = 0) -> EUGenLinear:
        return EUGenLinear(
            in_features,
            out_features,
            self.num_features,
            self.order,
            feature_map=self.feature_map,
            sampler=self.sampler,
            norm_feature=self.norm_feature,
            soft_normalize=self.soft_normalize,
            normalize_floor=self.normalize_floor,
            constant_feature=self.constant_feature,
            trainable_projection=self.trainable_projection,
            seed=None if self.seed is None else self.seed + index,
            linear_inputs=linear_inputs,
        )


def resolve_layer_kinds(layer_kinds: str | Sequence[str], num_layers: int) -> list[str]:
    """'dense' / 'eugen' for every layer, or one entry per layer."""
    kinds = [layer_kinds] * num_layers if isinstance(layer_kinds, str) else list(layer_kinds)
    if len(kinds) != num_layers:
        raise ValueError(f"layer_kinds has {len(kinds)} entries, expected num_layers={num_layers}")
    for kind in kinds:
        check_choice("layer_kinds", kind, ("dense", "eugen"))
    return kinds


def dense_on_pieces(layer: nn.Linear, pieces: list[Piece]) -> Tensor:
    """A dense layer on concat(pieces), folding factored pieces into its weight."""
    return linear_on_pieces(layer.weight, layer.bias, pieces)


class EUGenMLP(nn.Module):
    """nerfstudio's `MLP(in_dim, num_layers, layer_width, out_dim, skip_connections, activation,
    out_activation)` with `layer_kinds` choosing dense or EUGen per layer.

    `bundle`: "auto" takes the bundled path wherever there is something to fold (docs/eugen-math.md §4), for
    training and inference alike; "never" forces the layer-by-layer path.
    `linear_inputs`: the first layer, if EUGen, takes the first `linear_inputs` input coordinates through
    a dense term instead of its random features (`EUGenLinear`'s argument of that name).
    """

    def __init__(
        self,
        in_dim: int,
        num_layers: int,
        layer_width: int,
        out_dim: int | None = None,
        skip_connections: tuple[int, ...] | None = None,
        activation: nn.Module | None = nn.ReLU(),  # noqa: B008 - same default object as nerfstudio's
        out_activation: nn.Module | None = None,
        implementation: Literal["torch"] = "torch",
        *,
        layer_kinds: str | Sequence[str] = "dense",
        eugen: EUGenConfig | None = None,
        bundle: BundleMode = "auto",
        linear_inputs: int = 0,
    ) -> None:
        super().__init__()
        self.in_dim = check_positive_int("in_dim", in_dim)
        self.num_layers = check_positive_int("num_layers", num_layers)
        self.layer_width = check_positive_int("layer_width", layer_width)
        self.out_dim = check_positive_int("out_dim", out_dim) if out_dim is not None else layer_width
        if implementation != "torch":
            raise ValueError("implementation must be 'torch' (EUGen layers need the torch path)")
        self.skip_connections = skip_connections
        self._skip_connections: set[int] = set(skip_connections) if skip_connections else set()
        if 0 in self._skip_connections:
            raise ValueError("skip_connections cannot contain 0 (the first layer already sees the input)")
        if any(not 0 < s < num_layers for s in self._skip_connections):
            raise ValueError(f"skip_connections must lie in 1..{num_layers - 1}, got {skip_connections}")
        self.activation = activation
        self.out_activation = out_activation
        self.layer_kinds = resolve_layer_kinds(layer_kinds, num_layers)
        self.eugen = eugen if eugen is not None else EUGenConfig()
        self.eugen.validate()
        self.bundle = check_choice("bundle", bundle, ("auto", "always", "never"))
        self.linear_inputs = linear_inputs
        self.layers = nn.ModuleList(
            self._make_layer(i, fan_in, fan_out) for i, (fan_in, fan_out) in enumerate(self._layer_sizes())
        )

    def _layer_sizes(self) -> list[tuple[int, int]]:
        """(in, out) of every layer, as nerfstudio's `build_nn_modules` makes them."""
        if self.num_layers == 1:
            return [(self.in_dim, self.out_dim)]
        sizes = [(self.in_dim, self.layer_width)]
        for i in range(1, self.num_layers - 1):
            extra = self.in_dim if i in self._skip_connections else 0
            sizes.append((self.layer_width + extra, self.layer_width))
        extra = self.in_dim if (self.num_layers - 1) in self._skip_connections else 0
        sizes.append((self.layer_width + extra, self.out_dim))
        return sizes

    def _make_layer(self, index: int, fan_in: int, fan_out: int) -> nn.Module:
        if self.layer_kinds[index] == "dense":
            return nn.Linear(fan_in, fan_out)
        return self.eugen.make_layer(fan_in, fan_out, index, self.linear_inputs if index == 0 else 0)

    def get_out_dim(self) -> int:
        return self.out_dim

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @property
    def macs_per_input(self) -> int:
        """Multiply-adds per input point, layer by layer (unbundled)."""
        return sum(
            layer.macs_per_input if isinstance(layer, EUGenLinear) else layer.in_features * layer.out_features
            for layer in self.layers
        )

    def uses_bundling(self, pieces: Sequence[Piece] = (), keep_factored: bool = False) -> bool:
        """The bundled path ("auto" and "always")
        wherever there is something to fold: an EUGen layer, a factored input, or an output that may
        stay factored (`keep_factored`: asked for, and no out_activation)."""
        if self.bundle == "never":
            return False
        return "eugen" in self.layer_kinds or any(isinstance(p, Factored) for p in pieces) or keep_factored

    # --------------------------------------------------------------------------------- forward
    def forward(self, in_tensor: Tensor) -> Tensor:
        return self.forward_pieces(in_tensor, factored_output=False)

    def forward_pieces(self, in_tensor: Tensor | list[Piece], factored_output: bool = True) -> Tensor | Factored:
        """Forward pass; with `factored_output` the output of a last EUGen layer, or of a widening dense
        last layer, stays factored, so that linear heads can fold it (only when there is no
        out_activation).

        `in_tensor` may be a list of (N, w) pieces, some `Factored`, standing for their concatenation
        (a head fed [encoded direction, factored base output] never forms the concatenated input).
        """
        pieces = list(in_tensor) if isinstance(in_tensor, list | tuple) else [in_tensor]
        width = sum(piece_width(p) for p in pieces)
        if width != self.in_dim:
            raise ValueError(f"EUGenMLP: input has last dimension {width}, expected in_dim={self.in_dim}")
        if len(pieces) == 1 and isinstance(pieces[0], Tensor):
            leading = pieces[0].shape[:-1]
            pieces = [pieces[0].reshape(-1, self.in_dim)]
        else:
            leading = (pieces[0].features if isinstance(pieces[0], Factored) else pieces[0]).shape[:-1]
        keep_factored = factored_output and self.out_activation is None
        if self.uses_bundling(pieces, keep_factored):
            out = self._forward_bundled(pieces, keep_factored)
        else:
            out = self._forward_layerwise(pieces)
        if isinstance(out, Factored) and (not factored_output or self.out_activation is not None):
            out = out.dense()
        if isinstance(out, Factored):
            return out
        if self.out_activation is not None:
            out = self.out_activation(out)
        return out.reshape(*leading, self.out_dim)

    def _forward_layerwise(self, pieces: list[Piece]) -> Tensor:
        inputs = torch.cat([p.dense() if isinstance(p, Factored) else p for p in pieces], -1)
        x = inputs
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if i in self._skip_connections:
                x = torch.cat([inputs, x], -1)
            x = layer(x)
            if isinstance(layer, nn.Linear) and self.activation is not None and i < last:
                x = self.activation(x)
        return x

    def _forward_bundled(self, inputs: list[Piece], keep_factored: bool = False) -> Tensor | Factored:
        """Layer by layer on pieces; with `keep_factored` a widening dense last layer stays factored."""
        hidden: Piece | None = None
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if hidden is None:
                pieces = inputs
            else:
                pieces = [*inputs, hidden] if i in self._skip_connections else [hidden]
            if isinstance(layer, EUGenLinear):
                hidden = layer.forward_factored(pieces)
            elif i == last and keep_factored and len(pieces) == 1 and factored_width(pieces[0]) <= layer.out_features:
                # y = W x + b read only linearly (heads, the next MLP's first layer) or through ||y||:
                # folding W costs each reader F = width(x) per output instead of width(y) (and F^2
                # instead of F width(y) for a norm), so keeping it factored pays when F <= width(y).
                hidden = factored_linear(layer.weight, layer.bias, pieces[0])
            else:
                hidden = dense_on_pieces(layer, pieces)
                if self.activation is not None and i < last:
                    hidden = self.activation(hidden)
        assert hidden is not None  # num_layers >= 1
        return hidden
