"""`eugen bench quality`: its failure flags and summary (fast), and a 2-step, 1-seed smoke of the real command."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from eugen_nerf.bench.quality import flag_failures, psnr_of_mse, summarise


def row(twin: str, seed: int, test_psnr: float, train_psnr: float, depth: float | None = 2.0,
        near: float | None = 0.2) -> dict:
    return {"twin": twin, "seed": seed, "failed": [], "test_psnr": test_psnr, "test_ssim": 0.5,
            "train_psnr_final": train_psnr, "median_test_depth": depth, "near_plane": near}


def test_failure_flags_catch_a_stalled_run_a_screen_and_the_background():
    rows = [row("dense", 42, 24.0, 28.0), row("eugen", 42, 25.0, 29.0),
            row("dense", 1, 19.0, 25.5),  # stalled: 3.5 dB below the best train PSNR
            row("eugen", 1, 24.5, 28.5, depth=0.05),  # a screen in front of the near plane
            row("dense", 2, 20.0, 28.2, depth=15.0),  # the far background: 7.5x the preset's median depth
            row("eugen", 2, 25.5, 28.8, depth=1.2)]
    flag_failures(rows)
    failed = {(r["twin"], r["seed"]): r["failed"] for r in rows}
    assert failed[("dense", 42)] == failed[("eugen", 42)] == failed[("eugen", 2)] == []
    assert "below the preset's best" in failed[("dense", 1)][0]
    assert "near plane" in failed[("eugen", 1)][0]
    assert "off the preset's median" in failed[("dense", 2)][0]


def test_a_backdrop_every_run_shares_is_caught_by_the_scenes_own_depth():
    # mipnerf360-cpu's six runs: all far behind the scene, so no run is off the preset's median by 5x
    depths = {("dense", 42): 5.62, ("eugen", 42): 9.0, ("dense", 1): 6.02, ("eugen", 1): 11.0,
              ("dense", 2): 9.29, ("eugen", 2): 12.0}
    rows = [row(twin, seed, 20.5, 21.2, depth=depth) for (twin, seed), depth in depths.items()]
    flag_failures(rows)
    assert all(not r["failed"] for r in rows)  # the relative rule alone misses it
    for r in rows:
        r["true_median_depth"] = 1.34
    flag_failures(rows)
    assert all("off the scene's 1.34" in r["failed"][0] for r in rows)
    # zipnerf-cpu's runs that learned the embedded scene (1.34 along the rays) and the harder one (1.14)
    learned = [row("dense", 42, 28.0, 29.0, depth=0.96), row("eugen", 42, 28.0, 29.0, depth=1.64)]
    harder = [row("eugen", 2, 28.2, 29.2, depth=0.97), row("eugen", 42, 27.9, 29.1, depth=1.50)]
    for r, true in [*((r, 1.34) for r in learned), *((r, 1.14) for r in harder)]:
        r["true_median_depth"] = true
    flag_failures(learned)
    flag_failures(harder)
    assert all(not r["failed"] for r in learned + harder)
    # the harder scene put at twice its depth, with train PSNR within 3 dB of the best: only the scene catches it
    far = [row("dense", 1, 26.3, 27.3, depth=2.20), row("eugen", 1, 25.3, 26.5, depth=2.32),
           row("eugen", 2, 28.2, 29.2, depth=0.97)]
    for r in far:
        r["true_median_depth"] = 1.14
    flag_failures(far)
    assert ["off the scene's 1.14" in " ".join(r["failed"]) for r in far] == [True, True, False]


def test_true_depth_of_the_embedded_unbounded_scene_is_read_from_its_depth_images(tmp_path):
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
    from nerfstudio.data.datasets.base_dataset import InputDataset

    from eugen_nerf.bench.quality import true_median_depth
    from eugen_nerf.errors import InputError
    from eugen_nerf.resources import embedded_scene

    outputs = NerfstudioDataParserConfig(data=embedded_scene("unbounded")).setup().get_dataparser_outputs("test")
    depth = true_median_depth(InputDataset(outputs), test_views=2)
    assert depth is not None and 0.3 < depth < 4.0  # the object and the ground, in the normalised scene
    # along the rays, as the models render depth: its z-depth median is 1.22
    assert true_median_depth(InputDataset(outputs), test_views=None) == pytest.approx(1.3425, abs=1e-3)
    damaged = tmp_path / "depth.png"
    damaged.write_bytes(b"not a png")
    outputs.metadata["depth_filenames"] = [damaged]
    with pytest.raises(InputError, match="depth.png: the data set's depth image cannot be read"):
        true_median_depth(InputDataset(outputs), test_views=2)
    outputs.metadata.pop("depth_filenames")
    assert true_median_depth(InputDataset(outputs), test_views=2) is None  # no depth images: no check


def test_true_depth_is_distance_along_the_rays_as_the_models_render_it():
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    from eugen_nerf.bench.quality import ray_distance
    from eugen_nerf.resources import embedded_scene

    camera = NerfstudioDataParserConfig(data=embedded_scene("unbounded")).setup().get_dataparser_outputs(
        "test").cameras[0]
    rays = camera.generate_rays(camera_indices=0)
    axis = -camera.camera_to_worlds[:, 2]  # OpenGL cameras look down their -z axis
    cosine = (rays.directions @ axis).numpy()
    z_depth = np.full(cosine.shape, 2.0)
    np.testing.assert_allclose(ray_distance(z_depth, camera), 2.0 / cosine, rtol=1e-4)
    assert ray_distance(z_depth, camera)[0, 0] > 2.2  # corners lie well off the axis: z-depth alone would be wrong
    # a depth image at half the camera's resolution reads the same rays at its own pixel centres
    half = ray_distance(np.full((int(camera.height) // 2, int(camera.width) // 2), 2.0), camera)
    assert half.shape == (int(camera.height) // 2, int(camera.width) // 2)
    np.testing.assert_allclose(half[0, 0], 2.0 / cosine[:2, :2].mean(), rtol=2e-3)


def test_summary_averages_the_runs_that_trained_and_pairs_the_gap_by_seed():
    rows = [row("dense", 42, 24.0, 28.0), row("eugen", 42, 25.0, 29.0),
            row("dense", 1, 22.0, 28.0), row("eugen", 1, 22.5, 28.0),
            row("dense", 2, 12.0, 20.0), row("eugen", 2, 26.0, 29.0)]
    rows[4]["failed"].append("stalled")
    summary = summarise(rows, ("dense", "eugen"))
    assert summary["dense"]["test_psnr"] == {"n": 2, "mean": 23.0, "sd": round(math.sqrt(2.0), 3)}
    assert summary["dense"]["test_psnr_all_runs"]["n"] == 3
    assert summary["dense"]["failed_seeds"] == [2]
    # seed 2 is no comparison: its dense twin failed
    assert summary["gap_eugen_minus_dense"] == {"n": 2, "mean": 0.75, "sd": round(math.sqrt(0.125), 3)}


def test_psnr_of_a_colour_loss():
    assert psnr_of_mse(0.01) == pytest.approx(20.0)
    assert psnr_of_mse(1e-3) == pytest.approx(30.0)


@pytest.mark.slow
def test_bench_quality_smoke_trains_both_twins_evaluates_and_reuses_finished_runs(tiny_blender, tmp_path):
    command = [sys.executable, "-m", "eugen_nerf.cli", "bench", "quality", "nerf-cpu", "--seeds", "42",
               "--steps", "2", "--curve-every", "1", "--output-dir", str(tmp_path),
               f"--train-flags=--pipeline.datamanager.data {tiny_blender}"]
    first = subprocess.run(command, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    results = json.loads((tmp_path / "quality.json").read_text())
    runs = results["presets"]["nerf-cpu"]["runs"]
    assert [(r["twin"], r["seed"], r["steps"]) for r in runs] == [("dense", 42, 1), ("eugen", 42, 1)]
    for run in runs:
        assert math.isfinite(run["test_psnr"]) and run["test_views"] == 1
        assert [step for step, _ in run["curves"]["test_psnr"]] == [1]  # nerfstudio skips the eval batch at step 0
        assert run["curves"]["train_psnr"][0][0] == 0
    assert (tmp_path / "curves-nerf-cpu.png").stat().st_size > 0
    assert "| dense | 42 |" in (tmp_path / "quality.md").read_text()
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("finished before, reused") == 2


@pytest.mark.parametrize("flags, message", [
    ({"jobs": 0}, "--jobs must be 1 or more"),
    ({"seeds": (1, 1)}, "--seeds repeats a seed"),
    ({"twins": ("sparse",)}, "--twins must be among"),
    ({"steps": 0}, "--steps must be 1 or more"),
    ({"presets": ("no-such-preset",)}, "no such preset"),
])
def test_bench_quality_refuses_bad_flags(flags, message):
    from eugen_nerf.bench.quality import BenchQuality
    from eugen_nerf.errors import InputError

    with pytest.raises(InputError, match=message):
        BenchQuality(**{"presets": ("nerf-cpu",), **flags}).run()


def test_a_failed_training_stays_failed_and_other_settings_are_refused(tmp_path):
    from eugen_nerf.bench.quality import BenchQuality, QualityRun
    from eugen_nerf.errors import InputError
    from eugen_nerf.presets import load_preset

    preset = load_preset("nerf-cpu")
    bench = BenchQuality(presets=("nerf-cpu",), seeds=(7,), steps=3, output_dir=tmp_path)
    for twin in ("dense", "eugen"):
        QualityRun(preset, twin, 7, tmp_path / "runs", bench.settings(preset, twin)).write_record(
            status="failed", error="error: training diverged at step 2", exit_code=2)
    results = bench.run()  # trains nothing: both trainings failed before
    rows = results["presets"]["nerf-cpu"]["runs"]
    assert [row["failed"] for row in rows] == [["no checkpoint (error: training diverged at step 2)"]] * 2
    assert results["presets"]["nerf-cpu"]["summary"]["dense"]["failed_seeds"] == [7]
    assert not list((tmp_path / "runs").glob("*/*/run"))
    with pytest.raises(InputError, match="trained with other settings"):
        BenchQuality(presets=("nerf-cpu",), seeds=(7,), steps=4, output_dir=tmp_path).run()
    edited = tmp_path / "nerf-cpu.yml"  # the same preset with another learning rate: its runs are not reused
    edited.write_text(preset.path.read_text().replace("lr: 0.001", "lr: 0.002"))
    with pytest.raises(InputError, match="trained with other settings"):
        BenchQuality(presets=(str(edited),), seeds=(7,), steps=3, output_dir=tmp_path).run()


@pytest.mark.parametrize("argv0, expected", [
    ("/x/.venv/bin/eugen", "eugen bench quality nerf-cpu --seeds 1"),
    ("/x/eugen_nerf/cli.py", "eugen bench quality nerf-cpu --seeds 1"),  # python -m eugen_nerf.cli
    ("/x/pytest", "fallback"),
])
def test_results_name_the_command_that_made_them(monkeypatch, argv0, expected):
    from eugen_nerf.bench.timing import command_line

    monkeypatch.setattr(sys, "argv", [argv0, "bench", "quality", "nerf-cpu", "--seeds", "1"])
    assert command_line("fallback") == expected
