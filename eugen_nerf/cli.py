"""The `eugen` command: `eugen GROUP NAME [flags]` (tyro parses each subcommand's dataclass)."""

from __future__ import annotations

import sys

from eugen_nerf.runtime import enable_huge_page_allocation

enable_huge_page_allocation()  # before any large tensor exists

import tyro  # noqa: E402
from rich.console import Console  # noqa: E402

from eugen_nerf.bench.layers import BenchLayers  # noqa: E402
from eugen_nerf.scenes.kinds import SCENE_KINDS  # noqa: E402

COMMANDS: dict[str, dict[str, type]] = {
    "bench": {"layers": BenchLayers},
    "scene": SCENE_KINDS,
}

CONSOLE = Console()


def _usage() -> str:
    lines = ["usage: eugen GROUP NAME [--help] [flags]", "", "commands:"]
    for group, names in COMMANDS.items():
        for name, cls in names.items():
            summary = (cls.__doc__ or "").strip().splitlines()[0]
            lines.append(f"  eugen {group} {name:<10} {summary}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    group, rest = argv[0], argv[1:]
    if group not in COMMANDS:
        CONSOLE.print(f"[red]error:[/red] unknown command {group!r}; one of: {', '.join(COMMANDS)}", soft_wrap=True)
        return 2
    names = COMMANDS[group]
    if not rest or rest[0] in ("-h", "--help") or rest[0] not in names:
        if rest and rest[0] not in ("-h", "--help"):
            CONSOLE.print(f"[red]error:[/red] unknown {group} command {rest[0]!r}; one of: {', '.join(names)}")
        else:
            print(_usage())
        return 2 if rest and rest[0] not in ("-h", "--help") else 0
    cls = names[rest[0]]
    command = tyro.cli(cls, args=rest[1:], prog=f"eugen {group} {rest[0]}")
    try:
        command.run()
    except ValueError as error:  # bad input: one line, no traceback
        CONSOLE.print(f"[red]error:[/red] {error}", soft_wrap=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
