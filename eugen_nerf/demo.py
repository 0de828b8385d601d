"""`eugen demo`: eugen-nerf against its dense twin on one scene, end to end.

1. trains both twins with a preset (each `eugen train` in its own process, as a user would run it;
   a re-run resumes an interrupted training and skips a finished one),
2. evaluates both on the test split (PSNR, SSIM; LPIPS where available),
3. renders a novel-view orbit of the EUGen model (PNG frames + GIF, and the orbit as an ns-render
   camera path),
4. times the inference of both side by side (`eugen bench nerf`),
5. writes report.md, results.json and a plot of quality against inference time.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tyro
from rich.console import Console

from eugen_nerf.bench.nerf import compare_pipelines, print_table
from eugen_nerf.bench.timing import command_line, machine_description, today
from eugen_nerf.errors import InputError
from eugen_nerf.nerf.commands.time_sweep import render_frames
from eugen_nerf.presets import load_preset
from eugen_nerf.scenes.render import look_at

LAYERS = ("dense", "eugen")


@dataclass
class Demo:
    """Train eugen-nerf and its dense twin, evaluate, render an orbit, time both, write a report."""

    output: Path = Path("outputs/demo")
    """Folder for the runs, renders and the report."""
    preset: str = "nerf-cpu"
    """Preset of both trainings (configs/NAME.yml or a path)."""
    data: Path | None = None
    """A Blender-format scene; default: the embedded one (data/blender)."""
    steps: int | None = None
    """Training steps of each twin (default: the preset's)."""
    orbit_frames: int = 24
    """Frames of the novel-view orbit."""
    quick: bool = False
    """A pipeline check in a few minutes: 10 steps, 4 orbit frames (quality is meaningless)."""
    console: tyro.conf.Suppress[Console] = field(default_factory=Console, repr=False)

    def run(self) -> dict:
        if self.quick:
            self.steps, self.orbit_frames = self.steps or 10, min(self.orbit_frames, 4)
        if self.steps is not None and self.steps <= 0:
            raise InputError(f"--steps must be positive, got {self.steps}")
        if self.orbit_frames <= 0:
            raise InputError(f"--orbit-frames must be positive, got {self.orbit_frames}")
        preset = load_preset(self.preset)
        self.output.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        configs, train_seconds = {}, {}
        for layer in LAYERS:
            self.console.rule(f"[bold]1. training the {layer} twin ({preset.name})")
            configs[layer], train_seconds[layer] = self.train(preset.name, layer)

        self.console.rule("[bold]2. evaluating both on the test split")
        pipelines, scores = {}, {}
        for layer in LAYERS:
            pipelines[layer], scores[layer] = evaluate(configs[layer], self.console)

        self.console.rule("[bold]3. rendering a novel-view orbit (EUGen)")
        orbit = render_orbit(pipelines["eugen"], self.output / "orbit", self.orbit_frames)

        self.console.rule("[bold]4. timing inference side by side")
        timing = compare_pipelines(pipelines, points=65_536, repeats=3 if self.quick else 5, images=1)
        print_table(timing, self.console)

        results = {
            "date": today(),
            "machine": machine_description(pipelines["eugen"].device),
            "command": command_line("eugen demo"),
            "preset": preset.name,
            "runs": {layer: str(configs[layer]) for layer in LAYERS},
            "train_seconds": train_seconds,
            "test_metrics": scores,
            "timing": timing,
            "orbit": {k: str(v) for k, v in orbit.items()},
            "demo_seconds": time.perf_counter() - started,
        }
        (self.output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        plot_quality_vs_time(results, self.output / "quality_vs_time.png")
        (self.output / "report.md").write_text(report(results))
        self.console.rule("[bold green]done")
        self.console.print(f"report: {self.output / 'report.md'}   orbit: {orbit['gif']}   "
                           f"total {results['demo_seconds'] / 60:.1f} min")
        return results

    def train(self, preset: str, layer: str) -> tuple[Path, float]:
        """`eugen train PRESET --pipeline.model.layer LAYER ...` in a child process; resumes if interrupted."""
        run_dir = self.output / "runs" / "demo" / "eugen-nerf" / layer
        args = [preset, "--pipeline.model.layer", layer, "--output-dir", str(self.output / "runs"),
                "--experiment-name", "demo", "--timestamp", layer]
        if self.data is not None:
            args += ["--data", str(self.data)]
        if self.steps is not None:
            args += ["--max-num-iterations", str(self.steps)]
        checkpoints = run_dir / "nerfstudio_models"
        if any(checkpoints.glob("step-*.ckpt")):
            self.console.print(f"resuming from {checkpoints}")
            args += ["--load-dir", str(checkpoints)]
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "eugen_nerf.cli", "train", *args])
        if result.returncode != 0:
            raise InputError(f"training the {layer} twin failed (exit {result.returncode}); see the output above")
        return run_dir / "config.yml", time.perf_counter() - started


