"""eugen-zipnerf's parts against their definitions: scale-aware grid weights, multisamples, the
isotropic contraction, the power-transformed distance, the blurred interlevel loss, flag errors."""

from __future__ import annotations

import math

import pytest
import torch
from nerfstudio.cameras.rays import Frustums
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.utils.math import Gaussians

from eugen_nerf.errors import InputError
from eugen_nerf.nerf.components.contraction import L2SceneContraction
from eugen_nerf.nerf.components.hashgrid import ScaleAwareHashGrid
from eugen_nerf.nerf.components.multisample import NUM_MULTISAMPLES, multisample_frustums
from eugen_nerf.nerf.components.zipnerf_losses import (
    antialiased_interlevel_loss,
    blur_step_function,
    integrate_piecewise_linear,
    inverse_power_transform,
    power_transform,
)
from eugen_nerf.nerf.methods.zipnerf import EUGenZipNeRFModelConfig


def small_grid() -> ScaleAwareHashGrid:
    return ScaleAwareHashGrid(num_levels=4, features_per_level=2, min_resolution=16, max_resolution=128,
                              log2_hashmap_size=12, backend="torch")


def test_grid_downweighting_goes_to_zero_for_large_samples_and_one_for_small():
    grid = small_grid()
    cells = 1.0 / grid.resolutions  # cell size of each level in grid units
    tiny = grid.level_weights(torch.full((1,), 1e-3) * cells.min())
    huge = grid.level_weights(torch.full((1,), 1e3) * cells.max())
    assert torch.all(tiny > 0.999) and torch.all(huge < 1e-3)
    # per level: a Gaussian a tenth of the level's cell keeps it, one ten cells wide nearly drops it,
    # and coarser levels are kept longer as the Gaussian grows
    for level, cell in enumerate(cells):
        assert grid.level_weights(cell[None] / 10)[0, level] > 0.99
        assert grid.level_weights(cell[None] * 10)[0, level] < 0.05
    assert torch.all(torch.diff(grid.level_weights(cells[1:2])[0]) < 0)


def test_grid_features_of_a_large_sample_vanish_and_of_a_small_one_are_the_lookup():
    grid = small_grid()
    positions = torch.rand(5, NUM_MULTISAMPLES, 3)
    small = grid(positions, torch.full((5, NUM_MULTISAMPLES), 1e-6))
    lookup = grid.encoding(positions.reshape(-1, 3)).reshape(5, NUM_MULTISAMPLES, -1).mean(dim=1)
    torch.testing.assert_close(small, lookup)
    assert grid(positions, torch.full((5, NUM_MULTISAMPLES), 100.0)).abs().max() < 1e-3 * lookup.abs().max()
    assert small.shape == (5, grid.get_out_dim())


def test_multisamples_match_the_frustums_mean():
    count = 7
    directions = torch.nn.functional.normalize(torch.randn(count, 1, 3), dim=-1)
    starts = torch.rand(count, 1, 1) * 3 + 0.1
    frustums = Frustums(origins=torch.randn(count, 1, 3), directions=directions, starts=starts,
                        ends=starts + torch.rand(count, 1, 1), pixel_area=torch.full((count, 1, 1), 1e-3))
    for randomize in (False, True):
        means, stds = multisample_frustums(frustums, randomize=randomize)
        assert means.shape == (count, 1, NUM_MULTISAMPLES, 3) and stds.shape == (count, 1, NUM_MULTISAMPLES)
        # the hexagon's points average to the frustum's Gaussian mean (mip-NeRF's t-mean on the axis)
        torch.testing.assert_close(means.mean(dim=-2), frustums.get_gaussian_blob().mean, atol=1e-5, rtol=1e-5)
        along = ((means - frustums.origins[..., None, :]) * directions[..., None, :]).sum(-1)
        assert torch.all(along >= starts - 1e-4) and torch.all(along <= frustums.ends + 0.1 * (frustums.ends - starts))
        assert torch.all(stds > 0)
    # evaluation is deterministic, training is not
    torch.testing.assert_close(multisample_frustums(frustums, False)[0], multisample_frustums(frustums, False)[0])
    assert not torch.allclose(multisample_frustums(frustums, True)[0], multisample_frustums(frustums, True)[0])


