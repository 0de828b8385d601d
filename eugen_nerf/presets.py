"""Named presets in `configs/`: a method and the ns-train flags that set it up.

A preset file is small YAML:

    method: eugen-nerf
    description: one line
    flags:                          # ns-train flags without the leading --
      max-num-iterations: 400
      pipeline.model.collider-params: {near_plane: 2.4, far_plane: 5.6}

    twin-flags:                     # optional: flags for one twin only, by --pipeline.model.layer
      eugen:
        optimizers.fields.optimizer.lr: 0.003

`eugen train PRESET [more ns-train flags]` is `ns-train METHOD --flag value ... [twin flags] [more
flags]`; later flags win, so anything in a preset can be overridden on the command line.

Twin flags exist because the twins do not train best at the same settings (e.g. the learning rate):
each is compared at its own measured best, and the preset says so in the open (the measurements:
docs/results/).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from eugen_nerf.errors import InputError
from eugen_nerf.resources import presets_dir

CONFIGS_DIR = presets_dir()


@dataclass
class Preset:
    name: str
    method: str
    description: str = ""
    flags: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    twin_flags: dict[str, dict[str, Any]] = field(default_factory=dict)

    def layer(self, extra_args: list[str]) -> str:
        """The twin that `extra_args` (and the preset) ask for: the last --pipeline.model.layer wins."""
        layer = str(self.flags.get("pipeline.model.layer", "eugen"))
        for index, arg in enumerate(extra_args):
            if arg == "--pipeline.model.layer" and index + 1 < len(extra_args):
                layer = extra_args[index + 1]
            elif arg.startswith("--pipeline.model.layer="):
                layer = arg.split("=", 1)[1]
        return layer

    def args(self, layer: str = "eugen") -> list[str]:
        """The flags as ns-train arguments, then the twin flags of `layer`."""
        args: list[str] = [self.method]
        for name, value in {**self.flags, **self.twin_flags.get(layer, {})}.items():
            args.append(f"--{name}")
            args.extend(flag_values(value))
        return args


def flag_values(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [str(item) for pair in value.items() for item in pair]
    if isinstance(value, list | tuple):
        return [str(item) for item in value]
    return [str(value)]


def available_presets() -> list[str]:
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.yml"))


def load_preset(name_or_path: str | Path) -> Preset:
    """A preset by name (configs/NAME.yml) or by path."""
    path = Path(name_or_path)
    if path.suffix not in (".yml", ".yaml"):
        path = CONFIGS_DIR / f"{name_or_path}.yml"
    if not path.is_file():
        raise InputError(f"{path}: no such preset; presets: {', '.join(available_presets()) or 'none'}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise InputError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("method"), str):
        raise InputError(f"{path}: a preset needs a 'method' (e.g. method: eugen-nerf)")
    flags = data.get("flags") or {}
    if not isinstance(flags, dict):
        raise InputError(f"{path}: 'flags' must be a mapping of ns-train flags to values")
    twins = data.get("twin-flags") or {}
    if not isinstance(twins, dict) or set(twins) - {"eugen", "dense"} or not all(
            isinstance(value, dict) for value in twins.values()):
        raise InputError(f"{path}: 'twin-flags' must map eugen and/or dense to mappings of ns-train flags")
    unknown = set(data) - {"method", "description", "flags", "twin-flags"}
    if unknown:
        raise InputError(f"{path}: unknown keys {sorted(unknown)}; a preset has method, description, flags, twin-flags")
    return Preset(path.stem, data["method"], str(data.get("description", "")), flags, path, twins)
