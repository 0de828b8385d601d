"""`eugen isdf train | eval | mesh | bench`: continual SDF mapping from a depth stream, dense or EUGen.

A run is a folder: `run.json` (every setting, so eval/mesh/bench rebuild the network), `checkpoint.pt`
(atomic; an interrupted or repeated `train` resumes from it), `history.json` (per frame),
`metrics.json`, `sdf_error.png`, `mesh.ply`.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import tyro
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from eugen_nerf.bench.timing import (
    MachineLoad,
    command_line,
    load_verdict,
    machine_description,
    time_interleaved,
    today,
    write_json_results,
)
from eugen_nerf.errors import InputError
from eugen_nerf.isdf.data import DepthStream, GroundTruth
from eugen_nerf.isdf.evaluation import (
    extract_mesh,
    mesh_metrics,
    observed_box,
    plot_history,
    sdf_metrics,
    visible_points,
)
from eugen_nerf.isdf.network import SDFNetwork, SDFNetworkConfig
from eugen_nerf.isdf.training import (
    ContinualTrainer,
    LossConfig,
    SamplingConfig,
    ScheduleConfig,
    load_run,
    save_run,
)
from eugen_nerf.layers.mlp import EUGenConfig
from eugen_nerf.resources import embedded_scene

DEFAULT_DATA = embedded_scene("rgbd")
CHECKPOINT, SETTINGS, HISTORY, METRICS = "checkpoint.pt", "run.json", "history.json", "metrics.json"


@dataclass
class RunSettings:
    """Everything that defines a run (saved as run.json)."""

    data: Path = DEFAULT_DATA
    """Sequence folder (results/depth%06d.png, traj.txt)."""
    dataset_config: Path | None = None
    """Camera and depth-scale JSON; default DATA/dataset.json."""
    network: SDFNetworkConfig = field(default_factory=SDFNetworkConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    seed: int = 0

    def to_json(self) -> dict:
        data = asdict(self)
        data["data"] = str(self.data)
        data["dataset_config"] = None if self.dataset_config is None else str(self.dataset_config)
        return data

    @classmethod
    def from_json(cls, data: dict) -> RunSettings:
        network = dict(data["network"])
        network["eugen"] = EUGenConfig.from_saved(network["eugen"])
        network["eugen_layers"] = tuple(network["eugen_layers"])
        return cls(Path(data["data"]), None if data["dataset_config"] is None else Path(data["dataset_config"]),
                   SDFNetworkConfig(**network), SamplingConfig(**data["sampling"]), LossConfig(**data["losses"]),
                   ScheduleConfig(**data["schedule"]), data["seed"])

    def stream(self) -> DepthStream:
        return DepthStream(self.data, self.dataset_config)


def scene_centre(stream: DepthStream) -> torch.Tensor:
    """The middle of the ground-truth grid when there is one, else of what the first frame sees."""
    try:
        return GroundTruth.of(stream).bounds.mean(0)
    except InputError:
        low, high = observed_box(stream, [0], margin=0.0)
        return torch.tensor((low + high) / 2, dtype=torch.float32)


def build(settings: RunSettings, stream: DepthStream) -> ContinualTrainer:
    torch.manual_seed(settings.seed)
    network = SDFNetwork(settings.network, scene_centre(stream))
    return ContinualTrainer(network, stream, settings.sampling, settings.losses, settings.schedule, settings.seed)


def load_run_folder(run: Path) -> tuple[RunSettings, DepthStream, ContinualTrainer]:
    settings_path = run / SETTINGS
    if not settings_path.is_file():
        raise InputError(f"{settings_path}: not an iSDF run folder (no {SETTINGS}; make one with eugen isdf train)")
    settings = RunSettings.from_json(json.loads(settings_path.read_text()))
    stream = settings.stream()
    trainer = build(settings, stream)
    load_run(run / CHECKPOINT, trainer)
    return settings, stream, trainer


def progress_bar(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console)


@dataclass
class IsdfTrain(RunSettings):
    """Learn an SDF from a depth stream (iSDF), dense or EUGen; resumes an interrupted run."""

    output: Path = Path("outputs/isdf/eugen")
    """Run folder (created; an existing run there is resumed)."""
    eval_every: int = 10
    """Evaluate against ground truth every n processed frames (0: only at the end; needs gt_sdf)."""
    eval_points: int = 20000
    mesh_resolution: float = 0.05
    """Grid spacing (m) of the final mesh; 0 skips the mesh."""
    console: tyro.conf.Suppress[Console] = field(default_factory=Console, repr=False)

    def settings(self) -> RunSettings:
        return RunSettings(self.data, self.dataset_config, self.network, self.sampling, self.losses,
                           self.schedule, self.seed)

    def run(self) -> dict:
        stream = self.stream()
        settings = json.loads(json.dumps(self.settings().to_json()))  # as run.json will hold it (lists)
        trainer = build(self.settings(), stream)
        from eugen_nerf.nerf.engine.checkpoints import remove_stale_temporaries

        self.output.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.output, CHECKPOINT)
        settings_path = self.output / SETTINGS
        if (self.output / CHECKPOINT).is_file():
            saved = json.loads(settings_path.read_text()) if settings_path.is_file() else None
            if saved is not None and saved != settings:
                raise InputError(f"{self.output}: holds a run with other settings; choose another --output "
                                 "or repeat that run's own flags to resume it")
            load_run(self.output / CHECKPOINT, trainer)
            self.console.print(f"resuming {self.output}: frame {trainer.state.frame}, step {trainer.state.step}")
        settings_path.write_text(json.dumps(settings, indent=2) + "\n")
        truth = self.ground_truth(stream)
        try:
            self.train(trainer, stream, truth)
        except KeyboardInterrupt:
            save_run(self.output / CHECKPOINT, trainer)
            self.console.print(f"interrupted: saved frame {trainer.state.frame} in {self.output}; run the same "
                               "command again to resume")
            raise
        return self.finish(trainer, stream, truth)

    def ground_truth(self, stream: DepthStream) -> GroundTruth | None:
        try:
            return GroundTruth.of(stream)
        except InputError as error:
            self.console.print(f"warning: {error}; training without evaluation")
            return None

    def train(self, trainer: ContinualTrainer, stream: DepthStream, truth: GroundTruth | None) -> None:
        state, s = trainer.state, trainer.schedule
        limit = len(stream) if s.max_frames is None else min(len(stream), s.max_frames)
        with progress_bar(self.console) as progress:
            task = progress.add_task(f"iSDF {self.network.layer}", total=limit, completed=max(state.frame, 0),
                                     status="")
            while not state.finished:
                frame = trainer.next_frame()
                if frame is None:
                    loss = trainer.run_steps(s.final_steps)
                    state.finished = True
                    progress.update(task, completed=limit, status=f"final {s.final_steps} steps, loss {loss:.4f}")
                    break
                keyframe, steps = trainer.take_frame(frame)
                loss = trainer.run_steps(steps)
                row = {"frame": frame, "step": state.step, "loss": loss, "keyframe": keyframe}
                processed = len(state.history) + 1
                if truth is not None and self.eval_every and processed % self.eval_every == 0:
                    points = visible_points(stream, state.keyframes, self.eval_points, self.seed)
                    row["sdf_l1"] = sdf_metrics(trainer.network, truth, points)["sdf_l1"]
                    trainer.network.train()
                    save_run(self.output / CHECKPOINT, trainer)
                state.history.append(row)
                status = f"frame {frame}, {len(state.keyframes)} keyframes, loss {loss:.4f}"
                if "sdf_l1" in row:
                    status += f", SDF L1 {row['sdf_l1'] * 100:.1f} cm"
                progress.update(task, completed=frame + 1, status=status)
        save_run(self.output / CHECKPOINT, trainer)

    def finish(self, trainer: ContinualTrainer, stream: DepthStream, truth: GroundTruth | None) -> dict:
        state = trainer.state
        seconds = trainer.step_seconds
        results: dict = {"layer": self.network.layer, "frames": state.frame + 1, "steps": state.step,
                         "keyframes": len(state.keyframes),
                         "train_step_ms": 1e3 * sorted(seconds)[len(seconds) // 2] if seconds else None}
        (self.output / HISTORY).write_text(json.dumps(state.history, indent=1) + "\n")
        if truth is not None:
            results.update(evaluate_run(trainer, stream, truth, self.eval_points, self.seed, self.mesh_resolution,
                                        self.output))
            plot_history({self.network.layer: state.history}, self.output / "sdf_error.png")
        (self.output / METRICS).write_text(json.dumps(results, indent=2) + "\n")
        self.console.print(metrics_table({self.network.layer: results}))
        self.console.print(f"wrote {self.output}")
        return results


def evaluate_run(trainer: ContinualTrainer, stream: DepthStream, truth: GroundTruth, count: int, seed: int,
                 mesh_resolution: float, output: Path | None) -> dict:
    frames = list(range(trainer.state.frame + 1))
    points = visible_points(stream, frames, count, seed)
    results = sdf_metrics(trainer.network, truth, points)
    if mesh_resolution > 0:
        import open3d as o3d

        low, high = observed_box(stream, frames)
        bounds = torch.tensor(truth.bounds.numpy().clip(low, high))
        mesh = extract_mesh(trainer.network, bounds, mesh_resolution)
        if output is not None:
            o3d.io.write_triangle_mesh(str(output / "mesh.ply"), mesh)
        if truth.mesh_path is not None:
            results.update(mesh_metrics(mesh, truth.mesh_path, low, high, samples=20000))
    return results


def metrics_table(rows: dict[str, dict]) -> Table:
    table = Table(title="iSDF against ground truth (visible region)")
    columns = [("SDF L1 cm", "sdf_l1", 100), ("grad cos dist", "gradient_cosine_distance", 1),
               ("collision err (eps 1)", "collision_cost_error_1", 1), ("accuracy cm", "mesh_accuracy", 100),
               ("completion cm", "mesh_completion", 100), ("Chamfer cm", "chamfer", 100),
               ("train step ms", "train_step_ms", 1)]
    table.add_column("run")
    for title, _, _ in columns:
        table.add_column(title, justify="right")
    for name, row in rows.items():
        cells = []
        for _, key, scale in columns:
            value = row.get(key)
            cells.append("-" if value is None or (isinstance(value, float) and math.isnan(value))
                         else f"{value * scale:.3f}")
        table.add_row(name, *cells)
    return table


@dataclass
class IsdfEval:
    """Evaluate a trained run against its scene's ground truth (writes RUN/metrics.json)."""

    run_dir: Path
    """Run folder written by eugen isdf train."""
    eval_points: int = 20000
    mesh_resolution: float = 0.05
    console: tyro.conf.Suppress[Console] = field(default_factory=Console, repr=False)

    def run(self) -> dict:
        settings, stream, trainer = load_run_folder(self.run_dir)
        results = evaluate_run(trainer, stream, GroundTruth.of(stream), self.eval_points, settings.seed,
                               self.mesh_resolution, None)
        (self.run_dir / METRICS).write_text(json.dumps(results, indent=2) + "\n")
        self.console.print(metrics_table({settings.network.layer: results}))
        return results


