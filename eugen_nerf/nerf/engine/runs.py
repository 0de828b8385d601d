"""A saved run: its config.yml read back (without running code from it), and its pipeline loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eugen_nerf.errors import InputError
from eugen_nerf.nerf.engine.safe_config import load_run_config, protect_nerfstudio_config_loading, require_run_config


def read_run_config(config_path: Path, flag: str) -> Any:
    """The TrainerConfig a run's config.yml holds; a missing, unreadable or foreign file is one line naming `flag`."""
    import eugen_nerf.nerf.methods.registry  # noqa: F401 - our methods and error printing, in-process

    if not config_path.is_file():
        raise InputError(f"{config_path}: {flag} not found (expected a run's config.yml)")
    try:
        text = config_path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{config_path}: {flag} cannot be read ({error})") from None
    config = load_run_config(text, f"{config_path} ({flag})")
    require_run_config(config, f"{config_path} ({flag})")
    return config


def eval_setup_of(config_path: Path, flag: str, test_mode: str = "inference") -> tuple:
    """nerfstudio's eval_setup (config, pipeline, checkpoint path, step), its config.yml read safely."""
    from nerfstudio.utils import eval_utils

    read_run_config(config_path, flag)  # this file's one-line errors first
    protect_nerfstudio_config_loading()  # eval_setup reads the file again: with the same loader
    return eval_utils.eval_setup(config_path, test_mode=test_mode)


def load_pipeline(config_path: Path, flag: str, test_mode: str = "inference"):
    """A run's pipeline in eval mode (inference mode: cameras only, no images; test mode: the test
    split's images too, for metrics), its checkpoint path and step."""
    _, pipeline, checkpoint, step = eval_setup_of(config_path, flag, test_mode)
    pipeline.eval()
    return pipeline, checkpoint, step
