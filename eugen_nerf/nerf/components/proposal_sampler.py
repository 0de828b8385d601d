"""mip-NeRF 360's proposal sampling (also Zip-NeRF's): small density-only MLPs that resample each ray
twice before the NeRF MLP sees it, trained by an interlevel loss to bound the NeRF's weights.

nerfstudio's `ProposalNetworkSampler` calls its density functions on sample *positions*; mip-NeRF 360's
proposal MLPs see integrated positional encodings of conical frustums, which need the whole
`RaySamples`. `FrustumProposalSampler` is that sampler with the density functions given the samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from jaxtyping import Float
from nerfstudio.cameras.rays import RayBundle, RaySamples
from nerfstudio.field_components.activations import trunc_exp
from nerfstudio.model_components.ray_samplers import PDFSampler, Sampler, UniformLinDispPiecewiseSampler
from torch import Tensor, nn

from eugen_nerf.layers.mlp import EUGenConfig, EUGenMLP
from eugen_nerf.nerf.components.encodings import SampleEncoding
from eugen_nerf.nerf.engine.finite import check_field_output


class ProposalDensityField(nn.Module):
    """A proposal MLP: encoding of the frustum (integrated positional encoding for mip-NeRF 360, the
    multisampled hash grid for Zip-NeRF) -> MLP -> density.

    Args:
        encoding: encoding of the ray samples, (*batch) -> (*batch, encoding.get_out_dim()).
        layer_kinds: 'dense' or 'eugen' per hidden layer; a dense output layer to one density follows.
        layer_width: width of the hidden layers.
        eugen: order k, features m, feature map and projections of the EUGen layers.
    """

    def __init__(
        self, encoding: SampleEncoding, layer_kinds: Sequence[str], layer_width: int, eugen: EUGenConfig
    ) -> None:
        super().__init__()
        self.encoding = encoding
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
        return trunc_exp(raw - 1.0)


class FrustumProposalSampler(Sampler):
    """Uniform-in-disparity samples, then one PDF resampling per proposal level, each level weighted by
    its own proposal MLP; returns the NeRF's samples and every level's (samples, weights) for the
    interlevel and distortion losses.

    Args:
        num_proposal_samples: samples per ray at each proposal level (its length is the number of levels).
        num_nerf_samples: samples per ray of the last resampling, the ones the NeRF MLP sees.
        initial_sampler: the first level's sampler; None: linear up to distance 1, then uniform in disparity.
        single_jitter: one jitter per ray rather than per sample, in the default initial and PDF samplers.
    """

    def __init__(
        self,
        num_proposal_samples: Sequence[int],
        num_nerf_samples: int,
        initial_sampler: Sampler | None = None,
        single_jitter: bool = True,
    ) -> None:
        super().__init__()
        self.num_proposal_samples = tuple(num_proposal_samples)
        self.num_nerf_samples = num_nerf_samples
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
        for level, count in enumerate([*self.num_proposal_samples, self.num_nerf_samples]):
            if samples is None:
                samples = self.initial_sampler(ray_bundle, num_samples=count)
            else:
                resample_by = weights if self.anneal == 1.0 else weights.pow(self.anneal)
                samples = self.pdf_sampler(ray_bundle, samples, resample_by, num_samples=count)
            if level < len(density_fns):
                weights = samples.get_weights(density_fns[level](samples))
                weights_list.append(weights)
                samples_list.append(samples)
        assert samples is not None
        return samples, weights_list, samples_list

