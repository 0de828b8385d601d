"""Checkpoints: written atomically, read with torch's safe loader, checked against the model."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from eugen_nerf.errors import InputError, not_our_checkpoint

EUGEN_MARKER = ".projection_seed"  # a buffer every EUGen layer has and no dense layer has


TEMPORARY_SUFFIX = ".tmp"  # of a checkpoint being written: .NAME.RANDOM.tmp beside its folder


def save_atomically(state: dict[str, Any], path: Path, temporary_dir: Path | None = None) -> None:
    """torch.save to a temporary file in `temporary_dir` (default: the checkpoint's folder), then rename:
    an interruption leaves the previous checkpoint intact and never a half-written one. (NeRF runs pass
    the run folder: nerfstudio parses every file name in nerfstudio_models as step-N.ckpt.)"""
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = path.parent if temporary_dir is None else temporary_dir
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=folder)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folder: Path, name: str) -> None:
    """A save killed half-way (kill -9) leaves its temporary file in `folder`: remove those of checkpoints
    called `name` (a glob pattern, e.g. step-*.ckpt) on the next start, and no other file."""
    for stale in folder.glob(f".{name}.*{TEMPORARY_SUFFIX}"):
        stale.unlink(missing_ok=True)


def load_safely(path: Path) -> dict[str, Any]:
    """torch.load with weights_only=True (tensors and plain containers only); errors name the file."""
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - unpickling errors come in many types; all mean "unreadable"
        raise InputError(not_our_checkpoint(path, error)) from None


STEP_CHECKPOINTS = "step-*.ckpt"  # nerfstudio's names of a run's checkpoints in nerfstudio_models


def checkpoint_path(folder: Path, step: int) -> Path:
    """nerfstudio's name of the checkpoint of `step` in a checkpoint folder."""
    return folder / f"step-{step:09d}.ckpt"


def checkpoint_step(path: Path) -> int | None:
    """The step of a step-N.ckpt file, or None for another name."""
    number = path.stem.split("-")[1] if path.stem.startswith("step-") else ""
    return int(number) if number.isdigit() else None


def latest_checkpoint(folder: Path) -> Path:
    """The newest step-N.ckpt in a nerfstudio checkpoint folder."""
    if not folder.is_dir():
        raise InputError(f"{folder}: checkpoint folder not found")
    steps = sorted(
        (checkpoint_step(p), p) for p in folder.glob(STEP_CHECKPOINTS) if checkpoint_step(p) is not None
    )
    if not steps:
        raise InputError(f"{folder}: no step-N.ckpt checkpoint in this folder")
    return steps[-1][1]


def _eugen_layers(state: Mapping[str, Any]) -> set[str]:
    return {key[: -len(EUGEN_MARKER)] for key in state if key.endswith(EUGEN_MARKER)}


def check_state_fits(expected: Mapping[str, Any], state: Mapping[str, Any], flag: str) -> None:
    """Raise a one-line InputError when a checkpoint's state does not fit the model built from the
    config: layers of the other type (dense vs EUGen), or other sizes (k, m, widths, which inputs an
    EUGen layer takes through its dense term)."""
    mine, theirs = _eugen_layers(expected), _eugen_layers(state)
    if mine != theirs:
        def describe(layers: set[str]) -> str:
            return f"EUGen layers at {', '.join(sorted(layers))}" if layers else "only dense layers"

        raise InputError(
            f"the checkpoint has {describe(theirs)} but this model ({flag}) has {describe(mine)}; "
            "load a run with its own config.yml"
        )
    for key, value in state.items():
        if key in expected and hasattr(value, "shape") and tuple(value.shape) != tuple(expected[key].shape):
            raise InputError(
                f"the checkpoint's {key} has shape {tuple(value.shape)} but this model's has "
                f"{tuple(expected[key].shape)} (different k, m, width or eugen-linear-direction); "
                "load a run with its own config.yml"
            )


def checked_state(model: torch.nn.Module, state: Mapping[str, Any], strict: bool = True) -> dict[str, Any]:
    """A checkpoint's model state checked to fit `model` (check_state_fits; with `strict`, also the
    same tensor names, e.g. not a tiny-cuda-nn hash grid's parameters for a torch grid), without the
    frozen LPIPS backbone that checkpoints of stock nerfstudio models carry (ours never do)."""
    state = {key: value for key, value in state.items() if not key.startswith("lpips.")}
    expected = model.state_dict()
    check_state_fits(expected, state, "--pipeline.model.layer")
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if strict and (missing or unexpected):
        raise InputError(f"the checkpoint does not fit this model: {len(missing)} tensors missing (first: "
                         f"{(missing or ['-'])[0]}), {len(unexpected)} unexpected (first: {(unexpected or ['-'])[0]}); "
                         "load a run with its own config.yml (a tiny-cuda-nn grid's checkpoint needs "
                         "--pipeline.model.hash-grid tcnn)")
    return state
