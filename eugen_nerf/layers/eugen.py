"""The EUGen layer: inputs and weights mapped apart by random features, meeting in one dot product.

    x+ = [x; 1 (optional); ||x||]                       (d_plus = d + 1 or d + 2 coordinates)
    x+ <- x+ / sqrt(r^2 + ||x+||^2 / d_plus)            (soft normalisation with floor r, on by default)
    order-i features  z_i = (G^i_1 x+) * ... * (G^i_i x+)   (element-wise; m features each)
    f(x) = Phi([z_1; ...; z_k])                         (F = k*m, or 2*k*m for trig)
    y = A f(x) + c                                      (c is the weight of the constant order-0 feature)

All k(k+1)/2 matrices G are stacked into one (k(k+1)/2 * m) x d_plus matrix and applied in one GEMM;
the norm and constant coordinates are never concatenated onto x: they enter as a rank-1 update and as
the GEMM's bias; the soft normalisation is one scale per row after that GEMM, so a chain of layers
stays bounded at any depth (docs/eugen-math.md §6). Special cases (one module, not a family of classes):
  order=1, feature_map="identity"   low-rank layer with a norm feature
  order=1, feature_map="relu"       ReLU-SNNK (arc-cosine kernel)
  feature_map="trig"                trigonometric random features [cos, sin] (Gaussian kernel)
  feature_map="exp"                 positive random features exp(Gx - s^2 ||x+||^2 / 2) (softmax kernel)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import reduce

import torch
from jaxtyping import Float
from torch import Tensor, nn

from eugen_nerf.layers.factored import Factored, Piece, linear_on_pieces, piece_norms, piece_width

FEATURE_MAPS = ("identity", "relu", "trig", "exp")
SAMPLERS = ("gaussian", "orthogonal", "rademacher")


class NonFiniteInputError(ValueError):
    """An EUGen layer was given NaN or infinite inputs (in training: the run has diverged upstream)."""


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_positive_finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def check_feature_map_order(feature_map: str, order: int) -> None:
    """`exp` features need order 1: their normaliser exp(-s^2 ||x+||^2 / 2) is the softmax kernel's for one
    projection, not for products of several (docs/eugen-math.md §6)."""
    if feature_map == "exp" and order > 1:
        raise ValueError(f"feature_map='exp' needs order=1, got order={order} (its normaliser is only valid there)")


def sample_projection(num_matrices: int, rows: int, cols: int, sampler: str, generator: torch.Generator) -> Tensor:
    """`num_matrices` independent rows x cols matrices, stacked; entries zero-mean, unit variance.

    "orthogonal": within each matrix, blocks of up to `cols` mutually orthogonal rows, each rescaled
    to the norm of an independent Gaussian vector (marginally Gaussian rows, lower variance).
    """
    check_choice("sampler", sampler, SAMPLERS)
    if sampler == "gaussian":
        return torch.randn(num_matrices * rows, cols, generator=generator, dtype=torch.float64)
    if sampler == "rademacher":
        bits = torch.randint(0, 2, (num_matrices * rows, cols), generator=generator, dtype=torch.float64)
        return bits * 2.0 - 1.0
    blocks = []
    for _ in range(num_matrices):
        done = 0
        while done < rows:
            take = min(cols, rows - done)
            q, r = torch.linalg.qr(torch.randn(cols, cols, generator=generator, dtype=torch.float64))
            q = q * torch.sign(torch.diagonal(r))  # Haar-distributed rotation
            norms = torch.randn(take, cols, generator=generator, dtype=torch.float64).norm(dim=1)
            blocks.append(q.t()[:take] * norms[:, None])
            done += take
    return torch.cat(blocks, dim=0)


class EUGenLinear(nn.Module):
    """Drop-in for `nn.Linear` + activation: `EUGenLinear(in_features, out_features, num_features, order)`.

    Args:
        in_features, out_features: widths d and l, as for `nn.Linear`.
        num_features: m, random features per order.
        order: k, the highest order of the polynomial features.
        feature_map: Phi, one of identity, relu, trig, exp.
        sampler: distribution of G's entries: gaussian, orthogonal, rademacher.
        bias: learn the weight c of the constant order-0 feature.
        norm_feature: append ||x|| to x (the EUGen x+).
        soft_normalize: divide x+ by sqrt(1 + ||x+||^2 / d_plus): nearly the identity for inputs of
            mean square below 1, a vector of norm below sqrt(d_plus) for any input, so that stacked
            layers cannot grow as the degree-k^L polynomial they otherwise are (docs/eugen-math.md §6).
        normalize_floor: r in the soft normalisation x+ / sqrt(r^2 + ||x+||^2 / d_plus). r = 1 leaves
            small inputs as they are; a smaller r rescales inputs of mean square above r^2 to mean square
            one (an RMS normalisation), so that the random features are O(1) whatever the scale of the
            hidden vector (docs/eugen-math.md §6).
        constant_feature: also append a constant 1 to x (a bias inside the polynomial).
        trainable_projection: G is a parameter (else a fixed buffer).
        store_projection: save G in the state dict; False keeps only its seed and redraws G on load.
        projection_scale: G's entries have this standard deviation; default 1/sqrt(d_plus) keeps
            features O(1) for O(1) inputs (unscaled order-3 products overflow).
        seed: seed of G; drawn from torch's global generator when None (so torch.manual_seed fixes it).
        linear_inputs: the first `linear_inputs` input coordinates skip the random features and reach
            the output through their own dense weights (`linear_weight`): y = A f(x_rest) + B x_lin + c.
            For a few coordinates whose effect should be able to vanish, e.g. a NeRF view head's
            direction: mixed into every random feature, it can only be cancelled by A (see the
            direction_frequencies flag of eugen-zipnerf); as a dense term, B = 0 removes it.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_features: int = 16,
        order: int = 2,
        *,
        feature_map: str = "identity",
        sampler: str = "orthogonal",
        bias: bool = True,
        norm_feature: bool = True,
        soft_normalize: bool = True,
        normalize_floor: float = 1.0,
        constant_feature: bool = False,
        trainable_projection: bool = False,
        store_projection: bool = True,
        projection_scale: float | None = None,
        seed: int | None = None,
        linear_inputs: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = check_positive_int("in_features", in_features)
        if type(linear_inputs) is not int or not 0 <= linear_inputs < in_features:
            raise ValueError(f"linear_inputs must be an integer in 0..{in_features - 1}, got {linear_inputs!r}")
        self.linear_inputs = linear_inputs
        self.out_features = check_positive_int("out_features", out_features)
        self.num_features = check_positive_int("num_features", num_features)
        self.order = check_positive_int("order", order)
        self.feature_map = check_choice("feature_map", feature_map, FEATURE_MAPS)
        self.sampler = check_choice("sampler", sampler, SAMPLERS)
        check_feature_map_order(self.feature_map, self.order)
        if trainable_projection and not store_projection:
            raise ValueError("store_projection=False needs a fixed projection (trainable_projection=False)")
        self.norm_feature = bool(norm_feature)
        self.soft_normalize = bool(soft_normalize)
        self.normalize_floor = check_positive_finite("normalize_floor", normalize_floor)
        self.constant_feature = bool(constant_feature)
        self.trainable_projection = bool(trainable_projection)
        self.store_projection = bool(store_projection)
        self.mixed_features = self.in_features - self.linear_inputs  # the coordinates G projects
        self.augmented_features = self.mixed_features + int(self.constant_feature) + int(self.norm_feature)
        if projection_scale is None:
            projection_scale = 1.0 / math.sqrt(self.augmented_features)
        self.projection_scale = check_positive_finite("projection_scale", projection_scale)
        self.check_finite = True  # cheap: looks at one projected column, not the whole input

        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        factory = {"device": device, "dtype": dtype}
        self.register_buffer("projection_seed", torch.tensor(int(seed), dtype=torch.int64))
        projection = self._draw_projection(int(seed)).to(**factory)
        if self.trainable_projection:
            self.projection = nn.Parameter(projection)
        else:
            self.register_buffer("projection", projection, persistent=self.store_projection)
        self.weight = nn.Parameter(torch.empty(self.out_features, self.feature_dim, **factory))
        self.bias = nn.Parameter(torch.empty(self.out_features, **factory)) if bias else None
        self.linear_weight = (nn.Parameter(torch.empty(self.out_features, self.linear_inputs, **factory))
                              if self.linear_inputs else None)
        self.reset_parameters()

    # ----------------------------------------------------------------------------------- sizes
    @property
    def num_projections(self) -> int:
        """k(k+1)/2: the number of random matrices G^i_j."""
        return self.order * (self.order + 1) // 2

    @property
    def feature_dim(self) -> int:
        """F: width of f(x) without the constant feature (whose weight is the bias)."""
        return self.order * self.num_features * (2 if self.feature_map == "trig" else 1)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @property
    def macs_per_input(self) -> int:
        """Multiply-adds per input vector: the projection GEMM, the products, the output GEMM."""
        projection = self.num_projections * self.num_features * self.augmented_features
        products = (self.num_projections - self.order) * self.num_features
        return projection + products + self.out_features * (self.feature_dim + self.linear_inputs)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"num_features={self.num_features}, order={self.order}, feature_map={self.feature_map}, "
            f"sampler={self.sampler}, bias={self.bias is not None}, norm_feature={self.norm_feature}, "
            f"soft_normalize={self.soft_normalize}, normalize_floor={self.normalize_floor}, "
            f"constant_feature={self.constant_feature}, trainable_projection={self.trainable_projection}, "
            f"linear_inputs={self.linear_inputs}"
        )

    # ------------------------------------------------------------------------------ parameters
    def _draw_projection(self, seed: int) -> Tensor:
        generator = torch.Generator().manual_seed(seed)
        raw = sample_projection(
            self.num_projections, self.num_features, self.augmented_features, self.sampler, generator
        )
        return (raw * self.projection_scale).to(torch.get_default_dtype())

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.feature_dim + self.linear_inputs)  # as nn.Linear over all it reads
        for parameter in (self.weight, self.bias, self.linear_weight):
            if parameter is not None:
                nn.init.uniform_(parameter, -bound, bound)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if not self.store_projection:
            # G is not in the state dict: redraw it from the seed that was just loaded.
            fresh = self._draw_projection(int(self.projection_seed.item()))
            self.projection.copy_(fresh.to(self.projection.dtype))

    # --------------------------------------------------------------------------------- forward
    def _project(self, pieces: list[Piece], projection: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Rows G x+ for the input concat(pieces) (G: `projection`, default the layer's), and ||x+||^2
        where the feature map needs it."""
        d = self.mixed_features
        g = self.projection if projection is None else projection
        constant = g[:, d] if self.constant_feature else None
        projected = linear_on_pieces(g[:, :d], constant, pieces)  # [N, T*m], T = k(k+1)/2 projections
        in_place = not torch.is_grad_enabled()
        copies = 2.0 if self.norm_feature else 1.0  # ||x+||^2 = copies ||x||^2 + [constant feature]
        constant_square = float(self.constant_feature)  # the constant coordinate's share of ||x+||^2
        scale = None
        if self.norm_feature or self.soft_normalize or self.feature_map == "exp":
            norm = piece_norms(pieces)  # [N]
        if self.norm_feature:
            # The norm coordinate as a rank-1 update instead of a concatenated column.
            projected = projected.addr_(norm, g[:, -1]) if in_place else torch.addr(projected, norm, g[:, -1])
        if self.soft_normalize:
            # s = 1 / sqrt(r^2 + ||x+||^2 / d+), as a hypot so that a huge ||x|| gives a small s, not 0 * inf.
            d_plus = self.augmented_features
            floor = torch.full_like(norm, math.sqrt(self.normalize_floor**2 + constant_square / d_plus))
            scale = torch.hypot(floor, norm * math.sqrt(copies / d_plus)).reciprocal()  # [N]
            # G (s x+) = s (G x+): one scale per row after the GEMM, in bundled chains too.
            projected = projected.mul_(scale[:, None]) if in_place else projected * scale[:, None]
        squared = None  # ||x+||^2 after the soft normalisation: only the exp feature map reads it
        if self.feature_map == "exp":
            squared = norm.square() * copies + constant_square if scale is None else (
                (norm * scale).square() * copies + constant_square * scale.square())
        if self.check_finite and not torch.isfinite(projected[:, 0]).all():
            raise NonFiniteInputError("EUGenLinear: input contains NaN or infinite values")
        return projected, squared

    def _feature_map(self, projected: Tensor, squared: Tensor | None, with_constant: bool = False) -> Tensor:
        """f(x) from the stacked projections: per-order products, then Phi.

        `with_constant` appends the order-0 feature (a column of ones) in the same copy, so that the
        bias rides in the output GEMM instead of a separate broadcast pass over the (N, l) output.
        """
        m = self.num_features
        orders = []
        for i in range(1, self.order + 1):
            start = (i - 1) * i // 2 * m
            factors = [projected[:, start + j * m : start + (j + 1) * m] for j in range(i)]
            orders.append(reduce(torch.mul, factors))  # [N, m]: the order-i products
        ones = [projected.new_ones(projected.shape[0], 1)] if with_constant else []
        if self.feature_map in ("identity", "relu"):
            # relu(1) = 1, so the constant column can be mapped along with the rest.
            z = torch.cat(orders + ones, dim=1) if len(orders) + len(ones) > 1 else orders[0]
            if self.feature_map == "identity":
                return z
            return torch.relu_(z) if not torch.is_grad_enabled() and z is not orders[0] else torch.relu(z)
        z = torch.cat(orders, dim=1) if self.order > 1 else orders[0]
        if self.feature_map == "trig":
            return torch.cat([torch.cos(z), torch.sin(z)] + ones, dim=1)
        # exp: positive random features exp(g x+ - s^2 ||x+||^2 / 2)
        assert squared is not None
        mapped = torch.exp(z - 0.5 * self.projection_scale**2 * squared[:, None])
        return torch.cat([mapped] + ones, dim=1) if ones else mapped

    def augmented_input(self, x: Float[Tensor, "batch in_features"]) -> Float[Tensor, "batch augmented"]:
        """The x+ the projections read (after soft normalisation), without the linear inputs: what a
        data-chosen projection (eugen_nerf.layers.distill.fitted_projection) is fitted on."""
        _, pieces = self._split_linear_inputs(self._as_pieces(x))
        identity = torch.eye(self.augmented_features, dtype=x.dtype, device=x.device)
        return self._project(pieces, identity)[0]

    def features(self, x: Tensor | Factored | list[Piece]) -> Tensor:
        """f(x) for a batch (N, in_features), without the constant order-0 feature (and without the
        linear inputs)."""
        _, pieces = self._split_linear_inputs(self._as_pieces(x))
        return self._feature_map(*self._project(pieces))

    def forward_factored(self, x: Tensor | Factored | list[Piece]) -> Factored:
        """The layer's output kept in feature space (for bundled chains and folded heads).

        With a bias, the factored form is ([f, 1], [A | c], no bias): the same map, one GEMM to expand;
        linear inputs join the same way ([f, 1, x_lin], [A | c | B]).
        """
        linear, pieces = self._split_linear_inputs(self._as_pieces(x))
        features = self._feature_map(*self._project(pieces), with_constant=self.bias is not None)  # [N, F]
        weights = [self.weight] if self.bias is None else [self.weight, self.bias[:, None]]
        if linear is not None:
            features = torch.cat([features, linear], dim=1)
            weights.append(self.linear_weight)
        return Factored(features, torch.cat(weights, dim=1) if len(weights) > 1 else self.weight, None)

    def _split_linear_inputs(self, pieces: list[Piece]) -> tuple[Tensor | None, list[Piece]]:
        """(the first `linear_inputs` coordinates as one dense tensor, the pieces of the rest)."""
        if not self.linear_inputs:
            return None, pieces
        linear: list[Tensor] = []
        rest: list[Piece] = []
        needed = self.linear_inputs
        for piece in pieces:
            if needed == 0:
                rest.append(piece)  # a factored piece past the linear inputs stays factored
                continue
            dense = piece.dense() if isinstance(piece, Factored) else piece
            take = min(needed, dense.shape[1])
            linear.append(dense[:, :take])
            if take < dense.shape[1]:
                rest.append(dense[:, take:])
            needed -= take
        return (torch.cat(linear, dim=1) if len(linear) > 1 else linear[0]), rest

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            return self.forward_factored(x).dense()
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"EUGenLinear: input has last dimension {x.shape[-1]}, expected in_features={self.in_features}"
            )
        leading = x.shape[:-1]
        y = self.forward_factored(x.reshape(-1, self.in_features)).dense()
        return y.reshape(*leading, self.out_features)

    def _as_pieces(self, x: Tensor | Factored | list[Piece]) -> list[Piece]:
        pieces = list(x) if isinstance(x, list | tuple) else [x]
        width = sum(piece_width(p) for p in pieces)
        if width != self.in_features:
            raise ValueError(f"EUGenLinear: input has width {width}, expected in_features={self.in_features}")
        return pieces

    # ------------------------------------------------------------------ unbiased construction
    @classmethod
    def from_dense(
        cls,
        linear: nn.Linear,
        poly_coeffs: Sequence[float] | Tensor,
        num_features: int,
        *,
        sampler: str = "gaussian",
        seed: int | None = None,
        norm_feature: bool = False,
    ) -> EUGenLinear:
        """An unbiased EUGen estimator of `sigma(linear(x))` for sigma(z) = sum_i a_i z^i (docs/eugen-math.md §2).

        `poly_coeffs` are a_0..a_k (k = order). The bias enters through the constant coordinate
        x~ = [x; 1]; a norm coordinate would get weight 0 and only add variance, hence off by default.
        """
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        coeffs = torch.as_tensor(poly_coeffs, dtype=torch.float64).flatten()
        if coeffs.numel() < 2:
            raise ValueError("poly_coeffs must hold at least a_0 and a_1")
        if not torch.isfinite(coeffs).all():
            raise ValueError("poly_coeffs contains NaN or infinite values")
        weight = linear.weight.detach().to(torch.float64)
        if not torch.isfinite(weight).all() or (linear.bias is not None and not torch.isfinite(linear.bias).all()):
            raise ValueError("linear has NaN or infinite weights")
        layer = cls(
            linear.in_features,
            linear.out_features,
            num_features,
            coeffs.numel() - 1,
            feature_map="identity",
            sampler=sampler,
            bias=True,
            norm_feature=norm_feature,
            soft_normalize=False,  # the theorem's layer: x~ as it is
            constant_feature=True,
            projection_scale=1.0,  # unit-variance entries: the theorem's setting
            seed=seed,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
        )
        bias = torch.zeros(linear.out_features, dtype=torch.float64, device=weight.device)
        if linear.bias is not None:
            bias = linear.bias.detach().to(torch.float64)
        columns = [weight, bias[:, None]]
        if norm_feature:
            columns.append(torch.zeros_like(bias)[:, None])
        weight_plus = torch.cat(columns, dim=1)  # w~ = [w; b; 0]
        projected = weight_plus @ layer.projection.to(torch.float64).t()  # (l, T*m)
        m = num_features
        blocks = []
        for i in range(1, layer.order + 1):
            start = (i - 1) * i // 2 * m
            product = reduce(torch.mul, [projected[:, start + j * m : start + (j + 1) * m] for j in range(i)])
            blocks.append(coeffs[i] / m * product)
        with torch.no_grad():
            layer.weight.copy_(torch.cat(blocks, dim=1).to(layer.weight.dtype))
            layer.bias.fill_(float(coeffs[0]))
        return layer
