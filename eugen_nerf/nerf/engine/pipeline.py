"""nerfstudio's VanillaPipeline, data-parallel on CPUs as on GPUs, with one verdict per step for all processes.

Differences from `nerfstudio.pipelines.base_pipeline.VanillaPipeline`, only when several processes train
(`--machine.num-devices N`, see eugen_nerf.nerf.engine.distributed):
- the model is wrapped in DistributedDataParallel with device_ids only on CUDA (nerfstudio passes its
  rank as a device id, which DDP refuses for a CPU model), after checking that every process built the
  same model (parameters and EUGen projections);
- a training step that goes wrong on one process (NaN reaching an EUGen layer, a non-finite loss) is
  known to all of them before the backward pass, so all stop together, after rank 0 has saved its last
  finite state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from torch.cuda.amp.grad_scaler import GradScaler
from torch.nn.parallel import DistributedDataParallel

from eugen_nerf.layers.eugen import NonFiniteInputError
from eugen_nerf.nerf.engine.distributed import first_problem_of_any_rank, require_same_model


class StepNotFinite(Exception):
    """A training step that must not be taken (on this process or another one); the trainer reports it."""


@dataclass
class EUGenPipelineConfig(VanillaPipelineConfig):
    _target: type = field(default_factory=lambda: EUGenPipeline)


class EUGenPipeline(VanillaPipeline):
    def __init__(self, config: EUGenPipelineConfig, device: str, test_mode: Literal["test", "val", "inference"] = "val",
                 world_size: int = 1, local_rank: int = 0, grad_scaler: GradScaler | None = None):
        super().__init__(config, device, test_mode, world_size=1, local_rank=local_rank, grad_scaler=grad_scaler)
        self.world_size = world_size
        if world_size > 1:
            require_same_model(self._model)
            device_ids = [local_rank] if torch.device(device).type == "cuda" else None
            # find_unused_parameters as nerfstudio: some groups get no gradient in some steps
            self._model = DistributedDataParallel(self._model, device_ids=device_ids, find_unused_parameters=True)

    def get_train_loss_dict(self, step: int):
        if self.world_size == 1:
            return super().get_train_loss_dict(step)
        problem, result = None, None
        try:
            result = super().get_train_loss_dict(step)
        except NonFiniteInputError:
            problem = "NaN or infinite values reached an EUGen layer"
        else:
            loss = sum(result[1].values())
            if not torch.isfinite(loss).item():
                problem = f"the loss is {loss.item()}"
        problem = first_problem_of_any_rank(problem, self.device)
        if problem is not None:
            raise StepNotFinite(problem)
        return result
