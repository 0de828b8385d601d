"""What the processes of a data-parallel run (`--machine.num-devices N`) must agree on: the same model at the
start, whether a step went wrong on any of them, and the line they stop with. How the processes are
started: `eugen_nerf.nerf.engine.launcher`; the whole picture: docs/distributed.md.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


def seed_everything(seed: int) -> None:
    """What nerfstudio seeds before training: Python's, numpy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def tensor_digests(module: torch.nn.Module) -> dict[str, str]:
    """A digest of every parameter and buffer (exact: of their bytes)."""
    tensors = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    return {name: hashlib.sha1(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy()).hexdigest()
            for name, tensor in tensors.items()}


def require_same_model(module: torch.nn.Module) -> None:
    """Every process holds the same parameters and buffers (EUGen projections included); raises on every
    process, naming the first tensor that differs, when one does not."""
    mine = tensor_digests(module)
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    first = everyone[0]
    for other_rank, theirs in enumerate(everyone):
        differ = sorted(name for name in first.keys() | theirs.keys() if theirs.get(name) != first.get(name))
        if differ:
            raise RuntimeError(f"the training processes built different models: {differ[0]} (and "
                               f"{len(differ) - 1} more) differ between rank 0 and rank {other_rank}")


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
