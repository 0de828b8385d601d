"""What the benchmarks that read runs and write reports share: a run's tensorboard scalars, the final
image's metric under either naming, table cells, and matplotlib without a display."""

from __future__ import annotations

from pathlib import Path


def run_scalars(folder: Path):
    """A run's tensorboard events (every scalar kept), loaded: `.Tags()["scalars"]`, `.Scalars(tag)`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return events


def final_image_metric(metrics: dict, name: str) -> float | None:
    """A metric of the final image: vanilla-nerf's models name theirs fine_ssim, fine_lpips."""
    return metrics.get(name, metrics.get(f"fine_{name}"))


def cell(value: float | None, spec: str, missing: str = "n/a") -> str:
    """A table cell: the value formatted, or `missing`."""
    return missing if value is None else format(value, spec)


def pyplot():
    """matplotlib.pyplot drawing to files (the Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