def test_isotropic_contraction_scales_std_by_cube_root_of_jacobian_determinant():
    contraction = L2SceneContraction()
    means = torch.randn(200, 3) * 3
    stds = torch.rand(200) + 0.1
    contracted, new_stds = contraction.contract_isotropic(means, stds)
    torch.testing.assert_close(contracted, contraction(means))
    mapped = contraction(Gaussians(mean=means, cov=torch.eye(3).expand(200, 3, 3)))  # J J^T
    det_root = torch.linalg.det(mapped.cov).pow(1 / 6)  # |det J|^(1/3)
    torch.testing.assert_close(new_stds, stds * det_root, rtol=1e-4, atol=1e-6)


def test_power_transform_is_linear_near_zero_bounded_and_inverted():
    x = torch.linspace(0, 1000, 2001, dtype=torch.float64)
    y = power_transform(x)
    assert torch.all(torch.diff(y) > 0) and y.max() < 5 / 3
    assert abs(float(power_transform(torch.tensor(1e-4, dtype=torch.float64))) - 1e-4) < 1e-7
    torch.testing.assert_close(inverse_power_transform(y), x, rtol=1e-3, atol=1e-3)


def test_blurred_step_function_equals_numerical_box_filter():
    generator = torch.Generator().manual_seed(0)
    edges = torch.sort(torch.rand(3, 9, generator=generator), dim=-1).values
    densities = torch.rand(3, 8, generator=generator)
    radius = 0.05
    knots, values = blur_step_function(edges, densities, radius)
    # numerically: the step function on a fine grid, averaged over a box of half-width radius
    fine = torch.linspace(-0.2, 1.2, 14001)
    step = torch.zeros(3, fine.numel())
    for i in range(8):
        inside = (fine >= edges[:, i : i + 1]) & (fine < edges[:, i + 1 : i + 2])
        step = torch.where(inside, densities[:, i : i + 1], step)
    width = int(round(radius / (fine[1] - fine[0]).item()))
    kernel = torch.ones(1, 1, 2 * width + 1) / (2 * width + 1)
    blurred = torch.nn.functional.conv1d(step[:, None], kernel, padding=width)[:, 0]
    queries = torch.sort(torch.rand(3, 20, generator=generator) * 1.2 - 0.1, dim=-1).values
    ours = torch.stack([torch.from_numpy(__import__("numpy").interp(queries[i], knots[i], values[i]))
                        for i in range(3)]).float()
    theirs = torch.stack([torch.from_numpy(__import__("numpy").interp(queries[i], fine, blurred[i]))
                          for i in range(3)]).float()
    torch.testing.assert_close(ours, theirs, atol=0.02, rtol=0.02)
    # blurring keeps the mass, and integrating it back onto the original edges nearly keeps the weights
    total = integrate_piecewise_linear(knots, values, torch.full((3, 1), 10.0))[:, 0]
    torch.testing.assert_close(total, (densities * torch.diff(edges)).sum(-1), rtol=1e-5, atol=1e-6)


def test_antialiased_interlevel_loss_penalises_only_proposals_below_the_nerf():
    from nerfstudio.cameras.rays import RaySamples

    def samples(edges):
        starts, ends = edges[..., :-1, None], edges[..., 1:, None]
        frustums = Frustums(origins=torch.zeros(*starts.shape[:-1], 3), directions=torch.zeros(*starts.shape[:-1], 3),
                            starts=starts, ends=ends, pixel_area=torch.ones_like(starts))
        return RaySamples(frustums=frustums, spacing_starts=starts, spacing_ends=ends)

    nerf_edges = torch.linspace(0, 1, 9).expand(2, 9)
    proposal_edges = torch.linspace(0, 1, 5).expand(2, 5)
    nerf_weights = torch.full((2, 8, 1), 0.1)
    generous = torch.full((2, 4, 1), 0.5, requires_grad=True)
    starved = torch.full((2, 4, 1), 0.01, requires_grad=True)
    no_loss = antialiased_interlevel_loss([generous, nerf_weights], [samples(proposal_edges), samples(nerf_edges)],
                                          blur_radii=(0.03,))
    loss = antialiased_interlevel_loss([starved, nerf_weights], [samples(proposal_edges), samples(nerf_edges)],
                                       blur_radii=(0.03,))
    assert float(no_loss) == 0.0 and float(loss) > 0.1
    loss.backward()
    assert starved.grad is not None and torch.all(starved.grad <= 0)


