"""Where the presets and the embedded scenes are, in an installed package (wheel or editable) or a checkout.

They live at the top of the repository (`configs/`, `data/`) and are packaged as
`eugen_nerf.resources.configs` and `eugen_nerf.resources.scenes` (pyproject.toml), so the same
`importlib.resources` look-up finds them in an editable install and in a wheel; a checkout used without
installing it (on PYTHONPATH) has them beside the package.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]


def _packaged(package: str, folder: str) -> Path:
    try:
        return Path(str(files(f"eugen_nerf.resources.{package}")))
    except ModuleNotFoundError:  # not installed: the checkout's own folder
        return CHECKOUT / folder


def presets_dir() -> Path:
    """The folder of the named presets (`configs/*.yml`) and dataset configs (`configs/*.json`)."""
    return _packaged("configs", "configs")


def embedded_scene(kind: str) -> Path:
    """The embedded scene of a kind (`blender`, `dnerf`, `unbounded`, `rgbd`), as made by `eugen scene`."""
    return _packaged("scenes", "data") / kind
