"""Where the presets and the embedded scenes are, in a checkout and in an installed wheel alike.

They live at the top of the repository (`configs/`, `data/`) and are packaged as
`eugen_nerf.resources.configs` and `eugen_nerf.resources.scenes` (pyproject.toml), so the same
`importlib.resources` look-up finds them in an editable install and in a wheel.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def presets_dir() -> Path:
    """The folder of the named presets (`configs/*.yml`) and dataset configs (`configs/*.json`)."""
    return Path(str(files("eugen_nerf.resources.configs")))


def embedded_scene(kind: str) -> Path:
    """The embedded scene of a kind (`blender`, `dnerf`, `unbounded`, `rgbd`), as made by `eugen scene`."""
    return Path(str(files("eugen_nerf.resources.scenes"))) / kind