def test_bad_zipnerf_flags_are_one_line_errors():
    with pytest.raises(InputError, match="proposal-grid-num-levels has 1 entries for 2 proposal levels"):
        EUGenZipNeRFModelConfig(proposal_grid_num_levels=(4,))
    with pytest.raises(InputError, match="--pipeline.model.hash-grid must be one of auto, tcnn, torch"):
        EUGenZipNeRFModelConfig(hash_grid="cuda")
    with pytest.raises(InputError, match="--pipeline.model.direction-frequencies must be 0 or more, got -1"):
        EUGenZipNeRFModelConfig(direction_frequencies=-1)
    with pytest.raises(InputError, match="--pipeline.model.bottleneck-width must be 0 or more, got -8"):
        EUGenZipNeRFModelConfig(bottleneck_width=-8)
    with pytest.raises(InputError, match="--pipeline.model.proposal-weights-anneal-slope must be above 0, got -2"):
        EUGenZipNeRFModelConfig(proposal_weights_anneal_slope=-2.0)
    with pytest.raises(InputError, match="--pipeline.model.proposal-weights-anneal-max-num-iters must be 1 or more"):
        EUGenZipNeRFModelConfig(proposal_weights_anneal_max_num_iters=0)
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="hash-grid tcnn"):
            ScaleAwareHashGrid(2, 1, 16, 32, 10, backend="tcnn")


def test_grid_weight_decay_is_the_sum_of_level_means():
    grid = small_grid()
    table = grid.encoding.hash_table.detach().reshape(4, -1, 2)
    expected = sum(float(table[level].square().mean()) for level in range(4))
    assert math.isclose(float(grid.weight_decay()), expected, rel_tol=1e-5)


def model(**flags):
    """A tiny eugen-zipnerf model with the method's defaults otherwise (torch grid)."""
    from nerfstudio.data.scene_box import SceneBox

    config = EUGenZipNeRFModelConfig(bottleneck_width=32, head_mlp_layer_width=32, grid_num_levels=2,
                                     grid_max_resolution=32, grid_log2_hashmap_size=8,
                                     proposal_grid_num_levels=(2, 2), proposal_grid_max_resolutions=(32, 32),
                                     hash_grid="torch", **flags)
    return config.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=1)


def test_checkpoint_of_another_grid_layout_is_a_one_line_error():
    zipnerf = model()
    state = zipnerf.state_dict()
    zipnerf.load_state_dict(state)  # its own state loads
    key = "field.position_encoding.grid.encoding.hash_table"
    as_tcnn = {("field.position_encoding.grid.encoding.tcnn_encoding.params" if k == key else k): v
               for k, v in state.items()}
    with pytest.raises(InputError, match=f"1 tensors missing \\(first: {key}\\), 1 unexpected"):
        zipnerf.load_state_dict(as_tcnn)


@pytest.mark.parametrize("density_bias", [-1.0, 0.0])
def test_density_is_the_softplus_of_the_raw_density_plus_the_bias(density_bias):
    field = model(**({} if density_bias == -1.0 else {"density_bias": density_bias})).field  # -1: the default
    encoded = torch.randn(7, field.position_encoding.get_out_dim())
    density, _ = field.density_from_encoding(encoded)
    raw = field.field_output_density.net(field.mlp_base(encoded))
    torch.testing.assert_close(density, torch.nn.functional.softplus(raw + density_bias))


