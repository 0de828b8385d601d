"""Timing and memory measurement shared by the benchmarks (noisy machines: interleave and take medians)."""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1, device: torch.device | None = None
) -> dict[str, float]:
    """Median milliseconds of each function, run in turn (a, b, c, a, b, c, ...) so drift hits all alike."""
    return medians(timed_samples(fns, repeats, warmup, device))


BUSY_SHARE = 0.10  # other processes' (or other machines') CPU, per thread the benchmark uses: void above it


def relative_spread(values: list[float]) -> float:
    """(slowest - fastest) / median of a benchmark's repeats (recorded beside the medians)."""
    return round((max(values) - min(values)) / statistics.median(values), 4)


def _machine_ticks() -> tuple[int, int, int]:
    """(busy, stolen, total) clock ticks of all cores since boot, from /proc/stat."""
    user, nice, system, idle, iowait, irq, softirq, steal = (
        int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
    return user + nice + system + irq + softirq, steal, user + nice + system + idle + iowait + irq + softirq + steal


def _own_ticks(children: bool) -> int:
    """User and system clock ticks of this process, all its threads, from /proc/self/stat; with
    `children`, also those of its child processes that have ended and been waited for."""
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()  # after the command name
    own = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return own + (int(fields[13]) + int(fields[14]) if children else 0)  # cutime, cstime (16 and 17)


def _ticks(children: bool) -> tuple[int, int, int, int] | None:
    try:
        return (*_machine_ticks(), _own_ticks(children))
    except (OSError, ValueError, IndexError):
        return None


class MachineLoad:
    """What else ran on the machine while a benchmark timed: the share of all cores' time used by other
    processes, and the share the hypervisor gave to other machines (steal). Read from /proc on Linux;
    None elsewhere. The spread of the repeats cannot tell this: on the shared VMs here single slow repeats
    come and go on an idle machine, while a second job slows every repeat alike. Busy: either, in cores,
    above BUSY_SHARE of the threads timed.

    Args:
        threads: the threads the timed work runs on (torch's, by default).
        children: count the benchmark's own child processes as its work, not as another job's (for a
            benchmark that times runs it starts as subprocesses; each must have ended and been waited for
            before the block ends). Without it a child process counts as other.
    """

    def __init__(self, threads: int | None = None, children: bool = False) -> None:
        self.threads, self.children = threads, children
        self.others = self.steal = None

    def __enter__(self) -> MachineLoad:
        self._start = _ticks(self.children)
        self.others = self.steal = None
        return self

    def __exit__(self, *exc) -> None:
        end = _ticks(self.children)
        if self._start is None or end is None:
            return
        busy, steal, total, own = (after - before for after, before in zip(end, self._start, strict=True))
        if total > 0:
            self.others = round(max(busy - own, 0) / total, 4)
            self.steal = round(steal / total, 4)

    @property
    def timed_threads(self) -> int:
        return self.threads or torch.get_num_threads()

    @property
    def busy(self) -> bool | None:
        """None where the load could not be read (no /proc, or a block too short for a clock tick)."""
        if self.others is None or self.steal is None:
            return None
        return load_in_limits(self.as_dict()) > 1

    def as_dict(self) -> dict:
        return {"others_cpu_share": self.others, "steal_share": self.steal, "cores": os.cpu_count() or 1,
                "threads": self.timed_threads, "busy_above_per_thread": BUSY_SHARE}


def load_in_limits(load: dict) -> float:
    """A measured load (`MachineLoad.as_dict()`) over its limit: above 1 is busy. The limit counts the
    threads timed up to the machine's cores (more threads than cores cannot use more than every core)."""
    in_cores = max(load["others_cpu_share"] or 0.0, load["steal_share"] or 0.0) * load["cores"]
    return in_cores / (load["busy_above_per_thread"] * min(load["threads"], load["cores"]))


def busiest(loads: list[dict]) -> dict:
    """Of several timings' loads, the one nearest to (or furthest over) its limit."""
    return max(loads, key=load_in_limits)


def any_noisy(flags) -> bool | None:
    """Several timings' verdict: busy if any was; else unmeasured (None) if any was; else quiet."""
    flags = list(flags)
    return True if True in flags else (None if None in flags else False)


def noisy_mark(noisy: bool | None) -> str:
    """A short mark after a timed figure: NOISY where the machine was busy."""
    return {True: " [yellow]NOISY[/yellow] (the machine was busy)", None: " (load not measured)", False: ""}[noisy]


def load_verdict(load: dict, noisy: bool | None) -> str:
    """One console line on a benchmark's measured load (`MachineLoad.as_dict()` and `busy`)."""
    if noisy is None:
        return "[yellow]machine load not measured[/yellow]: check by hand that nothing else ran while timing"
    if noisy:
        return (f"[yellow]NOISY[/yellow]: while timing, other processes used {load['others_cpu_share']:.0%} and "
                f"other machines (steal) {load['steal_share']:.0%} of the {load['cores']} cores (limit: "
                f"{load['busy_above_per_thread']:.0%} of a core per thread timed, {load['threads']} threads); the "
                "machine was busy, do not report these ratios")
    return (f"machine quiet while timing: other processes {load['others_cpu_share']:.1%}, steal "
            f"{load['steal_share']:.1%} of the CPU")


def medians(samples: dict[str, list[float]]) -> dict[str, float]:
    """The median of each function's repeats (what the benchmarks report)."""
    return {name: statistics.median(values) for name, values in samples.items()}


def spread(values: list[float]) -> list[float]:
    """[fastest, slowest] of a benchmark's repeats, in ms (what the JSON records beside the median)."""
    return [round(min(values), 3), round(max(values), 3)]


def timed_samples(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1, device: torch.device | None = None
) -> dict[str, list[float]]:
    """Milliseconds of every repeat of each function, run in turn (a, b, c, a, b, c, ...)."""
    device = device or torch.device("cpu")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            samples[name].append((time.perf_counter() - start) * 1e3)
    return samples


def _proc_status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def peak_memory_mb(fn: Callable[[], object], device: torch.device | None = None) -> float | None:
    """Extra memory at the peak of one call: CUDA allocator peak, or on Linux the resident-set
    high-water mark (reset through /proc/self/clear_refs) above the resident set before the call.
    None where neither can be read."""
    device = device or torch.device("cpu")
    gc.collect()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    try:
        before = _proc_status_kb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        fn()
        return max(_proc_status_kb("VmHWM") - before, 0) / 1024
    except (OSError, KeyError):
        return None


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads (torch {torch.__version__})"


def command_line(default: str) -> str:
    """The `eugen ...` command that is running, for the results' `command` field (`default` when the
    code runs from elsewhere, e.g. a test); `python -m eugen_nerf.cli ...` is the same command."""
    script = Path(sys.argv[0])
    if script.name == "eugen" or script.parts[-2:] == ("eugen_nerf", "cli.py"):
        return "eugen " + " ".join(sys.argv[1:])
    return default


def today() -> str:
    return date.today().isoformat()


def write_json_results(results: dict, output, console) -> None:
    """Write a benchmark's results as JSON where --output says (nothing when it is None)."""
    if output is None:
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {output}")
