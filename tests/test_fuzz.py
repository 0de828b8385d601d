"""Bad input through the real commands: each case damages a copy of tiny data, a flag, a checkpoint, a
config.yml, a run folder or an iSDF stream, runs `ns-train` / `ns-eval` / `ns-render` / `eugen` in a
subprocess, and expects a one-line error (exit 2) naming what is wrong, no traceback, no file created by a
payload, and every file that existed before unchanged.

The cases run two at a time (one thread each) in one session fixture; each test checks one case's result."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from eugen_nerf.isdf.commands import IsdfTrain
from eugen_nerf.isdf.network import SDFNetworkConfig
from eugen_nerf.isdf.training import ScheduleConfig
from eugen_nerf.scenes.kinds import BlenderScene, RGBDScene

pytestmark = pytest.mark.slow


@dataclass
class Workspace:
    root: Path
    blender: Path  # a tiny Blender scene
    rgbd: Path  # a tiny iSDF stream
    runs: dict[str, Path]  # config.yml of a trained tiny eugen-nerf run ("eugen") and its dense twin ("dense")
    isdf_run: Path  # a trained tiny iSDF run folder
    marker: Path  # payloads create this file when they run
    train_run: Callable[[Path, str], tuple[Path, Path]]  # (output, layer) -> a new tiny run's config.yml, checkpoint


@dataclass
class Case:
    """argv (argv[0] a command of this environment), the text the error line must hold, files to check."""

    argv: list[str]
    expect: str


CASES: dict[str, Callable[[Workspace, Path], Case]] = {}


def case(function: Callable[[Workspace, Path], Case]) -> Callable[[Workspace, Path], Case]:
    CASES[function.__name__.replace("_", "-")] = function
    return function


TINY_TRAIN = ["--machine.device-type", "cpu", "--max-num-iterations", "2", "--vis", "tensorboard",
              "--pipeline.datamanager.train-num-rays-per-batch", "4", "--pipeline.model.num-coarse-samples", "4",
              "--pipeline.model.num-importance-samples", "4"]


def ns_train(here: Path, data: Path, *flags: str, method: str = "eugen-nerf") -> list[str]:
    return ["ns-train", method, *TINY_TRAIN, "--output-dir", str(here / "outputs"), *flags, "--data", str(data)]


def scene_copy(ws: Workspace, here: Path) -> Path:
    return Path(shutil.copytree(ws.blender, here / "scene"))


def edit_json(path: Path, edit: Callable[[dict], object]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def run_copy(ws: Workspace, here: Path, layer: str = "eugen") -> tuple[Path, Path]:
    """A trained tiny run of its own (config.yml, checkpoint), so a case can damage it."""
    return ws.train_run(here, layer)


# ----------------------------------------------------------------------------- scene data (ns-train)
@case
def missing_transforms(ws, here):
    scene = scene_copy(ws, here)
    (scene / "transforms_train.json").unlink()
    return Case(ns_train(here, scene), "transforms_train.json: not found")


@case
def malformed_transforms(ws, here):
    scene = scene_copy(ws, here)
    (scene / "transforms_train.json").write_text('{"frames": [,]}')
    return Case(ns_train(here, scene), "transforms_train.json: not a readable transforms JSON file")


@case
def empty_frames(ws, here):
    scene = scene_copy(ws, here)
    edit_json(scene / "transforms_train.json", lambda data: data.update(frames=[]))
    return Case(ns_train(here, scene), 'needs a non-empty "frames" list')


@case
def missing_camera_angle(ws, here):
    scene = scene_copy(ws, here)
    edit_json(scene / "transforms_train.json", lambda data: data.pop("camera_angle_x"))
    return Case(ns_train(here, scene), 'no "camera_angle_x"')


@case
def nan_pose(ws, here):
    scene = scene_copy(ws, here)
    edit_json(scene / "transforms_train.json",
              lambda data: data["frames"][0]["transform_matrix"][1].__setitem__(3, float("nan")))
    return Case(ns_train(here, scene), "r_0.png: the train camera pose (frame 0) holds NaN or infinite values")


@case
def scaled_pose(ws, here):
    scene = scene_copy(ws, here)
    edit_json(scene / "transforms_train.json",
              lambda data: data["frames"][1]["transform_matrix"][0].__setitem__(0, 3.0))
    return Case(ns_train(here, scene), "r_1.png: the train camera pose (frame 1) is not a rotation and translation")


@case
def truncated_png(ws, here):
    scene = scene_copy(ws, here)
    image = scene / "train" / "r_1.png"
    image.write_bytes(image.read_bytes()[:200])
    return Case(ns_train(here, scene), "r_1.png: not a readable image")


@case
def missing_image(ws, here):
    scene = scene_copy(ws, here)
    (scene / "train" / "r_0.png").unlink()
    return Case(ns_train(here, scene), "r_0.png: not found")


@case
def image_of_wrong_size(ws, here):
    scene = scene_copy(ws, here)
    imageio.imwrite(scene / "train" / "r_1.png", np.zeros((8, 8, 4), np.uint8))
    return Case(ns_train(here, scene), "r_1.png: image is 8x8 but its camera is 16x16")


@case
def data_folder_missing(ws, here):
    return Case(ns_train(here, here / "no-such-scene"), "no-such-scene")


@case
def dnerf_scene_without_times(ws, here):
    return Case(ns_train(here, ws.blender, method="eugen-dnerf"), "time")


# ----------------------------------------------------------------------------- flags (ns-train, eugen)
@case
def zero_iterations(ws, here):
    argv = ns_train(here, ws.blender)
    argv[argv.index("--max-num-iterations") + 1] = "0"
    return Case(argv, "--max-num-iterations must be 1 or more, got 0")


@case
def negative_iterations(ws, here):
    argv = ns_train(here, ws.blender)
    argv[argv.index("--max-num-iterations") + 1] = "-3"
    return Case(argv, "--max-num-iterations must be 1 or more, got -3")


@case
def zero_rays(ws, here):
    argv = ns_train(here, ws.blender)
    argv[argv.index("--pipeline.datamanager.train-num-rays-per-batch") + 1] = "0"
    return Case(argv, "--pipeline.datamanager.train-num-rays-per-batch")


@case
def negative_learning_rate(ws, here):
    return Case(ns_train(here, ws.blender, "--optimizers.fields.optimizer.lr", "-1e-3"),
                "--optimizers.fields.optimizer.lr must be above 0")


@case
def zero_final_learning_rate(ws, here):
    return Case(ns_train(here, ws.blender, "--optimizers.fields.scheduler.lr-final", "0"),
                "--optimizers.fields.scheduler.lr-final must be above 0")


@case
def warmup_as_long_as_the_run(ws, here):
    return Case(ns_train(here, ws.blender, "--optimizers.fields.scheduler.warmup-steps", "2"),
                "--optimizers.fields.scheduler.warmup-steps 2 must be below --max-num-iterations 2")


@case
def unknown_layer_kind(ws, here):
    return Case(ns_train(here, ws.blender, "--pipeline.model.layer", "sparse"), "--pipeline.model.layer")


@case
def eugen_layer_index_out_of_range(ws, here):
    return Case(ns_train(here, ws.blender, "--pipeline.model.eugen-base-layers", "9"), "eugen-base-layers")


@case
def eugen_order_zero(ws, here):
    return Case(ns_train(here, ws.blender, "--pipeline.model.eugen.order", "0"), "--pipeline.model.eugen")


@case
def eugen_normalize_floor_zero(ws, here):
    return Case(ns_train(here, ws.blender, "--pipeline.model.eugen.normalize-floor", "0"),
                "--pipeline.model.eugen: normalize_floor must be a positive finite number, got 0.0")


@case
def unknown_preset(ws, here):
    return Case(["eugen", "train", "no-such-preset"], "no-such-preset")


@case
def scene_of_zero_width(ws, here):
    return Case(["eugen", "scene", "blender", "--output", str(here / "scene"), "--width", "0"], "--width")


# ----------------------------------------------------------------------------- checkpoints
@case
def resume_from_missing_folder(ws, here):
    return Case(ns_train(here, ws.blender, "--load-dir", str(here / "nowhere")), str(here / "nowhere"))


@case
def resume_from_corrupt_checkpoint(ws, here):
    _, checkpoint = run_copy(ws, here)
    checkpoint.write_bytes(os.urandom(4096))
    return Case(ns_train(here, ws.blender, "--load-dir", str(checkpoint.parent)),
                f"{checkpoint}: not a checkpoint this package wrote")


@case
def resume_from_the_other_twin(ws, here):
    _, checkpoint = run_copy(ws, here, layer="dense")
    return Case(ns_train(here, ws.blender, "--load-dir", str(checkpoint.parent)), "dense")


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@case
def eval_of_a_payload_checkpoint(ws, here):
    config, checkpoint = run_copy(ws, here)
    torch.save({"pipeline": Payload(ws.marker)}, checkpoint)
    return Case(["ns-eval", "--load-config", str(config), "--output-path", str(here / "eval.json")],
                f"{checkpoint}: not a checkpoint this package wrote")


@case
def eval_of_a_truncated_checkpoint(ws, here):
    config, checkpoint = run_copy(ws, here)
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    return Case(["ns-eval", "--load-config", str(config), "--output-path", str(here / "eval.json")],
                f"{checkpoint}: not a checkpoint this package wrote")


@case
def eval_of_a_run_without_checkpoint(ws, here):
    config, checkpoint = run_copy(ws, here)
    checkpoint.unlink()
    return Case(["ns-eval", "--load-config", str(config), "--output-path", str(here / "eval.json")],
                str(checkpoint.parent))


@case
def bench_of_a_pickle_checkpoint(ws, here):
    config, checkpoint = run_copy(ws, here)
    checkpoint.write_bytes(pickle.dumps(Payload(ws.marker)))
    return Case(["eugen", "bench", "nerf", "--load-config", str(config), "--points", "64", "--repeats", "1"],
                f"{checkpoint}: not a checkpoint this package wrote")


# ----------------------------------------------------------------------------- config.yml and run folders
def poisoned_config(ws: Workspace, here: Path) -> Path:
    config = here / "run" / "config.yml"
    config.parent.mkdir()
    config.write_text(ws.runs["eugen"].read_text()
                      + f'pwned: !!python/object/apply:os.system ["touch {ws.marker}"]\n')
    return config


@case
def eval_of_a_payload_config(ws, here):
    config = poisoned_config(ws, here)
    return Case(["ns-eval", "--load-config", str(config), "--output-path", str(here / "eval.json")],
                f"{config}: refused tag !!python/object/apply:os.system")


@case
def render_of_a_payload_config(ws, here):
    config = poisoned_config(ws, here)
    return Case(["ns-render", "dataset", "--load-config", str(config), "--output-path", str(here / "render")],
                "refused tag !!python/object/apply:os.system")


@case
def export_of_a_payload_config(ws, here):
    config = poisoned_config(ws, here)
    return Case(["ns-export", "pointcloud", "--load-config", str(config), "--output-dir", str(here / "points")],
                "refused tag !!python/object/apply:os.system")


@case
def train_from_a_payload_config(ws, here):
    config = poisoned_config(ws, here)
    return Case(["ns-train", "eugen-nerf", "--load-config", str(config)], "refused tag !!python/object/apply:os.system")


@case
def suite_over_a_payload_config(ws, here):
    config = poisoned_config(ws, here)
    return Case(["eugen", "bench", "suite", str(config.parent), "--output-dir", str(here / "suite")],
                "refused tag !!python/object/apply:os.system")


@case
def distill_of_a_payload_config(ws, here):
    config = poisoned_config(ws, here)
    return Case(["eugen", "distill", "--load-config", str(config)], "refused tag !!python/object/apply:os.system")


@case
def eval_of_a_missing_config(ws, here):
    return Case(["ns-eval", "--load-config", str(here / "config.yml"), "--output-path", str(here / "eval.json")],
                f"{here / 'config.yml'}")


@case
def eval_of_malformed_yaml(ws, here):
    config = here / "config.yml"
    config.write_text("method_name: [unclosed\n  : :\n")
    return Case(["ns-eval", "--load-config", str(config), "--output-path", str(here / "eval.json")], str(config))


@case
def bench_of_a_file_that_is_no_run(ws, here):
    config = here / "config.yml"
    config.write_text("- just\n- a list\n")
    return Case(["eugen", "bench", "nerf", "--load-config", str(config)], str(config))


@case
def eval_of_an_edited_model_target(ws, here):
    config = here / "run" / "config.yml"
    config.parent.mkdir()
    config.write_text(ws.runs["eugen"].read_text().replace(
        "eugen_nerf.nerf.methods.nerf.EUGenNeRFModel ''", "nerfstudio.models.nerfacto.NerfactoModel ''"))
    return Case(["ns-eval", "--load-config", str(config), "--output-path", str(here / "eval.json")],
                "pipeline.model._target is nerfstudio.models.nerfacto.NerfactoModel")


@case
def bench_of_swapped_twins(ws, here):
    return Case(["eugen", "bench", "nerf", "--load-config", str(ws.runs["dense"]), "--baseline-config",
                 str(ws.runs["eugen"]), "--points", "64", "--repeats", "1"], "dense")


@case
def distill_of_an_eugen_run(ws, here):
    return Case(["eugen", "distill", "--load-config", str(ws.runs["eugen"])], "dense")


# ----------------------------------------------------------------------------- iSDF streams and runs
def stream_copy(ws: Workspace, here: Path) -> Path:
    return Path(shutil.copytree(ws.rgbd, here / "stream"))


def isdf_train(here: Path, data: Path) -> list[str]:
    return ["eugen", "isdf", "train", "--data", str(data), "--output", str(here / "run")]


def damage_trajectory(stream: Path, row: int, value: str) -> None:
    lines = (stream / "traj.txt").read_text().splitlines()
    values = lines[row].split()
    values[0] = value
    lines[row] = " ".join(values)
    (stream / "traj.txt").write_text("\n".join(lines) + "\n")


@case
def isdf_nan_pose(ws, here):
    stream = stream_copy(ws, here)
    damage_trajectory(stream, 2, "nan")
    return Case(isdf_train(here, stream), "traj.txt: the pose of row 3 (frame 2) holds NaN or infinite values")


@case
def isdf_trajectory_of_wrong_width(ws, here):
    stream = stream_copy(ws, here)
    lines = (stream / "traj.txt").read_text().splitlines()
    lines[1] = " ".join(lines[1].split()[:-2])
    (stream / "traj.txt").write_text("\n".join(lines) + "\n")
    return Case(isdf_train(here, stream), "traj.txt")


@case
def isdf_missing_depth_frame(ws, here):
    stream = stream_copy(ws, here)
    (stream / "results" / "depth000003.png").unlink()
    return Case(isdf_train(here, stream), "depth000003.png: depth frame missing")


@case
def isdf_depth_frame_of_wrong_size(ws, here):
    stream = stream_copy(ws, here)
    imageio.imwrite(stream / "results" / "depth000002.png", np.ones((5, 7), np.uint16))
    return Case(isdf_train(here, stream), "depth000002.png")


@case
def isdf_eval_of_a_folder_that_is_no_run(ws, here):
    return Case(["eugen", "isdf", "eval", "--run-dir", str(here)], "not an iSDF run folder")


@case
def isdf_eval_of_a_payload_checkpoint(ws, here):
    run = Path(shutil.copytree(ws.isdf_run, here / "run"))
    checkpoint = run / "checkpoint.pt"
    torch.save({"network": Payload(ws.marker)}, checkpoint)
    return Case(["eugen", "isdf", "eval", "--run-dir", str(run)], f"{checkpoint}: not a checkpoint this package wrote")


# ----------------------------------------------------------------------------- running the cases
def file_hashes(root: Path) -> dict[Path, str]:
    # tensorboard's event files of the runs this test process trained are flushed by its own writer thread
    return {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(root.rglob("*"))
            if path.is_file() and not path.name.startswith("events.out.tfevents.")}


def run_case(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1",
           "COLUMNS": "200"}
    return subprocess.run([str(bin_dir / argv[0]), *argv[1:]], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env=env, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def workspace(tmp_path_factory, reduced_config, train) -> Workspace:
    root = tmp_path_factory.mktemp("fuzz")
    blender = root / "blender"
    BlenderScene(output=blender, width=16, height=16, train_views=2, val_views=1, test_views=1).run()

    def train_tiny_run(output: Path, layer: str) -> tuple[Path, Path]:
        config = reduced_config(blender, output, layer, steps=2)
        train(config)
        (checkpoint,) = config.get_checkpoint_dir().glob("step-*.ckpt")
        return config.get_base_dir() / "config.yml", checkpoint
    rgbd = root / "rgbd"
    RGBDScene(output=rgbd, width=24, height=16, frames=8, focal=12.0, sdf_spacing=0.2).run()
    runs = {layer: train_tiny_run(root / "runs", layer)[0] for layer in ("eugen", "dense")}
    isdf = IsdfTrain(data=rgbd, output=root / "isdf-run", network=SDFNetworkConfig(width=32), eval_every=0,
                     eval_points=500, mesh_resolution=0.25,
                     schedule=ScheduleConfig(frame_stride=2, first_frame_steps=4, steps_per_frame=1, keyframe_steps=2,
                                             final_steps=3, max_frames=6))
    isdf.sampling.rays_per_frame = 16
    isdf.run()
    return Workspace(root, blender, rgbd, runs, root / "isdf-run", root / "PWNED", train_tiny_run)


@dataclass
class Outcomes:
    results: dict[str, tuple[Case, subprocess.CompletedProcess]]
    changed: list[Path]  # files of the workspace that existed before the cases ran and changed or went away


@pytest.fixture(scope="session")
def outcomes(workspace) -> Outcomes:
    """Every case run once, two at a time."""
    before = file_hashes(workspace.root)
    prepared = {}
    for name, build in CASES.items():
        here = workspace.root / "cases" / name
        here.mkdir(parents=True)
        prepared[name] = (build(workspace, here), here)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run_case, spec.argv, here) for name, (spec, here) in prepared.items()}
        results = {name: (prepared[name][0], future.result()) for name, future in futures.items()}
    after = file_hashes(workspace.root)
    return Outcomes(results, [path for path, digest in before.items() if after.get(path) != digest])


def test_no_earlier_file_changed_and_no_payload_ran(outcomes, workspace):
    assert not outcomes.changed
    assert not workspace.marker.exists()


def test_there_are_at_least_30_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line(outcomes, name):
    spec, result = outcomes.results[name]
    output = result.stdout + result.stderr
    shown = f"{' '.join(spec.argv)}\n--- stderr (end) ---\n{result.stderr[-3000:]}"
    assert "Traceback" not in output, shown
    assert result.returncode == 2, shown
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert errors and errors[-1].startswith("error:"), shown
    assert spec.expect in errors[-1], shown
    assert sum(line.startswith("error:") for line in errors) == 1, shown
