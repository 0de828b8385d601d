"""The seed's theorems, checked numerically on the real layer (docs/eugen-math.md §1-2)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from eugen_nerf import EUGenLinear, evaluate_polynomial, fit_activation_polynomial


def _dense(d: int, out: int, seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    linear = nn.Linear(d, out).double()
    with torch.no_grad():
        linear.weight.mul_(1.5)
    return linear


def _draws(linear: nn.Linear, coeffs, x, num_features: int, draws: int, sampler: str = "gaussian") -> torch.Tensor:
    """Outputs of `draws` independent from_dense layers (independent G) on the same input."""
    outs = []
    for seed in range(draws):
        layer = EUGenLinear.from_dense(linear, coeffs, num_features, sampler=sampler, seed=10_000 + seed)
        with torch.no_grad():
            outs.append(layer(x))
    return torch.stack(outs)  # (draws, N, l)


def _predicted_variance(linear: nn.Linear, coeffs, x: torch.Tensor, m: int, tau: float) -> torch.Tensor:
    """docs/eugen-math.md §2: Var = (1/m) sum_i a_i^2 [(2 z^2 + |w~|^2 |x~|^2 + (tau-3) sum w~_s^2 x~_s^2)^i - z^2i]."""
    w = torch.cat([linear.weight, linear.bias[:, None]], dim=1).detach()  # (l, d+1)
    xt = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)  # (N, d+1)
    z = xt @ w.t()
    second = 2 * z**2 + (w**2).sum(1)[None, :] * (xt**2).sum(1)[:, None] + (tau - 3) * (xt**2) @ (w**2).t()
    return sum(a**2 * (second**i - z ** (2 * i)) for i, a in enumerate(coeffs) if i > 0) / m


@pytest.mark.parametrize("coeffs", [[0.3, 1.0], [0.1, 0.5, 0.8], [0.0, 1.0, -0.4, 0.3]], ids=["deg1", "deg2", "deg3"])
def test_from_dense_is_unbiased(coeffs):
    linear = _dense(5, 4, seed=1)
    torch.manual_seed(2)
    x = torch.rand(3, 5, dtype=torch.float64) - 0.5
    samples = _draws(linear, coeffs, x, num_features=8, draws=1500)
    mean, stderr = samples.mean(0), samples.std(0) / math.sqrt(samples.shape[0])
    with torch.no_grad():
        target = evaluate_polynomial(coeffs, linear(x))
    assert torch.all((mean - target).abs() <= 4 * stderr), (mean - target) / stderr


@pytest.mark.parametrize(("sampler", "tau"), [("gaussian", 3.0), ("rademacher", 1.0)])
def test_variance_matches_formula(sampler, tau):
    coeffs = [0.1, 0.5, 0.8]
    linear = _dense(5, 6, seed=3)
    torch.manual_seed(4)
    x = torch.rand(2, 5, dtype=torch.float64) - 0.5
    m = 8
    samples = _draws(linear, coeffs, x, num_features=m, draws=3000, sampler=sampler)
    empirical = samples.var(0)
    predicted = _predicted_variance(linear, coeffs, x, m, tau)
    ratio = empirical.sum() / predicted.sum()
    assert abs(ratio - 1) < 0.15, f"empirical/predicted variance = {ratio:.3f}"
    # and entry by entry, more loosely (each entry is a noisier estimate)
    assert torch.all((empirical / predicted - 1).abs() < 0.35)


def test_variance_halves_when_features_double():
    coeffs = [0.1, 0.5, 0.8]
    linear = _dense(5, 6, seed=5)
    x = torch.rand(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(6)) - 0.5
    var8 = _draws(linear, coeffs, x, 8, 2000).var(0).sum()
    var16 = _draws(linear, coeffs, x, 16, 2000).var(0).sum()
    assert 1.7 < var8 / var16 < 2.3, float(var8 / var16)


def _kernel_estimate(layer: EUGenLinear, x: torch.Tensor, w: torch.Tensor) -> tuple[float, float]:
    """f(x).f(w)/m as a mean over random features, with its standard error."""
    with torch.no_grad():
        products = layer.features(x[None]) * layer.features(w[None])
    products = products[0]
    if layer.feature_map == "trig":  # cos*cos + sin*sin of the same feature
        products = products.view(2, -1).sum(0)
    return float(products.mean()), float(products.std() / math.sqrt(products.numel()))


@pytest.mark.parametrize(
    ("feature_map", "order", "kernel"),
    [
        ("identity", 1, lambda x, w: x @ w),
        ("identity", 2, lambda x, w: (x @ w + (x @ w) ** 2) / 2),  # mean over the order-1 and order-2 blocks
        (
            "relu",
            1,
            lambda x, w: (
                x.norm()
                * w.norm()
                / (2 * math.pi)
                * (torch.sin(t := torch.arccos((x @ w) / (x.norm() * w.norm()))) + (math.pi - t) * torch.cos(t))
            ),
        ),
        ("trig", 1, lambda x, w: torch.exp(-0.5 * (x - w).square().sum())),
        ("exp", 1, lambda x, w: torch.exp(x @ w)),
    ],
    ids=["low-rank", "quadratic", "relu-arccos", "trig-gaussian", "positive-softmax"],
)
def test_special_cases_match_their_kernels(feature_map, order, kernel):
    layer = EUGenLinear(
        3,
        1,
        num_features=20_000,
        order=order,
        feature_map=feature_map,
        sampler="gaussian",
        norm_feature=False,
        soft_normalize=False,  # the kernel of the theory's layer, x as it is
        projection_scale=1.0,
        seed=7,
        dtype=torch.float64,
    )
    layer = layer.double()
    x = torch.tensor([0.6, -0.2, 0.3], dtype=torch.float64)
    w = torch.tensor([0.4, 0.5, -0.1], dtype=torch.float64)
    estimate, stderr = _kernel_estimate(layer, x, w)
    exact = float(kernel(x, w))
    assert abs(estimate - exact) <= 4 * stderr + 1e-12, (estimate, exact, stderr)


@pytest.mark.parametrize(("soft_normalize", "floor"), [(False, 1.0), (True, 1.0), (True, 0.1)])
def test_low_rank_case_is_a_rank_m_linear_map(soft_normalize, floor):
    layer = EUGenLinear(7, 5, num_features=3, order=1, seed=1, soft_normalize=soft_normalize,
                        normalize_floor=floor, dtype=torch.float64).double()
    x = torch.randn(11, 7, dtype=torch.float64) * torch.logspace(-2, 3, 11, dtype=torch.float64)[:, None]
    x_plus = torch.cat([x, x.norm(dim=1, keepdim=True)], dim=1)
    if soft_normalize:  # x+ / sqrt(r^2 + ||x+||^2 / d+), d+ = 8
        x_plus = x_plus / (floor**2 + x_plus.square().sum(dim=1, keepdim=True) / 8).sqrt()
    expected = x_plus @ (layer.weight @ layer.projection).t() + layer.bias
    assert torch.allclose(layer(x), expected, atol=1e-12)
    assert torch.linalg.matrix_rank(layer.weight @ layer.projection) == 3


def test_samplers_have_unit_variance_entries_and_orthogonal_rows():
    for sampler in ("gaussian", "orthogonal", "rademacher"):
        layer = EUGenLinear(63, 8, num_features=64, order=2, sampler=sampler, seed=3, projection_scale=1.0)
        g = layer.projection.double()
        assert abs(g.square().mean().item() - 1) < 0.1, sampler
    g = EUGenLinear(63, 8, 16, 1, sampler="orthogonal", seed=2, projection_scale=1.0).projection.double()
    gram = g @ g.t()
    assert torch.allclose(gram - torch.diag(gram.diagonal()), torch.zeros_like(gram), atol=1e-6)


def test_polynomial_fit_of_activations():
    z = torch.linspace(-2, 2, 401, dtype=torch.float64)
    errors = []
    for degree in (1, 2, 3, 4):
        coeffs = fit_activation_polynomial("softplus", degree, (-2.0, 2.0))
        errors.append(float((evaluate_polynomial(coeffs, z) - torch.nn.functional.softplus(z)).abs().max()))
    # softplus(z) - z/2 is even, so degree 3 fits no better than degree 2: equal up to rounding
    assert all(later <= earlier + 1e-12 for earlier, later in zip(errors[:-1], errors[1:], strict=True))
    assert errors[-1] < 0.01
    relu2 = fit_activation_polynomial("relu", 2, (-1.0, 1.0))
    assert float((evaluate_polynomial(relu2, z[100:301]) - torch.relu(z[100:301])).abs().max()) < 0.12


@pytest.mark.parametrize("direction_frequencies", [0, 4])
def test_view_independent_colour_needs_fewer_direction_dims_than_features(direction_frequencies):
    """Why eugen-zipnerf's view head reads the raw direction: an EUGen layer's fixed projections mix
    every input coordinate into every feature, so a view-independent output must cancel the direction
    terms with the output weights - possible with the 3 raw coordinates, not with the 27 of a
    4-frequency encoding (more than m = 16 features). Least squares is the best the layer can do."""
    from nerfstudio.field_components.encodings import NeRFEncoding

    torch.manual_seed(0)
    encoding = NeRFEncoding(in_dim=3, num_frequencies=direction_frequencies, min_freq_exp=0.0,
                            max_freq_exp=float(direction_frequencies), include_input=True)
    directions = torch.nn.functional.normalize(torch.randn(4000, 3), dim=-1)
    scene = torch.randn(4000, 8)  # position features (the bottleneck's role)
    layer = EUGenLinear(encoding.get_out_dim() + 8, 1, num_features=16, order=2, seed=1)
    inputs = torch.cat([encoding(directions), scene], dim=1)
    # A colour that does not depend on the view and that the layer can represent: linear in the scene
    # features, times the soft normalisation's scale (which sees the direction only through its norm,
    # the same for every view).
    squared = 2 * inputs.square().sum(dim=1, keepdim=True)  # ||x+||^2 with the norm coordinate
    target = scene.sum(dim=1, keepdim=True) / (1 + squared / layer.augmented_features).sqrt()
    with torch.no_grad():
        features = layer.features(inputs)
    design = torch.cat([torch.ones_like(features[:, :1]), features], dim=1).double()
    fit = design @ torch.linalg.lstsq(design, target.double()).solution
    relative_error = float((fit - target).norm() / target.norm())
    if direction_frequencies == 0:
        assert relative_error < 1e-4  # exact up to rounding
    else:
        assert relative_error > 0.3
