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


def _error(message: str) -> int:
    """Bad input: one line (no wrapping, no traceback) and exit status 2."""
    CONSOLE.print(f"[red]error:[/red] {message}", soft_wrap=True)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    group, rest = argv[0], argv[1:]
    if group not in COMMANDS:
        return _error(f"unknown command {group!r}; one of: {', '.join(COMMANDS)}")
    names = COMMANDS[group]
    if not rest or rest[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if rest[0] not in names:
        return _error(f"unknown {group} command {rest[0]!r}; one of: {', '.join(names)}")
    command = tyro.cli(names[rest[0]], args=rest[1:], prog=f"eugen {group} {rest[0]}")
    try:
        command.run()
    except ValueError as error:
        return _error(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
