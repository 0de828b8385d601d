"""iSDF: the reference network's shape, bounds and losses, ground-truth metrics, the continual loop with
its checkpoints and resume, the commands, and one-line errors for bad sequences."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from eugen_nerf.cli import main
from eugen_nerf.errors import InputError
from eugen_nerf.isdf.commands import IsdfBench, IsdfEval, IsdfMesh, IsdfTrain, load_run_folder
from eugen_nerf.isdf.data import DepthStream, GroundTruth
from eugen_nerf.isdf.evaluation import chomp_cost, extract_mesh, sdf_metrics, visible_points
from eugen_nerf.isdf.network import OffAxisEncoding, SDFNetwork, SDFNetworkConfig, icosahedron_directions
from eugen_nerf.isdf.training import LossConfig, ScheduleConfig, bounds_and_targets, sdf_losses
from eugen_nerf.scenes.kinds import RGBDScene

TINY_SCHEDULE = ScheduleConfig(frame_stride=2, first_frame_steps=4, steps_per_frame=1, keyframe_steps=2,
                               final_steps=3, max_frames=6)


@pytest.fixture(scope="session")
def tiny_rgbd(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny-rgbd")
    RGBDScene(output=out, width=24, height=16, frames=8, focal=12.0, sdf_spacing=0.2).run()
    return out


def copy_scene(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / "scene"
    shutil.copytree(source, target)
    return target


def tiny_train(data: Path, output: Path, layer: str = "eugen", **overrides) -> IsdfTrain:
    schedule = ScheduleConfig(**{**TINY_SCHEDULE.__dict__, **overrides})
    command = IsdfTrain(data=data, output=output, network=SDFNetworkConfig(layer=layer, width=32), schedule=schedule,
                        eval_every=2, eval_points=500, mesh_resolution=0.25)
    command.sampling.rays_per_frame = 16
    return command


def test_encoding_has_21_distinct_axes_and_255_features():
    directions = icosahedron_directions()
    assert directions.shape == (21, 3)
    assert torch.allclose(directions.norm(dim=-1), torch.ones(21))
    cosines = (directions @ directions.T - torch.eye(21)).abs()
    assert float(cosines.max()) < 0.99  # no direction repeated, none antipodal to another
    encoding = OffAxisEncoding()
    assert encoding.out_dim == 255 and encoding(torch.zeros(4, 3)).shape == (4, 255)


def test_dense_network_has_the_reference_shape():
    network = SDFNetwork(SDFNetworkConfig(layer="dense"), torch.zeros(3))
    widths = [(255, 256), (256, 256), (256, 256), (511, 256), (256, 256), (256, 256), (256, 1)]
    assert [(layer.in_features, layer.out_features) for layer in network.mlp.layers] == widths
    assert sum(p.numel() for p in network.parameters()) == sum(i * o + o for i, o in widths)
    eugen = SDFNetwork(SDFNetworkConfig(layer="eugen"), torch.zeros(3))
    kinds = [type(layer).__name__ for layer in eugen.mlp.layers]
    assert kinds == ["Linear", *["EUGenLinear"] * 5, "Linear"]
    assert sum(p.numel() for p in eugen.parameters()) < sum(p.numel() for p in network.parameters()) / 3


def test_ray_and_pointcloud_bounds():
    origins = torch.zeros(2, 3)
    directions = torch.tensor([[0.0, 0.0, 1.0], [0.6, 0.0, 1.0]])
    depth = torch.tensor([2.0, 1.0])
    z = torch.tensor([[1.0, 2.0, 2.5], [0.5, 1.0, 1.2]])
    points, bound, target = bounds_and_targets(origins, directions, depth, z, "ray")
    length = directions.norm(dim=-1)
    assert torch.allclose(bound, (depth[:, None] - z) * length[:, None])
    assert torch.allclose(target[0, 0], torch.tensor([0.0, 0.0, -1.0]))
    _, pc_bound, _ = bounds_and_targets(origins, directions, depth, z, "pc")
    assert float(pc_bound[0, 1]) == pytest.approx(0.0, abs=1e-6)  # on the measured point
    assert float(pc_bound[0, 2]) < 0 and float(pc_bound[0, 0]) > 0  # behind the surface / in front
    assert (pc_bound.abs() <= bound.abs() + 1e-6).all()  # the nearest point is never farther than the ray's


def test_sdf_loss_terms():
    config = LossConfig()
    bound = torch.tensor([1.0, 1.0, 1.0, 0.05])
    sdf = torch.tensor([0.5, 1.5, -0.2, 0.05])
    gradient = torch.tensor([[0.0, 0.0, -1.0]] * 4)
    terms = sdf_losses(sdf, gradient, bound, gradient.clone(), config)
    assert float(terms["sdf"][0]) == pytest.approx(0.0, abs=1e-6)  # free space, below the bound: no loss
    assert float(terms["sdf"][1]) == pytest.approx(0.5)  # above the bound
    assert float(terms["sdf"][2]) == pytest.approx(np.exp(1.0) - 1, rel=1e-5)  # negative in free space
    assert float(terms["sdf"][3]) == pytest.approx(0.0, abs=1e-6)  # in the band, on the bound
    assert torch.allclose(terms["eikonal"], torch.zeros(4)) and torch.allclose(terms["gradient"], torch.zeros(4))


def test_ground_truth_interpolation_and_metrics_can_be_perfect(tiny_rgbd):
    stream = DepthStream(tiny_rgbd)
    truth = GroundTruth.of(stream)
    index = torch.tensor([[1.0, 2.0, 3.0], [4.0, 1.0, 2.0]])
    world = index @ truth.index_to_world[:3, :3].T + truth.index_to_world[:3, 3]
    assert torch.allclose(truth(world), truth.sdf[(index[:, 0].long(), index[:, 1].long(), index[:, 2].long())])

    class TruthAsNetwork(torch.nn.Module):
        def forward(self, points):
            return truth(points)

        def with_gradient(self, points, create_graph):
            return truth(points), truth.gradient(points)

    points = visible_points(stream, [0, 1], 400)
    perfect = sdf_metrics(TruthAsNetwork(), truth, points)
    assert perfect["sdf_l1"] < 1e-6 and perfect["gradient_cosine_distance"] < 1e-5
    assert perfect["collision_cost_error_1"] < 1e-6


def test_ground_truth_grid_is_read_once_until_its_file_changes(tiny_rgbd, tmp_path):
    stream = DepthStream(copy_scene(tiny_rgbd, tmp_path))
    first = GroundTruth.of(stream)
    assert GroundTruth.of(stream).sdf is first.sdf  # centre placement and evaluation share one read
    sdf_path = stream.root / stream.config.gt_sdf
    np.save(sdf_path, np.load(sdf_path) + 1.0)
    assert torch.allclose(GroundTruth.of(stream).sdf, first.sdf + 1.0)


def test_chomp_cost_is_continuous():
    eps = 1.5
    d = torch.tensor([-1e-6, 1e-6, eps - 1e-6, eps + 1e-6])
    cost = chomp_cost(d, eps)
    assert float(cost[0]) == pytest.approx(float(cost[1]), abs=1e-5)
    assert float(cost[2]) == pytest.approx(0.0, abs=1e-5) and float(cost[3]) == 0.0


def test_marching_cubes_of_a_sphere():
    class Sphere(torch.nn.Module):
        def forward(self, points):
            return points.norm(dim=-1) - 0.5

    mesh = extract_mesh(Sphere(), torch.tensor([[-1.0] * 3, [1.0] * 3]), 0.05)
    radii = np.linalg.norm(np.asarray(mesh.vertices), axis=1)
    assert len(mesh.triangles) > 100 and np.abs(radii - 0.5).max() < 0.01


def test_train_learns_writes_a_safe_checkpoint_and_evaluates(tiny_rgbd, tmp_path):
    command = tiny_train(tiny_rgbd, tmp_path / "run")
    results = command.run()
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert checkpoint["state"]["finished"] and checkpoint["state"]["frame"] == 4
    assert results["steps"] == checkpoint["state"]["step"] > TINY_SCHEDULE.first_frame_steps
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [row["frame"] for row in history] == [0, 2, 4] and "sdf_l1" in history[1]
    assert np.isfinite(results["sdf_l1"]) and (tmp_path / "run" / "sdf_error.png").stat().st_size > 0
    assert (tmp_path / "run" / "mesh.ply").is_file()
    again = IsdfEval(run_dir=tmp_path / "run", eval_points=500, mesh_resolution=0).run()
    assert again["sdf_l1"] == pytest.approx(results["sdf_l1"], rel=1e-5)
    mesh = IsdfMesh(run_dir=tmp_path / "run", output=tmp_path / "m.ply", resolution=0.2).run()
    assert mesh.is_file()


def test_interrupted_run_resumes(tiny_rgbd, tmp_path, monkeypatch):
    from eugen_nerf.isdf.training import ContinualTrainer

    original = ContinualTrainer.step
    calls = {"n": 0}

    def step_then_interrupt(self):
        calls["n"] += 1
        if calls["n"] == 6:  # inside frame 2, after the first frame's 4 steps
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(ContinualTrainer, "step", step_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        tiny_train(tiny_rgbd, tmp_path / "run").run()
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["state"]
    assert saved["frame"] == 2 and not saved["finished"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]  # saves write their temporary inside the run
    stale = tmp_path / "run" / ".checkpoint.pt.k1ll3d.tmp"  # what a save killed half-way leaves
    stale.write_bytes(b"half a checkpoint")
    monkeypatch.setattr(ContinualTrainer, "step", original)
    results = tiny_train(tiny_rgbd, tmp_path / "run").run()
    assert results["frames"] == 5 and results["steps"] > saved["step"]
    assert not stale.exists()
    with pytest.raises(InputError, match="other settings"):
        tiny_train(tiny_rgbd, tmp_path / "run", layer="dense").run()


def test_bench_compares_runs_side_by_side(tiny_rgbd, tmp_path, load_busy):
    for layer in ("dense", "eugen"):
        tiny_train(tiny_rgbd, tmp_path / layer, layer=layer, max_frames=2).run()
    results = IsdfBench(runs=(tmp_path / "dense", tmp_path / "eugen"), points=2048, repeats=1,
                        output=tmp_path / "bench.json").run()
    rows = results["models"]
    assert set(rows) == {"dense (dense)", "eugen (eugen)"}
    assert all(row["query_points_per_s"] > 0 and np.isfinite(row["sdf_l1"]) for row in rows.values())
    assert json.loads((tmp_path / "bench.json").read_text())["command"].startswith("eugen isdf bench")
    assert load_busy(results["machine_load"]) == results["noisy"]
    # timing the training step must not train the runs being compared
    evaluated = IsdfEval(run_dir=tmp_path / "eugen", mesh_resolution=0).run()
    assert rows["eugen (eugen)"]["sdf_l1"] == pytest.approx(evaluated["sdf_l1"], rel=1e-5)


def rewrite_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("damage, message", [
    ("missing_frame", "depth000003.png: depth frame missing"),
    ("short_trajectory", "7 poses for 8 depth frames"),
    ("zero_depth", "depth is zero everywhere"),
    ("wrong_scale", "depth scale looks wrong"),
    ("no_config", "dataset config not found"),
    ("nan_pose", "traj.txt: the pose of row 3 (frame 2) holds NaN or infinite values"),
    ("non_rigid_pose", "traj.txt: the pose of row 3 (frame 2) is not a rotation and translation"),
])
def test_bad_sequences_are_one_line_errors(tiny_rgbd, tmp_path, capsys, damage, message):
    scene = copy_scene(tiny_rgbd, tmp_path)
    if damage == "missing_frame":
        (scene / "results" / "depth000003.png").unlink()
    elif damage == "short_trajectory":
        lines = (scene / "traj.txt").read_text().splitlines()
        (scene / "traj.txt").write_text("\n".join(lines[:-1]) + "\n")
    elif damage == "zero_depth":
        depth = imageio.imread(scene / "results" / "depth000000.png")
        imageio.imwrite(scene / "results" / "depth000000.png", np.zeros_like(depth))
    elif damage == "wrong_scale":
        rewrite_json(scene / "dataset.json", depth_scale=1.0)
    elif damage in ("nan_pose", "non_rigid_pose"):
        lines = (scene / "traj.txt").read_text().splitlines()
        values = lines[2].split()
        values[0] = "nan" if damage == "nan_pose" else str(3 * float(values[0]) + 1)  # a bad first rotation entry
        lines[2] = " ".join(values)
        (scene / "traj.txt").write_text("\n".join(lines) + "\n")
    else:
        (scene / "dataset.json").unlink()
    assert main(["isdf", "train", "--data", str(scene), "--output", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and message in error and str(scene) in error


def test_replicacad_dataset_config_loads():
    from eugen_nerf.isdf.data import DatasetConfig
    from eugen_nerf.presets import CONFIGS_DIR

    config = DatasetConfig.load(CONFIGS_DIR / "isdf-replicacad.json")
    assert (config.width, config.height, config.fx, config.cx, config.depth_scale) == (1200, 680, 600.0, 599.5, 3276.75)


@pytest.mark.parametrize("flag, value", [("--network.layer", "sparse"), ("--schedule.mode", "fast"),
                                         ("--sampling.bounds", "normal"), ("--network.eugen.sampler", "uniform")])
def test_bad_flag_values_are_one_line_errors(tiny_rgbd, tmp_path, capsys, flag, value):
    assert main(["isdf", "train", "--data", str(tiny_rgbd), "--output", str(tmp_path / "run"), flag, value]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and flag.rsplit(".", 1)[0] in error and value in error


def test_eval_of_a_folder_that_is_no_run_is_one_line_error(tmp_path, capsys):
    assert main(["isdf", "eval", "--run-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "not an iSDF run folder" in error


def test_distill_a_dense_run_fits_its_eugen_layers_in_closed_form_and_evaluates(tiny_rgbd, tmp_path):
    from eugen_nerf.isdf.distill import IsdfDistill
    from eugen_nerf.layers.eugen import EUGenLinear

    tiny_train(tiny_rgbd, tmp_path / "dense", layer="dense").run()
    teacher = IsdfEval(run_dir=tmp_path / "dense", eval_points=500, mesh_resolution=0).run()
    results = IsdfDistill(run_dir=tmp_path / "dense", output=tmp_path / "student", rays=256).run()
    # EUGen layers 1-5 (the network's default), then the dense output layer refitted
    assert [(fit["layer"], fit["kind"]) for fit in results["layers"]] == [
        *[(f"mlp.layers.{i}", "eugen") for i in range(1, 6)], ("mlp.layers.6", "dense read-out")]
    assert all(0 <= fit["relative_error"] < 1 for fit in results["layers"])
    student = IsdfEval(run_dir=tmp_path / "student", eval_points=500, mesh_resolution=0).run()
    assert np.isfinite(student["sdf_l1"]) and np.isfinite(teacher["sdf_l1"])
    # the report's last part: both runs from their folders on the same visible points, timed side by side
    evaluation = json.loads((tmp_path / "student" / "distill.json").read_text())["evaluation"]["models"]
    assert list(evaluation) == ["dense (dense)", "eugen (student)"]
    assert all(np.isfinite(row["sdf_l1"]) and row["query_points_per_s"] > 0 for row in evaluation.values())
    assert all(row["train_step_ms"] is None for row in evaluation.values())  # a fitted network is not trained on
    assert evaluation["eugen (student)"]["parameters"] < evaluation["dense (dense)"]["parameters"]
    settings = json.loads((tmp_path / "student" / "run.json").read_text())
    assert settings["network"]["layer"] == "eugen"
    # on the points eval uses, the student's SDF is within a quarter of the teacher's own spread of it
    # (an EUGen network trained on the same frames instead: twice that spread away)
    _, stream, dense = load_run_folder(tmp_path / "dense")
    _, _, fitted = load_run_folder(tmp_path / "student")
    points = visible_points(stream, list(range(5)), 2000, seed=1)
    with torch.no_grad():
        expected, got = dense.network(points), fitted.network(points)
    assert (got - expected).abs().mean() < 0.25 * (expected - expected.mean()).abs().mean()
    assert isinstance(fitted.network.mlp.layers[1], EUGenLinear)
    checkpoint = torch.load(tmp_path / "student" / "checkpoint.pt", weights_only=True)
    assert any(key.endswith(".projection") for key in checkpoint["network"])
    with pytest.raises(InputError, match="holds a run already"):
        IsdfDistill(run_dir=tmp_path / "dense", output=tmp_path / "student").run()
    with pytest.raises(InputError, match="already an EUGen run"):
        IsdfDistill(run_dir=tmp_path / "student", output=tmp_path / "again").run()
