"""`eugen bench suite RUN...`: every method's dense twin against its EUGen runs (trained or distilled),
side by side in one process, and one table of them all (docs/results/suite.md).

For each method (eugen-nerf, eugen-mipnerf360, eugen-zipnerf, eugen-dnerf) with a dense run and at
least one EUGen run among RUN... (config.yml files or folders searched for them), timed interleaved
(`eugen bench nerf`'s `compare_pipelines`): throughput of each network, MLP and whole-image speed-up,
peak memory of one image render, parameters, and test-split PSNR / SSIM (LPIPS where its weights can
be had) by nerfstudio's `get_average_eval_image_metrics`; then the MLP speed-up of untrained EUGen
twins at each m in --num-features (speed does not depend on the weights). Writes suite.json,
suite.md (the table) and two plots (speed-up against m; PSNR against image time). Methods without
a dense or an EUGen run are named, not dropped.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch
import tyro
from rich.console import Console
from rich.progress import Progress

from eugen_nerf.bench.nerf import compare_pipelines
from eugen_nerf.bench.report import cell, final_image_metric, pyplot
from eugen_nerf.bench.timing import (
    any_noisy,
    busiest,
    command_line,
    load_verdict,
    machine_description,
    peak_memory_mb,
    today,
    write_json_results,
)
from eugen_nerf.errors import InputError
from eugen_nerf.nerf.engine.runs import load_pipeline, read_run_config

METHODS = ("eugen-nerf", "eugen-mipnerf360", "eugen-zipnerf", "eugen-dnerf")


@dataclass
class Run:
    config: Path
    method: str
    layer: str
    distilled: bool

    @property
    def label(self) -> str:
        return f"{self.layer} (distilled)" if self.distilled else self.layer


def read_run(config_path: Path) -> Run:
    config = read_run_config(config_path, "run")
    try:
        method, layer = config.method_name, getattr(config.pipeline.model, "layer", "dense")
    except AttributeError:
        raise InputError(f"{config_path}: not a nerfstudio run's config.yml (no method or model)") from None
    return Run(config_path, method, layer, (config_path.parent / "distill.json").is_file())


def find_runs(paths: tuple[Path, ...]) -> list[Run]:
    """Each path is a run's config.yml or a folder searched for them; newest last within a folder."""
    configs: list[Path] = []
    for path in paths:
        if path.is_file() and path.name == "config.yml":
            configs.append(path)
        elif path.is_dir():
            found = sorted(path.rglob("config.yml"), key=lambda p: p.stat().st_mtime)
            if not found:
                raise InputError(f"{path}: no run (config.yml) in this folder")
            configs.extend(found)
        else:
            raise InputError(f"{path}: not a run's config.yml or a folder of runs")
    return [read_run(path) for path in configs]


