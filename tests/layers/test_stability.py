"""Soft normalisation keeps stacked EUGen layers bounded for inputs of any norm, at any depth
(docs/eugen-math.md §6); the theory's raw layer does not, and `exp` features are refused where invalid."""

from __future__ import annotations

import pytest
import torch

from eugen_nerf.layers import EUGenConfig, EUGenLinear, EUGenMLP


def paper_field_mlp(soft_normalize: bool, floor: float = 1.0) -> EUGenMLP:
    """NeRF's 8x256 base MLP with a skip at 4, every layer EUGen (order 2, m = 16)."""
    torch.manual_seed(0)
    return EUGenMLP(63, 8, 256, skip_connections=(4,), layer_kinds="eugen",
                    eugen=EUGenConfig(soft_normalize=soft_normalize, normalize_floor=floor))


def largest_outputs(mlp: EUGenMLP, weight_scale: float) -> list[float]:
    """max |y| over inputs in [-1, 1]^63 scaled by 1, 2, 4, 8, with every weight scaled (inf where it overflows)."""
    inputs = torch.rand(4096, 63, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        for parameter in mlp.parameters():
            parameter.mul_(weight_scale)
        out = []
        for scale in (1, 2, 4, 8):
            try:
                y = mlp(inputs * scale)
                out.append(y.abs().max().item() if torch.isfinite(y).all() else float("inf"))
            except ValueError:  # NonFiniteInputError: an inner layer overflowed
                out.append(float("inf"))
    return out


@pytest.mark.parametrize("floor", [1.0, 0.1])
@pytest.mark.parametrize("weight_scale", [1.0, 2.0])
def test_deep_eugen_mlp_stays_bounded(weight_scale, floor):
    assert max(largest_outputs(paper_field_mlp(True, floor), weight_scale)) < 1e3


def test_the_raw_layer_overflows_where_the_default_does_not():
    """The defect soft normalisation removes: a degree-2^8 polynomial of its input."""
    assert largest_outputs(paper_field_mlp(False), 2.0)[-1] == float("inf")


def test_soft_normalisation_is_one_scale_per_row_and_bundles_exactly():
    torch.manual_seed(0)
    mlp = EUGenMLP(63, 8, 256, skip_connections=(4,), layer_kinds="eugen").double()
    layerwise = EUGenMLP(63, 8, 256, skip_connections=(4,), layer_kinds="eugen", bundle="never").double()
    layerwise.load_state_dict(mlp.state_dict())
    x = (torch.rand(64, 63, dtype=torch.float64) * 2 - 1) * torch.logspace(-1, 2, 64, dtype=torch.float64)[:, None]
    assert torch.allclose(mlp(x), layerwise(x), rtol=1e-9, atol=1e-12)
    layer = EUGenLinear(5, 3, num_features=4, order=2, seed=0, dtype=torch.float64).double()
    raw = EUGenLinear(5, 3, num_features=4, order=2, seed=0, soft_normalize=False, dtype=torch.float64).double()
    raw.load_state_dict(layer.state_dict())
    z = torch.randn(7, 5, dtype=torch.float64) * 30
    squared = 2 * z.square().sum(dim=1, keepdim=True)  # ||x+||^2 = ||x||^2 + ||x||^2 (norm coordinate)
    scale = (1 + squared / layer.augmented_features).rsqrt()
    # features are products of `order` projections: order-1 block scaled by s, order-2 block by s^2
    expected = torch.cat([raw.features(z)[:, :4] * scale, raw.features(z)[:, 4:] * scale.square()], dim=1)
    assert torch.allclose(layer.features(z), expected, rtol=1e-12)


def test_exp_features_need_order_one():
    with pytest.raises(ValueError, match="exp.*order=1"):
        EUGenLinear(8, 4, num_features=4, order=2, feature_map="exp")
    with pytest.raises(ValueError, match="exp.*order=1"):
        EUGenConfig(order=2, feature_map="exp").validate()
    EUGenLinear(8, 4, num_features=4, order=1, feature_map="exp")  # the valid case still builds
