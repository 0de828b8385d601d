"""eugen-nerf: the dense twin is vanilla-nerf's field, the EUGen field's folded heads are exact,
training runs and resumes, checkpoints load safely, bad input is one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.field_components.encodings import NeRFEncoding
from nerfstudio.fields.vanilla_nerf_field import NeRFField

from eugen_nerf.bench.nerf import BenchNeRF, field_parameter_count, random_ray_samples
from eugen_nerf.errors import InputError
from eugen_nerf.nerf.engine import metrics
from eugen_nerf.nerf.engine.datamanager import EUGenDataManagerConfig
from eugen_nerf.nerf.engine.trainer import TrainingDiverged
from eugen_nerf.nerf.methods.nerf import EUGenNeRFModelConfig
from eugen_nerf.presets import load_preset

AABB = torch.tensor([[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]])


def make_model(**overrides):
    config = EUGenNeRFModelConfig(**overrides)
    return config.setup(scene_box=SceneBox(aabb=AABB), num_train_data=1)


def field_outputs(field, samples):
    out = field.forward(samples)
    return torch.cat([out[name] for name in sorted(out, key=lambda n: n.value)], dim=-1)


def test_dense_twin_is_vanilla_nerf_field():
    torch.manual_seed(0)
    vanilla = NeRFField(
        position_encoding=NeRFEncoding(3, 10, 0.0, 8.0, include_input=True),
        direction_encoding=NeRFEncoding(3, 4, 0.0, 4.0, include_input=True),
    )
    model = make_model(layer="dense")
    ours = model.field_coarse
    theirs = {k: tuple(v.shape) for k, v in vanilla.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == theirs
    assert field_parameter_count(model) == 2 * sum(p.numel() for p in vanilla.parameters())
    ours.load_state_dict(vanilla.state_dict())
    samples = random_ray_samples(512, AABB, torch.device("cpu"))
    with torch.no_grad():
        torch.testing.assert_close(field_outputs(ours, samples), field_outputs(vanilla, samples), rtol=1e-5, atol=1e-6)


def test_eugen_field_folded_heads_equal_layer_by_layer():
    torch.manual_seed(0)
    model = make_model(layer="eugen")
    field = model.field_fine
    assert field.mlp_base.uses_bundling() and field.mlp_base.out_activation is None
    samples = random_ray_samples(256, AABB, torch.device("cpu"))
    bundled = field_outputs(field, samples)
    field.mlp_base.bundle = field.mlp_head.bundle = "never"
    layerwise = field_outputs(field, samples)
    torch.testing.assert_close(bundled, layerwise, rtol=1e-4, atol=1e-5)
    assert field_parameter_count(model) < field_parameter_count(make_model(layer="dense")) / 3


def test_downstream_metric_spans_what_the_heads_read():
    from types import SimpleNamespace

    from eugen_nerf.nerf.commands.distill_run import downstream_metric

    torch.manual_seed(0)
    field = make_model(layer="dense", base_mlp_num_layers=4, base_mlp_layer_width=64, head_mlp_num_layers=1,
                       head_mlp_layer_width=32, skip_connections=(2,)).field_fine
    samples = random_ray_samples(64, AABB, torch.device("cpu")).reshape(-1)
    settings = SimpleNamespace(metric_mix=0.0, chunk=100, seed=0)  # several chunks
    # the view head's last layer feeds only the RGB head, a linear map: its metric lies in that map's 3 rows
    head = downstream_metric(field, samples, "mlp_head.layers.0", None, settings)
    metric = (head @ head.t()).double()
    rows = torch.linalg.qr(field.field_heads[0].net.weight.detach().t().double()).Q  # [32, 3]
    assert abs(float(metric.trace()) - 1) < 1e-4
    assert float((metric - rows @ rows.t() @ metric @ rows @ rows.t()).norm()) < 1e-4
    # the last base layer: half of the metric is the density head's one row (a linear read-out)
    base = downstream_metric(field, samples, "mlp_base.layers.3", None, settings)
    density_row = field.field_output_density.net.weight.detach().reshape(-1).double()
    density_row = density_row / density_row.norm()
    assert float(density_row @ (base @ base.t()).double() @ density_row) > 0.5 - 1e-4
    # the mix adds the identity's share
    settings.metric_mix = 0.5
    mixed = downstream_metric(field, samples, "mlp_head.layers.0", None, settings)
    expected = 0.5 * metric + 0.5 * torch.eye(32, dtype=torch.float64) / 32
    torch.testing.assert_close((mixed @ mixed.t()).double(), expected, rtol=1e-4, atol=1e-5)


def test_downstream_metric_of_a_hidden_layer_matches_a_probe_on_the_next_layers_input():
    from types import SimpleNamespace

    from eugen_nerf.nerf.commands.distill_run import downstream_metric, trace

    torch.manual_seed(0)
    field = make_model(layer="dense", base_mlp_num_layers=4, base_mlp_layer_width=64, head_mlp_num_layers=1,
                       head_mlp_layer_width=32, skip_connections=(2,)).field_fine.double()
    samples = random_ray_samples(16, AABB, torch.device("cpu")).reshape(-1)
    samples.frustums.origins, samples.frustums.directions = (samples.frustums.origins.double(),
                                                             samples.frustums.directions.double())
    samples.frustums.starts, samples.frustums.ends = samples.frustums.starts.double(), samples.frustums.ends.double()
    factor = downstream_metric(field, samples, "mlp_base.layers.1", None, SimpleNamespace(metric_mix=0.0, chunk=10_000,
                                                                                         seed=0))
    # the same Jacobians from another place: layer 1's output is the last 64 columns of the skip layer's input
    delta = torch.zeros(len(samples), 64, dtype=torch.float64, requires_grad=True)
    hook = field.mlp_base.layers[2].register_forward_pre_hook(
        lambda _module, args: (torch.cat([args[0][:, :-64], args[0][:, -64:] + delta], -1),))
    outputs = {}
    hooks = [field.field_output_density.net.register_forward_hook(lambda _m, _a, out: outputs.__setitem__("d", out)),
             field.field_heads[0].net.register_forward_hook(lambda _m, _a, out: outputs.__setitem__("c", out))]
    trace(field, samples)
    for handle in [hook, *hooks]:
        handle.remove()
    parts = []
    for key, out in outputs.items():
        scale = torch.sigmoid(out) * (1 - torch.sigmoid(out)) if key == "c" else torch.ones_like(out)
        rows = [torch.autograd.grad(out[:, c].sum(), delta, retain_graph=True)[0] * scale[:, c:c + 1].detach()
                for c in range(out.shape[1])]
        metric = sum(r.t() @ r for r in rows)
        parts.append(metric / metric.trace())
    torch.testing.assert_close((factor @ factor.t()).double(), (parts[0] + parts[1]) / 2, rtol=1e-3, atol=1e-5)


def test_checkpoint_of_other_layer_type_is_one_line_error():
    eugen, dense = make_model(layer="eugen"), make_model(layer="dense")
    with pytest.raises(InputError, match="only dense layers") as error:
        eugen.load_state_dict(dense.state_dict())
    assert "\n" not in str(error.value)
    with pytest.raises(InputError, match="EUGen layers at"):
        dense.load_state_dict(eugen.state_dict())
    other_m = make_model(layer="eugen", eugen=type(eugen.config.eugen)(num_features=8))
    with pytest.raises(InputError, match="has shape"):
        other_m.load_state_dict(eugen.state_dict())


def test_bad_layer_indices_are_flag_errors():
    with pytest.raises(InputError, match="eugen-base-layers"):
        make_model(eugen_base_layers=(3, 9))


def test_lpips_offline_is_one_warning_line(monkeypatch, capsys, tmp_path):
    def offline_download(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))  # an empty cache: torch.hub prints "Downloading"
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline_download)
    monkeypatch.setattr(metrics, "_warned", False)
    assert not metrics.OptionalLPIPS().available
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    assert len(lines) == 1 and "LPIPS unavailable" in lines[0] and "no network" in lines[0], lines


def test_lpips_unavailable_is_dropped_not_zero(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr("torchmetrics.image.lpip.LearnedPerceptualImagePatchSimilarity", offline)
    monkeypatch.setattr(metrics, "_warned", False)
    model = make_model(layer="eugen")
    assert not model.lpips.available
    image = torch.rand(8, 8, 3)
    outputs = {"rgb_coarse": image, "rgb_fine": image, "accumulation_coarse": torch.ones(8, 8, 1),
               "accumulation_fine": torch.ones(8, 8, 1), "depth_coarse": torch.ones(8, 8, 1) * 3,
               "depth_fine": torch.ones(8, 8, 1) * 3}
    scores, _ = model.get_image_metrics_and_images(outputs, {"image": image})
    assert "fine_lpips" not in scores and scores["psnr"] > 50 and "fine_ssim" in scores


# ----------------------------------------------------------------------------- bad scenes
def copy_scene(source: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(source, tmp_path / "scene"))


def build_datamanager(data: Path):
    config = EUGenDataManagerConfig(dataparser=BlenderDataParserConfig(data=data))
    return config.setup(device="cpu", test_mode="test")


def test_missing_transforms_file(tiny_blender, tmp_path):
    scene = copy_scene(tiny_blender, tmp_path)
    (scene / "transforms_train.json").unlink()
    with pytest.raises(InputError, match="transforms_train.json: not found"):
        build_datamanager(scene)


def test_missing_image(tiny_blender, tmp_path):
    scene = copy_scene(tiny_blender, tmp_path)
    (scene / "train" / "r_1.png").unlink()
    with pytest.raises(InputError, match=r"r_1.png: image of the train split not found"):
        build_datamanager(scene)


def test_image_of_wrong_size(tiny_blender, tmp_path):
    scene = copy_scene(tiny_blender, tmp_path)
    imageio.imwrite(scene / "train" / "r_1.png", np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(InputError, match=r"r_1.png: image is 8x8 but its camera is 16x16"):
        build_datamanager(scene)


def edit_transforms(scene: Path, edit) -> None:
    path = scene / "transforms_train.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def set_first_pose(data: dict, row: int, column: int, value: float) -> None:
    data["frames"][0]["transform_matrix"][row][column] = value


@pytest.mark.parametrize("damage, message", [
    (lambda scene: (scene / "transforms_train.json").write_text('{"frames": [,]}'),
     r"transforms_train.json: not a readable transforms JSON file"),
    (lambda scene: edit_transforms(scene, lambda data: data.update(frames=[])),
     r"transforms_train.json: needs a non-empty \"frames\" list"),
    (lambda scene: edit_transforms(scene, lambda data: data.pop("camera_angle_x")),
     r"transforms_train.json: no \"camera_angle_x\""),
    (lambda scene: (scene / "train" / "r_1.png").write_bytes((scene / "train" / "r_1.png").read_bytes()[:200]),
     r"r_1.png: not a readable image"),
    (lambda scene: edit_transforms(scene, lambda data: set_first_pose(data, 0, 3, float("nan"))),
     r"r_0.png: the train camera pose \(frame 0\) holds NaN or infinite values"),
    (lambda scene: edit_transforms(scene, lambda data: set_first_pose(data, 0, 0, 3.0)),
     r"r_0.png: the train camera pose \(frame 0\) is not a rotation and translation"),
], ids=["malformed-json", "no-frames", "no-camera-angle", "truncated-png", "nan-pose", "non-rigid-pose"])
def test_broken_scene_files_are_one_line_errors(tiny_blender, tmp_path, damage, message):
    scene = copy_scene(tiny_blender, tmp_path)
    damage(scene)
    with pytest.raises(InputError, match=message) as caught:
        build_datamanager(scene)
    assert "\n" not in str(caught.value)


# ----------------------------------------------------------------------------- training
def test_smoke_runs_write_safe_checkpoints(tiny_runs):
    for layer, config_path in tiny_runs.items():
        checkpoints = sorted((config_path.parent / "nerfstudio_models").glob("step-*.ckpt"))
        assert [c.name for c in checkpoints] == ["step-000000001.ckpt"], layer
        state = torch.load(checkpoints[0], weights_only=True)
        assert state["step"] == 1
        has_eugen = any(k.endswith("projection_seed") for k in state["pipeline"])
        assert has_eugen == (layer == "eugen")
        assert not any(".lpips." in k for k in state["pipeline"])


def test_interrupted_run_resumes_to_its_total(tiny_blender, tmp_path, reduced_config, train):
    config = reduced_config(tiny_blender, tmp_path, "eugen", steps=2)
    train(config)
    checkpoints = config.get_checkpoint_dir()
    resumed = reduced_config(tiny_blender, tmp_path, "eugen", steps=4)
    resumed.timestamp = "resumed"
    resumed.load_dir = checkpoints
    stale = resumed.get_base_dir() / ".step-000000009.ckpt.k1ll3d.tmp"  # what a save killed half-way leaves
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a checkpoint")
    trainer = train(resumed)
    assert trainer._start_step == 2
    assert resumed.optimizers["fields"]["scheduler"].max_steps == 4  # the decay spans the whole run
    names = [p.name for p in resumed.get_checkpoint_dir().glob("*.ckpt")]
    assert names == ["step-000000003.ckpt"]
    # nothing half-written is left next to the checkpoints
    assert not list(tmp_path.rglob("*.tmp"))


def test_resuming_a_finished_run_trains_nothing_and_keeps_its_checkpoint(tiny_blender, tmp_path, reduced_config, train):
    config = reduced_config(tiny_blender, tmp_path, "eugen", steps=2)
    train(config)
    checkpoint = next(config.get_checkpoint_dir().glob("step-*.ckpt"))
    before = torch.load(checkpoint, weights_only=True)["pipeline"]
    again = reduced_config(tiny_blender, tmp_path, "eugen", steps=2)  # e.g. `demo --quick` after a full demo
    again.timestamp = config.timestamp
    again.load_dir = config.get_checkpoint_dir()
    train(again)  # nerfstudio alone raises KeyError 'step' here
    after = torch.load(next(config.get_checkpoint_dir().glob("step-*.ckpt")), weights_only=True)
    assert after["step"] == 1 and all(torch.equal(before[key], after["pipeline"][key]) for key in before)


def test_resume_from_missing_folder_is_one_line_error(tiny_blender, tmp_path, reduced_config, train):
    config = reduced_config(tiny_blender, tmp_path, "eugen")
    config.load_dir = tmp_path / "nowhere"
    with pytest.raises(InputError, match="checkpoint folder not found"):
        train(config)


def test_bench_nerf_compares_twins(tiny_runs, tmp_path):
    out = tmp_path / "bench.json"
    results = BenchNeRF(load_config=tiny_runs["eugen"], baseline_config=tiny_runs["dense"], points=4096,
                        repeats=1, output=out).run()
    assert set(results["models"]) == {"dense", "eugen"}
    assert results["models"]["eugen"]["parameters"] < results["models"]["dense"]["parameters"]
    dense, eugen = results["models"]["dense"], results["models"]["eugen"]
    # each speed-up is the baseline's time over the twin's (not the twin's over the baseline's)
    assert results["speedup"]["eugen"]["field"] == pytest.approx(dense["fields_ms"] / eugen["fields_ms"])
    assert results["speedup"]["eugen"]["image"] == pytest.approx(dense["image_ms"] / eugen["image_ms"])
    assert out.is_file()


def test_bench_nerf_refuses_swapped_twins_and_files_that_are_not_runs(tiny_runs, tmp_path):
    with pytest.raises(InputError, match="swapped"):
        BenchNeRF(load_config=tiny_runs["dense"], baseline_config=tiny_runs["eugen"], points=64, repeats=1).run()
    with pytest.raises(InputError, match="expected an EUGen run and its dense twin"):
        BenchNeRF(load_config=tiny_runs["eugen"], baseline_config=tiny_runs["eugen"], points=64, repeats=1).run()
    not_a_run = tmp_path / "config.yml"
    not_a_run.write_text("method: eugen-nerf\n")  # valid YAML, not a run's config
    with pytest.raises(InputError, match="not a run's config.yml"):
        BenchNeRF(load_config=not_a_run, points=64, repeats=1).run()


def test_presets_build_configs():
    from eugen_nerf.nerf.commands.train_preset import build_config

    config = build_config(load_preset("nerf-cpu"), ["--pipeline.model.layer", "dense"])
    assert config.method_name == "eugen-nerf" and config.pipeline.model.layer == "dense"
    assert config.machine.device_type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert config.vis == "tensorboard"
    assert config.viewer.websocket_host == "127.0.0.1"
    with pytest.raises(InputError, match="no such preset"):
        load_preset("no-such-preset")


def test_preset_twin_flags_follow_the_layer_flag(tmp_path):
    from eugen_nerf.nerf.commands.train_preset import build_config

    preset = load_preset("nerf-cpu")

    def lr(*extra: str) -> float:
        return build_config(preset, list(extra)).optimizers["fields"]["optimizer"].lr

    assert lr() == 0.003 and lr("--pipeline.model.layer", "dense") == 0.001
    assert lr("--pipeline.model.layer=dense") == 0.001
    assert lr("--optimizers.fields.optimizer.lr", "0.01") == 0.01  # the command line still wins
    # nerf-pytorch's central crop is eugen-nerf's default; the CPU preset measured its twins without it
    assert build_config(preset, []).pipeline.datamanager.pixel_sampler.precrop_steps == 0
    paper_config = build_config(load_preset("nerf-paper"), [])
    assert paper_config.pipeline.datamanager.pixel_sampler.precrop_steps == 500
    # the full field's EUGen layers train their projections; the CPU preset keeps a fixed G
    paper = paper_config.pipeline.model.eugen
    cpu = build_config(preset, []).pipeline.model.eugen
    assert (paper.num_features, paper.trainable_projection) == (16, True)
    assert (cpu.num_features, cpu.trainable_projection) == (16, False)
    bad = tmp_path / "bad.yml"
    bad.write_text("method: eugen-nerf\ntwin-flags: {sparse: {max-num-iterations: 3}}\n")
    with pytest.raises(InputError, match="twin-flags"):
        load_preset(bad)


# ----------------------------------------------------------------------------- nerfstudio's own tools
@pytest.mark.slow
def test_ns_eval_and_ns_render_on_smoke_runs(tiny_runs, tmp_path, ns):
    for layer, config_path in tiny_runs.items():
        result = ns("ns-eval", "--load-config", str(config_path), "--output-path", str(tmp_path / f"{layer}.json"))
        assert result.returncode == 0, result.stderr[-2000:]
        assert "psnr" in (tmp_path / f"{layer}.json").read_text()
        assert "non-tuple sequence for multidimensional indexing" not in result.stderr  # known and harmless
    config = str(tiny_runs["eugen"])
    images = ["--output-format", "images"]
    interpolate = [*images, "--pose-source", "train", "--interpolation-steps", "2", "--frame-rate", "2"]
    for mode, extra in (("dataset", ["--split", "test", "--rendered-output-names", "rgb"]), ("spiral", images),
                        ("interpolate", interpolate)):
        out = tmp_path / mode
        result = ns("ns-render", mode, "--load-config", config, "--output-path", str(out), *extra)
        assert result.returncode == 0, (mode, result.stdout[-1500:], result.stderr[-1500:])
        assert list(out.rglob("*.png")) or list(out.rglob("*.jpg")), mode
    result = ns("ns-export", "pointcloud", "--load-config", config, "--output-dir", str(tmp_path / "pc"),
                "--num-points", "100", "--remove-outliers", "False", "--normal-method", "open3d")
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("layer", ["eugen", "dense"])
def test_diverged_run_stops_with_one_line_error_and_keeps_its_last_checkpoint(
    tiny_blender, tmp_path, layer, reduced_config, train
):
    config = reduced_config(tiny_blender, tmp_path, layer, steps=2)
    train(config)  # saves step 1
    resumed = reduced_config(tiny_blender, tmp_path, layer, steps=6)
    resumed.timestamp = config.timestamp
    resumed.load_dir = config.get_checkpoint_dir()
    resumed.optimizers["fields"]["optimizer"].lr = 1e30  # step 2's Adam update moves every weight by ~1e30
    with pytest.raises(TrainingDiverged) as caught:
        train(resumed)
    message = str(caught.value)
    assert "\n" not in message and "training diverged at step 3:" in message, message
    assert "--optimizers.fields.optimizer.lr 1e+30" in message  # the resumed run used the new flag
    (kept,) = config.get_checkpoint_dir().glob("step-*.ckpt")  # step 2's (finite loss), not step 3's
    assert kept.name == "step-000000002.ckpt" and str(kept) in message
    state = torch.load(kept, weights_only=True)["pipeline"]
    assert all(torch.isfinite(value).all() for value in state.values() if value.is_floating_point())


def test_a_divergence_before_the_first_save_keeps_the_last_finite_state(tiny_blender, tmp_path, reduced_config):
    config = reduced_config(tiny_blender, tmp_path, "eugen", steps=8)
    config.steps_per_save, config.steps_per_finite_copy = 10**6, 2
    config.set_timestamp()
    config.save_config()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    losses = trainer.pipeline.get_train_loss_dict

    def nan_from_step_5(step: int):
        outputs, loss_dict, metrics_dict = losses(step=step)
        if step >= 5:  # what a too-high learning rate does some steps in: every loss term NaN
            loss_dict = {name: value * float("nan") for name, value in loss_dict.items()}
        return outputs, loss_dict, metrics_dict

    trainer.pipeline.get_train_loss_dict = nan_from_step_5
    with pytest.raises(TrainingDiverged) as caught:
        trainer.train()
    message = str(caught.value)
    (kept,) = config.get_checkpoint_dir().glob("step-*.ckpt")
    assert kept.name == "step-000000003.ckpt"  # the copy taken before step 4, the newest before step 5
    assert "training diverged at step 5" in message and f"its last finite state was saved in {kept}" in message
    state = torch.load(kept, weights_only=True)
    assert state["step"] == 3
    assert all(torch.isfinite(value).all() for value in state["pipeline"].values() if value.is_floating_point())
    # the copy is of the state after step 3, not a live view of the weights the NaN steps changed
    live = trainer.pipeline.state_dict()
    assert any(not torch.equal(state["pipeline"][name], live[name]) for name in live if live[name].is_floating_point())


def test_resuming_follows_the_learning_rate_flags(tiny_blender, tmp_path, reduced_config, train):
    config = reduced_config(tiny_blender, tmp_path, "eugen", steps=2)
    config.optimizers["fields"]["scheduler"].lr_final = 1e-6
    train(config)
    resumed = reduced_config(tiny_blender, tmp_path, "eugen", steps=4)
    resumed.timestamp, resumed.load_dir = "resumed", config.get_checkpoint_dir()
    resumed.optimizers["fields"]["optimizer"].lr = 1e-2
    resumed.optimizers["fields"]["scheduler"].lr_final = 1e-4
    trainer = resumed.setup(local_rank=0, world_size=1)
    trainer.setup()
    (group,) = trainer.optimizers.optimizers["fields"].param_groups
    # the next step (2) at its point of the new schedule: 1e-2 decaying to 1e-4 over 4 steps, half-way
    assert group["lr"] == pytest.approx(1e-2 * (1e-4 / 1e-2) ** 0.5)


def test_ns_train_checkpoint_mismatch_is_one_line(tiny_runs, tiny_blender, tmp_path, ns):
    dense_checkpoints = tiny_runs["dense"].parent / "nerfstudio_models"
    result = ns("ns-train", "eugen-nerf", "--machine.device-type", "cpu", "--max-num-iterations", "1",
                "--output-dir", str(tmp_path), "--load-dir", str(dense_checkpoints), "--data",
                str(tiny_blender), "--pipeline.datamanager.train-num-rays-per-batch", "4")
    assert result.returncode == 2
    # the error is the last line (library deprecation warnings may precede it), and no traceback
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error:") and "only dense layers" in error and "Traceback" not in result.stderr


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("vis", ["tensorboard", "viewer"])
def test_ctrl_c_saves_a_checkpoint_and_the_run_resumes(tiny_blender, tmp_path, vis):
    """A real ns-train process gets SIGINT mid-run (also with the viewer's server threads running): it
    saves the last finished step and ends with the resume line, and a second ns-train with --load-dir
    continues from there to the configured total."""
    import signal
    import time

    def ns_train(steps: int, *extra: str) -> list[str]:
        return [str(Path(sys.executable).parent / "ns-train"), "eugen-nerf", "--machine.device-type", "cpu",
                "--data", str(tiny_blender), "--output-dir", str(tmp_path), "--experiment-name", "ctrl-c",
                "--max-num-iterations", str(steps), "--steps-per-save", str(10**6),
                "--pipeline.datamanager.train-num-rays-per-batch", "4", "--pipeline.model.num-coarse-samples", "4",
                "--pipeline.model.num-importance-samples", "4",
                # The dense twin: this tests the trainer, and 4-ray batches of the default 7 stacked
                # order-2 EUGen layers can diverge after a few hundred steps (docs/limitations.md).
                "--pipeline.model.layer", "dense", *extra]


    viewer = ["--vis", vis] + (["--viewer.websocket-port", str(free_port())] if vis == "viewer" else [])
    # A test run started in the background inherits SIGINT ignored (as a shell's `&` sets it); Python
    # only turns SIGINT into KeyboardInterrupt when it starts with the default disposition.
    process = subprocess.Popen(ns_train(10**6, "--timestamp", "first", *viewer), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    import threading

    watchdog = threading.Timer(240, process.kill)  # never hang CI if the step table never prints
    watchdog.start()
    # training has started once the step table prints; let it run a little, then press Ctrl-C
    for line in process.stdout:
        if "Step (% Done)" in line:
            break
    time.sleep(3)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)  # one SIGINT stops it; the viewer's threads do not hold it
    watchdog.cancel()
    # the resume line ends it: no KeyboardInterrupt traceback or profiler table after it, the exit status of a SIGINT
    assert output.strip().splitlines()[-1].startswith("Interrupted: saved step"), output[-2000:]
    assert process.returncode == 130 and "Traceback" not in output, output[-2000:]
    checkpoint_dir = tmp_path / "ctrl-c" / "eugen-nerf" / "first" / "nerfstudio_models"
    (saved,) = checkpoint_dir.glob("step-*.ckpt")
    step = torch.load(saved, weights_only=True)["step"]
    assert step > 0
    if vis == "viewer":
        return

    total = step + 3
    result = subprocess.run(ns_train(total, "--timestamp", "second", "--load-dir", str(checkpoint_dir)),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (final,) = (checkpoint_dir.parent.parent / "second" / "nerfstudio_models").glob("step-*.ckpt")
    assert torch.load(final, weights_only=True)["step"] == total - 1


@pytest.mark.parametrize("flag, value", [("layer", "sparse"), ("eugen.feature-map", "tanh"),
                                         ("eugen.sampler", "uniform"), ("eval-background-color", "red")])
def test_unknown_flag_value_is_one_line_error(flag, value):
    """ns-train's parser (tyro) passes our InputError through instead of printing its usage panel."""
    import tyro
    from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion

    with pytest.raises(InputError, match=f"--pipeline.model.{flag.split('.')[0]}.*{value}"):
        tyro.cli(AnnotatedBaseConfigUnion, args=["eugen-nerf", f"--pipeline.model.{flag}", value])


# ----------------------------------------------------------------------------- eugen distill
def test_distill_writes_an_eugen_run_that_loads(tiny_runs, tmp_path):
    from nerfstudio.utils.eval_utils import eval_setup

    from eugen_nerf.nerf.commands.distill_run import Distill

    results = Distill(load_config=tiny_runs["dense"], output_dir=tmp_path, rays=32).run()
    student = Path(results["student"])
    assert student.is_relative_to(tmp_path) and student.parent.name.endswith("-distilled")
    kinds = [fit["kind"] for fit in results["layers"]]
    # coarse and fine: EUGen base layers 1-7 and head layers 0-1, then the density and RGB heads refitted
    assert kinds.count("eugen") == 2 * (7 + 2) and kinds.count("dense read-out") == 2 * 2
    assert all(0 <= fit["relative_error"] < 10 for fit in results["layers"])
    refit = results["pixel_refit"]  # the rendered field's heads against the training pixels, after the layer fits
    assert (refit["field"], refit["targets"], refit["rays"]) == ("field_fine", "images", 16384)
    assert refit["psnr_after"] >= refit["psnr_before"]
    checkpoint = next((student.parent / "nerfstudio_models").glob("step-*.ckpt"))
    state = torch.load(checkpoint, weights_only=True)["pipeline"]
    assert any(key.endswith(".projection_seed") for key in state)
    _, pipeline, _, _ = eval_setup(student, test_mode="inference")  # what ns-eval / ns-render do
    assert pipeline.model.config.layer == "eugen"
    # the report's last part: both runs on the test split, as ns-eval scores them, and timed side by side
    evaluation = json.loads((student.parent / "distill.json").read_text())["evaluation"]
    for name, config in (("teacher", tiny_runs["dense"]), ("student", student)):
        _, scored, _, _ = eval_setup(config, test_mode="test")
        ns_eval = scored.get_average_eval_image_metrics()
        assert evaluation[name]["test_psnr"] == pytest.approx(ns_eval["psnr"], abs=1e-3)
        assert evaluation[name]["mlp_ms"] > 0 and evaluation[name]["image_ms"] > 0
    assert evaluation["psnr_difference"] == pytest.approx(
        evaluation["student"]["test_psnr"] - evaluation["teacher"]["test_psnr"])
    teacher_ms, student_ms = evaluation["teacher"]["mlp_ms"], evaluation["student"]["mlp_ms"]
    assert evaluation["speedup"]["mlp"] == pytest.approx(teacher_ms / student_ms)
    assert evaluation["student"]["parameters"] < evaluation["teacher"]["parameters"]
    # an evaluation that fails is reported, not raised: the student run is written by then
    from rich.console import Console

    from eugen_nerf.nerf.commands.distill_report import evaluate_student

    failed = evaluate_student(tmp_path / "moved.yml", student, None, 1, Console(quiet=True))
    assert set(failed) == {"error"} and "moved.yml" in failed["error"]
    # the fitted projections (the default) are the checkpoint's, not a redraw from the seed
    layer = pipeline.model.field_coarse.mlp_base.layers[1]
    assert torch.equal(layer.projection.cpu(), state["_model.field_coarse.mlp_base.layers.1.projection"])
    assert not torch.allclose(layer.projection.cpu(), layer._draw_projection(int(layer.projection_seed)))
    first = {path: path.read_bytes() for path in student.parent.rglob("*") if path.is_file()}
    again = Path(Distill(evaluate=False, load_config=tiny_runs["dense"], output_dir=tmp_path, rays=32).run()["student"])
    assert again.parent != student.parent and again.parent.name.startswith(student.parent.name + "-")
    assert {path: path.read_bytes() for path in student.parent.rglob("*") if path.is_file()} == first


def test_distill_fitting_variants_write_runs_and_refuse_bad_choices(tiny_runs, tmp_path):
    from eugen_nerf.nerf.commands.distill_run import Distill

    results = Distill(evaluate=False,
                      load_config=tiny_runs["dense"], output_dir=tmp_path, rays=32, weights="render").run()
    readouts = [fit for fit in results["layers"] if fit["kind"] == "dense read-out"]  # density and RGB heads
    assert len(readouts) == 4 and all(fit["relative_error"] <= fit["relative_error_before"] + 1e-9 for fit in readouts)
    layerwise = Distill(evaluate=False,
                        load_config=tiny_runs["dense"], output_dir=tmp_path / "layer", rays=32, targets="layer").run()
    assert [fit["kind"] for fit in layerwise["layers"]] == ["eugen"] * 18  # a read-out refit would be exact there
    with pytest.raises(InputError, match="--targets must be teacher or layer, got 'own'"):
        Distill(evaluate=False, load_config=tiny_runs["dense"], targets="own").run()
    with pytest.raises(InputError, match="--weights must be active or render or uniform"):
        Distill(evaluate=False, load_config=tiny_runs["dense"], weights="depth").run()
    with pytest.raises(InputError, match="--projections must be auto or fitted or random"):
        Distill(evaluate=False, load_config=tiny_runs["dense"], projections="learned").run()
    with pytest.raises(InputError, match="no sample has a teacher raw density above --active-above 1000"):
        Distill(evaluate=False,
                load_config=tiny_runs["dense"], output_dir=tmp_path / "none", rays=8, active_above=1e3).run()
    with pytest.raises(InputError, match="--density-floor must be a finite number, got nan"):
        Distill(evaluate=False, load_config=tiny_runs["dense"], density_floor=float("nan")).run()
    with pytest.raises(InputError, match="--active-above must be a finite number, got inf"):
        Distill(evaluate=False, load_config=tiny_runs["dense"], active_above=float("inf")).run()
    with pytest.raises(InputError, match="--emphasis-weight must be >= 0"):
        Distill(evaluate=False, load_config=tiny_runs["dense"], emphasis_weight=-1.0).run()
    with pytest.raises(InputError, match="--empty-weight must be in"):
        Distill(evaluate=False, load_config=tiny_runs["dense"], empty_weight=2.0).run()
    with pytest.raises(InputError, match="--floor-weight must be a finite number >= 0, got -1"):
        Distill(evaluate=False, load_config=tiny_runs["dense"], floor_weight=-1.0).run()
    with pytest.raises(InputError, match="--target-metric must be downstream or identity, got 'pixels'"):
        Distill(evaluate=False, load_config=tiny_runs["dense"], target_metric="pixels").run()
    with pytest.raises(InputError, match="--metric-mix must be in"):
        Distill(evaluate=False, load_config=tiny_runs["dense"], metric_mix=1.5).run()
    with pytest.raises(InputError, match="--quadratic-basis must be positive"):
        Distill(evaluate=False, load_config=tiny_runs["dense"], quadratic_basis=0).run()
    teacher_pixels = Distill(evaluate=False,
                             load_config=tiny_runs["dense"], output_dir=tmp_path / "teacher-pixels", rays=32,
                             pixel_rays=64, pixel_targets="teacher").run()["pixel_refit"]
    assert teacher_pixels["targets"] == "teacher" and teacher_pixels["psnr_after"] >= teacher_pixels["psnr_before"]
    assert Distill(evaluate=False, load_config=tiny_runs["dense"], output_dir=tmp_path / "no-refit", rays=32,
                   pixel_refit_steps=0).run()["pixel_refit"] is None
    with pytest.raises(InputError, match="--pixel-targets must be images or teacher, got 'depth'"):
        Distill(evaluate=False, load_config=tiny_runs["dense"], pixel_targets="depth").run()
    with pytest.raises(InputError, match="--pixel-refit-steps must be 0 or more, got -1"):
        Distill(evaluate=False, load_config=tiny_runs["dense"], pixel_refit_steps=-1).run()
    with pytest.raises(InputError, match="--pixel-rays must be positive, got 0"):
        Distill(evaluate=False, load_config=tiny_runs["dense"], pixel_rays=0).run()


def test_distill_floor_weight_keeps_left_out_points_in_the_density_readout(tiny_runs, tmp_path):
    from eugen_nerf.nerf.commands.distill_run import Distill, captured, training_samples
    from eugen_nerf.nerf.engine.runs import eval_setup_of

    _, teacher, _, _ = eval_setup_of(tiny_runs["dense"], "--load-config")
    samples = training_samples(teacher.model, teacher.datamanager.train_dataset.cameras, 32,
                               torch.Generator().manual_seed(0))  # Distill's seed 0: the same samples
    # a threshold at the lower of the two fields' medians leaves up to half of each field's points out
    median = min(float(captured(getattr(teacher.model, name), samples[name].reshape(-1),
                                "field_output_density.net", 1).median()) for name in ("field_coarse", "field_fine"))
    median -= 1e-6  # a field whose raw density is one constant keeps its points

    def density_heads(floor_weight: float) -> list[torch.Tensor]:
        results = Distill(evaluate=False,
                          load_config=tiny_runs["dense"], output_dir=tmp_path / str(floor_weight), rays=32,
                          active_above=median, density_floor=median, floor_weight=floor_weight).run()
        checkpoint = next((Path(results["student"]).parent / "nerfstudio_models").glob("step-*.ckpt"))
        state = torch.load(checkpoint, weights_only=True)["pipeline"]
        return [state[key] for key in sorted(state) if "field_output_density.net" in key]

    # the left-out points change only the density read-out, and only through its one-sided fit
    assert any(not torch.allclose(a, b) for a, b in zip(density_heads(0.0), density_heads(1.0), strict=True))


def test_distill_finetuning_changes_the_student_and_lowers_its_loss(tiny_runs, tmp_path):
    from eugen_nerf.nerf.commands.distill_run import Distill

    plain = Distill(evaluate=False, load_config=tiny_runs["dense"], output_dir=tmp_path / "plain", rays=32).run()
    # 1e-3, not the default 3e-3: on a 2-step teacher the default diverged at step 19 on an AMD EPYC VM
    # (the stacked-layer Known defect); the test is about fine-tuning working, not about its default rate
    tuned = Distill(evaluate=False,
                    load_config=tiny_runs["dense"], output_dir=tmp_path / "tuned", rays=32, finetune_steps=30,
                    finetune_rays=64, finetune_lr=1e-3).run()
    first, last = tuned["finetune_loss_first_last"]
    assert tuned["finetune_steps"] == 30 and last < first
    # --projections auto: fitted for the closed form alone, random when fine-tuning follows
    assert (plain["projections"], tuned["projections"]) == ("fitted", "random")
    # --num-features: 32 for the closed form alone, the presets' 16 when fine-tuning follows
    assert (plain["eugen"]["num_features"], tuned["eugen"]["num_features"]) == (32, 16)

    def weights(results):
        checkpoint = next((Path(results["student"]).parent / "nerfstudio_models").glob("step-*.ckpt"))
        return torch.load(checkpoint, weights_only=True)["pipeline"]

    before, after = weights(plain), weights(tuned)
    changed = [key for key in before if before[key].is_floating_point() and not torch.equal(before[key], after[key])]
    assert any("field_fine.mlp_base.layers.1" in key for key in changed)
    with pytest.raises(InputError, match="--finetune-lr must be positive"):
        Distill(evaluate=False, load_config=tiny_runs["dense"], finetune_lr=0.0).run()
    with pytest.raises(InputError, match="--finetune-steps: diverged at step"):  # one line, not a traceback
        # the raw layers: soft-normalised ones stay finite even at this rate
        Distill(evaluate=False,
                load_config=tiny_runs["dense"], output_dir=tmp_path / "wild", rays=32, finetune_steps=30,
                finetune_lr=1e3, soft_normalize=False).run()


def pixel_refit_of(config: Path, rays: int):
    """A run's model, `rays` of its training rays and the pixel refit of its fine field on them."""
    from eugen_nerf.nerf.commands.distill_pixels import PixelRefit
    from eugen_nerf.nerf.commands.distill_run import samples_of, training_rays
    from eugen_nerf.nerf.engine.runs import eval_setup_of

    _, pipeline, _, _ = eval_setup_of(config, "--load-config")
    model = pipeline.model
    bundle, _, _ = training_rays(model, pipeline.datamanager.train_dataset.cameras, rays,
                                 torch.Generator().manual_seed(3))
    return model, bundle, PixelRefit(model, model.field_fine, samples_of(model, bundle)["field_fine"])


def test_pixel_refit_solves_for_the_heads_behind_given_renders(tiny_runs):
    """Its normal equations are those of the renders' Jacobian with respect to the heads (taken here by
    autograd through the whole render), and from perturbed heads its steps find heads that render the
    given pixels again (a wrong ray or channel in the Jacobian's rows stalls them)."""
    torch.manual_seed(0)
    model, bundle, refit = pixel_refit_of(tiny_runs["eugen"], 48)
    density_weights, rgb_weights = refit.weights()
    with torch.no_grad():  # with the field's own heads it renders what the model renders
        assert torch.allclose(refit.render(density_weights, rgb_weights), model.get_outputs(bundle)["rgb"], atol=1e-5)
    density_weights = density_weights + 0.3  # a denser field than 2 steps of training leave: pixels the heads move
    with torch.no_grad():
        targets = refit.render(density_weights, rgb_weights)

    def pixels(flat: torch.Tensor) -> torch.Tensor:
        return refit.render(flat[: density_weights.numel()].reshape(density_weights.shape),
                            flat[density_weights.numel():].reshape(rgb_weights.shape)).T.reshape(-1)

    generator = torch.Generator().manual_seed(4)
    start = [w + 0.2 * torch.randn(w.shape, generator=generator, dtype=w.dtype)
             for w in (density_weights, rgb_weights)]
    flat = torch.cat([w.reshape(-1) for w in start]).float()
    jacobian = torch.autograd.functional.jacobian(pixels, flat).double()
    residuals = (pixels(flat) - targets.T.reshape(-1)).detach().double()
    jtj, jtr = refit.normal_equations(*start, targets)
    assert torch.allclose(jtj, jacobian.T @ jacobian, rtol=1e-3, atol=1e-6 * float(jtj.abs().max()))
    assert torch.allclose(jtr, jacobian.T @ residuals, rtol=1e-3, atol=1e-6 * float(jtr.abs().max()))

    refit.set_weights(*start)
    report = refit.fit(targets, steps=12)
    assert report["psnr_after"] > report["psnr_before"] + 20 and report["psnr_after"] > 50
    # the heads written into the field render the targets
    assert refit.loss(*refit.weights(), targets) < 1e-5


def test_pixel_refit_of_an_empty_field_stops_without_a_step(tiny_runs):
    """Where every sample is empty, no head weight moves a pixel (a Jacobian of zeros, its normal equations
    singular): the refit leaves the heads as they are instead of failing in the solver."""
    _, bundle, refit = pixel_refit_of(tiny_runs["dense"], 32)
    density_weights, rgb_weights = refit.weights()
    density_weights[:, -1] = -1e4  # the density's bias: softplus is exactly 0, and so is its slope
    refit.set_weights(density_weights, rgb_weights)
    jtj, _ = refit.normal_equations(density_weights, rgb_weights, torch.rand(len(bundle), 3))
    assert float(jtj.abs().max()) == 0.0
    report = refit.fit(torch.rand(len(bundle), 3), steps=3)
    assert report["steps"] == 0 and report["psnr_after"] == report["psnr_before"]
    assert all(torch.equal(a, b) for a, b in zip(refit.weights(), (density_weights, rgb_weights), strict=True))


def test_pixel_refit_takes_a_failed_solve_as_a_rejected_step(tiny_runs, monkeypatch):
    """Where the damped normal equations cannot be solved at any damping, the heads stay as they were."""
    _, bundle, refit = pixel_refit_of(tiny_runs["dense"], 32)
    before = refit.weights()
    attempts = []

    def failing_solve(matrix, rhs):
        attempts.append(1)  # a step that would move the heads, reported as failed
        return torch.ones_like(rhs), torch.tensor(1)

    monkeypatch.setattr(torch.linalg, "solve_ex", failing_solve)
    report = refit.fit(torch.rand(len(bundle), 3), steps=2)
    assert attempts and report["steps"] == 0
    assert all(torch.equal(a, b) for a, b in zip(refit.weights(), before, strict=True))


def sphere_teacher(dense_config: Path, output: Path, steps: int = 600) -> Path:
    """A dense run whose fields hold a coloured ball of radius 1 (density 20 inside, 0 outside), regressed
    on the fields' own samples of the training rays in seconds; its config.yml."""
    from nerfstudio.field_components.field_heads import FieldHeadNames

    from eugen_nerf.nerf.commands.distill_run import training_samples, write_run
    from eugen_nerf.nerf.engine.runs import eval_setup_of

    torch.manual_seed(0)  # the samplers' jitter
    config, pipeline, _, step = eval_setup_of(dense_config, "--load-config")
    model, cameras = pipeline.model, pipeline.datamanager.train_dataset.cameras
    fields = (model.field_coarse, model.field_fine)
    optimizer = torch.optim.Adam([p for field in fields for p in field.parameters()], lr=1e-3)
    model.train()
    for it in range(steps):
        samples = training_samples(model, cameras, 64, torch.Generator().manual_seed(1000 + it))
        loss = torch.zeros(())
        for field, name in zip(fields, ("field_coarse", "field_fine"), strict=True):
            outputs, positions = field.forward(samples[name]), samples[name].frustums.get_positions()
            inside = (positions.norm(dim=-1, keepdim=True) < 1.0).float()
            colour = 0.5 + 0.4 * torch.sin(4 * positions)
            loss = loss + (outputs[FieldHeadNames.DENSITY] - 20 * inside).square().mean() / 100
            loss = loss + ((outputs[FieldHeadNames.RGB] - colour).square() * inside).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    config.output_dir, config.timestamp = output, "sphere"
    write_run(config, pipeline, step, config.get_base_dir())
    return config.get_base_dir() / "config.yml"


@pytest.mark.slow
def test_closed_form_student_renders_its_teacher_within_a_bound_the_former_closed_form_misses(tiny_runs, tmp_path):
    from eugen_nerf.nerf.commands.distill_run import Distill
    from eugen_nerf.nerf.engine.runs import eval_setup_of

    teacher_config = sphere_teacher(tiny_runs["dense"], tmp_path / "teacher")
    _, teacher, _, _ = eval_setup_of(teacher_config, "--load-config")
    cameras = teacher.datamanager.train_dataset.cameras
    generator = torch.Generator().manual_seed(7)  # rays the fits did not draw
    size = torch.tensor([float(cameras.height[0]), float(cameras.width[0])])
    rays = cameras.generate_rays(camera_indices=torch.randint(len(cameras), (256, 1), generator=generator),
                                 coords=torch.rand(256, 2, generator=generator) * size)

    def rendered(model) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            outputs = model.get_outputs(model.collider(rays))
        return {name: outputs[name] for name in ("rgb_fine", "accumulation_fine")}

    expected = rendered(teacher.model)
    assert 0.2 < float(expected["accumulation_fine"].mean()) < 0.8  # the ball covers part of the rays

    def rms_errors(label: str, **flags) -> dict[str, float]:
        results = Distill(evaluate=False,
                          load_config=teacher_config, output_dir=tmp_path / label, rays=1024, **flags).run()
        _, student, _, _ = eval_setup_of(Path(results["student"]), "--load-config")
        return {name: float((value - expected[name]).square().mean().sqrt())
                for name, value in rendered(student.model).items()}

    bounds = {"rgb_fine": 0.2, "accumulation_fine": 0.35}
    # this teacher was regressed onto a ball, not trained on the images: its renders are the pixels to match
    today = rms_errors("today", pixel_targets="teacher")
    # the closed form the distillation issue measured: random projections, each layer fitted to the
    # teacher layer on the student's input, every point alike, plain least squares on the raw density
    former = rms_errors("former", targets="layer", projections="random", weights="uniform", density_floor=None,
                        pixel_refit_steps=0, num_features=16)
    assert all(today[name] < bound for name, bound in bounds.items()), today
    assert all(former[name] > bound for name, bound in bounds.items()), former


def test_distill_refuses_bad_input(tiny_runs, tmp_path):
    from eugen_nerf.nerf.commands.distill_run import Distill

    with pytest.raises(InputError, match="already an EUGen run"):
        Distill(evaluate=False, load_config=tiny_runs["eugen"]).run()
    with pytest.raises(InputError, match="--load-config not found"):
        Distill(evaluate=False, load_config=tmp_path / "nowhere.yml").run()
    run = tmp_path / "copy"
    shutil.copytree(tiny_runs["dense"].parent, run)
    config = (run / "config.yml").read_text()
    (run / "config.yml").write_text(config.replace("method_name: eugen-nerf", "method_name: nerfacto"))
    with pytest.raises(InputError, match="method 'nerfacto' cannot be distilled"):
        Distill(evaluate=False, load_config=run / "config.yml").run()
    import yaml

    moved = yaml.load(config, Loader=yaml.Loader)
    moved.timestamp = "never-trained"  # its checkpoints would be in .../never-trained/nerfstudio_models
    (run / "config.yml").write_text(yaml.dump(moved))
    with pytest.raises(InputError, match="checkpoint folder not found|no step-N.ckpt"):
        Distill(evaluate=False, load_config=run / "config.yml").run()


@pytest.mark.parametrize("steps, lr, message", [
    (0, 5e-4, r"^--max-num-iterations must be 1 or more, got 0$"),
    (-5, 5e-4, r"^--max-num-iterations must be 1 or more, got -5$"),
    (2, -1.0, r"^--optimizers.fields.optimizer.lr must be above 0, got -1.0$"),
])
def test_bad_training_lengths_and_learning_rates_are_flag_errors(tiny_blender, tmp_path, reduced_config, train,
                                                                 steps, lr, message):
    config = reduced_config(tiny_blender, tmp_path, "eugen", steps=2)
    config.max_num_iterations = steps
    config.optimizers["fields"]["optimizer"].lr = lr
    with pytest.raises(InputError, match=message):
        train(config)


def test_zero_rays_per_batch_is_a_flag_error():
    import tyro
    from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion

    with pytest.raises(InputError, match="^--pipeline.datamanager.train-num-rays-per-batch must be 1 or more, got 0$"):
        tyro.cli(AnnotatedBaseConfigUnion, args=["eugen-nerf", "--pipeline.datamanager.train-num-rays-per-batch", "0"])
