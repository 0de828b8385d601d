"""Used by test_distributed.py: ns-train's data-parallel path as `ns-train` runs it (nerfstudio's launch with
this package's worker and trainer), with a training function that also saves every process's final
parameters and buffers, and can put NaN into one process's rays from a given step.

    python distributed_run.py STATES_DIR NAN_RANK NAN_STEP METHOD [ns-train flags]    (NAN_RANK -1: no NaN)
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import torch


def train_and_save_states(local_rank: int, world_size: int, config, global_rank: int = 0, *, states: Path,
                          nan_rank: int, nan_step: int) -> None:
    from nerfstudio.scripts.train import _set_random_seed

    _set_random_seed(config.machine.seed + global_rank)  # as nerfstudio's train_loop
    trainer = config.setup(local_rank=local_rank, world_size=world_size)
    trainer.setup()
    if global_rank == nan_rank:
        datamanager = trainer.pipeline.datamanager
        next_train = datamanager.next_train

        def rays_with_nan(step: int):
            ray_bundle, batch = next_train(step)
            if step >= nan_step:
                ray_bundle.origins = ray_bundle.origins * float("nan")
            return ray_bundle, batch

        datamanager.next_train = rays_with_nan
    trainer.train()
    model = trainer.pipeline.model  # the model inside DDP
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}  # buffers not saved too
    torch.save({name: tensor.detach().clone() for name, tensor in tensors.items()}, states / f"rank-{global_rank}.pt")


def main(argv: list[str]) -> None:
    import tyro
    from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion
    from nerfstudio.scripts import train

    states, nan_rank, nan_step, *flags = argv
    config = tyro.cli(AnnotatedBaseConfigUnion, args=flags)
    config.set_timestamp()
    config.save_config()  # what ns-train does before it launches; this package's launcher takes over here
    train.launch(
        main_func=partial(train_and_save_states, states=Path(states), nan_rank=int(nan_rank), nan_step=int(nan_step)),
        num_devices_per_machine=config.machine.num_devices, device_type=config.machine.device_type, config=config,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
