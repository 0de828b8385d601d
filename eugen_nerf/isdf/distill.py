"""`eugen isdf distill`: a trained dense iSDF run -> an EUGen run, without backpropagation.

The same layer-wise closed form as `eugen distill` (docs/eugen-math.md §3): the student is the teacher's
network with EUGen layers at the chosen indices, every other weight copied; its EUGen layers, then the
dense layers after the first of them up to the SDF output, are fitted one after the other on the
student's own inputs against the teacher's activations there. The points are the ones iSDF trains on:
depths along random pixels of the frames the teacher saw (stratified up to the surface, and near it).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import tyro
from rich.console import Console

from eugen_nerf.errors import InputError, check_flag_choice
from eugen_nerf.isdf.commands import CHECKPOINT, SETTINGS, IsdfBench, RunSettings, build, load_run_folder
from eugen_nerf.isdf.training import StreamState, bounds_and_targets, sample_depths, sample_rays, save_run


@torch.no_grad()
def training_points(trainer, rays: int, generator: torch.Generator) -> torch.Tensor:
    """(N, 3) points as iSDF samples them, on `rays` random valid pixels spread over the frames the run saw."""
    frames = list(range(trainer.state.frame + 1))
    if not frames:
        raise InputError("the teacher run has not taken a frame yet; train it first")
    per_frame = max(1, math.ceil(rays / len(frames)))
    origins, directions, depth = (torch.cat(parts) for parts in zip(
        *[sample_rays(trainer.stream, frame, per_frame, generator) for frame in frames], strict=True))
    z = sample_depths(depth, trainer.sampling, generator)
    points, _, _ = bounds_and_targets(origins, directions, depth, z, "ray")
    return points.reshape(-1, 3)


@dataclass
class IsdfDistill:
    """Turn a trained dense iSDF run into an EUGen run by layer-wise closed-form fits (no
    backpropagation); eugen isdf eval / mesh / bench load the result as it is."""

    run_dir: Path
    """Run folder of the dense teacher (eugen isdf train --network.layer dense)."""
    output: Path
    """Run folder of the student (must not hold a run yet)."""
    rays: int = 4096
    """Pixels whose depth samples the layers are fitted on, spread over the frames the teacher saw."""
    num_features: int = 16
    """m of the EUGen layers."""
    order: int = 2
    """k of the EUGen layers."""
    eugen_layers: tuple[int, ...] | None = None
    """MLP layers to replace; default: the teacher's --network.eugen-layers."""
    ridge: float = 1e-6
    """Ridge lambda of the closed form, relative to the mean diagonal of F^T F."""
    targets: str = "teacher"
    """teacher | layer: each layer is fitted to the teacher's own activation there, or to the teacher
    layer applied to the student's own input (as eugen distill's flag)."""
    projections: str = "fitted"
    """fitted | random: choose each EUGen layer's projections from the data in closed form, or keep the
    random ones."""
    emphasis_weight: float = 1.0
    """With --projections fitted: how much the SDF weighs in choosing the last EUGen layer's projections."""
    evaluate: bool = True
    """After writing the student: its SDF error against the teacher's on the same visible points, and both
    networks timed side by side (eugen isdf bench's measurement; distill.json "evaluation")."""
    speed_repeats: int = 7
    """With --evaluate: timed repeats of each network (medians)."""
    seed: int = 0
    """Seed of the points and of the random projections."""
    chunk: int = 65_536
    """Points per forward pass while collecting layer inputs."""
    console: tyro.conf.Suppress[Console] = field(default_factory=Console, repr=False)

    def projection_kind(self) -> str:
        return self.projections

    # what `fit_module` reads besides the flags: an SDF has no density to weigh points by
    weights: ClassVar[str] = "uniform"
    density_floor: ClassVar[None] = None
    refine_steps: ClassVar[int] = 0
    target_metric: ClassVar[str] = "identity"
    quadratic_basis: ClassVar[int] = 24

    def run(self) -> dict:
        from eugen_nerf.nerf.commands.distill_run import copy_matching_weights, fit_module

        for name in ("rays", "num_features", "order", "chunk", "speed_repeats"):
            if getattr(self, name) <= 0:
                raise InputError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        check_flag_choice("--targets", self.targets, ("teacher", "layer"))
        check_flag_choice("--projections", self.projections, ("fitted", "random"))
        if not self.emphasis_weight >= 0:
            raise InputError(f"--emphasis-weight must be >= 0, got {self.emphasis_weight}")
        if (self.output / CHECKPOINT).exists() or (self.output / SETTINGS).exists():
            raise InputError(f"--output {self.output}: holds a run already; choose another folder")
        settings, stream, teacher = load_run_folder(self.run_dir)
        if settings.network.layer != "dense":
            raise InputError(f"--run-dir {self.run_dir}: already an EUGen run (--network.layer eugen); "
                             "distill a dense run")
        started = time.perf_counter()
        network = dataclasses.replace(
            settings.network, layer="eugen",
            eugen_layers=settings.network.eugen_layers if self.eugen_layers is None else tuple(self.eugen_layers),
            eugen=dataclasses.replace(settings.network.eugen, order=self.order, num_features=self.num_features,
                                      seed=self.seed))
        student_settings = RunSettings(settings.data, settings.dataset_config, network, settings.sampling,
                                       settings.losses, settings.schedule, settings.seed)
        student = build(student_settings, stream)
        copied = copy_matching_weights(teacher.network, student.network)
        points = training_points(teacher, self.rays, torch.Generator().manual_seed(self.seed))
        teacher.network.eval()
        student.network.eval()
        fits = fit_module(student.network, teacher.network, points, self, None)
        seconds = time.perf_counter() - started
        student.state = StreamState(**copy.deepcopy(dataclasses.asdict(teacher.state)))  # the frames it saw
        self.output.mkdir(parents=True, exist_ok=True)
        (self.output / SETTINGS).write_text(json.dumps(student_settings.to_json(), indent=2) + "\n")
        save_run(self.output / CHECKPOINT, student)
        results = {"teacher": str(self.run_dir), "student": str(self.output), "closed_form_seconds": seconds,
                   "points": len(points), "copied_tensors": copied,
                   "layers": [{"field": "sdf", **fit} for fit in fits],
                   "eugen": dataclasses.asdict(network.eugen)}
        (self.output / "distill.json").write_text(json.dumps(results, indent=1) + "\n")
        from eugen_nerf.nerf.commands.distill_run import print_fits

        print_fits({**results, "rays": self.rays, "finetune_steps": 0}, self.console)
        if self.evaluate:  # both runs loaded from their folders, as eugen isdf eval would
            del teacher, student
            # no training steps timed: a fitted network is not meant to train on with the run's optimizer
            results["evaluation"] = IsdfBench(runs=(self.run_dir, self.output), repeats=self.speed_repeats,
                                              time_training=False, console=self.console).run()
            (self.output / "distill.json").write_text(json.dumps(results, indent=1) + "\n")
        return results
