"""Bad input is reported as one line naming the file or flag, never as a traceback.

Our own commands catch `InputError` themselves. nerfstudio's commands (`ns-train`, `ns-eval`, ...)
import this package's plugins before they run, so the plugins install `install_excepthook()`, which
prints an `InputError` that escapes to the top as one line and leaves every other error alone.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType

from rich.console import Console

STDERR = Console(stderr=True)


class InputError(Exception):
    """A user mistake (a file, a flag, a checkpoint that does not fit), reported in one line.

    Not a ValueError on purpose: tyro catches ValueErrors raised while it builds a config and wraps
    them in its multi-line usage panel; an InputError from a config's __post_init__ passes through."""


def check_flag_choice(flag: str, value: str, choices: Sequence[str]) -> None:
    """A choice flag kept as a plain string (see InputError): refuse a value outside `choices`."""
    if value not in choices:
        raise InputError(f"{flag} must be {' or '.join(choices)}, got {value!r}")


@contextmanager
def flag_errors(flag: str) -> Iterator[None]:
    """Report a ValueError of the layer code (e.g. EUGenConfig.validate) as an InputError naming the flag."""
    try:
        yield
    except ValueError as error:
        raise InputError(f"{flag}: {error}") from None


def print_error(message: str) -> int:
    """One line (no wrapping, no traceback); the exit status for bad input."""
    STDERR.print(f"[red]error:[/red] {message}", soft_wrap=True, markup=True, highlight=False)
    return 2


_ONE_LINE_ERRORS: tuple[type[BaseException], ...] = (InputError,)


def report_in_one_line(error_type: type[BaseException]) -> None:
    """Let the exception hook print `error_type` as one line too (e.g. the layers' NonFiniteInputError, which
    is a ValueError of the pure-torch layer package and reaches ns-* commands through nerfstudio's code)."""
    global _ONE_LINE_ERRORS
    if error_type not in _ONE_LINE_ERRORS:
        _ONE_LINE_ERRORS = (*_ONE_LINE_ERRORS, error_type)


def safe_loader_reason(error: BaseException) -> str:
    """Why torch's safe loader refused a file, in one line, without torch's advice to load it unsafely."""
    lines = [line.strip() for line in str(error).strip().splitlines()]
    if lines and lines[0].startswith("Weights only load failed"):
        kept = [line.removeprefix("Please file an issue with the following so that we can make `weights_only=True` "
                                  "compatible with your use case:").replace("WeightsUnpickler error:", "").strip()
                for line in lines[1:] if not line.startswith("Check the documentation of torch.load")]
        lines = [line for line in kept if line]
    return " ".join(lines) or type(error).__name__


def not_our_checkpoint(path: object, error: BaseException) -> str:
    return f"{path}: not a checkpoint this package wrote (torch's safe loader refused it: {safe_loader_reason(error)})"


def refused_checkpoint(error: BaseException, trace: TracebackType | None) -> str | None:
    """The one-line message for a checkpoint that torch's safe loader refused (corrupt, or holding code),
    or None when `error` is something else. The file is the argument of the torch.load that raised."""
    import pickle

    if not isinstance(error, pickle.UnpicklingError | RuntimeError | EOFError):
        return None
    while trace is not None:
        frame = trace.tb_frame
        if frame.f_code.co_name == "load" and frame.f_code.co_filename.endswith("serialization.py"):
            return not_our_checkpoint(frame.f_locals.get("f"), error)
        trace = trace.tb_next
    return None


def one_line_message(error: BaseException, trace: TracebackType | None) -> str | None:
    """The one-line message of an error that is reported as one line (bad input, a refused checkpoint, a
    missing file nerfstudio's code read), or None for every other error (a bug: its traceback shows)."""
    if isinstance(error, _ONE_LINE_ERRORS):
        return str(error)
    message = refused_checkpoint(error, trace)
    if message is None and isinstance(error, FileNotFoundError) and error.filename:
        message = f"{error.filename}: not found"  # a path the user gave, read by nerfstudio's own code
    return message


def error_summary(error: BaseException) -> str:
    """One line for any error caught where a failure is reported instead of raised: its one-line message,
    else its type and text."""
    return one_line_message(error, error.__traceback__) or f"{type(error).__name__}: {error}"


def _excepthook(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
    message = one_line_message(error, trace)
    if message is not None:
        print_error(message)
        sys.exit(2)
    _previous_hook(kind, error, trace)


_previous_hook = sys.excepthook


def install_excepthook() -> None:
    global _previous_hook
    if sys.excepthook is not _excepthook:
        _previous_hook = sys.excepthook
        sys.excepthook = _excepthook
