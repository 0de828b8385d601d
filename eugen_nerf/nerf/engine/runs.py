"""A saved run: its config.yml read back, and its pipeline loaded for inference or evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eugen_nerf.errors import InputError


def read_run_config(config_path: Path, flag: str) -> Any:
    """The TrainerConfig a run's config.yml holds; a missing or unreadable file is one line naming `flag`."""
    import yaml

    import eugen_nerf.nerf.methods.registry  # noqa: F401 - the config classes yaml refers to, and error printing

    if not config_path.is_file():
        raise InputError(f"{config_path}: {flag} not found (expected a run's config.yml)")
    try:
        return yaml.load(config_path.read_text(), Loader=yaml.Loader)  # nerfstudio's own config format
    except Exception as error:  # noqa: BLE001 - any unreadable config is the same one-line error
        first_line = (str(error).splitlines() or [type(error).__name__])[0]
        raise InputError(f"{config_path}: {flag} is not a readable nerfstudio config.yml ({first_line})") from None


def load_pipeline(config_path: Path, flag: str, test_mode: str = "inference"):
    """nerfstudio's eval_setup on a run's config.yml (inference mode: cameras only, no images; test
    mode: the test split's images too, for metrics)."""
    from nerfstudio.utils.eval_utils import eval_setup

    import eugen_nerf.nerf.methods.registry  # noqa: F401 - our methods and error printing, in-process

    if not config_path.is_file():
        raise InputError(f"{config_path}: {flag} not found (expected a run's config.yml)")
    _, pipeline, checkpoint, step = eval_setup(config_path, test_mode=test_mode)
    pipeline.eval()
    return pipeline, checkpoint, step
