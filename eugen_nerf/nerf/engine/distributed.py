"""Data-parallel training on several processes: nerfstudio's own path (`--machine.num-devices N`), on CPUs too.

nerfstudio's `ns-train` starts one process per device with torch.multiprocessing, wraps the model in
DistributedDataParallel and lets each process sample its own rays. Its worker refuses to start without
CUDA. `use_eugen_launcher()` swaps in a worker that also starts CPU processes (the gloo backend), and
wraps nerfstudio's launcher so that a process that stops on bad input or a divergence ends the whole run
with that one line (exit status 2) instead of a traceback or a hang, and Ctrl-C is answered once, by
rank 0, which saves the last finished step. The helpers below are what the processes must agree on: the
same model at the start, and whether a step went wrong on any of them. See docs/distributed.md.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from nerfstudio.utils import comms

from eugen_nerf.errors import InputError, one_line_message

# Where each training process leaves its one-line error for the launching process to print.
RANK_ERRORS_VARIABLE = "EUGEN_NERF_RANK_ERRORS"
DEFAULT_TIMEOUT = timedelta(minutes=30)  # nerfstudio's


class RankStopped(InputError):
    """A training process stopped on bad input or a divergence; the launcher reports its line."""


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def seed_everything(seed: int) -> None:
    """What nerfstudio seeds before training: Python's, numpy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def tensor_digests(module: torch.nn.Module) -> dict[str, str]:
    """A digest of every parameter and buffer (exact: of their bytes)."""
    tensors = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    return {name: hashlib.sha1(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
            for name, tensor in tensors.items()}


def require_same_model(module: torch.nn.Module) -> int:
    """Every process holds the same parameters and buffers (EUGen projections included); raises on every
    process, naming the first tensor that differs, when one does not. Returns the number of tensors checked."""
    mine = tensor_digests(module)
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    for other_rank, theirs in enumerate(everyone):
        differ = sorted(name for name in mine.keys() | theirs.keys() if theirs.get(name) != everyone[0].get(name))
        if differ:
            raise RuntimeError(f"the training processes built different models: {differ[0]} (and "
                               f"{len(differ) - 1} more) differ between rank 0 and rank {other_rank}")
    return len(mine)


def first_problem_of_any_rank(problem: str | None, device: torch.device | str) -> str | None:
    """Every process learns whether any process had a problem in this step, and which (the lowest rank's).

    One all-reduce of one number per step; the messages travel only when there is one."""
    flag = torch.tensor([0 if problem is None else 1], device=device)
    dist.all_reduce(flag)
    if flag.item() == 0:
        return None
    problems: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(problems, problem)
    first = next(index for index, item in enumerate(problems) if item is not None)
    return f"{problems[first]} (in training process {first} of {len(problems)})"


def message_of_rank_zero(message: str) -> str:
    """Rank 0's version of a message every process is about to raise (it alone knows what it saved)."""
    box = [message]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def report_rank_error(global_rank: int, message: str) -> None:
    """Leave a process's one-line error where the launching process reads it (written whole, then renamed)."""
    folder = os.environ.get(RANK_ERRORS_VARIABLE)
    if folder is None:  # started by another launcher: say it here
        print(f"error: {message}", file=sys.stderr)
        return
    path = Path(folder) / f"rank-{global_rank:05d}.txt"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(message)
    temporary.replace(path)


def first_rank_error(folder: Path) -> str | None:
    found = sorted(folder.glob("rank-*.txt"))
    return found[0].read_text() if found else None


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
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_devices_per_machine))
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", init_method=dist_url,
                                world_size=world_size, rank=global_rank, timeout=timeout)
        for machine in range(world_size // num_devices_per_machine):  # nerfstudio's per-machine groups
            group = dist.new_group(list(range(machine * num_devices_per_machine,
                                              (machine + 1) * num_devices_per_machine)))
            if machine == machine_rank:
                comms.LOCAL_PROCESS_GROUP = group
        output = main_func(local_rank, world_size, config, global_rank)
        comms.synchronize()
        dist.destroy_process_group()
        return output
    except KeyboardInterrupt:  # before training started (the trainer answers it during training)
        raise SystemExit(130) from None
    except Exception as error:
        message = one_line_message(error, error.__traceback__)
        if message is None:
            raise
        report_rank_error(global_rank, message)
        if dist.is_initialized():
            dist.destroy_process_group()  # else gloo's threads abort the exit with a C++ message
        raise SystemExit(2) from None


@contextmanager
def parent_waits_on_ctrl_c() -> Iterator[None]:
    """The launching process ignores Ctrl-C while its training processes run: rank 0 saves and exits, and
    the launcher stops the others then (nerfstudio's would kill rank 0 in the middle of its save)."""
    try:
        previous = signal.signal(signal.SIGINT, lambda *_: None)  # a handler, not SIG_IGN: children keep Ctrl-C
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


_nerfstudio_launch: Callable | None = None


def launch(main_func: Callable, num_devices_per_machine: int, num_machines: int = 1, **rest: Any) -> None:
    """nerfstudio's `launch`, whose failed training processes end the run with their one line."""
    assert _nerfstudio_launch is not None, "use_eugen_launcher() first"
    if num_devices_per_machine * num_machines <= 1:
        return _nerfstudio_launch(main_func, num_devices_per_machine, num_machines, **rest)
    from torch.multiprocessing.spawn import ProcessExitedException

    # torch logs a warning as it stops the other processes after one failed: the one line says why instead.
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="eugen-nerf-ranks-") as folder, parent_waits_on_ctrl_c():
        os.environ[RANK_ERRORS_VARIABLE] = folder
        try:
            _nerfstudio_launch(main_func, num_devices_per_machine, num_machines, **rest)
        except ProcessExitedException as error:
            if error.exit_code == 130:
                raise SystemExit(130) from None
            message = first_rank_error(Path(folder))
            if message is None:
                raise
            raise RankStopped(message) from None
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