@dataclass
class BenchSuite:
    """Dense vs EUGen for every method: speed, memory, parameters and test-image quality, one table."""

    runs: tyro.conf.Positional[tuple[Path, ...]]
    """Runs to compare: config.yml files or folders holding them (ns-train / eugen train / eugen
    distill output). The newest dense run of each method is its baseline; every EUGen run is compared."""
    output_dir: Path = Path("bench-suite")
    """Where suite.json, suite.md and the plots go."""
    points: int = 65_536
    """Points per network pass."""
    repeats: int = 3
    """Timed repetitions (medians)."""
    images: int = 1
    """Test cameras rendered per timed repetition."""
    num_features: tuple[int, ...] = (8, 16, 32, 64)
    """m values of the speed-up-against-m sweep (untrained EUGen twins of each method's EUGen run)."""
    console: tyro.conf.Suppress[Console] = field(default_factory=Console, repr=False)

    def run(self) -> dict:
        for name in ("points", "repeats", "images"):
            if getattr(self, name) <= 0:
                raise InputError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if any(m <= 0 for m in self.num_features):
            raise InputError(f"--num-features must be positive, got {self.num_features}")
        runs = find_runs(self.runs)
        # A failed ns-train leaves a run folder without a checkpoint: name it and go on with the others.
        unusable = [run for run in runs if not any(run.config.parent.glob("nerfstudio_models/step-*.ckpt"))]
        runs = [run for run in runs if run not in unusable]
        groups = {method: [run for run in runs if run.method == method] for method in METHODS}
        ignored = sorted({run.method for run in runs} - set(METHODS))
        missing = [f"{method}: no {layer} run" for method in METHODS for layer in ("dense", "eugen")
                   if not any(run.layer == layer for run in groups[method])]
        missing += [f"{run.config}: no checkpoint (skipped)" for run in unusable]
        ready = [method for method in METHODS if all(any(run.layer == layer for run in groups[method])
                                                     for layer in ("dense", "eugen"))]
        results: dict = {"date": today(), "command": command_line("eugen bench suite"), "points": self.points,
                         "methods": {}, "missing": missing, "ignored_methods": ignored}
        with Progress(console=self.console) as progress:
            task = progress.add_task("bench suite", total=len(ready) * (3 + len(self.num_features)))
            for method in ready:
                results["methods"][method] = self.bench_method(groups[method], progress, task)
        if ready:
            first = next(iter(results["methods"].values()))
            results["machine"] = first.pop("machine")
        for line in missing:
            self.console.print(f"[yellow]missing[/yellow] {line}")
        for method, entry in results["methods"].items():
            self.console.print(f"{method}: " + load_verdict(busiest(list(entry["machine_load"].values())),
                                                            entry["noisy"]) + " (its busiest timing)")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        write_json_results(results, self.output_dir / "suite.json", self.console)
        table = markdown_table(results)
        (self.output_dir / "suite.md").write_text(table)
        self.console.print(table)
        if ready:
            plot_speedup_against_m(results, self.output_dir / "speedup_vs_m.png")
            plot_psnr_against_time(results, self.output_dir / "psnr_vs_image_time.png")
        return results

    def bench_method(self, runs: list[Run], progress: Progress, task) -> dict:
        dense_run = [run for run in runs if run.layer == "dense"][-1]
        eugen_runs = [run for run in runs if run.layer == "eugen"]
        labels = ["dense", *(run.label if [r.label for r in eugen_runs].count(run.label) == 1
                             else f"{run.label} {run.config.parent.name}" for run in eugen_runs)]
        method = dense_run.method
        progress.update(task, description=f"{method}: loading runs")
        pipelines = {label: load_pipeline(run.config, "run", test_mode="test")[0]
                     for label, run in zip(labels, [dense_run, *eugen_runs], strict=True)}
        progress.update(task, advance=1, description=f"{method}: timing")
        timing = compare_pipelines(pipelines, self.points, self.repeats, self.images)
        progress.update(task, advance=1, description=f"{method}: test images")
        models = {}
        for (label, pipeline), run in zip(pipelines.items(), [dense_run, *eugen_runs], strict=True):
            metrics = pipeline.get_average_eval_image_metrics()
            camera = pipeline.datamanager.eval_dataset.cameras[:1].to(pipeline.device)
            with torch.no_grad():
                memory = peak_memory_mb(lambda p=pipeline, c=camera: p.model.get_outputs_for_camera(c), pipeline.device)
            models[label] = {**timing["models"][label], **timing["speedup"][label], "run": str(run.config),
                             "psnr": metrics["psnr"], "ssim": final_image_metric(metrics, "ssim"),
                             "lpips": final_image_metric(metrics, "lpips"), "peak_memory_mb": memory}
        progress.update(task, advance=1, description=f"{method}: speed-up against m")
        sweep = {}
        loads, noisy = {"trained runs": timing["machine_load"]}, {"trained runs": timing["noisy"]}
        for m in self.num_features:
            twin = untrained_twin(eugen_runs[0].config, pipelines["dense"].device, m)
            timed = compare_pipelines({"dense": pipelines["dense"], "eugen": twin}, self.points, self.repeats,
                                      images=0)
            sweep[m] = timed["speedup"]["eugen"]["mlp"]
            loads[f"m = {m}"], noisy[f"m = {m}"] = timed["machine_load"], timed["noisy"]
            progress.update(task, advance=1)
        return {"models": models, "mlp_speedup_by_m": sweep, "machine": machine_description(pipelines["dense"].device),
                # each timing's load (the trained runs, then the sweep's); noisy: any of them on a busy machine
                "machine_load": loads, "noisy": any_noisy(noisy.values())}


def untrained_twin(config_path: Path, device: torch.device, num_features: int):
    """An EUGen run's pipeline rebuilt with m = num_features, untrained (timing only)."""
    config = copy.deepcopy(read_run_config(config_path, "run"))
    config.pipeline.model.eugen.num_features = num_features
    pipeline = config.pipeline.setup(device=device, test_mode="inference")
    pipeline.eval()
    return pipeline


def markdown_table(results: dict) -> str:
    lines = [
        "| method | model | parameters | MLP speed-up | image ms | image speed-up | peak MB | PSNR | SSIM | LPIPS |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, entry in results["methods"].items():
        for label, row in entry["models"].items():
            lines.append(f"| {method} | {label} | {row['parameters']:,} | {row['mlp']:.2f}× | {row['image_ms']:.0f} | "
                         f"{row['image']:.2f}× | {cell(row['peak_memory_mb'], '.0f')} | {row['psnr']:.2f} | "
                         f"{cell(row['ssim'], '.3f')} | {cell(row['lpips'], '.3f')} |")
    for line in results["missing"]:
        lines.append(f"\nmissing: {line}")
    return "\n".join(lines) + "\n"


def plot_speedup_against_m(results: dict, path: Path) -> None:
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6, 4))
    for method, entry in results["methods"].items():
        ms = sorted(int(m) for m in entry["mlp_speedup_by_m"])
        axes.plot(ms, [entry["mlp_speedup_by_m"][m] for m in ms], marker="o", label=method)
    axes.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    axes.set_xscale("log", base=2)
    axes.set_xlabel("random features per order m")
    axes.set_ylabel("MLP speed-up over the dense twin")
    axes.set_title(f"EUGen MLP speed-up against m ({results.get('machine', '')})", fontsize=9)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_psnr_against_time(results: dict, path: Path) -> None:
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6, 4))
    for method, entry in results["methods"].items():
        rows = entry["models"]
        times = [row["image_ms"] for row in rows.values()]
        psnrs = [row["psnr"] for row in rows.values()]
        line = axes.plot(times, psnrs, linestyle=":", linewidth=0.8)[0]
        for (label, row), marker in zip(rows.items(), ["o", "^", "s", "D", "v"] * 4, strict=False):
            axes.scatter(row["image_ms"], row["psnr"], marker=marker, color=line.get_color(),
                         label=f"{method} {label}")
    axes.set_xscale("log")
    axes.set_xlabel("whole-image render time (ms)")
    axes.set_ylabel("test PSNR (dB)")
    axes.set_title("quality against inference time", fontsize=9)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