def test_a_config_written_before_the_density_bias_loads_as_it_trained():
    import yaml

    written = yaml.dump(EUGenZipNeRFModelConfig())
    assert yaml.load(written, Loader=yaml.Loader).density_bias == -1.0
    older = "\n".join(line for line in written.splitlines()
                      if not line.startswith(("density_bias:", "use_proposal_weight_anneal:")))
    loaded = yaml.load(older, Loader=yaml.Loader)
    assert loaded.density_bias == 0.0 and loaded.use_proposal_weight_anneal is False


def test_gradient_scaling_shrinks_the_field_gradients_of_samples_near_the_camera():
    from nerfstudio.cameras.rays import RayBundle

    def field_gradients(use_gradient_scaling: bool) -> torch.Tensor:
        torch.manual_seed(0)
        zipnerf = model(use_gradient_scaling=use_gradient_scaling)
        rays = RayBundle(origins=torch.zeros(8, 3), directions=torch.nn.functional.normalize(torch.randn(8, 3), dim=-1),
                         pixel_area=torch.full((8, 1), 1e-4), nears=torch.full((8, 1), 0.1),
                         fars=torch.full((8, 1), 0.1001))
        zipnerf.train()
        zipnerf.get_outputs(rays)["rgb"].sum().backward()
        return torch.cat([p.grad.flatten() for p in zipnerf.field.parameters() if p.grad is not None])

    # every sample lies at distance ~0.1: its gradients scaled by 0.1^2
    plain, scaled = field_gradients(False), field_gradients(True)
    assert plain.abs().max() > 0
    # float rounding: tolerance relative to the largest gradient
    torch.testing.assert_close(scaled, plain * 0.1**2, rtol=1e-2, atol=1e-4 * float(scaled.abs().max()))


def test_default_layout_and_the_first_head_layer_taking_the_direction_through_a_dense_term():
    from eugen_nerf.layers import EUGenLinear

    def field(**layout):
        return model(**layout).field

    # Zip-NeRF's near plane on its 360 scenes, not nerfstudio's 0.05 (a screen formed just past that)
    assert model().collider.near_plane == 0.2
    default = field()
    assert not any(isinstance(layer, EUGenLinear) for layer in default.mlp_base.layers)
    # Zip-NeRF's density MLP: grid features -> 64 (ReLU) -> a linear bottleneck
    assert [(layer.in_features, layer.out_features) for layer in default.mlp_base.layers] == [(8, 64), (64, 32)]
    assert default.mlp_base.out_activation is None
    assert isinstance(field(bottleneck_relu=True).mlp_base.out_activation, torch.nn.ReLU)
    assert [type(layer).__name__ for layer in default.mlp_head.layers] == ["Linear", "EUGenLinear"]
    first, second = field(eugen_head_layers=(0, 1)).mlp_head.layers
    assert isinstance(second, EUGenLinear) and second.linear_inputs == 0
    assert isinstance(first, EUGenLinear) and first.linear_inputs == 3  # the raw unit direction
    assert first.projection.shape[1] == 32 + 1  # G reads the bottleneck and its norm, not the direction
    first, _ = field(eugen_head_layers=(0, 1), eugen_linear_direction=False).mlp_head.layers
    assert first.linear_inputs == 0 and first.projection.shape[1] == 3 + 32 + 1
    # a checkpoint trained without the dense direction term does not fit a model with it: one line
    without = model(eugen_head_layers=(0, 1), eugen_linear_direction=False).state_dict()
    with pytest.raises(InputError, match=r"mlp_head.layers.0.projection has shape \(48, 36\) but this model's has "
                                         r"\(48, 33\) \(different k, m, width or eugen-linear-direction\)"):
        model(eugen_head_layers=(0, 1)).load_state_dict(without)


