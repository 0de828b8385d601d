"""nerfstudio's Trainer with checkpoints that survive interruption and load with the safe loader.

Differences from `nerfstudio.engine.trainer.Trainer`, all about not losing work:
- checkpoints are written atomically and hold only tensors and plain Python values (nerfstudio's
  ExponentialDecayScheduler leaves numpy floats in scheduler state, which `weights_only=True` rejects);
- Ctrl-C saves a checkpoint of the last finished step before stopping;
- `--load-dir RUN/nerfstudio_models` resumes: training continues to `max_num_iterations` in total
  (nerfstudio would run max_num_iterations *more* steps); bad checkpoints give one-line errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils.rich_utils import CONSOLE

from eugen_nerf.nerf.checkpoints import latest_checkpoint, load_safely, save_atomically


def plain(value: Any) -> Any:
    """numpy scalars -> Python numbers, recursively (what the safe loader accepts)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(plain(item) for item in value)
    return value


@dataclass
class EUGenTrainerConfig(TrainerConfig):
    _target: type = field(default_factory=lambda: EUGenTrainer)

    def set_experiment_name(self) -> None:
        """Name runs after the scene also when only the dataparser's --data is set (a method's default
        scene, `ns-train METHOD blender-data --data X`): nerfstudio looks at the data manager's only
        and calls every such run "unnamed"."""
        if self.experiment_name is None and self.pipeline.datamanager.data is None:
            data = getattr(self.pipeline.datamanager.dataparser, "data", None)
            if data is not None:
                self.experiment_name = (data.parent if data.is_file() else data).name
        super().set_experiment_name()


class EUGenTrainer(Trainer):
    config: EUGenTrainerConfig

    def setup_optimizers(self):
        # The learning rate decays over the run as configured: a schedule's length follows
        # --max-num-iterations, so a 1,500-step CPU run decays as fully as a 200k-step GPU run.
        for entry in self.config.optimizers.values():
            scheduler = entry.get("scheduler")
            if scheduler is not None and hasattr(scheduler, "max_steps"):
                scheduler.max_steps = self.config.max_num_iterations
        return super().setup_optimizers()

    def save_checkpoint(self, step: int) -> None:
        path: Path = self.checkpoint_dir / f"step-{step:09d}.ckpt"
        pipeline = self.pipeline.module if hasattr(self.pipeline, "module") else self.pipeline
        state = {
            "step": step,
            "pipeline": pipeline.state_dict(),
            # plain(): the scheduler writes its learning rates into the param groups as numpy floats.
            "optimizers": {k: plain(v.state_dict()) for k, v in self.optimizers.optimizers.items()},
            "schedulers": {k: plain(v.state_dict()) for k, v in self.optimizers.schedulers.items()},
            "scalers": plain(self.grad_scaler.state_dict()),
        }
        save_atomically(state, path)
        if self.config.save_only_latest_checkpoint:
            for old in self.checkpoint_dir.glob("step-*.ckpt"):
                if old != path:
                    old.unlink()

    def _load_checkpoint(self) -> None:
        if self.config.load_dir is not None:
            if self.config.load_step is None:
                path = latest_checkpoint(self.config.load_dir)
            else:
                path = self.config.load_dir / f"step-{self.config.load_step:09d}.ckpt"
        elif self.config.load_checkpoint is not None:
            path = self.config.load_checkpoint
        else:
            CONSOLE.print("No checkpoint to load: training from scratch.")
            return
        state = load_safely(path)
        self.pipeline.load_pipeline(state["pipeline"], state["step"])
        self.optimizers.load_optimizers(state["optimizers"])
        if "schedulers" in state and self.config.load_scheduler:
            self.optimizers.load_schedulers(state["schedulers"])
        self.grad_scaler.load_state_dict(state["scalers"])
        self._start_step = state["step"] + 1
        self.step = state["step"]
        remaining = max(self.config.max_num_iterations - self._start_step, 0)
        CONSOLE.print(f"Resumed from {path} (step {state['step']}); {remaining} of "
                      f"{self.config.max_num_iterations} steps to go.")
        self.config.max_num_iterations = remaining  # Trainer.train runs this many steps from _start_step
        self.already_trained = remaining == 0

    def train(self) -> None:
        if getattr(self, "already_trained", False):
            # nerfstudio's Trainer.train crashes (KeyError 'step') when it has no step to run; a resumed
            # run that is already at its total has nothing left to do.
            CONSOLE.print("The checkpoint is already at --max-num-iterations: nothing to train.")
            return
        try:
            super().train()
        except KeyboardInterrupt:
            finished = getattr(self, "step", self._start_step) - 1
            if finished >= self._start_step:
                self.save_checkpoint(finished)
                CONSOLE.print(f"Interrupted: saved step {finished} in {self.checkpoint_dir}; resume with "
                              f"--load-dir {self.checkpoint_dir}")
            raise
