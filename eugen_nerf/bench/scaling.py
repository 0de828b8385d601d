"""`eugen bench scaling`: training throughput on one and on several processes (nerfstudio's data-parallel path)."""

from __future__ import annotations

import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import tyro
from rich.console import Console
from rich.table import Table

from eugen_nerf.bench.report import run_scalars
from eugen_nerf.bench.timing import (
    MachineLoad,
    any_noisy,
    busiest,
    command_line,
    load_verdict,
    noisy_mark,
    relative_spread,
    today,
    write_json_results,
)
from eugen_nerf.errors import InputError
from eugen_nerf.presets import load_preset

STEP_TIME = "Train Iter (time)"  # nerfstudio's meter of rank 0's step: a running mean over the last 20 steps
SKIPPED_STEPS = 10  # the first steps allocate and warm caches


def step_seconds(running_means: list[float], window: int) -> list[float]:
    """Each step's own duration, recovered from nerfstudio's running mean over the last `window` steps
    (the mean of steps 0..s while fewer than `window` have run)."""
    sums = [mean * min(step + 1, window) for step, mean in enumerate(running_means)]
    durations: list[float] = []
    for step, total in enumerate(sums):
        previous = sums[step - 1] if step else 0.0
        dropped = durations[step - window] if step >= window else 0.0
        durations.append(total - previous + dropped)
    return durations


def rays_per_second(run: Path) -> float:
    """Training throughput of a finished run: processes x rays per batch over the median duration of rank 0's
    steps after the first few, read from the run's tensorboard events (rank 0 waits for the gradients of
    every process, so its step is the run's)."""
    from eugen_nerf.nerf.engine.runs import read_run_config

    config = read_run_config(run / "config.yml", "the run's config.yml")
    events = run_scalars(run)
    if STEP_TIME not in events.Tags()["scalars"]:
        raise InputError(f"{run}: the run logged no {STEP_TIME!r}")
    means = [event.value for event in sorted(events.Scalars(STEP_TIME), key=lambda event: event.step)]
    durations = step_seconds(means, config.logging.max_buffer_size)[SKIPPED_STEPS:]
    rays = config.machine.num_devices * config.pipeline.datamanager.train_num_rays_per_batch
    return rays / statistics.median(durations)


