"""mip-NeRF 360's proposal sampling (also Zip-NeRF's): small density-only MLPs that resample each ray
twice before the NeRF MLP sees it, trained by an interlevel loss to bound the NeRF's weights.

nerfstudio's `ProposalNetworkSampler` calls its density functions on sample *positions*; mip-NeRF 360's
proposal MLPs see integrated positional encodings of conical frustums, which need the whole
`RaySamples`. `FrustumProposalSampler` is that sampler with the density functions given the samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float
from nerfstudio.cameras.rays import RayBundle, RaySamples
from nerfstudio.field_components.activations import trunc_exp
from nerfstudio.model_components.ray_samplers import PDFSampler, Sampler, UniformLinDispPiecewiseSampler
from torch import Tensor, nn

from eugen_nerf.layers.mlp import EUGenConfig, EUGenMLP
from eugen_nerf.nerf.components.encodings import SampleEncoding
from eugen_nerf.nerf.engine.finite import check_field_output

PROPOSAL_DENSITY_ACTIVATIONS = ("exp", "softplus")


class ProposalDensityField(nn.Module):
    """A proposal MLP: encoding of the frustum (integrated positional encoding for mip-NeRF 360, the
    multisampled hash grid for Zip-NeRF) -> MLP -> density.

    Args:
        encoding: encoding of the ray samples, (*batch) -> (*batch, encoding.get_out_dim()).
        layer_kinds: 'dense' or 'eugen' per hidden layer; a dense output layer to one density follows.
        layer_width: width of the hidden layers.
        eugen: order k, features m, feature map and projections of the EUGen layers.
        density_activation: "exp" or "softplus" of the raw output minus 1.
    """

    def __init__(
        self, encoding: SampleEncoding, layer_kinds: Sequence[str], layer_width: int, eugen: EUGenConfig,
        density_activation: str = "exp",
    ) -> None:
        super().__init__()
        self.encoding = encoding
        self.activation = trunc_exp if density_activation == "exp" else nn.functional.softplus
        # The output layer (to one density) stays dense: an EUGen layer to width 1 saves nothing.
        self.mlp = EUGenMLP(in_dim=self.encoding.get_out_dim(), num_layers=len(layer_kinds) + 1,
                            layer_width=layer_width, out_dim=1, layer_kinds=[*layer_kinds, "dense"], eugen=eugen)

    def forward(self, ray_samples: RaySamples) -> Float[Tensor, "*bs 1"]:
        return self.density_from_encoding(self.encoding(ray_samples))

    def density_from_encoding(self, encoded: Float[Tensor, "*bs encoding"]) -> Float[Tensor, "*bs 1"]:
        raw = self.mlp(encoded.reshape(-1, encoded.shape[-1])).reshape(*encoded.shape[:-1], 1)
        if not self.training:
            check_field_output(raw, "proposal density")
        # mip-NeRF 360 shifts the pre-activation down so an untrained proposal starts nearly empty.
        return self.activation(raw - 1.0)


def max_dilate_weights(
    bins: Float[Tensor, "*rays edges"], weights: Float[Tensor, "*rays intervals"], dilation: float
) -> tuple[Float[Tensor, "*rays dilated_edges"], Float[Tensor, "*rays dilated_intervals"]]:
    """mip-NeRF 360's dilation of a proposal histogram (its `stepfun.max_dilate_weights`): each interval's
    density (weight / width, along the sampling coordinate s) is spread `dilation` to either side, taking
    the maximum where spread intervals overlap, and clipped to the ray's [first, last] bin edge.

    A thin surface seen at one sample spacing by a proposal level then also covers the next level's
    neighbouring samples, so resampling does not lose it. Returns the new edges (3 n + 1 per ray for n
    intervals, sorted, some of zero width) and the weights of the dilated histogram, summing to 1.
    """
    density = weights / (bins[..., 1:] - bins[..., :-1]).clamp_min(torch.finfo(weights.dtype).eps)
    lower, upper = bins[..., :-1] - dilation, bins[..., 1:] + dilation
    edges = torch.sort(torch.cat([bins, lower, upper], dim=-1), dim=-1).values
    edges = torch.maximum(torch.minimum(edges, bins[..., -1:]), bins[..., :1])
    # each new interval takes the largest density of the spread intervals covering its left edge
    left = edges[..., :-1, None]
    covering = (lower[..., None, :] <= left) & (upper[..., None, :] > left)  # [*rays, new, old]
    dilated = torch.where(covering, density[..., None, :], torch.zeros_like(left)).amax(dim=-1)
    dilated = dilated * (edges[..., 1:] - edges[..., :-1])
    return edges, dilated / dilated.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(weights.dtype).tiny)


class FrustumProposalSampler(Sampler):
    """Uniform-in-disparity samples, then one PDF resampling per proposal level, each level weighted by
    its own proposal MLP; returns the NeRF's samples and every level's (samples, weights) for the
    interlevel and distortion losses.

    Args:
        num_proposal_samples: samples per ray at each proposal level (its length is the number of levels).
        num_nerf_samples: samples per ray of the last resampling, the ones the NeRF MLP sees.
        initial_sampler: the first level's sampler; None: linear up to distance 1, then uniform in disparity.
        single_jitter: one jitter per ray rather than per sample, in the default initial and PDF samplers.
        dilation_multiplier, dilation_bias: before each resampling after the first, the proposal histogram is
            dilated (`max_dilate_weights`) by bias + multiplier / (product of the samples per ray of the
            levels so far), along the sampling coordinate in [0, 1] (mip-NeRF 360: 0.5 and 0.0025); 0 and 0:
            no dilation.
    """

    def __init__(
        self,
        num_proposal_samples: Sequence[int],
        num_nerf_samples: int,
        initial_sampler: Sampler | None = None,
        single_jitter: bool = True,
        dilation_multiplier: float = 0.0,
        dilation_bias: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_proposal_samples = tuple(num_proposal_samples)
        self.num_nerf_samples = num_nerf_samples
        self.dilation_multiplier = dilation_multiplier
        self.dilation_bias = dilation_bias
        # mip-NeRF 360: linear up to distance 1, then uniform in disparity; Zip-NeRF: a power curve
        self.initial_sampler = initial_sampler or UniformLinDispPiecewiseSampler(single_jitter=single_jitter)
        self.pdf_sampler = PDFSampler(include_original=False, single_jitter=single_jitter)
        # Exponent on the proposal weights before each resampling (mip-NeRF 360 eq. 18; nerfstudio's
        # ProposalNetworkSampler.set_anneal): 0 resamples uniformly, 1 by the weights as they are.
        self.anneal = 1.0

    def set_anneal(self, anneal: float) -> None:
        self.anneal = anneal

    def generate_ray_samples(
        self,
        ray_bundle: RayBundle | None = None,
        density_fns: Sequence[Callable[[RaySamples], Float[Tensor, "*bs 1"]]] | None = None,
    ) -> tuple[RaySamples, list[Float[Tensor, "*rays samples 1"]], list[RaySamples]]:
        assert ray_bundle is not None and density_fns is not None
        if len(density_fns) != len(self.num_proposal_samples):
            raise ValueError(f"{len(density_fns)} proposal networks for {len(self.num_proposal_samples)} levels")
        weights_list: list[Float[Tensor, "*rays samples 1"]] = []
        samples_list: list[RaySamples] = []
        samples = weights = None
        samples_so_far = 1
        for level, count in enumerate([*self.num_proposal_samples, self.num_nerf_samples]):
            if samples is None:
                samples = self.initial_sampler(ray_bundle, num_samples=count)
            else:
                histogram, resample_by = samples, weights
                dilating = self.dilation_multiplier > 0 or self.dilation_bias > 0
                if dilating:
                    histogram, resample_by = self.dilate(ray_bundle, samples, weights,
                                                         self.dilation_bias + self.dilation_multiplier / samples_so_far)
                if self.anneal != 1.0:
                    resample_by = resample_by.pow(self.anneal)
                if dilating:  # the dilated histogram's empty intervals: no mass after the PDF sampler's padding
                    empty = histogram.spacing_ends <= histogram.spacing_starts
                    resample_by = torch.where(empty, -self.pdf_sampler.histogram_padding, resample_by)
                samples = self.pdf_sampler(ray_bundle, histogram, resample_by, num_samples=count)
            samples_so_far *= count
            if level < len(density_fns):
                weights = samples.get_weights(density_fns[level](samples))
                weights_list.append(weights)
                samples_list.append(samples)
        assert samples is not None
        return samples, weights_list, samples_list

    @staticmethod
    def dilate(
        ray_bundle: RayBundle, samples: RaySamples, weights: Float[Tensor, "*rays samples 1"], dilation: float
    ) -> tuple[RaySamples, Float[Tensor, "*rays dilated 1"]]:
        """The histogram (samples, weights) dilated along the sampling coordinate, as samples to resample."""
        assert samples.spacing_starts is not None and samples.spacing_ends is not None
        assert samples.spacing_to_euclidean_fn is not None
        bins = torch.cat([samples.spacing_starts[..., 0], samples.spacing_ends[..., -1:, 0]], dim=-1)
        edges, dilated = max_dilate_weights(bins, weights[..., 0], dilation)
        euclidean = samples.spacing_to_euclidean_fn(edges)
        histogram = ray_bundle.get_ray_samples(
            bin_starts=euclidean[..., :-1, None], bin_ends=euclidean[..., 1:, None],
            spacing_starts=edges[..., :-1, None], spacing_ends=edges[..., 1:, None],
            spacing_to_euclidean_fn=samples.spacing_to_euclidean_fn)
        return histogram, dilated[..., None]

