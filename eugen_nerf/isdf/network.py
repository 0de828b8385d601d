"""iSDF's network: an off-axis positional encoding (255-d) into a 256-wide Softplus MLP with a skip,
dense or with EUGen hidden layers (the same EUGenMLP as the NeRF fields)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from eugen_nerf.errors import InputError, check_flag_choice, flag_errors
from eugen_nerf.layers.mlp import EUGenConfig, EUGenMLP


def icosahedron_directions() -> Tensor:
    """21 unit directions: the vertices of an icosahedron whose faces are split in four (12 vertices +
    30 edge midpoints), one of each antipodal pair. The reference system projects points on these."""
    phi = (1 + math.sqrt(5)) / 2
    vertices = []
    for a, b in itertools.product((-1.0, 1.0), repeat=2):
        vertices += [(0.0, a, b * phi), (a, b * phi, 0.0), (b * phi, 0.0, a)]
    v = torch.tensor(vertices, dtype=torch.float64)
    edge = 2.0  # the shortest vertex distance of this icosahedron
    distance = torch.cdist(v, v)
    i, j = torch.nonzero(torch.isclose(distance, torch.tensor(edge, dtype=torch.float64)), as_tuple=True)
    midpoints = (v[i[i < j]] + v[j[i < j]]) / 2
    points = torch.cat([v, midpoints])
    points = points / points.norm(dim=-1, keepdim=True)
    keep = []  # one of each antipodal pair: the first non-zero coordinate positive
    for p in points:
        first = p[torch.nonzero(p.abs() > 1e-9)[0, 0]]
        if first > 0:
            keep.append(p)
    return torch.stack(keep).float()


class OffAxisEncoding(nn.Module):
    """[x, sin(2^k A x), sin(2^k A x + pi/2)] for k < num_frequencies, A the 21 directions.

    Args:
        num_frequencies: F, octaves 2^0 .. 2^(F-1); points (N, 3) -> (N, 3 + 42 F).
    """

    def __init__(self, num_frequencies: int = 6) -> None:
        super().__init__()
        self.register_buffer("directions", icosahedron_directions(), persistent=False)
        self.register_buffer("frequencies", 2.0 ** torch.arange(num_frequencies, dtype=torch.float32),
                             persistent=False)

    @property
    def out_dim(self) -> int:
        return 3 + 2 * self.directions.shape[0] * self.frequencies.numel()

    def forward(self, points: Tensor) -> Tensor:
        projected = (points @ self.directions.T)[..., None] * self.frequencies  # (N, 21, F)
        projected = projected.flatten(-2)
        return torch.cat([points, torch.sin(projected), torch.sin(projected + math.pi / 2)], -1)


@dataclass
class SDFNetworkConfig:
    layer: str = "eugen"
    """eugen | dense. eugen: the hidden layers listed in eugen-layers are EUGen layers."""
    eugen_layers: tuple[int, ...] = (1, 2, 3, 4, 5)
    """Indices (0-6) of the MLP's layers that become EUGen layers (0: first hidden, 3: skip, 6: output)."""
    # Without soft normalisation: on this fixed-depth network of bounded encodings it measured worse
    # (docs/results/stable-layers.md, docs/methods/isdf.md).
    eugen: EUGenConfig = field(default_factory=lambda: EUGenConfig(num_features=16, soft_normalize=False))
    """The EUGen layers' order k, features m, feature map and projections."""
    width: int = 256
    """Hidden width (reference: 256)."""
    hidden_layers: int = 6
    """Hidden layers (reference: 6, the fourth re-injecting the encoding)."""
    num_frequencies: int = 6
    """Octaves of the positional encoding (reference: 6 -> 255 features)."""
    scale_input: float = 0.0594
    """Points are scaled by this after centring (reference value for ReplicaCAD rooms)."""
    scale_output: float = 0.14
    """The network's output is multiplied by this (reference value)."""

    def validate(self) -> None:
        check_flag_choice("--network.layer", self.layer, ("dense", "eugen"))
        bad = [i for i in self.eugen_layers if not 0 <= i <= self.hidden_layers]
        if bad:
            raise InputError(f"--network.eugen-layers has {bad}: indices must lie in 0..{self.hidden_layers}")
        if self.hidden_layers < 4 or self.width <= 0:
            raise InputError("--network.hidden-layers must be at least 4 and --network.width positive")
        with flag_errors("--network.eugen"):
            self.eugen.validate()


class SDFNetwork(nn.Module):
    """Signed distance (metres) at world points. `centre` moves the scene to the origin first.

    Args:
        config: layer kinds, width, depth, encoding octaves and the input and output scales.
        centre: (3,) world point (metres) subtracted from the points before the input scale.
    """

    def __init__(self, config: SDFNetworkConfig, centre: Tensor) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.register_buffer("centre", centre.float().clone())
        self.encoding = OffAxisEncoding(config.num_frequencies)
        num_layers = config.hidden_layers + 1
        kinds = ["eugen" if config.layer == "eugen" and i in config.eugen_layers else "dense"
                 for i in range(num_layers)]
        self.mlp = EUGenMLP(self.encoding.out_dim, num_layers, config.width, 1,
                            skip_connections=(config.hidden_layers // 2,), activation=nn.Softplus(beta=100),
                            layer_kinds=kinds, eugen=config.eugen)
        for layer in self.mlp.layers:  # reference initialisation of the dense layers
            if isinstance(layer, nn.Linear):
                nn.init.xavier_normal_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, points: Tensor) -> Tensor:
        encoded = self.encoding((points - self.centre) * self.config.scale_input)
        return self.mlp(encoded).squeeze(-1) * self.config.scale_output

    def with_gradient(self, points: Tensor, create_graph: bool) -> tuple[Tensor, Tensor]:
        """SDF and its spatial gradient (for the eikonal and gradient losses, and evaluation)."""
        with torch.enable_grad():
            points = points.detach().requires_grad_(True)
            sdf = self(points)
            (gradient,) = torch.autograd.grad(sdf.sum(), points, create_graph=create_graph)
        return sdf, gradient