@dataclass
class BenchScaling:
    """Training throughput (rays/s) of both twins on 1 and on N CPU processes (--machine.num-devices N)."""

    console: tyro.conf.Suppress[Console] = field(default_factory=Console, repr=False)
    presets: tuple[str, ...] = ("nerf-cpu",)
    """Presets (configs/) to train; each process trains with the preset's rays per batch."""
    processes: tuple[int, ...] = (1, 2)
    """Numbers of training processes."""
    threads_per_process: int = 1
    """torch threads of each process (OMP_NUM_THREADS)."""
    twins: tuple[str, ...] = ("eugen", "dense")
    """Which twins to train (--pipeline.model.layer)."""
    steps: int = 100
    """Training steps per run; the rate is taken over those after the first 10 (their median duration)."""
    repeats: int = 3
    """Runs of each (preset, twin, processes), interleaved; the median is reported with the range."""
    output: Path | None = None
    """Write the results as JSON here."""
    train_flags: str = ""
    """More ns-train flags for every run, in one string after an equals sign
    (--train-flags="--pipeline.datamanager.data my-scene")."""

    def run(self) -> dict:
        for name in ("steps", "repeats", "threads_per_process"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be 1 or more, got {getattr(self, name)}")
        if self.steps <= SKIPPED_STEPS:
            raise InputError(f"--steps must be above {SKIPPED_STEPS} (the first {SKIPPED_STEPS} are not timed), "
                             f"got {self.steps}")
        if not self.processes or min(self.processes) < 1:
            raise InputError(f"--processes must be 1 or more each, got {self.processes}")
        for name in ("presets", "twins"):
            if not getattr(self, name):
                raise InputError(f"--{name}: name at least one")
        for preset in self.presets:
            load_preset(preset)  # a wrong name is one line before anything trains
        samples: dict[tuple[str, str, int], list[tuple[float, MachineLoad]]] = {}
        with tempfile.TemporaryDirectory(prefix="eugen-bench-scaling-") as folder:
            for repeat in range(self.repeats):
                for preset in self.presets:
                    for twin in self.twins:
                        for count in self.processes:
                            # the training processes are this benchmark's children: their work is its own
                            with MachineLoad(threads=count * self.threads_per_process, children=True) as load:
                                rate = self.train(preset, twin, count,
                                                  Path(folder) / f"{preset}-{twin}-{count}-{repeat}")
                            samples.setdefault((preset, twin, count), []).append((rate, load))
                            self.console.print(f"{preset} {twin} on {count} process(es), run {repeat + 1}: "
                                               f"{rate:,.0f} rays/s{noisy_mark(load.busy)}")
        results = self.summarise(samples)
        self.print_table(results)
        write_json_results(results, self.output, self.console)
        return results

    def train(self, preset: str, twin: str, count: int, output: Path) -> float:
        command = [sys.executable, "-m", "eugen_nerf.cli", "train", preset, "--pipeline.model.layer", twin,
                   "--machine.device-type", "cpu", "--machine.num-devices", str(count),
                   "--max-num-iterations", str(self.steps), "--steps-per-save", str(10**9),
                   "--output-dir", str(output), "--experiment-name", "scaling", "--timestamp", "run",
                   "--vis", "tensorboard", *shlex.split(self.train_flags)]
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads_per_process)}
        finished = subprocess.run(command, capture_output=True, text=True, env=env)
        if finished.returncode != 0:
            lines = (finished.stderr or finished.stdout).strip().splitlines() or ["no output"]
            raise InputError(f"training {preset} ({twin}) on {count} process(es) failed: {lines[-1]}")
        runs = list(output.glob("scaling/*/run"))
        return rays_per_second(runs[0])

    def summarise(self, samples: dict[tuple[str, str, int], list[tuple[float, MachineLoad]]]) -> dict:
        rows = []
        for (preset, twin, count), runs in samples.items():
            rates, loads = [rate for rate, _ in runs], [load for _, load in runs]
            median = statistics.median(rates)
            one = statistics.median([rate for rate, _ in samples.get((preset, twin, 1), [(float("nan"), None)])])
            rows.append({
                "preset": preset, "twin": twin, "processes": count, "rays_per_second": round(median, 1),
                "repeats": [round(rate, 1) for rate in rates], "spread": round(relative_spread(rates), 3),
                "speed_up_over_one_process": round(median / one, 3),
                # each repeat's measured load; noisy: any repeat ran beside another job (None: not measured)
                "machine_load": [load.as_dict() for load in loads],
                "noisy": any_noisy(load.busy for load in loads),
            })
        return {"date": today(), "command": command_line("eugen bench scaling"), "cpu_count": os.cpu_count(),
                "threads_per_process": self.threads_per_process, "steps": self.steps, "rows": rows,
                "noisy": any_noisy(row["noisy"] for row in rows)}

    def print_table(self, results: dict) -> None:
        table = Table(title=f"Training throughput, {results['threads_per_process']} thread(s) per process")
        for column in ("preset", "twin", "processes", "rays/s (median)", "range of repeats", "x one process"):
            table.add_column(column)
        for row in results["rows"]:
            spread = f"{min(row['repeats']):,.0f}-{max(row['repeats']):,.0f}" + (" NOISY" if row["noisy"] else "")
            table.add_row(row["preset"], row["twin"], str(row["processes"]), f"{row['rays_per_second']:,.0f}",
                          spread, f"{row['speed_up_over_one_process']:.2f}")
        self.console.print(table)
        loads = [load for row in results["rows"] for load in row["machine_load"]]
        self.console.print(load_verdict(busiest(loads), results["noisy"]) + " (the busiest run)")
