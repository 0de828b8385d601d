"""A saved run: its config.yml read back (without running code from it), and its pipeline loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eugen_nerf.errors import InputError
from eugen_nerf.nerf.engine.safe_config import load_run_config


def read_run_config(config_path: Path, flag: str) -> Any:
    """The TrainerConfig a run's config.yml holds; a missing or unreadable file is one line naming `flag`."""
    import eugen_nerf.nerf.methods.registry  # noqa: F401 - our methods and error printing, in-process

    if not config_path.is_file():
        raise InputError(f"{config_path}: {flag} not found (expected a run's config.yml)")
    try:
        text = config_path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{config_path}: {flag} cannot be read ({error})") from None
    return load_run_config(text, f"{config_path} ({flag})")


def load_pipeline(config_path: Path, flag: str, test_mode: str = "inference"):
    """nerfstudio's eval_setup on a run's config.yml (inference mode: cameras only, no images; test
    mode: the test split's images too, for metrics)."""
    from nerfstudio.engine.trainer import TrainerConfig
    from nerfstudio.utils.eval_utils import eval_setup

    import eugen_nerf.nerf.methods.registry  # noqa: F401 - our methods and error printing, in-process

    config = read_run_config(config_path, flag)
    if not isinstance(config, TrainerConfig):  # nerfstudio's eval_setup would stop on a bare assert
        raise InputError(f"{config_path}: {flag} is not a run's config.yml (it holds {type(config).__name__})")
    _, pipeline, checkpoint, step = eval_setup(config_path, test_mode=test_mode)
    pipeline.eval()
    return pipeline, checkpoint, step