def evaluate(config_path: Path, console: Console):
    """ns-eval's computation in-process: mean test-split metrics, written beside the run as eval.json."""
    from eugen_nerf.nerf.engine.runs import eval_setup_of

    config, pipeline, checkpoint, _ = eval_setup_of(config_path, "run", test_mode="test")
    pipeline.eval()
    metrics = pipeline.get_average_eval_image_metrics(get_std=False)
    scores = {name: float(value) for name, value in metrics.items()}
    (config_path.parent / "eval.json").write_text(json.dumps(
        {"experiment_name": config.experiment_name, "method_name": config.method_name,
         "checkpoint": str(checkpoint), "results": scores}, indent=2) + "\n")
    console.print(f"{config.pipeline.model.layer}: PSNR {scores['psnr']:.2f} dB, SSIM {scores['fine_ssim']:.3f}"
                  + (f", LPIPS {scores['fine_lpips']:.3f}" if "fine_lpips" in scores else ", LPIPS unavailable"))
    return pipeline, scores


def orbit_camera_path(pipeline, frames: int) -> dict:
    """An ns-render camera path circling the scene at the test cameras' mean distance and height."""
    cameras = pipeline.datamanager.eval_dataset.cameras
    centres = cameras.camera_to_worlds[:, :3, 3].cpu().numpy()
    radius = float(np.linalg.norm(centres[:, :2], axis=1).mean())
    height = float(centres[:, 2].mean())
    width, image_height = int(cameras.width[0]), int(cameras.height[0])
    fov = math.degrees(2 * math.atan(image_height / 2 / float(cameras.fy[0])))
    path = []
    for i in range(frames):
        angle = 2 * math.pi * i / frames
        eye = np.array([radius * math.cos(angle), radius * math.sin(angle), height])
        pose = look_at(eye, np.zeros(3))
        path.append({"camera_to_world": pose.reshape(-1).tolist(), "fov": fov, "aspect": width / image_height})
    return {"camera_type": "perspective", "render_height": image_height, "render_width": width,
            "seconds": frames / 12, "camera_path": path}


def render_orbit(pipeline, folder: Path, frames: int) -> dict[str, Path]:
    from nerfstudio.cameras.camera_paths import get_path_from_json

    folder.mkdir(parents=True, exist_ok=True)
    path_json = orbit_camera_path(pipeline, frames)
    (folder / "camera_path.json").write_text(json.dumps(path_json, indent=1) + "\n")
    gif = render_frames(pipeline, get_path_from_json(path_json), folder, "orbit.gif")
    return {"gif": gif, "frames": folder, "camera_path": folder / "camera_path.json"}


def plot_quality_vs_time(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 3.6), dpi=120)
    for layer, colour in zip(LAYERS, ("tab:gray", "tab:green"), strict=True):
        ms = results["timing"]["models"][layer]["image_ms"]
        psnr = results["test_metrics"][layer]["psnr"]
        axes.scatter([ms], [psnr], s=60, color=colour, label=layer)
        axes.annotate(f"{layer}\n{psnr:.2f} dB, {ms:.0f} ms", (ms, psnr), textcoords="offset points",
                      xytext=(6, 6), fontsize=8)
    axes.set_xlabel("whole-image render time (ms, lower is better)")
    axes.set_ylabel("test PSNR (dB)")
    axes.set_title(f"eugen-nerf vs dense twin ({results['preset']})", fontsize=10)
    axes.margins(x=0.35, y=0.3)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def report(results: dict) -> str:
    timing, scores = results["timing"], results["test_metrics"]
    dense, eugen = timing["models"]["dense"], timing["models"]["eugen"]
    speedup = timing["speedup"]["eugen"]
    gap = scores["eugen"]["psnr"] - scores["dense"]["psnr"]

    def lpips(layer: str) -> str:
        value = scores[layer].get("fine_lpips")
        return "unavailable" if value is None else f"{value:.3f}"

    lines = [
        "# eugen-nerf demo report",
        "",
        f"{results['date']}, {results['machine']}; preset `{results['preset']}`; `{results['command']}`; "
        f"{results['demo_seconds'] / 60:.1f} minutes in all.",
        "",
        "| twin | parameters | train s | test PSNR | SSIM | LPIPS | field Mpts/s | image ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for layer, row in (("dense", dense), ("eugen", eugen)):
        lines.append(
            f"| {layer} | {row['parameters']:,} | {results['train_seconds'][layer]:.0f} | "
            f"{scores[layer]['psnr']:.2f} | {scores[layer]['fine_ssim']:.3f} | {lpips(layer)} | "
            f"{row['points_per_s']['coarse'] / 1e6:.2f} | {row['image_ms']:.0f} |")
    lines += [
        "",
        f"- EUGen field throughput: **{speedup['field']:.2f}x** the dense twin's; whole-image render "
        f"**{speedup['image']:.2f}x** faster.",
        f"- Test PSNR: EUGen {gap:+.2f} dB against dense.",
        "",
        "![quality against inference time](quality_vs_time.png)",
        "",
        f"Novel-view orbit of the EUGen model: `orbit/orbit.gif` (frames `orbit/frame_*.png`). The same path"
        f" renders with nerfstudio: `ns-render camera-path --load-config {results['runs']['eugen']} "
        f"--camera-path-filename {results['orbit']['camera_path']} --output-path orbit.mp4`.",
        "",
    ]
    return "\n".join(lines)
