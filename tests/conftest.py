"""Shared fixtures: tiny scenes and method configs reduced the way nerfstudio's own
tests/test_train.py reduces its methods (CPU, 4 rays, 4 + 4 samples, 2 steps, tensorboard)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eugen_nerf.scenes.kinds import BlenderScene


@pytest.fixture(scope="session")
def tiny_blender(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny-blender")
    BlenderScene(output=out, width=16, height=16, train_views=2, val_views=1, test_views=1).run()
    return out


def build_reduced_config(data: Path, output: Path, layer: str, steps: int = 2, method: str = "eugen_nerf"):
    """A method's config (eugen_nerf, eugen_dnerf, eugen_mipnerf360 or eugen_zipnerf) at smoke-test size."""
    from eugen_nerf.nerf.methods import registry as methods

    config = copy.deepcopy(getattr(methods, method).config)
    config.machine.device_type = "cpu"
    config.output_dir = output
    config.experiment_name = "smoke"
    config.timestamp = layer
    config.max_num_iterations = steps
    config.steps_per_save = 1
    config.steps_per_eval_batch = config.steps_per_eval_image = config.steps_per_eval_all_images = 10**6
    for entry in config.optimizers.values():  # eugen-zipnerf warms up for 5,000 steps
        entry["scheduler"].warmup_steps = 0
    config.pipeline.datamanager.data = data
    config.pipeline.datamanager.train_num_rays_per_batch = 4
    config.pipeline.datamanager.eval_num_rays_per_batch = 4
    model = config.pipeline.model
    model.layer = layer
    model.eval_num_rays_per_chunk = 256
    if method in ("eugen_mipnerf360", "eugen_zipnerf"):
        model.base_mlp_layer_width, model.proposal_mlp_layer_width = 64, 32
        model.num_proposal_samples_per_ray, model.num_nerf_samples_per_ray = (4, 4), 4
    if method == "eugen_zipnerf":
        model.head_mlp_layer_width, model.bottleneck_width, model.grid_log2_hashmap_size = 64, 64, 10
        model.grid_num_levels, model.grid_max_resolution = 3, 64
        model.proposal_grid_num_levels, model.proposal_grid_max_resolutions = (2, 2), (32, 32)
    elif method in ("eugen_nerf", "eugen_dnerf"):  # the proposal methods have no such fields
        model.num_coarse_samples = model.num_importance_samples = 4
    return config


def train_config(config):
    """What `ns-train` does after parsing: save the config, set up the trainer, train."""
    config.set_timestamp()
    config.save_config()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    trainer.train()
    return trainer


@pytest.fixture(scope="session")
def tiny_runs(tiny_blender, tmp_path_factory) -> dict[str, Path]:
    """config.yml of a 2-step eugen-nerf run and of its dense twin."""
    output = tmp_path_factory.mktemp("runs")
    runs = {}
    for layer in ("eugen", "dense"):
        config = build_reduced_config(tiny_blender, output, layer)
        train_config(config)
        runs[layer] = config.get_base_dir() / "config.yml"
    return runs


def run_ns(tool: str, *args: str) -> subprocess.CompletedProcess:
    """One of nerfstudio's commands (ns-train, ns-eval, ...) of this environment, in a subprocess."""
    bin_dir = Path(sys.executable).parent
    # ns-render needs the ffmpeg that scripts/setup.sh links into the venv's bin, also when pytest is
    # started without activating the venv
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([str(bin_dir / tool), *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="session")
def reduced_config():
    """`build_reduced_config`: a method's config at smoke-test size."""
    return build_reduced_config


@pytest.fixture(scope="session")
def train():
    """`train_config`: what ns-train does after parsing."""
    return train_config


@pytest.fixture(scope="session")
def ns():
    """`run_ns`: a nerfstudio command in a subprocess."""
    return run_ns


def load_record_busy(load: dict) -> bool | None:
    """A benchmark's measured load (`MachineLoad.as_dict()`), checked for sense: busy by its own limit
    (10% of a core per thread timed, threads counted up to the cores), None where it was not measured."""
    if load["others_cpu_share"] is None:  # no /proc or no clock tick: not measured, and not called quiet
        return None
    assert 0 <= load["others_cpu_share"] <= 1 and 0 <= load["steal_share"] <= 1 and load["threads"] >= 1
    in_cores = max(load["others_cpu_share"], load["steal_share"]) * load["cores"]
    return in_cores > load["busy_above_per_thread"] * min(load["threads"], load["cores"])


@pytest.fixture(scope="session")
def load_busy():
    """`load_record_busy`: what a load record says of the machine (True busy, False quiet, None unmeasured);
    a benchmark's `noisy` must equal it."""
    return load_record_busy
