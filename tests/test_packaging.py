"""The package as a user installs it: a wheel that holds every module, the presets and the embedded
scenes, and that trains a preset from outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def source_files() -> list[str]:
    """The checkout's files as a fresh clone has them (tracked, and new files git does not ignore)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout.splitlines()
    return [name for name in listed if (ROOT / name).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a clean copy of the sources (no build/ left over from an earlier build)."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist")
    for name in source_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    # --no-build-isolation: the build uses this environment's setuptools (no download)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(source)], check=True, capture_output=True, text=True, timeout=600)
    (found,) = out.glob("eugen_nerf-*.whl")
    return found


def test_wheel_holds_every_module_the_presets_and_the_scenes(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    data = ("eugen_nerf/resources/configs/", "eugen_nerf/resources/scenes/")  # configs/ and data/, as package data
    wheel_modules = {name for name in names if name.endswith(".py") and not name.startswith(data)}
    assert wheel_modules == {name for name in source_files() if name.startswith("eugen_nerf/") and name.endswith(".py")}
    presets = {p.name for p in (ROOT / "configs").glob("*.yml")} | {p.name for p in (ROOT / "configs").glob("*.json")}
    assert {"nerf-cpu.yml", "zipnerf-cpu.yml", "isdf-replicacad.json"} <= presets
    assert {f"eugen_nerf/resources/configs/{name}" for name in presets} <= names
    for kind in ("blender", "dnerf", "unbounded", "rgbd"):
        files = {p.relative_to(ROOT / "data").as_posix() for p in (ROOT / "data" / kind).rglob("*") if p.is_file()}
        assert files and {f"eugen_nerf/resources/scenes/{name}" for name in files} <= names
    assert not any("benchmarks" in name for name in names)  # measured results stay in the repository


@pytest.mark.slow
def test_eugen_train_runs_from_the_unpacked_wheel_outside_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import eugen_nerf; print(eugen_nerf.__file__)"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(site)
    result = subprocess.run(
        [sys.executable, "-m", "eugen_nerf.cli", "train", "nerf-cpu", "--max-num-iterations", "2",
         "--steps-per-save", "1", "--machine.device-type", "cpu", "--output-dir", str(tmp_path / "out"),
         "--pipeline.datamanager.train-num-rays-per-batch", "16"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (config_path,) = (tmp_path / "out").rglob("config.yml")
    config = yaml.load(config_path.read_text(), Loader=yaml.Loader)
    data = Path(config.pipeline.datamanager.dataparser.data)
    assert data.is_relative_to(site) and (data / "transforms_train.json").is_file()
    assert list((config_path.parent / "nerfstudio_models").glob("step-*.ckpt"))
