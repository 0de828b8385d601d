"""eugen-mipnerf360, eugen-zipnerf and eugen-dnerf: the twins train, nerfstudio's tools run on them, the dense
twins are what they claim, bad input is one line."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import imageio.v2 as imageio
import pytest
import torch
from nerfstudio.cameras.rays import RaySamples
from nerfstudio.field_components.temporal_distortions import DNeRFDistortion

from eugen_nerf.bench.nerf import BenchNeRF, random_ray_samples
from eugen_nerf.errors import InputError
from eugen_nerf.nerf.commands.time_sweep import RenderTimeSweep
from eugen_nerf.nerf.methods import registry as methods
from eugen_nerf.nerf.methods.dnerf import EUGenDNeRFDistortion
from eugen_nerf.nerf.methods.mipnerf360 import EUGenMipNeRF360ModelConfig
from eugen_nerf.presets import load_preset
from eugen_nerf.scenes.kinds import DNeRFScene, UnboundedScene

METHODS = ("eugen_mipnerf360", "eugen_zipnerf", "eugen_dnerf")


@pytest.fixture(scope="session")
def tiny_scenes(tmp_path_factory) -> dict:
    dnerf = tmp_path_factory.mktemp("tiny-dnerf")
    DNeRFScene(output=dnerf, width=16, height=16, train_views=3, val_views=1, test_views=1).run()
    unbounded = tmp_path_factory.mktemp("tiny-unbounded")
    UnboundedScene(output=unbounded, width=16, height=12, views=8, test_every=4).run()
    return {"eugen_dnerf": dnerf, "eugen_mipnerf360": unbounded, "eugen_zipnerf": unbounded}


@pytest.fixture(scope="session")
def method_runs(tiny_scenes, tmp_path_factory, reduced_config, train) -> dict:
    """config.yml of 2-step runs of each method, each twin."""
    output = tmp_path_factory.mktemp("method-runs")
    runs = {}
    for method in METHODS:
        for layer in ("eugen", "dense"):
            config = reduced_config(tiny_scenes[method], output / method, layer, method=method)
            train(config)
            runs[method, layer] = config.get_base_dir() / "config.yml"
    return runs


@pytest.mark.parametrize("method", METHODS)
def test_twins_train_and_checkpoints_load_safely(method_runs, method):
    sizes = {}
    for layer in ("eugen", "dense"):
        checkpoints = sorted((method_runs[method, layer].parent / "nerfstudio_models").glob("step-*.ckpt"))
        state = torch.load(checkpoints[-1], weights_only=True)
        assert state["step"] == 1
        model = state["pipeline"]
        assert all(torch.isfinite(value).all() for value in model.values() if value.is_floating_point())
        sizes[layer] = sum(value.numel() for key, value in model.items() if key.endswith("weight"))
        has_eugen = any(key.endswith(".projection_seed") for key in model)
        assert has_eugen == (layer == "eugen")
    assert sizes["eugen"] < sizes["dense"]


def test_dense_deformation_is_nerfstudio_dnerf_distortion():
    from eugen_nerf.layers.mlp import EUGenConfig

    ours = EUGenDNeRFDistortion(["dense"] * 3, 256, EUGenConfig())
    theirs = DNeRFDistortion()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    ours.load_state_dict(theirs.state_dict())
    positions, times = torch.rand(10, 5, 3), torch.rand(10, 5, 1)
    torch.testing.assert_close(ours(positions, times), theirs(positions, times))


def test_mipnerf360_samples_frustums_with_proposals():
    from nerfstudio.cameras.rays import RayBundle
    from nerfstudio.data.scene_box import SceneBox

    config = EUGenMipNeRF360ModelConfig(base_mlp_num_layers=2, base_mlp_layer_width=32, skip_connections=(),
                                        eugen_base_layers=(1,), proposal_mlp_num_layers=2, proposal_mlp_layer_width=16,
                                        eugen_proposal_layers=(1,), num_proposal_samples_per_ray=(12, 8),
                                        num_nerf_samples_per_ray=6)
    model = config.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=1)
    rays = RayBundle(origins=torch.zeros(5, 3), directions=torch.nn.functional.normalize(torch.randn(5, 3), dim=-1),
                     pixel_area=torch.full((5, 1), 1e-4), nears=torch.full((5, 1), 0.05),
                     fars=torch.full((5, 1), 1000.0), camera_indices=torch.zeros(5, 1, dtype=torch.long))
    model.train()
    outputs = model.get_outputs(rays)
    assert outputs["rgb"].shape == (5, 3)
    counts = [samples.frustums.starts.shape[1] for samples in outputs["ray_samples_list"]]
    assert counts == [12, 8, 6]
    # the proposal MLPs see frustums: a wider frustum at the same point encodes differently
    proposal = model.proposal_networks[0]
    samples = random_ray_samples(4, torch.tensor([[-1.0] * 3, [1.0] * 3]), torch.device("cpu"))
    wide = RaySamples(frustums=type(samples.frustums)(
        origins=samples.frustums.origins, directions=samples.frustums.directions, starts=samples.frustums.starts,
        ends=samples.frustums.ends, pixel_area=samples.frustums.pixel_area * 1e4))
    assert not torch.allclose(proposal(samples), proposal(wide))
    losses = model.get_loss_dict(outputs, {"image": torch.rand(5, 3)})
    assert set(losses) == {"rgb_loss", "interlevel_loss", "distortion_loss"}
    assert all(torch.isfinite(loss) for loss in losses.values())


def test_proposal_weight_anneal_follows_its_schedule_and_spreads_early_samples():
    import math

    from nerfstudio.cameras.rays import RayBundle
    from nerfstudio.data.scene_box import SceneBox
    from nerfstudio.engine.callbacks import TrainingCallbackLocation

    config = EUGenMipNeRF360ModelConfig(base_mlp_num_layers=2, base_mlp_layer_width=16, skip_connections=(),
                                        eugen_base_layers=(1,), proposal_mlp_num_layers=1, proposal_mlp_layer_width=8,
                                        eugen_proposal_layers=(), num_proposal_samples_per_ray=(16,),
                                        num_nerf_samples_per_ray=8, proposal_weights_anneal_max_num_iters=100)
    model = config.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=1)
    (anneal,) = model.get_training_callbacks(None)
    for step, exponent in ((0, 0.0), (10, 10 * 0.1 / (9 * 0.1 + 1)), (100, 1.0), (5000, 1.0)):
        anneal.run_callback_at_location(step, TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
        assert math.isclose(model.proposal_sampler.anneal, exponent)

    rays = RayBundle(origins=torch.zeros(6, 3), directions=torch.nn.functional.normalize(torch.randn(6, 3), dim=-1),
                     pixel_area=torch.full((6, 1), 1e-4), nears=torch.full((6, 1), 0.05), fars=torch.full((6, 1), 10.0))

    def nerf_sample_starts(density_fn) -> torch.Tensor:
        torch.manual_seed(0)
        samples, _, _ = model.proposal_sampler(rays, density_fns=[density_fn])
        return samples.frustums.starts

    def wall_near_the_camera(samples):
        return (samples.frustums.starts < 0.5).float() * 100.0

    def almost_empty(samples):
        return torch.full_like(samples.frustums.starts, 1e-3)

    model.proposal_sampler.set_anneal(0.0)  # the first step: the proposal's weights do not steer yet
    assert torch.equal(nerf_sample_starts(wall_near_the_camera), nerf_sample_starts(almost_empty))
    model.proposal_sampler.set_anneal(1.0)
    assert (nerf_sample_starts(wall_near_the_camera) < 0.5).float().mean() > 0.9
    assert EUGenMipNeRF360ModelConfig(use_proposal_weight_anneal=False).setup(
        scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=1).get_training_callbacks(
        None) == []


def test_dilated_histogram_is_the_largest_density_within_the_dilation():
    from eugen_nerf.nerf.components.proposal_sampler import max_dilate_weights

    torch.manual_seed(0)
    bins = torch.sort(torch.rand(4, 9), dim=-1).values
    bins[:, 0], bins[:, -1] = 0.0, 1.0
    weights = torch.rand(4, 8) * (torch.rand(4, 8) > 0.5)
    dilation = 0.07
    edges, dilated = max_dilate_weights(bins, weights, dilation)
    assert edges.shape == (4, 3 * 8 + 1) and dilated.shape == (4, 3 * 8)
    torch.testing.assert_close(dilated.sum(-1), torch.ones(4))
    density = weights / (bins[:, 1:] - bins[:, :-1])
    widths = edges[:, 1:] - edges[:, :-1]
    for ray in range(4):
        points = torch.rand(500).double() * 0.999
        expected = torch.tensor([max([float(density[ray, i]) for i in range(8)
                                      if bins[ray, i] - dilation <= s < bins[ray, i + 1] + dilation] + [0.0])
                                 for s in points], dtype=torch.float64)
        interval = torch.searchsorted(edges[ray].double(), points, right=True) - 1
        found = dilated[ray, interval] / widths[ray, interval]
        scale = float(expected.max() / found.max())  # the dilated histogram is normalised
        torch.testing.assert_close(found.double() * scale, expected, rtol=1e-4, atol=1e-6)


def test_dilation_keeps_samples_round_a_wall():
    from nerfstudio.cameras.rays import RayBundle

    from eugen_nerf.nerf.components.proposal_sampler import FrustumProposalSampler

    rays = RayBundle(origins=torch.zeros(64, 3), directions=torch.tensor([[0.0, 0.0, 1.0]]).expand(64, 3),
                     pixel_area=torch.full((64, 1), 1e-4), nears=torch.full((64, 1), 0.2),
                     fars=torch.full((64, 1), 100.0))

    def wall(samples):  # opaque from distance 0.6
        middle = (samples.frustums.starts + samples.frustums.ends) / 2
        return ((middle > 0.6) & (middle < 0.66)).float() * 1e3

    def off_the_wall(sampler) -> float:
        sampler.eval()  # unjittered samples
        samples, _, _ = sampler(rays, density_fns=[wall, wall])
        starts = samples.frustums.starts
        return float(((starts < 0.59) | (starts > 0.64)).float().mean())

    plain = FrustumProposalSampler((32, 32), 16)
    dilated = FrustumProposalSampler((32, 32), 16, dilation_multiplier=0.5, dilation_bias=0.0025)
    # undilated, every NeRF sample collapses onto the wall's front; dilated, some stay in front and behind
    assert off_the_wall(plain) < 0.05 and off_the_wall(dilated) > 0.2
    samples, weights_list, _ = dilated(rays, density_fns=[wall, wall])
    assert samples.frustums.starts.shape == (64, 16, 1) and all(torch.isfinite(w).all() for w in weights_list)


def test_mipnerf360_reference_sampling_renders_finite_outside_training():
    from nerfstudio.cameras.rays import RayBundle
    from nerfstudio.data.scene_box import SceneBox

    config = EUGenMipNeRF360ModelConfig(
        base_mlp_num_layers=2, base_mlp_layer_width=16, skip_connections=(), eugen_base_layers=(1,),
        proposal_mlp_num_layers=1, proposal_mlp_layer_width=8, eugen_proposal_layers=(),
        num_proposal_samples_per_ray=(16, 16), num_nerf_samples_per_ray=8, initial_sampling="disparity",
        proposal_dilation_multiplier=0.5, proposal_dilation_bias=0.0025, proposal_density_activation="softplus")
    model = config.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=1).eval()
    rays = RayBundle(origins=torch.zeros(6, 3), directions=torch.nn.functional.normalize(torch.randn(6, 3), dim=-1),
                     pixel_area=torch.full((6, 1), 1e-4), camera_indices=torch.zeros(6, 1, dtype=torch.long))
    with torch.no_grad():
        outputs = model(rays)  # nerfstudio's collider would move the near plane to 0: disparity 1/0
    assert torch.isfinite(outputs["rgb"]).all() and (outputs["depth"] > 0.2).all()
    with pytest.raises(InputError, match="--pipeline.model.proposal-density-activation"):
        EUGenMipNeRF360ModelConfig(proposal_density_activation="relu")
    with pytest.raises(InputError, match="--pipeline.model.proposal-dilation-bias"):
        EUGenMipNeRF360ModelConfig(proposal_dilation_bias=-1.0)


def test_density_activation_flag_takes_exp_of_the_shifted_output():
    from nerfstudio.data.scene_box import SceneBox

    config = EUGenMipNeRF360ModelConfig(base_mlp_num_layers=2, base_mlp_layer_width=16, skip_connections=(),
                                        eugen_base_layers=(1,), proposal_mlp_num_layers=1, proposal_mlp_layer_width=8,
                                        eugen_proposal_layers=(), density_activation="exp", layer="dense")
    field = config.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=1).field
    encoded = torch.randn(5, field.position_encoding.get_out_dim())
    density, base = field.density_from_encoding(encoded)
    head = field.field_output_density.net
    torch.testing.assert_close(density, torch.exp(base @ head.weight.T + head.bias - 1.0))
    with pytest.raises(InputError, match="--pipeline.model.density-activation"):
        EUGenMipNeRF360ModelConfig(density_activation="relu")


def test_bad_proposal_layer_index_is_flag_error():
    with pytest.raises(InputError, match="eugen-proposal-layers"):
        EUGenMipNeRF360ModelConfig(proposal_mlp_num_layers=2, eugen_proposal_layers=(5,))


def test_dnerf_scene_without_times_is_one_line_error(tiny_scenes, tmp_path, reduced_config, train):
    scene = tmp_path / "no-times"
    shutil.copytree(tiny_scenes["eugen_dnerf"], scene)
    transforms = json.loads((scene / "transforms_train.json").read_text())
    del transforms["frames"][1]["time"]
    (scene / "transforms_train.json").write_text(json.dumps(transforms))
    with pytest.raises(InputError, match=r"transforms_train.json: 1 of 3 frames have no \"time\" \(first: frame 1\)"):
        train(reduced_config(scene, tmp_path / "out", "eugen", method="eugen_dnerf"))


def test_a_warmup_as_long_as_the_run_is_a_one_line_error(tiny_scenes, tmp_path, reduced_config, train):
    config = reduced_config(tiny_scenes["eugen_zipnerf"], tmp_path / "out", "dense", method="eugen_zipnerf")
    config.optimizers["proposal_networks"]["scheduler"].warmup_steps = 2
    with pytest.raises(InputError, match=r"^--optimizers.proposal_networks.scheduler.warmup-steps 2 must be below "
                                         r"--max-num-iterations 2$"):
        train(config)
    # the method's own default is Zip-NeRF's warm-up, inside its 25k steps
    assert {entry["scheduler"].warmup_steps for entry in methods.eugen_zipnerf.config.optimizers.values()} == {5000}


def test_presets_of_the_methods_build():
    from eugen_nerf.nerf.commands.train_preset import build_config

    for preset, method in (("mipnerf360-cpu", "eugen-mipnerf360"), ("dnerf-cpu", "eugen-dnerf"),
                           ("mipnerf360-paper", "eugen-mipnerf360"), ("dnerf-paper", "eugen-dnerf"),
                           ("zipnerf-cpu", "eugen-zipnerf"), ("zipnerf-paper", "eugen-zipnerf")):
        config = build_config(load_preset(preset), ["--pipeline.model.layer", "dense"])
        assert config.method_name == method and config.pipeline.model.layer == "dense"
    # the CPU preset turns off the method's density bias and proposal annealing (measured worse there)
    zipnerf = build_config(load_preset("zipnerf-cpu"), []).pipeline.model
    assert zipnerf.density_bias == 0.0 and zipnerf.use_proposal_weight_anneal is False


def test_time_sweep_renders_a_gif(method_runs, tmp_path):
    gif = RenderTimeSweep(load_config=method_runs["eugen_dnerf", "eugen"], output=tmp_path, frames=3).run()
    frames = imageio.mimread(gif)
    assert len(frames) == 3 and frames[0].shape[:2] == (16, 16)
    assert len(list(tmp_path.glob("frame_*.png"))) == 3
    with pytest.raises(InputError, match="not a dynamic run"):
        RenderTimeSweep(load_config=method_runs["eugen_mipnerf360", "eugen"], output=tmp_path).run()


def test_bench_times_every_field(method_runs, load_busy):
    results = BenchNeRF(load_config=method_runs["eugen_mipnerf360", "eugen"], points=1024, repeats=1).run()
    assert set(results["speedup"]["eugen"]["per_field"]) == {"encodings", "nerf", "proposal_0", "proposal_1"}
    dnerf = BenchNeRF(load_config=method_runs["eugen_dnerf", "eugen"], points=1024, repeats=1).run()
    assert set(dnerf["speedup"]["eugen"]["per_field"]) == {"coarse", "fine", "deformation"}
    zipnerf = BenchNeRF(load_config=method_runs["eugen_zipnerf", "eugen"], points=1024, repeats=1).run()
    assert set(zipnerf["speedup"]["eugen"]["per_field"]) == {"encodings", "nerf", "proposal_0", "proposal_1"}
    assert zipnerf["models"]["eugen"]["mlp_ms"] < zipnerf["models"]["eugen"]["fields_ms"]
    dense, eugen = results["models"]["dense"], results["models"]["eugen"]
    assert results["speedup"]["eugen"]["mlp"] == pytest.approx(dense["mlp_ms"] / eugen["mlp_ms"])
    assert results["speedup"]["eugen"]["image"] == pytest.approx(dense["image_ms"] / eugen["image_ms"])
    # one repeat: its pair's ratio is the speed-up, and one value spreads over nothing
    low, high = results["speedup"]["eugen"]["mlp_range"]
    assert low == high == pytest.approx(results["speedup"]["eugen"]["mlp"], rel=1e-3)
    assert dense["mlp_spread"] == eugen["mlp_spread"] == 0.0 and len(dense["mlp_repeats_ms"]) == 1
    assert load_busy(results["machine_load"]) == results["noisy"]


def test_speed_ranges_and_spread_of_repeats():
    from eugen_nerf.bench.nerf import ratio_range
    from eugen_nerf.bench.timing import relative_spread

    assert ratio_range([10.0, 12.0, 9.0], [5.0, 4.0, 6.0]) == [1.5, 3.0]
    assert relative_spread([9.0, 10.0, 11.5]) == 0.25


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads /proc (Linux)")
def test_machine_load_sees_a_second_process():
    """A process spinning beside the timing shows as the others' share of the CPU (about one core of the
    machine's); the timing process's own work does not count."""
    import os
    import subprocess
    import sys
    import time

    from eugen_nerf.bench.timing import MachineLoad

    def spin(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    with MachineLoad() as alone:
        spin(0.5)
    cores = os.cpu_count() or 1
    if alone.others is not None and 1 - alone.others - 1 / cores < 0.3 / cores:
        pytest.skip("other jobs fill the machine already: a second process would take their time, not add to it")
    spin_code = "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass"
    spinner = subprocess.Popen([sys.executable, "-c", spin_code])
    try:
        time.sleep(0.2)  # the spinner's start-up
        with MachineLoad() as beside:
            spin(0.8)
    finally:
        spinner.wait()
    assert alone.others is not None and beside.others is not None
    # the spinner shows as a fifth of a core or more, even where another job shares the cores with it
    assert beside.others > alone.others + 0.2 / cores
    if cores <= 4 and torch.get_num_threads() <= 2:  # a fifth of a core is then above the limit
        assert beside.busy


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads /proc (Linux)")
def test_machine_load_counts_its_own_child_processes_as_its_work_when_asked():
    """A benchmark that times runs it starts as subprocesses (bench scaling): with children=True a child
    that ran inside the block is the benchmark's own work; without it, another job's. Both read the same
    block, so whatever else runs on the machine counts alike in both."""
    import os
    import subprocess
    import sys

    from eugen_nerf.bench.timing import MachineLoad

    # half a second of the child's own CPU time, however busy the machine is
    spin_code = "import time\nwhile time.process_time() < 0.5: pass"
    with MachineLoad() as plain, MachineLoad(threads=1, children=True) as own:
        subprocess.run([sys.executable, "-c", spin_code], check=True)
    assert plain.others is not None and own.others is not None
    assert plain.others > own.others + 0.1 / (os.cpu_count() or 1)
    assert own.as_dict()["threads"] == 1


def test_load_verdicts_of_several_timings():
    from eugen_nerf.bench.timing import any_noisy, busiest, load_verdict

    assert any_noisy([False, None, True]) is True and any_noisy([False, None]) is None
    assert any_noisy([False, False]) is False
    quiet = {"others_cpu_share": 0.01, "steal_share": 0.0, "cores": 2, "threads": 1, "busy_above_per_thread": 0.1}
    # 8% of 2 cores beside 2 threads is under its limit; 6% beside 1 thread is over it
    under = {**quiet, "others_cpu_share": 0.08, "threads": 2}
    over = {**quiet, "others_cpu_share": 0.06}
    assert busiest([quiet, under, over]) is over
    # more threads than cores: the limit stops at the cores, so a busy machine can still be told
    many = {**quiet, "others_cpu_share": 0.2, "threads": 16}
    assert busiest([over, many]) is many
    unmeasured = {**quiet, "others_cpu_share": None, "steal_share": None}
    assert busiest([unmeasured, quiet]) is quiet
    assert "NOISY" in load_verdict(over, True) and "6%" in load_verdict(over, True)
    assert "quiet" in load_verdict(quiet, False) and "not measured" in load_verdict(unmeasured, None)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_ns_eval_and_ns_render_on_both_methods(method_runs, method, tmp_path, ns):
    for layer in ("eugen", "dense"):
        out = tmp_path / f"{layer}.json"
        result = ns("ns-eval", "--load-config", str(method_runs[method, layer]), "--output-path", str(out))
        assert result.returncode == 0, result.stderr[-2000:]
        assert "psnr" in json.loads(out.read_text())["results"]
    config = str(method_runs[method, "eugen"])
    images = ["--output-format", "images"]
    interpolate = [*images, "--pose-source", "train", "--interpolation-steps", "2", "--frame-rate", "2"]
    for mode, extra in (("dataset", ["--split", "test", "--rendered-output-names", "rgb"]),
                        ("interpolate", interpolate)):
        out = tmp_path / mode
        result = ns("ns-render", mode, "--load-config", config, "--output-path", str(out), *extra)
        assert result.returncode == 0, (mode, result.stdout[-1500:], result.stderr[-1500:])
        assert list(out.rglob("*.png")) or list(out.rglob("*.jpg")), mode


def test_closed_form_contraction_equals_nerfstudios():
    from nerfstudio.field_components.spatial_distortions import SceneContraction
    from nerfstudio.utils.math import Gaussians

    from eugen_nerf.nerf.components.contraction import L2SceneContraction

    generator = torch.Generator().manual_seed(0)
    mean = torch.randn(500, 4, 3, generator=generator) * 3  # inside and outside the unit ball
    factor = torch.randn(500, 4, 3, 3, generator=generator) * 0.1
    gaussians = Gaussians(mean=mean, cov=factor @ factor.transpose(-1, -2))
    theirs, ours = SceneContraction(order=None)(gaussians), L2SceneContraction()(gaussians)
    torch.testing.assert_close(ours.mean, theirs.mean)
    torch.testing.assert_close(ours.cov, theirs.cov, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(L2SceneContraction()(mean), SceneContraction(order=None)(mean))


def test_bench_suite_compares_every_method_and_names_missing_runs(method_runs, tiny_runs, tmp_path, load_busy):
    from eugen_nerf.bench.suite import BenchSuite
    from eugen_nerf.bench.timing import any_noisy

    runs = (*(method_runs[method, layer] for method in METHODS for layer in ("dense", "eugen")),
            tiny_runs["dense"], tiny_runs["eugen"])
    results = BenchSuite(runs=runs, output_dir=tmp_path / "suite", points=512, repeats=1,
                         num_features=(8, 16)).run()
    assert set(results["methods"]) == {"eugen-nerf", "eugen-mipnerf360", "eugen-zipnerf", "eugen-dnerf"}
    assert results["missing"] == []
    for entry in results["methods"].values():
        assert set(entry["models"]) == {"dense", "eugen"} and set(entry["mlp_speedup_by_m"]) == {8, 16}
        for row in entry["models"].values():
            # a smoke-trained model may render an image less similar than noise: SSIM lies in [-1, 1]
            assert 0 < row["psnr"] < 100 and -1 <= row["ssim"] <= 1 and row["parameters"] > 0 and row["image_ms"] > 0
        # every timing's load is kept (the trained runs', each sweep's); the method is noisy if any was busy
        assert set(entry["machine_load"]) == {"trained runs", "m = 8", "m = 16"}
        assert entry["noisy"] == any_noisy(load_busy(load) for load in entry["machine_load"].values())
    assert "| eugen-zipnerf | eugen |" in (tmp_path / "suite" / "suite.md").read_text()
    for name in ("suite.json", "speedup_vs_m.png", "psnr_vs_image_time.png"):
        assert (tmp_path / "suite" / name).stat().st_size > 0
    # a method with only one twin is named, not dropped silently; so is a run that never saved (a failed ns-train)
    failed = tmp_path / "failed"
    failed.mkdir()
    shutil.copy(method_runs["eugen_dnerf", "dense"], failed / "config.yml")
    lonely = BenchSuite(runs=(method_runs["eugen_dnerf", "eugen"], failed), output_dir=tmp_path / "lonely").run()
    assert lonely["methods"] == {} and "eugen-dnerf: no dense run" in lonely["missing"]
    assert f"{failed / 'config.yml'}: no checkpoint (skipped)" in lonely["missing"]
    assert "missing: eugen-dnerf: no dense run" in (tmp_path / "lonely" / "suite.md").read_text()
    with pytest.raises(InputError, match="nowhere: not a run's config.yml or a folder of runs"):
        BenchSuite(runs=(tmp_path / "nowhere",), output_dir=tmp_path / "x").run()


def test_adam_betas_are_a_flag_and_checked():
    from eugen_nerf.nerf.engine.optimizers import AdamWithBetasConfig

    parameters = [torch.nn.Parameter(torch.zeros(3))]
    optimizer = AdamWithBetasConfig(lr=1e-2, betas=(0.9, 0.99)).setup(parameters)
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.99)
    assert isinstance(methods.eugen_zipnerf.config.optimizers["fields"]["optimizer"], AdamWithBetasConfig)
    with pytest.raises(InputError, match="betas must lie in"):
        AdamWithBetasConfig(betas=(0.9, 1.0)).setup(parameters)


def test_mipnerf360_optimizer_is_multinerfs_warm_up_eps_and_clipping():
    from nerfstudio.engine.optimizers import Optimizers

    groups = methods.eugen_mipnerf360.config.optimizers
    assert {name: (group["optimizer"].eps, group["optimizer"].max_norm, group["scheduler"].warmup_steps)
            for name, group in groups.items()} == {name: (1e-6, 1e-3, 512) for name in ("fields", "proposal_networks")}
    # the learning rate starts at 1% of the rate and the gradient reaching Adam has norm 1e-3 at most
    scheduler = groups["fields"]["scheduler"]
    parameters = {name: [torch.nn.Parameter(torch.zeros(size))]
                  for name, size in (("fields", 4), ("proposal_networks", 2))}
    optimizers = Optimizers(groups, parameters)
    learning_rate = scheduler.setup().get_scheduler(optimizers.optimizers["fields"], 2e-3).get_last_lr()[0]
    assert learning_rate == pytest.approx(2e-5)
    for group in parameters.values():
        group[0].grad = torch.full_like(group[0], 5.0)
    optimizers.optimizer_scaler_step_all(torch.amp.GradScaler("cpu", enabled=False))
    assert all(float(group[0].grad.norm()) == pytest.approx(1e-3, rel=1e-4) for group in parameters.values())


def test_icosahedron_integrated_encoding_is_the_expected_sine_over_the_gaussian():
    from eugen_nerf.nerf.components.encodings import BasisIntegratedEncoding, icosahedron_basis

    basis = icosahedron_basis()
    assert basis.shape == (3, 21)  # mip-NeRF 360's position basis
    torch.testing.assert_close(basis.norm(dim=0), torch.ones(21))
    assert float((basis.T @ basis).abs().fill_diagonal_(0).max()) < 0.9  # no direction twice, no antipode
    encoding = BasisIntegratedEncoding(3, basis)
    torch.manual_seed(0)
    mean, root = torch.randn(3), 0.3 * torch.randn(3, 3)
    cov = root @ root.T
    draws = mean + torch.randn(400_000, 3) @ root.T  # samples of the Gaussian
    projected = (draws @ basis)[:, None, :] * (2.0 ** torch.arange(3.0))[:, None]
    expected = torch.cat([torch.sin(projected).mean(0).flatten(), torch.cos(projected).mean(0).flatten()])
    encoded = encoding(mean[None], covs=cov[None])[0]
    assert encoded.shape == (encoding.get_out_dim(),) == (2 * 3 * 21,)
    torch.testing.assert_close(encoded, expected, atol=6e-3, rtol=0)


def test_mipnerf360_takes_the_icosahedron_basis_for_the_nerf_and_proposal_mlps():
    from nerfstudio.data.scene_box import SceneBox

    config = EUGenMipNeRF360ModelConfig(base_mlp_layer_width=32, proposal_mlp_layer_width=16, position_frequencies=4,
                                        proposal_frequencies=2)  # the icosahedron is the default
    model = config.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=1)
    assert model.field.position_encoding.get_out_dim() == 2 * 4 * 21
    assert [net.encoding.get_out_dim() for net in model.proposal_networks] == [2 * 2 * 21] * 2
    axes = EUGenMipNeRF360ModelConfig(base_mlp_layer_width=32, proposal_mlp_layer_width=16, position_frequencies=4,
                                      proposal_frequencies=2, position_basis="axes")
    model = axes.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=1)
    assert model.field.position_encoding.get_out_dim() == 2 * 4 * 3 + 3
    with pytest.raises(InputError, match="--pipeline.model.position-basis"):
        EUGenMipNeRF360ModelConfig(position_basis="octahedron")


def test_octave_direction_encoding_is_sin_of_powers_of_two():
    direction = torch.tensor([[0.3, -0.5, 0.8]])
    octaves = EUGenMipNeRF360ModelConfig(direction_frequencies=4, direction_spacing="octaves").direction_encoding()
    scaled = direction[0, :, None] * torch.tensor([1.0, 2.0, 4.0, 8.0])  # [coordinate, octave]
    expected = torch.cat([torch.sin(scaled).flatten(), torch.cos(scaled).flatten(), direction[0]])
    torch.testing.assert_close(octaves(direction)[0], expected, atol=1e-5, rtol=0)
    nerfstudio = EUGenMipNeRF360ModelConfig(direction_frequencies=4).direction_encoding()
    assert not torch.allclose(nerfstudio(direction), octaves(direction), atol=1e-2)  # 2 pi 2^(4t/3) differs
    with pytest.raises(InputError, match="--pipeline.model.direction-spacing"):
        EUGenMipNeRF360ModelConfig(direction_spacing="decades")


def test_distill_a_dnerf_run_fits_its_deformation_network_and_loads(method_runs, tmp_path):
    from nerfstudio.utils.eval_utils import eval_setup

    from eugen_nerf.layers.eugen import EUGenLinear
    from eugen_nerf.nerf.commands.distill_run import (
        Distill,
        finetune_optimizer,
        load_teacher_config,
        rates_relative_to_fields,
    )

    results = Distill(load_config=method_runs["eugen_dnerf", "dense"], output_dir=tmp_path, rays=16,
                      evaluate_views=1, speed_repeats=1).run()
    student = Path(results["student"])
    assert student.parent.parent.name == "eugen-dnerf"
    # its evaluation: both D-NeRFs scored on one test view (at its time) and timed, deformation included
    evaluation = results["evaluation"]
    assert "error" not in evaluation and evaluation["test_views"] == 1
    assert all(math.isfinite(evaluation[name]["test_psnr"]) for name in ("teacher", "student"))
    deformation = [(fit["layer"], fit["kind"]) for fit in results["layers"] if fit["field"] == "temporal_distortion"]
    # hidden layers 1 and 2 are EUGen (the method's default), the offset layer after them is refitted
    assert deformation == [("mlp_deform.layers.1", "eugen"), ("mlp_deform.layers.2", "eugen"),
                           ("mlp_deform.layers.3", "dense read-out")]
    assert all(0 <= fit["relative_error"] < 10 for fit in results["layers"])
    # the fine field renders the samples the student's own deformation moved
    assert results["pixel_refit"]["field"] == "field_fine"
    _, pipeline, _, _ = eval_setup(student, test_mode="inference")  # what ns-eval / ns-render do
    layers = pipeline.model.temporal_distortion.mlp_deform.layers
    assert isinstance(layers[1], EUGenLinear) and not isinstance(layers[0], EUGenLinear)
    # the run's optimizers name the model's parameter groups, so their rate ratios reach the fine-tuning
    rates = rates_relative_to_fields(load_teacher_config(method_runs["eugen_dnerf", "dense"]).optimizers)
    assert rates["fields"] == 1.0 and set(pipeline.model.get_param_groups()) <= set(rates)
    # fine-tuning keeps the run's rate ratio: the deformation network at a quarter of the fields' rate
    optimizer = finetune_optimizer(pipeline.model, 3e-3, {"fields": 1.0, "temporal_distortion": 0.25})
    rates = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert rates[id(layers[1].weight)] == pytest.approx(7.5e-4)
    assert rates[id(pipeline.model.field_fine.mlp_base.layers[1].weight)] == pytest.approx(3e-3)
    assert len(rates) == sum(1 for p in pipeline.model.parameters() if p.requires_grad)


@pytest.mark.parametrize("method", ["eugen_mipnerf360", "eugen_zipnerf"])
def test_distill_a_proposal_method_fits_its_field_and_proposal_mlps_and_loads(method_runs, method, tmp_path):
    from nerfstudio.utils.eval_utils import eval_setup

    from eugen_nerf.layers.eugen import EUGenLinear
    from eugen_nerf.nerf.commands.distill_run import Distill

    results = Distill(evaluate=False, load_config=method_runs[method, "dense"], output_dir=tmp_path, rays=16,
                      eugen_proposal_layers=(0,), weights="uniform").run()
    student = Path(results["student"])
    assert student.parent.parent.name == method.replace("_", "-")
    fitted = {(fit["field"], fit["layer"], fit["kind"]) for fit in results["layers"]}
    for level in (0, 1):  # hidden layer 0 of each proposal MLP, then its density layer
        assert (f"proposal_networks.{level}", "mlp.layers.0", "eugen") in fitted
        assert (f"proposal_networks.{level}", "mlp.layers.1", "dense read-out") in fitted
    assert ("field", "field_heads.0.net", "dense read-out") in fitted  # the RGB head after the view head
    assert all(0 <= fit["relative_error"] < 10 for fit in results["layers"])
    refit = results["pixel_refit"]  # the one field a proposal method renders, its heads against the pixels
    assert refit["field"] == "field" and refit["psnr_after"] >= refit["psnr_before"]
    _, pipeline, _, _ = eval_setup(student, test_mode="inference")  # what ns-eval / ns-render do
    assert all(isinstance(network.mlp.layers[0], EUGenLinear) for network in pipeline.model.proposal_networks)
    rays = pipeline.datamanager.eval_dataset.cameras[0:1].generate_rays(camera_indices=0).flatten()[:8]
    with torch.no_grad():
        assert torch.isfinite(pipeline.model(rays.to(pipeline.model.device))["rgb"]).all()
