"""`eugen bench nerf`: a run of eugen-nerf, eugen-dnerf, eugen-mipnerf360 or eugen-zipnerf against its
dense twin, side by side in one process.

Field throughput (points per second through each of the model's networks: coarse and fine fields; or
the shared frustum encodings, the NeRF MLP and the proposal MLPs) and whole-image render time are timed
interleaved (dense, EUGen, dense, EUGen, ...) so that the machine's drift hits both alike; the ratios
are what to read.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import tyro
from rich.console import Console
from rich.table import Table

from eugen_nerf.bench.timing import (
    MachineLoad,
    command_line,
    load_verdict,
    machine_description,
    medians,
    relative_spread,
    timed_samples,
    today,
    write_json_results,
)
from eugen_nerf.errors import InputError
from eugen_nerf.nerf.engine.runs import load_pipeline, read_run_config

if TYPE_CHECKING:  # nerfstudio is imported when a benchmark runs, not when this module loads
    from nerfstudio.cameras.rays import RaySamples


def field_parameter_count(model: torch.nn.Module) -> int:
    """Trainable parameters of a nerfstudio model (its optimizer's param groups)."""
    return sum(p.numel() for group in model.get_param_groups().values() for p in group)


def random_ray_samples(num_points: int, aabb: torch.Tensor, device: torch.device, seed: int = 0):
    """`num_points` RaySamples at uniform positions in the scene box with random directions."""
    from nerfstudio.cameras.rays import Frustums, RaySamples

    generator = torch.Generator().manual_seed(seed)
    low, high = aabb[0].cpu(), aabb[1].cpu()
    positions = low + (high - low) * torch.rand(num_points, 1, 3, generator=generator)
    directions = torch.nn.functional.normalize(torch.randn(num_points, 1, 3, generator=generator), dim=-1)
    zeros = torch.zeros(num_points, 1, 1)
    # Short frustums of a pixel's footprint, so integrated encodings see a real Gaussian.
    frustums = Frustums(
        origins=positions.to(device), directions=directions.to(device), starts=zeros.to(device),
        ends=(zeros + 0.01).to(device), pixel_area=(zeros + 1e-4).to(device),
    )
    return RaySamples(frustums=frustums)


def dense_twin_of(config_path: Path, device: torch.device):
    """The dense twin of an EUGen run, untrained (timing does not depend on the weights)."""
    config = read_run_config(config_path, "--load-config")
    if getattr(config.pipeline.model, "layer", None) != "eugen":
        raise InputError(f"{config_path}: not an EUGen run (no --pipeline.model.layer eugen); pass --baseline-config")
    config.pipeline.model.layer = "dense"
    twin = config.pipeline.setup(device=device, test_mode="inference")
    twin.eval()
    return twin


def check_twins(eugen_config: Path, dense_config: Path) -> None:
    """The two runs are an EUGen run and its dense twin, of the same method on the same scene."""
    eugen, dense = read_run_config(eugen_config, "--load-config"), read_run_config(dense_config, "--baseline-config")
    layers = getattr(eugen.pipeline.model, "layer", "dense"), getattr(dense.pipeline.model, "layer", "dense")
    if layers != ("eugen", "dense"):
        swapped = " (swapped? --load-config takes the EUGen run)" if layers == ("dense", "eugen") else ""
        raise InputError(f"--load-config {eugen_config} is a {layers[0]} run and --baseline-config {dense_config} "
                         f"a {layers[1]} run: expected an EUGen run and its dense twin{swapped}")
    # nerfstudio's vanilla-nerf is eugen-nerf's dense twin (e.g. the teacher of a distilled student)
    methods = {c.method_name.replace("vanilla-nerf", "eugen-nerf") for c in (eugen, dense)}
    if len(methods) > 1:
        raise InputError(f"--load-config is an {eugen.method_name} run, --baseline-config an {dense.method_name} "
                         "run: twins are the same method")
    scenes = [getattr(c.pipeline.datamanager, "data", None) or getattr(c.pipeline.datamanager.dataparser, "data", None)
              for c in (eugen, dense)]
    if None not in scenes and Path(scenes[0]).resolve() != Path(scenes[1]).resolve():
        raise InputError(f"--load-config was trained on {scenes[0]}, --baseline-config on {scenes[1]}: twins share "
                         "the scene")


@dataclass
class BenchNeRF:
    """Points/s through the coarse and fine fields and whole-image render time, EUGen vs its dense twin."""

    load_config: Path
    """config.yml of the EUGen run (ns-train eugen-nerf ... writes it in its run folder)."""
    baseline_config: Path | None = None
    """config.yml of the dense run to compare with; without it, an untrained dense twin of the same
    config is timed (speed does not depend on the weights)."""
    points: int = 65_536
    """Points per field forward pass."""
    repeats: int = 5
    """Timed repetitions (medians are reported)."""
    images: int = 1
    """Test-split cameras whose whole images are rendered per repetition."""
    output: Path | None = None
    """Write the results as JSON here."""
    console: tyro.conf.Suppress[Console] = field(default_factory=Console, repr=False)

    def run(self) -> dict:
        for name in ("points", "repeats", "images"):
            if getattr(self, name) <= 0:
                raise InputError(f"--{name} must be positive, got {getattr(self, name)}")
        if self.baseline_config is not None:
            check_twins(self.load_config, self.baseline_config)
        eugen, _, _ = load_pipeline(self.load_config, "--load-config")
        if self.baseline_config is not None:
            dense, _, _ = load_pipeline(self.baseline_config, "--baseline-config")
        else:
            dense = dense_twin_of(self.load_config, eugen.device)
        results = compare_pipelines({"dense": dense, "eugen": eugen}, self.points, self.repeats, self.images)
        results.update(
            date=today(),
            machine=machine_description(eugen.device),
            command=command_line("eugen bench nerf"),
            runs={"eugen": str(self.load_config), "dense": str(self.baseline_config or "untrained dense twin")},
        )
        print_table(results, self.console)
        write_json_results(results, self.output, self.console)
        return results


def timed_parts(model, samples: RaySamples) -> dict[str, Callable[[], object]]:
    """A model's MLP passes on `samples`, by name.

    eugen-mipnerf360 / eugen-zipnerf: the frustum encodings of all their networks (integrated encoding,
    multisampled hash grid: the same work in both twins) as one part "encodings", and the NeRF MLP and
    each proposal MLP on those encodings, computed beforehand. eugen-nerf (and nerfstudio's NeRFs):
    the coarse and fine fields (their encoding is a cheap sin/cos), plus the deformation MLP of
    eugen-dnerf (at time 0.5)."""
    if hasattr(model, "proposal_networks"):
        field, proposals = model.field, list(model.proposal_networks)
        encoders = [field.position_encoding, *(net.encoding for net in proposals)]
        encoded = [encoder(samples) for encoder in encoders]

        def nerf_mlp():
            _, base = field.density_from_encoding(encoded[0])
            return field.get_outputs(samples, density_embedding=base)

        parts: dict[str, Callable[[], object]] = {"encodings": lambda: [encoder(samples) for encoder in encoders],
                                                  "nerf": nerf_mlp}
        for index, net in enumerate(proposals):
            parts[f"proposal_{index}"] = lambda net=net, x=encoded[index + 1]: net.density_from_encoding(x)
        return parts
    parts = {"coarse": lambda: model.field_coarse(samples), "fine": lambda: model.field_fine(samples)}
    deformation = getattr(model, "temporal_distortion", None)
    if deformation is not None:
        positions = samples.frustums.get_positions()
        times = torch.full_like(positions[..., :1], 0.5)
        parts["deformation"] = lambda: deformation(positions, times)
    return parts


@torch.no_grad()
def compare_pipelines(pipelines: dict, points: int, repeats: int, images: int) -> dict:
    """Time each pipeline's fields and whole-image renders (none if images=0), interleaved. The first
    entry is the baseline."""
    first = next(iter(pipelines.values()))
    device = first.device
    samples = random_ray_samples(points, first.datamanager.train_dataparser_outputs.scene_box.aabb, device)
    all_cameras = first.datamanager.eval_dataset.cameras
    cameras = all_cameras[:images].to(device)

    def render(model):
        for index in range(len(cameras)):
            model.get_outputs_for_camera(cameras[index : index + 1])

    field_samples: dict[str, dict[str, list[float]]] = {}  # model -> part -> ms of every repeat
    parts = {name: timed_parts(p.model, samples) for name, p in pipelines.items()}
    with MachineLoad() as load:
        for part in parts[next(iter(pipelines))]:
            timed = timed_samples({name: model_parts[part] for name, model_parts in parts.items()}, repeats,
                                  device=device)
            for name, values in timed.items():
                field_samples.setdefault(name, {})[part] = values
        if images:
            image_samples = timed_samples({name: (lambda m=p.model: render(m)) for name, p in pipelines.items()},
                                          repeats, warmup=1, device=device)
        else:  # networks only
            image_samples = {name: [float("nan")] * repeats for name in pipelines}
    height, width = int(all_cameras.height[0]), int(all_cameras.width[0])

    def mlp_repeats(name: str) -> list[float]:
        """Each repeat's MLP time: its parts without the frustum encodings that both twins share."""
        return [sum(values) for values in zip(*(v for part, v in field_samples[name].items() if part != "encodings"),
                                               strict=True)]

    rows, repeat_ms = {}, {}  # repeat_ms: each model's MLP and per-image times of every repeat
    for name, pipeline in pipelines.items():
        field_ms = medians(field_samples[name])
        mlp, image = mlp_repeats(name), [ms / max(len(cameras), 1) for ms in image_samples[name]]
        repeat_ms[name] = (mlp, image)
        rows[name] = {
            "parameters": field_parameter_count(pipeline.model),
            "points_per_s": {part: points / (ms / 1e3) for part, ms in field_ms.items()},
            # one pass of `points` through every field: the model's network work per sample
            "fields_ms": sum(field_ms.values()),
            "mlp_ms": statistics.median(mlp),
            "image_ms": statistics.median(image),
            # fastest and slowest repeat over the median
            "mlp_spread": relative_spread(mlp),
            "image_spread": relative_spread(image) if images else None,
            # every repeat, in the order run: a reader can judge one slow repeat against a busy stretch
            "mlp_repeats_ms": [round(ms, 3) for ms in mlp],
            "image_repeats_ms": [round(ms, 3) for ms in image] if images else None,
        }
    baseline, (baseline_mlp, baseline_image) = next(iter(rows.values())), next(iter(repeat_ms.values()))
    speedups = {
        name: {
            "field": baseline["fields_ms"] / row["fields_ms"],
            "mlp": baseline["mlp_ms"] / row["mlp_ms"],
            "image": baseline["image_ms"] / row["image_ms"],
            # the ratio of each interleaved pair of repeats: its lowest and highest
            "mlp_range": ratio_range(baseline_mlp, repeat_ms[name][0]),
            "image_range": ratio_range(baseline_image, repeat_ms[name][1]) if images else None,
            "per_field": {part: value / baseline["points_per_s"][part] for part, value in row["points_per_s"].items()},
        }
        for name, row in rows.items()
    }
    return {"points": points, "image_size": [width, height], "repeats": repeats, "models": rows,
            "speedup": speedups, "machine_load": load.as_dict(), "noisy": load.busy}


def ratio_range(baseline: list[float], other: list[float]) -> list[float]:
    """[lowest, highest] speed-up over the interleaved pairs of repeats (baseline_i / other_i)."""
    ratios = [a / b for a, b in zip(baseline, other, strict=True)]
    return [round(min(ratios), 4), round(max(ratios), 4)]


def print_table(results: dict, console: Console) -> None:
    width, height = results["image_size"]
    parts = list(next(iter(results["models"].values()))["points_per_s"])
    table = Table(title=f"Inference, {results['points']:,} points per field pass, {width}x{height} images")
    for column in ("model", "parameters", *(f"{part} Mpts/s" for part in parts), "image ms", "field speed-up",
                   "MLP speed-up (range)", "image speed-up (range)"):
        table.add_column(column, justify="right" if column != "model" else "left")
    for name, row in results["models"].items():
        speedup = results["speedup"][name]
        table.add_row(name, f"{row['parameters']:,}", *(f"{row['points_per_s'][part] / 1e6:.2f}" for part in parts),
                      f"{row['image_ms']:.0f}", f"{speedup['field']:.2f}x",
                      with_range(speedup["mlp"], speedup["mlp_range"]),
                      with_range(speedup["image"], speedup["image_range"]))
    console.print(table)
    console.print(load_verdict(results.get("machine_load", {}), results.get("noisy")))
    console.print("field speed-up: time of one pass through all the fields (dense / EUGen); MLP speed-up: the "
                  "same without the frustum encodings both twins share (mip-NeRF 360, Zip-NeRF)")


def with_range(value: float, span: list[float] | None) -> str:
    return f"{value:.2f}x" if span is None else f"{value:.2f}x ({span[0]:.2f}-{span[1]:.2f})"
