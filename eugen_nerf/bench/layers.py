"""`eugen bench layers`: a dense layer against EUGen layers over (k, m), and a whole NeRF-style MLP."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import tyro
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from torch import nn

from eugen_nerf.bench.timing import (
    MachineLoad,
    command_line,
    load_verdict,
    machine_description,
    medians,
    peak_memory_mb,
    spread,
    time_interleaved,
    timed_samples,
    today,
    write_json_results,
)
from eugen_nerf.layers import EUGenConfig, EUGenLinear, EUGenMLP
from eugen_nerf.runtime import THP_VARIABLE


@dataclass
class BenchLayers:
    """Time dense (nn.Linear + ReLU) against EUGen layers and an 8x256 NeRF MLP, side by side."""

    console: tyro.conf.Suppress[Console] = field(default_factory=Console, repr=False)
    points: int = 65_536
    """Input points per forward pass."""
    width: int = 256
    """Layer width d = l for the single-layer grid."""
    orders: tuple[int, ...] = (1, 2, 3)
    """Orders k in the grid."""
    num_features: tuple[int, ...] = (8, 16, 32, 64)
    """Random features m in the grid."""
    mlp_order: int = 2
    """k of the whole-MLP comparison."""
    mlp_num_features: int = 16
    """m of the whole-MLP comparison."""
    train_points: int = 16_384
    """Points per training step (forward + backward) in the MLP comparison."""
    repeats: int = 7
    """Timed repetitions (the median is reported)."""
    quick: bool = False
    """Small grid and few repeats: under a minute on 2 cores."""
    device: str = "auto"
    """cpu, cuda, or auto (cuda when available)."""
    output: Path | None = None
    """Write the results as JSON here."""
    seed: int = 0
    """Seed of the random inputs and projections."""
    soft_normalize: bool = True
    """EUGen layers with soft normalisation (the default), or the theory's raw layer."""

    def run(self) -> dict:
        if self.quick:
            self.orders, self.num_features, self.repeats = (1, 2), (16, 32), 3
        for name in ("points", "width", "repeats", "mlp_order", "mlp_num_features", "train_points"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        device = resolve_device(self.device)
        torch.manual_seed(self.seed)
        grid = [(k, m) for k in self.orders for m in self.num_features]
        results: dict = {
            "date": today(),
            "machine": machine_description(device),
            "command": command_line("eugen bench layers"),
            "points": self.points,
            "width": self.width,
            "huge_page_allocation": os.environ.get(THP_VARIABLE) == "1",
            "soft_normalize": self.soft_normalize,
        }
        with Progress(console=self.console, transient=True) as progress, MachineLoad() as load:
            task = progress.add_task("benchmarking layers", total=len(grid) + 2)
            results["layers"] = [self._layer_row(k, m, device) for k, m in _advance(progress, task, grid)]
            results["mlp"] = self._mlp_row(device, progress, task)
        results["machine_load"], results["noisy"] = load.as_dict(), load.busy
        self._print(results)
        write_json_results(results, self.output, self.console)
        return results

    # ------------------------------------------------------------------------------- rows
    def _layer_row(self, order: int, num_features: int, device: torch.device) -> dict:
        d = self.width
        x = torch.rand(self.points, d, device=device) * 2 - 1
        dense = nn.Linear(d, d).to(device).eval()
        eugen = EUGenLinear(d, d, num_features, order, seed=self.seed, soft_normalize=self.soft_normalize)
        eugen = eugen.to(device).eval()

        def run_dense() -> torch.Tensor:
            return torch.relu_(dense(x))

        def run_eugen() -> torch.Tensor:
            return eugen(x)

        with torch.no_grad():
            samples = timed_samples({"dense": run_dense, "eugen": run_eugen}, self.repeats, device=device)
            ms = medians(samples)
            peak_dense = peak_memory_mb(run_dense, device)
            peak_eugen = peak_memory_mb(run_eugen, device)
        flop_ratio = d * d / eugen.macs_per_input
        speedup = ms["dense"] / ms["eugen"]
        return {
            "order": order,
            "num_features": num_features,
            "ms_dense": round(ms["dense"], 3),
            "ms_eugen": round(ms["eugen"], 3),
            "ms_dense_range": spread(samples["dense"]),
            "ms_eugen_range": spread(samples["eugen"]),
            "speedup": round(speedup, 3),
            "flop_ratio": round(flop_ratio, 3),
            "flop_ideal_fraction": round(speedup / flop_ratio, 3),
            "peak_mb_dense": _round(peak_dense),
            "peak_mb_eugen": _round(peak_eugen),
        }

    def _mlp_row(self, device: torch.device, progress: Progress, task) -> dict:
        cfg = EUGenConfig(order=self.mlp_order, num_features=self.mlp_num_features, seed=self.seed,
                          soft_normalize=self.soft_normalize)

        def make(kinds: str, bundle: str) -> EUGenMLP:
            return EUGenMLP(63, 8, 256, skip_connections=(4,), layer_kinds=kinds, eugen=cfg, bundle=bundle).to(device)

        models = {"dense": make("dense", "never"), "unbundled": make("eugen", "never")}
        models["bundled"] = make("eugen", "always")
        models["bundled"].load_state_dict(models["unbundled"].state_dict())
        x = torch.rand(self.points, 63, device=device) * 2 - 1
        with torch.no_grad():
            calls = {name: (lambda model=model: model(x)) for name, model in models.items()}
            samples = timed_samples(calls, self.repeats, device=device)
            ms = medians(samples)
            peaks = {name: peak_memory_mb(fn, device) for name, fn in calls.items()}
            ref, bundled = calls["unbundled"](), calls["bundled"]()
            agreement = float((bundled - ref).norm() / ref.norm())
        progress.advance(task)

        x_train = x[: self.train_points]

        def train_step(model: EUGenMLP) -> None:
            model.zero_grad(set_to_none=True)
            model(x_train).square().mean().backward()

        train_ms = time_interleaved(
            {name: (lambda model=model: train_step(model)) for name, model in models.items()},
            max(self.repeats // 2, 2),
            device=device,
        )
        progress.advance(task)
        macs = {name: model.macs_per_input for name, model in models.items()}
        return {
            "order": self.mlp_order,
            "num_features": self.mlp_num_features,
            "ms_dense": round(ms["dense"], 3),
            "ms_unbundled": round(ms["unbundled"], 3),
            "ms_bundled": round(ms["bundled"], 3),
            "ms_range": {name: spread(values) for name, values in samples.items()},
            "speedup_unbundled": round(ms["dense"] / ms["unbundled"], 3),
            "speedup_bundled": round(ms["dense"] / ms["bundled"], 3),
            "flop_ratio_unbundled": round(macs["dense"] / macs["unbundled"], 3),
            "bundled_relative_difference": agreement,
            "peak_mb_dense": _round(peaks["dense"]),
            "peak_mb_unbundled": _round(peaks["unbundled"]),
            "peak_mb_bundled": _round(peaks["bundled"]),
            "train_points": self.train_points,
            "ms_train_dense": round(train_ms["dense"], 3),
            "ms_train_unbundled": round(train_ms["unbundled"], 3),
            "ms_train_bundled": round(train_ms["bundled"], 3),
            "parameters_dense": models["dense"].num_parameters,
            "parameters_eugen": models["unbundled"].num_parameters,
        }

    # ------------------------------------------------------------------------------ output
    def _print(self, results: dict) -> None:
        table = Table(title=f"single layer {self.width}->{self.width}, {self.points:,} points ({results['machine']})")
        for column in (
            "k",
            "m",
            "dense ms",
            "EUGen ms",
            "speed-up",
            "FLOP ratio",
            "of FLOP ideal",
            "peak MB dense",
            "peak MB EUGen",
        ):
            table.add_column(column, justify="right")
        for row in results["layers"]:
            table.add_row(
                str(row["order"]),
                str(row["num_features"]),
                f"{row['ms_dense']:.1f}",
                f"{row['ms_eugen']:.1f}",
                f"{row['speedup']:.2f}x",
                f"{row['flop_ratio']:.2f}x",
                f"{row['flop_ideal_fraction']:.0%}",
                _fmt(row["peak_mb_dense"]),
                _fmt(row["peak_mb_eugen"]),
            )
        self.console.print(table)
        mlp = results["mlp"]
        table = Table(title=f"8x256 NeRF MLP, skip at 4, k={mlp['order']} m={mlp['num_features']}")
        for column in ("path", "inference ms", "speed-up", "peak MB", f"train step ms ({mlp['train_points']:,} pts)"):
            table.add_column(column, justify="right")
        table.add_row(
            "dense", f"{mlp['ms_dense']:.1f}", "1.00x", _fmt(mlp["peak_mb_dense"]), f"{mlp['ms_train_dense']:.1f}"
        )
        table.add_row(
            "EUGen unbundled",
            f"{mlp['ms_unbundled']:.1f}",
            f"{mlp['speedup_unbundled']:.2f}x",
            _fmt(mlp["peak_mb_unbundled"]),
            f"{mlp['ms_train_unbundled']:.1f}",
        )
        table.add_row(
            "EUGen bundled",
            f"{mlp['ms_bundled']:.1f}",
            f"{mlp['speedup_bundled']:.2f}x",
            _fmt(mlp["peak_mb_bundled"]),
            f"{mlp['ms_train_bundled']:.1f}",
        )
        self.console.print(table)
        self.console.print(
            f"bundled vs unbundled relative difference: {mlp['bundled_relative_difference']:.1e}; "
            f"parameters dense {mlp['parameters_dense']:,}, EUGen {mlp['parameters_eugen']:,}"
        )
        self.console.print(load_verdict(results["machine_load"], results["noisy"]))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu, cuda or auto, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return torch.device(name)


def _advance(progress: Progress, task, items):
    for item in items:
        yield item
        progress.advance(task)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"
