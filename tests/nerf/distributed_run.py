"""Used by test_distributed.py: ns-train's data-parallel path as `ns-train` runs it (nerfstudio's launch with
this package's worker and trainer), with a training function that also saves every process's final
parameters and buffers and its first batch's pixel indices, and can make one process go wrong from a step:
`nan` puts NaN into its rays, `error` makes its checkpoint save fail with bad-input error of its own.

    python distributed_run.py STATES_DIR FAULT RANK STEP METHOD [ns-train flags]    (FAULT: none | nan | error)
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import torch

from eugen_nerf.errors import InputError


def inject_fault(trainer, fault: str, from_step: int) -> None:
    if fault == "nan":
        datamanager = trainer.pipeline.datamanager
        next_train = datamanager.next_train

        def rays_with_nan(step: int):
            ray_bundle, batch = next_train(step)
            if step >= from_step:
                ray_bundle.origins = ray_bundle.origins * float("nan")
            return ray_bundle, batch

        datamanager.next_train = rays_with_nan
    elif fault == "error":
        save_checkpoint = trainer.save_checkpoint

        def failing_save(step: int) -> None:
            if step >= from_step:
                raise InputError(f"forced failure of this process's save at step {step}")
            save_checkpoint(step)

        trainer.save_checkpoint = failing_save


def train_and_save_states(local_rank: int, world_size: int, config, global_rank: int = 0, *, states: Path,
                          fault: str, fault_rank: int, fault_step: int) -> None:
    from nerfstudio.scripts.train import _set_random_seed

    _set_random_seed(config.machine.seed + global_rank)  # as nerfstudio's train_loop
    trainer = config.setup(local_rank=local_rank, world_size=world_size)
    trainer.setup()
    first_batch = {}
    next_train = trainer.pipeline.datamanager.next_train

    def remember_first_batch(step: int):
        ray_bundle, batch = next_train(step)
        first_batch.setdefault("indices", batch["indices"].clone())
        return ray_bundle, batch

    trainer.pipeline.datamanager.next_train = remember_first_batch
    if global_rank == fault_rank:
        inject_fault(trainer, fault, fault_step)
    trainer.train()
    model = trainer.pipeline.model  # the model inside DDP
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}  # buffers not saved too
    saved = {name: tensor.detach().clone() for name, tensor in tensors.items()}
    torch.save({"tensors": saved, "first_batch_indices": first_batch["indices"]}, states / f"rank-{global_rank}.pt")


def main(argv: list[str]) -> None:
    import tyro
    from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion
    from nerfstudio.scripts import train

    states, fault, fault_rank, fault_step, *flags = argv
    config = tyro.cli(AnnotatedBaseConfigUnion, args=flags)
    config.set_timestamp()
    config.save_config()  # what ns-train does before it launches; this package's launcher takes over here
    train.launch(
        main_func=partial(train_and_save_states, states=Path(states), fault=fault, fault_rank=int(fault_rank),
                          fault_step=int(fault_step)),
        num_devices_per_machine=config.machine.num_devices, device_type=config.machine.device_type, config=config,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
