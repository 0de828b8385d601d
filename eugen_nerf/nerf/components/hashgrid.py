"""Zip-NeRF's scale-aware multiresolution hash grid.

The grid itself is nerfstudio's `HashEncoding`: tiny-cuda-nn's fused encoding when `tinycudann`
imports and CUDA is there, otherwise nerfstudio's torch implementation (same levels, resolutions and
[0, 1]^3 input; slower). Which one runs is logged once per process.

What Zip-NeRF adds on top (its section 2): each query is an isotropic Gaussian (mean, std), and the
features of level l (resolution n_l cells per unit) are multiplied by

    w_l = erf(1 / sqrt(8 std^2 n_l^2)),

the probability that a sample from the Gaussian lands within half a cell of its mean: ~1 when the
Gaussian is much smaller than a cell, ~0 when it covers many cells (whose features would average
out). Zip-NeRF's "normalised weight decay" (sum over levels of the mean squared feature) keeps
rarely-seen cells near zero.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from nerfstudio.field_components.encodings import HashEncoding
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor, nn

from eugen_nerf.errors import InputError

HASH_GRID_BACKENDS = ("auto", "tcnn", "torch")
_reported_backends: set[str] = set()


def tcnn_usable() -> bool:
    """tiny-cuda-nn imports and a CUDA device is there (its import itself fails on CPU-only machines)."""
    if not torch.cuda.is_available():
        return False
    try:
        import tinycudann  # noqa: F401
    except (ImportError, OSError, RuntimeError):
        return False
    return True


def check_backend_name(requested: str) -> None:
    """A one-line flag error for a --pipeline.model.hash-grid value other than auto, tcnn, torch."""
    if requested not in HASH_GRID_BACKENDS:
        choices = ", ".join(HASH_GRID_BACKENDS)
        raise InputError(f"--pipeline.model.hash-grid must be one of {choices}, got {requested!r}")


def choose_backend(requested: str) -> str:
    """'tcnn' or 'torch' for --pipeline.model.hash-grid auto|tcnn|torch; logged once per process."""
    check_backend_name(requested)
    usable = tcnn_usable()
    if requested == "tcnn" and not usable:
        raise InputError("--pipeline.model.hash-grid tcnn: tiny-cuda-nn does not import here or there is no CUDA "
                         "device; use auto or torch")
    backend = "tcnn" if requested == "tcnn" or (requested == "auto" and usable) else "torch"
    if backend not in _reported_backends:
        _reported_backends.add(backend)
        why = "tiny-cuda-nn with CUDA" if backend == "tcnn" else (
            "torch (tiny-cuda-nn or CUDA not available)" if requested == "auto" else "torch (asked for)")
        CONSOLE.print(f"eugen-zipnerf hash grid: {why}")
    return backend


class ScaleAwareHashGrid(nn.Module):
    """Hash grid over [0, 1]^3 whose level features are downweighted by the query's scale.

    forward(positions (*batch, K, 3), stds (*batch, K)) -> (*batch, levels * features): the K
    multisamples' downweighted features, averaged.

    Args:
        num_levels: resolution levels of the grid.
        features_per_level: features stored per hash-table entry of each level.
        min_resolution: cells per unit length of the coarsest level.
        max_resolution: cells per unit length of the finest level.
        log2_hashmap_size: log2 of the hash-table entries per level.
        backend: auto | tcnn | torch, as --pipeline.model.hash-grid (see `choose_backend`).
        feature_scale: the stored values are multiplied by this before anything reads them, and start this
            many times smaller (camp_zipnerf's `precondition_scaling`, 10): the same initial features, which
            Adam then moves this many times further per step than the MLPs' weights.
    """

    def __init__(
        self,
        num_levels: int,
        features_per_level: int,
        min_resolution: int,
        max_resolution: int,
        log2_hashmap_size: int,
        backend: str = "auto",
        feature_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if feature_scale <= 0:
            raise InputError(f"--pipeline.model.grid-feature-scale must be above 0, got {feature_scale}")
        self.feature_scale = feature_scale
        self.backend = choose_backend(backend)
        self.num_levels = num_levels
        self.features_per_level = features_per_level
        self.encoding = HashEncoding(num_levels=num_levels, min_res=min_resolution, max_res=max_resolution,
                                     log2_hashmap_size=log2_hashmap_size, features_per_level=features_per_level,
                                     implementation=self.backend)
        with torch.no_grad():
            tcnn = self.encoding.tcnn_encoding
            stored = self.encoding.hash_table if tcnn is None else tcnn.params
            stored /= feature_scale
        # cells per unit length of each level (tiny-cuda-nn's differ from these by at most one cell)
        self.register_buffer("resolutions", self.encoding.scalings.clone().float(), persistent=False)

    def get_out_dim(self) -> int:
        return self.num_levels * self.features_per_level

    def level_weights(self, stds: Float[Tensor, "*bs"]) -> Float[Tensor, "*bs levels"]:
        """(*batch) stds -> (*batch, levels) weights erf(1 / sqrt(8 std^2 n_l^2))."""
        return torch.erf(torch.rsqrt(8.0 * (stds[..., None] * self.resolutions).square()).clamp(max=1e4))

    def forward(
        self, positions: Float[Tensor, "*bs multisamples 3"], stds: Float[Tensor, "*bs multisamples"]
    ) -> Float[Tensor, "*bs features"]:
        features = self.encoding(positions.reshape(-1, 3)).float()  # tiny-cuda-nn returns half precision
        if self.feature_scale != 1.0:
            features = features * self.feature_scale
        features = features.reshape(*positions.shape[:-1], self.num_levels, self.features_per_level)
        weighted = features * self.level_weights(stds)[..., None]
        return weighted.mean(dim=-3).flatten(-2)

    def weight_decay(self) -> Float[Tensor, ""]:
        """Zip-NeRF's normalised weight decay: sum over levels of the mean squared stored value (the
        feature over `feature_scale`, as camp_zipnerf)."""
        if self.encoding.tcnn_encoding is not None:
            # tiny-cuda-nn keeps all levels in one flat vector (coarse levels are smaller): approximate
            # the per-level means by the overall mean.
            return self.num_levels * self.encoding.tcnn_encoding.params.float().square().mean()
        table = self.encoding.hash_table.reshape(self.num_levels, -1, self.features_per_level)
        return table.square().mean(dim=(1, 2)).sum()
