"""The `eugen` command.

    eugen GROUP NAME [flags]     bench layers|nerf|suite|scaling|quality, scene blender|dnerf|unbounded|rgbd,
                                 render time-sweep, isdf train|eval|mesh|bench|distill (tyro dataclasses)
    eugen demo [flags]           the README's main job
    eugen distill [flags]        a dense NeRF run -> an EUGen run, closed form (no backpropagation)
    eugen train PRESET [flags]   ns-train with a preset from configs/

Commands are imported when chosen: the NeRF ones import nerfstudio, which takes seconds.
"""

from __future__ import annotations

import importlib
import sys

from eugen_nerf.runtime import enable_huge_page_allocation, quiet_known_warnings

enable_huge_page_allocation()  # before any large tensor exists
quiet_known_warnings()

import tyro  # noqa: E402

from eugen_nerf.errors import InputError, print_error, refused_checkpoint  # noqa: E402

SCENES = {kind: f"eugen_nerf.scenes.kinds:{cls}" for kind, cls in (
    ("blender", "BlenderScene"), ("dnerf", "DNeRFScene"), ("unbounded", "UnboundedScene"), ("rgbd", "RGBDScene"))}
COMMANDS: dict[str, dict[str, str]] = {
    "bench": {"layers": "eugen_nerf.bench.layers:BenchLayers", "nerf": "eugen_nerf.bench.nerf:BenchNeRF",
              "suite": "eugen_nerf.bench.suite:BenchSuite", "scaling": "eugen_nerf.bench.scaling:BenchScaling",
              "quality": "eugen_nerf.bench.quality:BenchQuality"},
    "scene": SCENES,
    "render": {"time-sweep": "eugen_nerf.nerf.commands.time_sweep:RenderTimeSweep"},
    "isdf": {**{name: f"eugen_nerf.isdf.commands:Isdf{name.title()}" for name in ("train", "eval", "mesh", "bench")},
             "distill": "eugen_nerf.isdf.distill:IsdfDistill"},
}
SINGLE: dict[str, str] = {"demo": "eugen_nerf.demo:Demo", "distill": "eugen_nerf.nerf.commands.distill_run:Distill"}


def load(target: str) -> type:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def summary(target: str) -> str:
    return (load(target).__doc__ or "").strip().splitlines()[0]


def _usage() -> str:
    lines = ["usage: eugen COMMAND [--help] [flags]", "", "commands:"]
    for name, target in SINGLE.items():
        lines.append(f"  eugen {name:<17} {summary(target)}")
    lines.append(f"  eugen {'train PRESET':<17} ns-train with a preset from configs/ (then any ns-train flags)")
    for group, names in COMMANDS.items():
        for name, target in names.items():
            lines.append(f"  eugen {group + ' ' + name:<17} {summary(target)}")
    return "\n".join(lines)


def _dispatch(group: str, rest: list[str]) -> int:
    if group == "train":  # ns-train flags pass through; nerfstudio's own parser reads them
        from eugen_nerf.nerf.commands.train_preset import train_main

        return train_main(rest)
    if group in SINGLE:
        tyro.cli(load(SINGLE[group]), args=rest, prog=f"eugen {group}").run()
        return 0
    if group not in COMMANDS:
        return print_error(f"unknown command {group!r}; one of: {', '.join([*SINGLE, 'train', *COMMANDS])}")
    names = COMMANDS[group]
    if not rest or rest[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if rest[0] not in names:
        return print_error(f"unknown {group} command {rest[0]!r}; one of: {', '.join(names)}")
    tyro.cli(load(names[rest[0]]), args=rest[1:], prog=f"eugen {group} {rest[0]}").run()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    try:
        return _dispatch(argv[0], argv[1:])
    except (InputError, ValueError) as error:  # bad input; ValueError: the layer library's own argument checks
        return print_error(str(error))
    except Exception as error:
        message = refused_checkpoint(error, error.__traceback__)  # nerfstudio's own torch.load of a bad checkpoint
        if message is None:
            raise
        return print_error(message)


if __name__ == "__main__":
    sys.exit(main())
