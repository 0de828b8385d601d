"""`eugen bench quality PRESET...`: both twins of each preset trained on several seeds, their test-split
quality, learning curves and failures, and the EUGen - dense gap with its spread.

Each (preset, twin, seed) is a real `eugen train PRESET --pipeline.model.layer TWIN --machine.seed SEED`
in its own process (--jobs at a time, --threads-per-job torch threads each), logging to tensorboard the
colour loss of every 10th training batch and, every --curve-every steps, of one batch of test rays: the
learning curves, as PSNR. Finished runs under --output-dir are reused (if they were trained with the same
settings) and interrupted ones resumed from their last checkpoint, so the benchmark can be stopped and
started again; a training that failed stays failed unless --retry-failed. Each run is then evaluated on
the test split (PSNR / SSIM / LPIPS where its weights can be had, the median depth of the pixels it
renders opaque) and flagged as failed when (docs/commands.md says why these):
- training stopped (a divergence, an error), or its evaluation failed or was not finite;
- its final train PSNR is more than FAILED_TRAIN_PSNR_DB below the best run of the same preset;
- its median test depth lies in front of the training near plane (a "screen" in front of the cameras);
- its median test depth is more than TRUE_DEPTH_FACTOR times off the scene's, where the data set has depth
  images (nerfstudio-data's `depth_file_path`): a failure every run of a preset shares is caught too;
- its median test depth is more than DEPTH_FACTOR times off the median of the preset's runs (the far
  background, or a screen where no near plane is set).
The summary per preset gives each twin's test PSNR as mean +- sd over the runs that trained, and the
EUGen - dense gap over the seeds where both twins trained. Writes quality.json, quality.md and one
learning-curve plot per preset.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
import tyro
from jaxtyping import Float
from rich.console import Console

from eugen_nerf.bench.report import cell, final_image_metric, pyplot, run_scalars
from eugen_nerf.bench.timing import command_line, today, write_json_results
from eugen_nerf.errors import InputError, error_summary
from eugen_nerf.nerf.engine.checkpoints import checkpoint_step, latest_checkpoint
from eugen_nerf.presets import Preset, load_preset

FAILED_TRAIN_PSNR_DB = 3.0  # a run this far below the preset's best train PSNR did not learn the scene
DEPTH_FACTOR = 5.0  # median test depths of runs that learned the same scene agree within this factor
# the rendered median (opaque pixels) against the depth images' (distance along the rays): runs that learned
# the scene agree within this factor, a scene put at twice its depth does not
TRUE_DEPTH_FACTOR = 1.5
FINAL_FRACTION = 0.1  # the final train PSNR is the mean over this last part of the logged steps
OPAQUE = 0.5  # pixels rendered with more accumulation than this have a depth that means something
# Learning curves are the PSNR of each logged batch's colour loss (an MSE in every method here; the fine
# network's where there are two), which nerfstudio logs for every method alike: its train-batch PSNR metric
# is logged by some models only.
COLOUR_LOSSES = ("rgb_loss_fine", "rgb_loss")
TRAIN_LOSS_TAG = "Train Loss Dict/{}"
TEST_LOSS_TAG = "Eval Loss Dict/{}"  # nerfstudio's eval batch: one batch of test rays
TWINS = ("dense", "eugen")


@dataclass
class QualityRun:
    """One training of the benchmark: where it lives and how it is started or resumed."""

    preset: Preset
    twin: str
    seed: int
    root: Path
    settings: dict  # what the run is trained with beyond (preset, twin, seed): the preset's flags, steps, ...

    @property
    def name(self) -> str:
        return f"{self.preset.name}-{self.twin}-seed{self.seed}"

    @property
    def record(self) -> Path:
        """What the benchmark knows of this training: its settings, and its exit status once it ended."""
        return self.root / self.name / "bench-run.json"

    def folder(self) -> Path | None:
        """The run folder nerfstudio made (ROOT/NAME/METHOD/run), once it exists."""
        found = sorted((self.root / self.name).glob("*/run/config.yml"))
        return found[0].parent if found else None

    def checkpoint_step(self) -> int | None:
        folder = self.folder()
        if folder is None:
            return None
        try:
            return checkpoint_step(latest_checkpoint(folder / "nerfstudio_models"))
        except InputError:  # no checkpoint yet
            return None

    def finished(self) -> bool:
        step = self.checkpoint_step()
        return step is not None and step >= self.settings["steps"] - 1

    def read_record(self) -> dict:
        """The record of an earlier invocation; one line when it trained with other settings."""
        if not self.record.is_file():
            return {}
        record = json.loads(self.record.read_text())
        if record.get("settings") != self.settings:
            raise InputError(f"{self.record.parent}: trained with other settings ({record.get('settings')}, now "
                             f"{self.settings}); give another --output-dir or remove that folder")
        return record

    def write_record(self, **status) -> None:
        self.record.parent.mkdir(parents=True, exist_ok=True)
        self.record.write_text(json.dumps({"settings": self.settings, **status}, indent=1) + "\n")

    def command(self) -> list[str]:
        settings = self.settings
        command = [sys.executable, "-m", "eugen_nerf.cli", "train", str(self.preset.path),
                   "--pipeline.model.layer", self.twin, "--machine.seed", str(self.seed),
                   "--max-num-iterations", str(settings["steps"]),
                   "--steps-per-eval-batch", str(settings["curve_every"]), "--vis", "tensorboard",
                   "--output-dir", str(self.root), "--experiment-name", self.name, "--timestamp", "run",
                   *shlex.split(settings["train_flags"])]
        if self.checkpoint_step() is not None:  # interrupted: go on from its last checkpoint
            command += ["--load-dir", str(self.folder() / "nerfstudio_models")]
        return command


@dataclass
class BenchQuality:
    """Both twins of each preset on several seeds: test quality, learning curves, failures, the gap."""

    presets: tyro.conf.Positional[tuple[str, ...]]
    """Presets (configs/ names or preset files) to train."""
    seeds: tuple[int, ...] = (42, 1, 2)
    """Seeds (--machine.seed) of each twin."""
    twins: tuple[str, ...] = TWINS
    """Which twins to train (--pipeline.model.layer)."""
    jobs: int = 2
    """Trainings at a time."""
    threads_per_job: int = 1
    """torch threads of each training (OMP_NUM_THREADS)."""
    steps: int | None = None
    """Training steps of every run (default: each preset's --max-num-iterations)."""
    curve_every: int = 50
    """Steps between two test-batch PSNR points of the learning curves."""
    test_views: int | None = None
    """Evaluate on the first N test views only (default: all)."""
    output_dir: Path = Path("bench-quality")
    """Where runs/, logs/, quality.json, quality.md and the plots go; its finished runs are reused."""
    train_flags: str = ""
    """More ns-train flags for every run, in one string after an equals sign
    (--train-flags="--pipeline.model.dense-init he")."""
    retry_failed: bool = False
    """Train again (from their last checkpoint) the runs whose training failed in an earlier invocation."""
    console: tyro.conf.Suppress[Console] = field(default_factory=Console, repr=False)

    def run(self) -> dict:
        self.check_flags()
        presets = [load_preset(name) for name in self.presets]  # a wrong name is one line before training
        names = [preset.name for preset in presets]
        if len(set(names)) != len(names):
            raise InputError(f"the presets repeat a name: {', '.join(names)}")
        root = self.output_dir / "runs"
        runs = [QualityRun(preset, twin, seed, root, self.settings(preset, twin))
                for seed in self.seeds for preset in presets for twin in self.twins]
        records = {run.name: run.read_record() for run in runs}  # other settings: one line before training
        errors = self.train_all(runs, records)
        results = {"date": today(), "command": command_line("eugen bench quality"), "cpu_count": os.cpu_count(),
                   "train_flags": self.train_flags,
                   "jobs": self.jobs, "threads_per_job": self.threads_per_job, "curve_every": self.curve_every,
                   "failure_rules": {"train_psnr_below_best_db": FAILED_TRAIN_PSNR_DB, "depth_factor": DEPTH_FACTOR,
                                     "true_depth_factor": TRUE_DEPTH_FACTOR},
                   "presets": {}}
        for preset in presets:
            rows = [self.measure(run, errors.get(run.name)) for run in runs if run.preset is preset]
            flag_failures(rows)
            results["presets"][preset.name] = {"steps": self.steps_of(preset), "flags": preset.flags,
                                               "twin_flags": preset.twin_flags,
                                               "runs": rows, "summary": summarise(rows, self.twins)}
        self.output_dir.mkdir(parents=True, exist_ok=True)
        write_json_results(results, self.output_dir / "quality.json", self.console)
        table = markdown_report(results)
        (self.output_dir / "quality.md").write_text(table)
        self.console.print(table, soft_wrap=True, markup=False, highlight=False)
        for preset, entry in results["presets"].items():
            plot_learning_curves(preset, entry["runs"], self.output_dir / f"curves-{preset}.png")
        return results

    def steps_of(self, preset: Preset) -> int:
        steps = self.steps or int(preset.flags.get("max-num-iterations", 0))
        if steps < 1:
            raise InputError(f"{preset.path}: the preset sets no max-num-iterations; give --steps")
        return steps

    def settings(self, preset: Preset, twin: str) -> dict:
        """What a run trains with: a finished run is reused only while all of it is unchanged, the preset's
        flags included (an edited preset trains its runs afresh in another --output-dir)."""
        return {"steps": self.steps_of(preset), "curve_every": self.curve_every, "train_flags": self.train_flags,
                "preset_flags": {**preset.flags, **preset.twin_flags.get(twin, {})}}

    def check_flags(self) -> None:
        for name in ("jobs", "threads_per_job", "curve_every"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be 1 or more, got {getattr(self, name)}")
        for name in ("steps", "test_views"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be 1 or more, got {getattr(self, name)}")
        if not self.seeds:
            raise InputError("--seeds needs at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise InputError(f"--seeds repeats a seed: {self.seeds}")
        unknown = [twin for twin in self.twins if twin not in TWINS]
        if unknown or not self.twins or len(set(self.twins)) != len(self.twins):
            raise InputError(f"--twins must be among {', '.join(TWINS)}, each once, got {self.twins}")

    def train_all(self, runs: list[QualityRun], records: dict[str, dict]) -> dict[str, str]:
        """Train every unfinished run, --jobs at a time; the last line of each training that failed, by name
        (in this invocation or, unless --retry-failed, in an earlier one)."""
        logs = self.output_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        errors: dict[str, str] = {}
        waiting = []
        for run in runs:
            error = records[run.name].get("error")
            if error is not None and not self.retry_failed:
                errors[run.name] = error
                self.console.print(f"{run.name}: its training failed before ({error}); --retry-failed trains it again")
            elif run.finished():
                self.console.print(f"{run.name}: finished before, reused")
            else:
                waiting.append(run)
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads_per_job)}
        running: list[tuple[QualityRun, subprocess.Popen, float]] = []
        while waiting or running:
            while waiting and len(running) < self.jobs:
                run = waiting.pop(0)
                command = run.command()
                run.write_record(status="training")
                log = (logs / f"{run.name}.log").open("a")
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
                log.close()
                running.append((run, process, time.monotonic()))
                self.console.print(f"{run.name}: training ({' '.join(command[3:])})")
            time.sleep(1.0)
            for entry in [entry for entry in running if entry[1].poll() is not None]:
                run, process, started = entry
                running.remove(entry)
                minutes = (time.monotonic() - started) / 60
                if process.returncode == 0:
                    run.write_record(status="trained", minutes=round(minutes, 1))
                    self.console.print(f"{run.name}: trained in {minutes:.1f} min")
                    continue
                lines = (logs / f"{run.name}.log").read_text(errors="replace").strip().splitlines() or ["no output"]
                errors[run.name] = lines[-1]
                if process.returncode != 130:  # a Ctrl-C is an interruption, resumed next time; the rest failed
                    run.write_record(status="failed", error=lines[-1], exit_code=process.returncode)
                self.console.print(f"[red]{run.name}: training stopped[/red] after {minutes:.1f} min: {lines[-1]}")
        return errors

    def measure(self, run: QualityRun, error: str | None) -> dict:
        """A run's row: test metrics, median depth, final train PSNR and curves (what of them exists)."""
        row: dict = {"twin": run.twin, "seed": run.seed, "run": None, "error": error, "failed": [],
                     "steps": run.checkpoint_step()}
        folder = run.folder()
        if folder is None or row["steps"] is None:
            row["failed"].append(f"no checkpoint ({error or 'not trained'})")
            return row
        row["run"] = str(folder)
        if error is not None or row["steps"] < run.settings["steps"] - 1:
            row["failed"].append(f"stopped at step {row['steps']}: {error or 'unfinished'}")
        row["curves"] = read_curves(folder)
        row["train_psnr_final"] = final_value(row["curves"]["train_psnr"])
        if row["train_psnr_final"] is None:
            row["failed"].append("no learning curve in the run's tensorboard events")
        self.console.print(f"{run.name}: evaluating on the test split")
        try:
            row.update(evaluate_run(folder / "config.yml", self.test_views))
        except Exception as error:  # noqa: BLE001 - one run's failed evaluation is that run's result, not the bench's
            said = error_summary(error)
            row["failed"].append(f"evaluation failed: {said}")
            return row
        if not math.isfinite(row["test_psnr"]):
            row["failed"].append(f"test PSNR {row['test_psnr']}")
            row["test_psnr"] = None
        return row


def true_median_depth(dataset, test_views: int | None) -> float | None:
    """The median distance along the test views' rays to the surfaces of their depth images, in scene units
    (nerfstudio-data's `depth_file_path`, times its unit scale and the data parser's scale); None when the
    data set has none. The images hold z-depth and the models render distance along the ray, so each pixel's
    depth is turned into its ray's distance first."""
    from nerfstudio.cameras.cameras import CameraType

    outputs = dataset._dataparser_outputs
    filenames = outputs.metadata.get("depth_filenames")
    if not filenames:
        return None
    if not bool((dataset.cameras.camera_type == CameraType.PERSPECTIVE.value).all()):
        return None  # ray_distance knows pinhole cameras only
    scale = float(outputs.metadata.get("depth_unit_scale_factor", 1.0)) * float(outputs.dataparser_scale)
    distances = [ray_distance(read_depth_image(Path(name)), dataset.cameras[index])
                 for index, name in enumerate(filenames[:test_views])]
    valid = np.concatenate([distance[distance > 0] for distance in distances])
    return float(np.median(valid)) * scale if valid.size else None


def ray_distance(z_depth: Float[np.ndarray, "height width"], camera) -> Float[np.ndarray, "height width"]:
    """A pinhole camera's z-depth image as distance along each pixel centre's ray (the image may be a
    resized copy of the camera's)."""
    height, width = z_depth.shape[:2]
    scale_x, scale_y = float(camera.width) / width, float(camera.height) / height
    x = ((np.arange(width) + 0.5) * scale_x - float(camera.cx)) / float(camera.fx)
    y = ((np.arange(height) + 0.5) * scale_y - float(camera.cy)) / float(camera.fy)
    return z_depth * np.sqrt(1.0 + x[None, :] ** 2 + y[:, None] ** 2)


def read_depth_image(path: Path) -> np.ndarray:
    try:
        return np.asarray(imageio.imread(path), dtype=np.float64)
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: the data set's depth image cannot be read ({error})") from None


def read_curves(folder: Path) -> dict[str, list[list[float]]]:
    """[step, PSNR] pairs of the train batches and of the test batches, from the run's tensorboard events."""
    events = run_scalars(folder)
    tags = events.Tags()["scalars"]

    def pairs(pattern: str) -> list[list[float]]:
        tag = next((pattern.format(loss) for loss in COLOUR_LOSSES if pattern.format(loss) in tags), None)
        if tag is None:
            return []
        latest = {event.step: event.value for event in events.Scalars(tag)}  # a resumed run logs a step again
        return [[step, round(psnr_of_mse(latest[step]), 4)] for step in sorted(latest)]

    return {"train_psnr": pairs(TRAIN_LOSS_TAG), "test_psnr": pairs(TEST_LOSS_TAG)}


def psnr_of_mse(mse: float) -> float:
    return -10.0 * math.log10(max(mse, 1e-10))


def final_value(pairs: list[list[float]]) -> float | None:
    """The mean over the last FINAL_FRACTION of the logged points (one batch's PSNR is noisy)."""
    if not pairs:
        return None
    tail = pairs[-max(1, round(len(pairs) * FINAL_FRACTION)):]
    return round(statistics.fmean(value for _, value in tail), 3)


def evaluate_run(config_path: Path, test_views: int | None) -> dict:
    """evaluate_pipeline of a run's pipeline, and the scene's own median depth (its depth images)."""
    from eugen_nerf.nerf.engine.runs import load_pipeline

    pipeline, _, _ = load_pipeline(config_path, "run", test_mode="test")
    return {**evaluate_pipeline(pipeline, test_views),
            "true_median_depth": _rounded(true_median_depth(pipeline.datamanager.eval_dataset, test_views))}


def evaluate_pipeline(pipeline, test_views: int | None) -> dict:
    """Test-split PSNR / SSIM / LPIPS (nerfstudio's per-image metrics, averaged) and the median depth of the
    pixels rendered opaque (accumulation above OPAQUE): an object scene's background is not the scene's depth.
    The pipeline is loaded in test mode."""
    model = pipeline.model
    metrics: dict[str, list[float]] = {}
    depths: list[torch.Tensor] = []
    with torch.no_grad():
        for index, (camera, batch) in enumerate(pipeline.datamanager.fixed_indices_eval_dataloader):
            if test_views is not None and index >= test_views:
                break
            outputs = model.get_outputs_for_camera(camera=camera)
            image_metrics, _ = model.get_image_metrics_and_images(outputs, batch)
            for name, value in image_metrics.items():
                metrics.setdefault(name, []).append(float(value))
            depth, accumulation = outputs.get("depth"), outputs.get("accumulation")
            if depth is not None and accumulation is not None:
                depths.append(depth[accumulation > OPAQUE].float())
    averaged = {name: statistics.fmean(values) for name, values in metrics.items()}
    collider = getattr(model.config, "collider_params", None) or {}
    return {
        "test_psnr": round(final_image_metric(averaged, "psnr"), 3),
        "test_ssim": _rounded(final_image_metric(averaged, "ssim")),
        "test_lpips": _rounded(final_image_metric(averaged, "lpips")),
        "test_views": len(next(iter(metrics.values()), [])),
        "median_test_depth": _rounded(float(torch.cat(depths).median())) if sum(map(len, depths)) else None,
        "near_plane": collider.get("near_plane"),
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def flag_failures(rows: list[dict]) -> None:
    """Add the flags that compare a run with the other runs of its preset (module docstring)."""
    best = max((row["train_psnr_final"] for row in rows if row.get("train_psnr_final") is not None), default=None)
    depths = [row["median_test_depth"] for row in rows if row.get("median_test_depth") is not None]
    typical = statistics.median(depths) if depths else None
    for row in rows:
        if row.get("train_psnr_final") is not None and row["train_psnr_final"] < best - FAILED_TRAIN_PSNR_DB:
            row["failed"].append(f"train PSNR {row['train_psnr_final']:.2f} dB, more than {FAILED_TRAIN_PSNR_DB:g} dB "
                                 f"below the preset's best ({best:.2f})")
        depth, near = row.get("median_test_depth"), row.get("near_plane")
        if depth is None:
            continue
        true = row.get("true_median_depth")
        if near is not None and depth < near:
            row["failed"].append(f"median test depth {depth:.3g} in front of the near plane {near:g} (a screen)")
        elif true and not true / TRUE_DEPTH_FACTOR <= depth <= true * TRUE_DEPTH_FACTOR:
            row["failed"].append(f"median test depth {depth:.3g}, more than {TRUE_DEPTH_FACTOR:g}x off the scene's "
                                 f"{true:.3g} (its depth images)")
        elif typical and not typical / DEPTH_FACTOR <= depth <= typical * DEPTH_FACTOR:
            row["failed"].append(f"median test depth {depth:.3g}, more than {DEPTH_FACTOR:g}x off the preset's "
                                 f"median {typical:.3g}")


def mean_sd(values: list[float]) -> dict:
    return {"n": len(values), "mean": round(statistics.fmean(values), 3) if values else None,
            "sd": round(statistics.stdev(values), 3) if len(values) > 1 else None}


def summarise(rows: list[dict], twins: tuple[str, ...]) -> dict:
    """Per twin: test PSNR / SSIM over the runs that trained (and over all); the paired EUGen - dense gap."""
    summary: dict = {}
    for twin in twins:
        mine = [row for row in rows if row["twin"] == twin and row.get("test_psnr") is not None]
        good = [row for row in mine if not row["failed"]]
        summary[twin] = {"test_psnr": mean_sd([row["test_psnr"] for row in good]),
                         "test_ssim": mean_sd([row["test_ssim"] for row in good if row.get("test_ssim") is not None]),
                         "test_psnr_all_runs": mean_sd([row["test_psnr"] for row in mine]),
                         "failed_seeds": [row["seed"] for row in rows if row["twin"] == twin and row["failed"]]}
    if set(TWINS) <= set(twins):
        by_seed = {(row["twin"], row["seed"]): row for row in rows}
        gaps = [by_seed[("eugen", seed)]["test_psnr"] - by_seed[("dense", seed)]["test_psnr"]
                for seed in sorted({row["seed"] for row in rows})
                if all(not by_seed[(twin, seed)]["failed"] for twin in TWINS)]
        summary["gap_eugen_minus_dense"] = mean_sd(gaps)
    return summary


def _format(entry: dict, spec: str = ".2f") -> str:
    sd = "" if entry["sd"] is None else f" ± {entry['sd']:{spec}}"
    return f"{entry['mean']:{spec}}{sd} (n = {entry['n']})"


def markdown_report(results: dict) -> str:
    lines = [f"Quality benchmark, {results['date']}: `{results['command']}`", ""]
    for preset, entry in results["presets"].items():
        lines += [f"## {preset} ({entry['steps']} steps)", "",
                  "| twin | seed | test PSNR | SSIM | LPIPS | final train PSNR | median test depth | failed |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in entry["runs"]:
            lines.append(f"| {row['twin']} | {row['seed']} | {cell(row.get('test_psnr'), '.2f', '–')} | "
                         f"{cell(row.get('test_ssim'), '.3f', '–')} | {cell(row.get('test_lpips'), '.3f', '–')} | "
                         f"{cell(row.get('train_psnr_final'), '.2f', '–')} | "
                         f"{cell(row.get('median_test_depth'), '.3g', '–')} | "
                         f"{'; '.join(row['failed']) or 'no'} |")
        summary = entry["summary"]
        lines.append("")
        for twin in (name for name in TWINS if name in summary):
            failed = summary[twin]["failed_seeds"]
            quality = summary[twin]["test_psnr"]
            said = f"test PSNR {_format(quality)} dB over the runs that trained" if quality["n"] else "no run trained"
            lines.append(f"- {twin}: {said}" + (f"; failed on seeds {', '.join(map(str, failed))}" if failed else ""))
        gap = summary.get("gap_eugen_minus_dense")
        if gap is not None:
            lines.append("- EUGen − dense on the seeds where both twins trained: "
                         + (f"{_format(gap)} dB" if gap["n"] else "no such seed"))
        lines.append("")
    return "\n".join(lines)


def plot_learning_curves(preset: str, rows: list[dict], path: Path) -> None:
    """Train-batch PSNR (smoothed) and test-batch PSNR against the step, one line per run; failed runs dashed."""
    plt = pyplot()
    figure, (train_axes, test_axes) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    colours = {"dense": "tab:blue", "eugen": "tab:orange"}
    for row in rows:
        curves = row.get("curves")
        if not curves:
            continue
        style = {"color": colours[row["twin"]], "linestyle": "--" if row["failed"] else "-", "linewidth": 1.0,
                 "label": f"{row['twin']} seed {row['seed']}" + (" (failed)" if row["failed"] else "")}
        for axes, pairs, window in ((train_axes, curves["train_psnr"], 10), (test_axes, curves["test_psnr"], 1)):
            if pairs:
                steps, values = zip(*pairs, strict=True)
                axes.plot(steps, running_mean(list(values), window), **style)
    train_axes.set_title(f"{preset}: train-batch PSNR (mean of 10 logged batches)", fontsize=9)
    test_axes.set_title(f"{preset}: test-batch PSNR", fontsize=9)
    for axes in (train_axes, test_axes):
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
    train_axes.set_ylabel("PSNR (dB)")
    if test_axes.get_legend_handles_labels()[0]:
        test_axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def running_mean(values: list[float], window: int) -> list[float]:
    return [statistics.fmean(values[max(0, index - window + 1):index + 1]) for index in range(len(values))]
