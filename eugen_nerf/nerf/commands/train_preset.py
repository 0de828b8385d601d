"""`eugen train PRESET [ns-train flags]`: ns-train with a named preset from configs/."""

from __future__ import annotations

import sys

import tyro
from nerfstudio.engine.trainer import TrainerConfig

from eugen_nerf.errors import InputError
from eugen_nerf.presets import Preset, available_presets, load_preset


def build_config(preset: Preset, extra_args: list[str]) -> TrainerConfig:
    """The TrainerConfig that `ns-train` would build from the preset's flags followed by `extra_args`."""
    from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion, all_methods

    import eugen_nerf.nerf.methods.registry  # noqa: F401 - plugin set-up (error printing, allocator) in-process too

    if preset.method not in all_methods:
        raise InputError(f"{preset.path}: unknown method {preset.method!r}; one of: {', '.join(sorted(all_methods))}")
    args = [*preset.args(preset.layer(extra_args)), *extra_args]
    return tyro.cli(AnnotatedBaseConfigUnion, args=args, prog=f"eugen train {preset.name}")


def train_main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: eugen train PRESET [ns-train flags]   (ns-train METHOD with the preset's flags, then yours)")
        print(f"presets (configs/): {', '.join(available_presets())}")
        return 0 if argv else 2
    preset = load_preset(argv[0])
    config = build_config(preset, argv[1:])
    from nerfstudio.scripts.train import main

    main(config)
    return 0


if __name__ == "__main__":
    sys.exit(train_main(sys.argv[1:]))