@dataclass
class IsdfMesh:
    """Marching-cubes mesh of a run's zero level set, written as .ply through open3d."""

    run_dir: Path
    output: Path | None = None
    """Default RUN/mesh.ply."""
    resolution: float = 0.03
    """Grid spacing in metres."""
    console: tyro.conf.Suppress[Console] = field(default_factory=Console, repr=False)

    def run(self) -> Path:
        import open3d as o3d

        if not self.resolution > 0:
            raise InputError(f"--resolution must be positive, got {self.resolution}")
        _, stream, trainer = load_run_folder(self.run_dir)
        frames = list(range(trainer.state.frame + 1))
        low, high = observed_box(stream, frames)
        mesh = extract_mesh(trainer.network, torch.tensor(np.stack([low, high]), dtype=torch.float32), self.resolution)
        output = self.output or self.run_dir / "mesh.ply"
        output.parent.mkdir(parents=True, exist_ok=True)
        o3d.io.write_triangle_mesh(str(output), mesh)
        self.console.print(f"wrote {output} ({len(mesh.vertices)} vertices, {len(mesh.triangles)} triangles)")
        return output


@dataclass
class IsdfBench:
    """Dense against EUGen side by side in one process: SDF query throughput, training step time, and
    (given trained runs) their accuracy on the same points."""

    runs: tuple[Path, ...] = ()
    """Run folders to compare (e.g. a dense and an EUGen run); none: untrained default networks."""
    points: int = 65536
    """Points per timed SDF query."""
    repeats: int = 7
    time_training: bool = True
    """Also time training steps (on copies of the runs)."""
    output: Path | None = None
    """Write the results as JSON here."""
    console: tyro.conf.Suppress[Console] = field(default_factory=Console, repr=False)

    def run(self) -> dict:
        if self.points <= 0 or self.repeats <= 0:
            raise InputError("--points and --repeats must be positive")
        trainers: dict[str, ContinualTrainer] = {}
        stream = None
        if self.runs:
            for run in self.runs:
                settings, stream, trainer = load_run_folder(run)
                trainers[f"{settings.network.layer} ({run.name})"] = trainer
        else:
            stream = DepthStream(DEFAULT_DATA)
            for layer in ("dense", "eugen"):
                trainers[layer] = build(RunSettings(network=SDFNetworkConfig(layer=layer)), stream)
        results = self.measure(trainers, stream)
        results.update(date=today(), machine=machine_description(torch.device("cpu")),
                       command=command_line("eugen isdf bench"))
        self.print(results)
        write_json_results(results, self.output, self.console)
        return results

    def measure(self, trainers: dict[str, ContinualTrainer], stream: DepthStream) -> dict:
        generator = torch.Generator().manual_seed(0)
        centre = next(iter(trainers.values())).network.centre
        points = centre + (torch.rand(self.points, 3, generator=generator) - 0.5) * 3.0
        for trainer in trainers.values():
            trainer.network.eval()
            if trainer.state.frame < 0:
                trainer.take_frame(0)
        steps: dict[str, float | None] = dict.fromkeys(trainers)
        copies = {name: copy.deepcopy(trainer) for name, trainer in trainers.items()} if self.time_training else {}
        with MachineLoad() as load:
            query = time_interleaved({name: (lambda t=t: query_no_grad(t.network, points)) for name, t in
                                      trainers.items()}, self.repeats)
            gradient = time_interleaved({name: (lambda t=t: t.network.with_gradient(points, create_graph=False))
                                         for name, t in trainers.items()}, self.repeats)
            if copies:  # timed training steps change the weights: time them on copies
                for trainer in copies.values():
                    trainer.network.train()
                steps.update(time_interleaved({name: trainer.step for name, trainer in copies.items()},
                                              self.repeats))
        rows = {}
        for name, trainer in trainers.items():
            rows[name] = {"parameters": sum(p.numel() for p in trainer.network.parameters() if p.requires_grad),
                          "query_points_per_s": self.points / (query[name] / 1e3),
                          "query_with_gradient_points_per_s": self.points / (gradient[name] / 1e3),
                          "train_step_ms": steps[name]}
        if self.runs:  # trained runs: accuracy on the same visible points
            truth = GroundTruth.of(stream)
            frames = list(range(max(t.state.frame for t in trainers.values()) + 1))
            eval_points = visible_points(stream, frames, 20000)
            for name, trainer in trainers.items():
                rows[name].update(sdf_metrics(trainer.network, truth, eval_points))
        first = next(iter(rows.values()))
        for row in rows.values():
            row["query_speedup"] = row["query_points_per_s"] / first["query_points_per_s"]
            step_ms = row["train_step_ms"]
            row["train_step_speedup"] = None if step_ms is None else first["train_step_ms"] / step_ms
        return {"points": self.points, "repeats": self.repeats, "models": rows, "machine_load": load.as_dict(),
                "noisy": load.busy}

    def print(self, results: dict) -> None:
        table = Table(title=f"iSDF network, {results['points']:,} points per query")
        for column in ("run", "parameters", "query Mpts/s", "query speed-up", "train step ms", "step speed-up",
                       "SDF L1 cm"):
            table.add_column(column, justify="left" if column == "run" else "right")
        for name, row in results["models"].items():
            l1 = row.get("sdf_l1")
            step_ms, step_speedup = row["train_step_ms"], row["train_step_speedup"]
            table.add_row(name, f"{row['parameters']:,}", f"{row['query_points_per_s'] / 1e6:.2f}",
                          f"{row['query_speedup']:.2f}x", "-" if step_ms is None else f"{step_ms:.0f}",
                          "-" if step_speedup is None else f"{step_speedup:.2f}x",
                          "-" if l1 is None else f"{l1 * 100:.2f}")
        self.console.print(table)
        self.console.print(load_verdict(results["machine_load"], results["noisy"]))


@torch.no_grad()
def query_no_grad(network: SDFNetwork, points: torch.Tensor) -> torch.Tensor:
    return network(points)
