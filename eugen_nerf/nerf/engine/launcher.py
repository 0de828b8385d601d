"""Starting the processes of a data-parallel run (`--machine.num-devices N`): nerfstudio's launcher, on CPUs too.

nerfstudio's `ns-train` starts one process per device with torch.multiprocessing; its worker refuses to
start without CUDA. `use_eugen_launcher()` swaps in a worker that also starts CPU processes (the gloo
backend), and wraps nerfstudio's launcher so that a process that stops on bad input or a divergence ends
the whole run with that one line (exit status 2) instead of a traceback, and Ctrl-C is answered by rank 0
alone, which saves the last finished step (a second Ctrl-C stops every process at once). See
docs/distributed.md.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from nerfstudio.utils import comms

from eugen_nerf.errors import InputError, one_line_message, print_error

# Where each training process leaves its one-line error for the launching process to print.
RANK_ERRORS_VARIABLE = "EUGEN_NERF_RANK_ERRORS"
DEFAULT_TIMEOUT = timedelta(minutes=30)  # nerfstudio's


class RankStopped(InputError):
    """A training process stopped on bad input or a divergence; the launcher reports its line."""


def report_rank_error(global_rank: int, message: str) -> None:
    """Leave a process's one-line error where the launching process reads it (written whole, then renamed)."""
    folder = os.environ.get(RANK_ERRORS_VARIABLE)
    if folder is None:  # started by another launcher: say it here
        print_error(message)
        return
    path = Path(folder) / f"rank-{global_rank:05d}.txt"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(message)
    temporary.replace(path)


def first_rank_error(folder: Path) -> str | None:
    """The lowest rank's one-line error, or None when no process left one."""
    found = sorted(folder.glob("rank-*.txt"))
    return found[0].read_text() if found else None


def cores() -> int:
    """The cores this process may run on (its affinity, which a container or taskset narrows)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def distributed_worker(
    local_rank: int,
    main_func: Callable,
    world_size: int,
    num_devices_per_machine: int,
    machine_rank: int,
    dist_url: str,
    config: Any,
    timeout: timedelta = DEFAULT_TIMEOUT,
    device_type: Literal["cpu", "cuda", "mps"] = "cuda",
) -> Any:
    """nerfstudio's `_distributed_worker` (same arguments), which also runs on CPUs (gloo), gives each CPU
    process its share of the cores, and turns a one-line error into exit status 2 plus its line."""
    global_rank = machine_rank * num_devices_per_machine + local_rank
    if global_rank != 0:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: rank 0 saves; the launcher then stops the rest
        sys.stdout = open(os.devnull, "w")  # rank 0 tells the progress; errors reach the launcher as files
    try:
        if device_type == "cuda":
            if num_devices_per_machine > torch.cuda.device_count():
                raise InputError(f"--machine.num-devices {num_devices_per_machine}: this machine has "
                                 f"{torch.cuda.device_count()} CUDA device(s)")
            torch.cuda.set_device(local_rank)  # collectives of NCCL use the current device
        elif device_type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(max(1, cores() // num_devices_per_machine))
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", init_method=dist_url,
                                world_size=world_size, rank=global_rank, timeout=timeout)
        for machine in range(world_size // num_devices_per_machine):  # nerfstudio's per-machine groups
            group = dist.new_group(list(range(machine * num_devices_per_machine,
                                              (machine + 1) * num_devices_per_machine)))
            if machine == machine_rank:
                comms.LOCAL_PROCESS_GROUP = group
        output = main_func(local_rank, world_size, config, global_rank)
        comms.synchronize()
        return output
    except KeyboardInterrupt:  # before training started (the trainer answers it during training)
        raise SystemExit(130) from None
    except Exception as error:
        message = one_line_message(error, error.__traceback__)
        if message is None:
            raise
        report_rank_error(global_rank, message)
        raise SystemExit(2) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()  # also on the way out of an error: else gloo's threads abort the exit


@contextmanager
def children_stop_first() -> Iterator[list[int]]:
    """While the training processes run, the launching process lets a first Ctrl-C through to them alone:
    rank 0 saves and exits, and the launcher stops the others then (nerfstudio's would kill rank 0 in the
    middle of its save). A second Ctrl-C is a KeyboardInterrupt here, on which nerfstudio stops them all."""
    presses: list[int] = []

    def on_ctrl_c(signum: int, frame: Any) -> None:
        presses.append(signum)
        if len(presses) > 1:
            signal.default_int_handler(signum, frame)

    try:
        previous = signal.signal(signal.SIGINT, on_ctrl_c)  # a handler, not SIG_IGN: children keep Ctrl-C
    except ValueError:  # not the main thread
        yield presses
        return
    try:
        yield presses
    finally:
        signal.signal(signal.SIGINT, previous)


_nerfstudio_launch: Callable | None = None


def launch(main_func: Callable, num_devices_per_machine: int, num_machines: int = 1, **rest: Any) -> None:
    """nerfstudio's `launch`, whose failed training processes end the run with their one line."""
    assert _nerfstudio_launch is not None, "use_eugen_launcher() first"
    if num_devices_per_machine * num_machines <= 1:
        return _nerfstudio_launch(main_func, num_devices_per_machine, num_machines, **rest)
    from torch.multiprocessing.spawn import ProcessException

    # torch logs a warning as it stops the other processes after one failed: the one line says why instead.
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="eugen-nerf-ranks-") as folder, children_stop_first() as presses:
        os.environ[RANK_ERRORS_VARIABLE] = folder
        try:
            _nerfstudio_launch(main_func, num_devices_per_machine, num_machines, **rest)
        except ProcessException:
            # Whichever process torch saw end first (one that lost its peer may have failed after it),
            # the line is the one a process left; a Ctrl-C ends with rank 0's resume line instead.
            message = first_rank_error(Path(folder))
            if message is not None:
                raise RankStopped(message) from None
            if presses:
                raise SystemExit(130) from None
            raise
        finally:
            os.environ.pop(RANK_ERRORS_VARIABLE, None)


def use_eugen_launcher() -> None:
    """Point nerfstudio's `ns-train` at `launch` and `distributed_worker` (it looks both up when it runs)."""
    global _nerfstudio_launch
    train = sys.modules.get("nerfstudio.scripts.train")
    if train is None or not hasattr(train, "launch") or train.launch is launch:
        return
    _nerfstudio_launch = train.launch
    train.launch = launch
    train._distributed_worker = distributed_worker