@pytest.mark.parametrize("layer", ["dense", "eugen"])
def test_a_widening_linear_bottleneck_stays_factored_and_its_readers_fold_it(layer):
    """Zip-NeRF's bottleneck (64 -> 256, no activation) is never formed: the density head and the view
    head fold its weight, in both twins; outputs and gradients equal the layer-by-layer path."""
    from eugen_nerf.bench.nerf import random_ray_samples
    from eugen_nerf.layers.factored import Factored

    torch.manual_seed(0)
    field = model(layer=layer, base_mlp_layer_width=16).field  # grid features -> 16 -> a 32-wide bottleneck
    samples = random_ray_samples(64, torch.tensor([[-1.0] * 3, [1.0] * 3]), torch.device("cpu"))
    _, base = field.get_density(samples)
    assert isinstance(base, Factored) and base.features.shape == (64, 16) and base.width == 32

    def outputs_and_gradients(bundle: str) -> list[torch.Tensor]:
        field.mlp_base.bundle = field.mlp_head.bundle = bundle
        field.zero_grad()
        density, base = field.get_density(samples)
        rgb = field.get_outputs(samples, density_embedding=base)[FieldHeadNames.RGB]
        (density.square().sum() + rgb.sum()).backward()
        return [density, rgb, *(p.grad for p in field.parameters() if p.grad is not None)]

    folded, layerwise = outputs_and_gradients("auto"), outputs_and_gradients("never")
    assert len(folded) == len(layerwise)
    for a, b in zip(folded, layerwise, strict=True):  # float32 sums in another order: tolerance from the largest
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))
    # a narrowing bottleneck (64 -> 32: folding would cost its readers more) is formed as before
    _, narrowing = model(layer=layer).field.get_density(samples)
    assert isinstance(narrowing, torch.Tensor)


def test_grid_feature_scale_keeps_the_initial_features_and_moves_them_faster():
    def grid(scale: float) -> ScaleAwareHashGrid:
        torch.manual_seed(0)
        return ScaleAwareHashGrid(4, 2, 16, 128, 10, backend="torch", feature_scale=scale)

    plain, scaled = grid(1.0), grid(10.0)
    torch.testing.assert_close(scaled.encoding.hash_table * 10, plain.encoding.hash_table)
    positions, stds = torch.rand(5, 6, 3), torch.full((5, 6), 1e-3)
    torch.testing.assert_close(scaled(positions, stds), plain(positions, stds))
    # the decay reads the stored values, as camp_zipnerf's
    assert math.isclose(float(scaled.weight_decay()), float(plain.weight_decay()) / 100, rel_tol=1e-4)
    for each in (plain, scaled):  # one step of Adam moves every touched stored value by about the rate
        optimizer = torch.optim.Adam(each.parameters(), lr=1e-3)
        each(positions, stds).sum().backward()
        optimizer.step()
    with torch.no_grad():
        moved_scaled = scaled(positions, stds) - grid(10.0)(positions, stds)
        moved_plain = plain(positions, stds) - grid(1.0)(positions, stds)
    torch.testing.assert_close(moved_scaled, 10 * moved_plain, rtol=1e-3, atol=1e-7)  # features move 10x as far
    with pytest.raises(InputError, match="grid-feature-scale must be above 0"):
        grid(0.0)


def test_he_init_reaches_every_dense_layer_of_field_and_proposals_and_no_eugen_layer():
    from eugen_nerf.layers.eugen import EUGenLinear

    torch.manual_seed(0)
    he = model(dense_init="he")
    torch.manual_seed(0)
    default = model(dense_init="torch")
    dense = [(name, layer) for name, layer in he.named_modules() if type(layer) is torch.nn.Linear]
    assert any(name.startswith("proposal_networks") for name, _ in dense)
    assert any("field_output_density" in name for name, _ in dense)
    for _, layer in dense:
        bound = math.sqrt(6 / layer.in_features)
        assert float(layer.bias.abs().max()) == 0.0
        assert float(layer.weight.abs().max()) <= bound
        assert float(layer.weight.abs().max()) > bound / math.sqrt(6) * 1.5  # beyond nn.Linear's 1/sqrt(fan_in)
    assert any(float(layer.bias.abs().max()) > 0 for layer in default.modules() if type(layer) is torch.nn.Linear)
    eugen = dict(default.named_modules())
    for name, layer in he.named_modules():
        if isinstance(layer, EUGenLinear):
            for (key, value), other in zip(layer.state_dict().items(), eugen[name].state_dict().values(), strict=True):
                torch.testing.assert_close(value, other, msg=key)
    with pytest.raises(InputError, match="--pipeline.model.dense-init"):
        model(dense_init="xavier")
