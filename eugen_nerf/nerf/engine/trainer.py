"""nerfstudio's Trainer with checkpoints that survive interruption and load with the safe loader.

Differences from `nerfstudio.engine.trainer.Trainer`, all about not losing work:
- checkpoints are written atomically and hold only tensors and plain Python values (nerfstudio's
  ExponentialDecayScheduler leaves numpy floats in scheduler state, which `weights_only=True` rejects);
- Ctrl-C saves a checkpoint of the last finished step before stopping;
- `--load-dir RUN/nerfstudio_models` resumes: training continues to `max_num_iterations` in total
  (nerfstudio would run max_num_iterations *more* steps) at this run's learning-rate flags (torch's
  load_state_dict would silently bring back the checkpoint's); bad checkpoints give one-line errors;
- a run that diverges (a non-finite loss or weight, or NaN reaching an EUGen layer, in a training step
  or in an evaluation during training) stops with a one-line error naming the step, the last
  checkpoint (a NaN state is never saved) and the learning-rate flags; nerfstudio would go on
  training NaNs and checkpoint them. The trainer keeps a copy of the training state in memory every
  `steps_per_finite_copy` steps and saves it when the run diverges, so a divergence before the next
  save loses at most that many steps;
- with several processes (`--machine.num-devices N`, nerfstudio's data-parallel path, on CPUs too): every
  process builds the same model (the run's seed) and then samples its own rays (seed + rank), rank 0
  alone writes checkpoints (in the single-process layout, so every reader loads them), and a divergence
  in a training step of any process stops all of them with rank 0's one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils import comms, profiler
from nerfstudio.utils.rich_utils import CONSOLE
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR

from eugen_nerf.errors import InputError
from eugen_nerf.layers.eugen import NonFiniteInputError
from eugen_nerf.nerf.engine.checkpoints import (
    STEP_CHECKPOINTS,
    checkpoint_path,
    checkpoint_step,
    latest_checkpoint,
    load_safely,
    remove_stale_temporaries,
    save_atomically,
)
from eugen_nerf.nerf.engine.distributed import message_of_rank_zero, seed_everything
from eugen_nerf.nerf.engine.finite import RenderNotFinite
from eugen_nerf.nerf.engine.launcher import use_eugen_launcher
from eugen_nerf.nerf.engine.pipeline import StepNotFinite


def plain(value: Any, copy: bool = False) -> Any:
    """numpy scalars -> Python numbers, recursively (what the safe loader accepts); with `copy`, tensors
    are cloned too (a state dict's tensors are the live ones the next optimizer step changes)."""
    if isinstance(value, np.generic):
        return value.item()
    if copy and isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {key: plain(item, copy) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(plain(item, copy) for item in value)
    return value


def first_non_finite(tensors: dict[str, Any]) -> str | None:
    """The name of the first floating-point tensor holding NaN or inf, or None."""
    return next((k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)


class TrainingDiverged(InputError):
    """Training produced NaN or infinite values; reported in one line like bad input (usually it is
    one: a learning rate too high for the batch size)."""


@dataclass
class EUGenTrainerConfig(TrainerConfig):
    _target: type = field(default_factory=lambda: EUGenTrainer)
    steps_per_finite_copy: int = 100
    """Keep a copy of the training state in memory every this many steps; a run that diverges saves the
    newest copy newer than its last checkpoint (0: keep none)."""

    def set_experiment_name(self) -> None:
        """Name runs after the scene also when only the dataparser's --data is set (a method's default
        scene, `ns-train METHOD blender-data --data X`): nerfstudio looks at the data manager's only
        and calls every such run "unnamed"."""
        if self.experiment_name is None and self.pipeline.datamanager.data is None:
            data = getattr(self.pipeline.datamanager.dataparser, "data", None)
            if data is not None:
                self.experiment_name = (data.parent if data.is_file() else data).name
        super().set_experiment_name()

    def save_config(self) -> None:
        # ns-train saves the config right before it starts the training processes, once its own module
        # has loaded: the moment to let its launcher start CPU processes and report their errors in one line.
        use_eugen_launcher()
        super().save_config()


class EUGenTrainer(Trainer):
    config: EUGenTrainerConfig

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        if self.world_size > 1:
            seed_everything(self.config.machine.seed)  # the same model on every process (nerfstudio adds the rank)
        super().setup(test_mode)
        if self.world_size > 1:
            seed_everything(self.config.machine.seed + comms.get_rank())  # then each process samples its own rays

    def setup_optimizers(self):
        # The learning rate decays over the run as configured: a schedule's length follows
        # --max-num-iterations, so a 1,500-step CPU run decays as fully as a 200k-step GPU run.
        # A warm-up as long as the run would never reach the decay (and one exactly as long divides by
        # zero in nerfstudio's schedule at the last step): refuse it in one line.
        if self.config.max_num_iterations < 1:  # nerfstudio's schedules divide by it; a negative one trains nothing
            raise InputError(f"--max-num-iterations must be 1 or more, got {self.config.max_num_iterations}")
        for name, entry in self.config.optimizers.items():
            lr = entry["optimizer"].lr
            if not lr > 0:  # torch's own error would not name the flag
                raise InputError(f"--optimizers.{name}.optimizer.lr must be above 0, got {lr}")
            scheduler = entry.get("scheduler")
            if scheduler is not None and hasattr(scheduler, "max_steps"):
                scheduler.max_steps = self.config.max_num_iterations
            lr_final = getattr(scheduler, "lr_final", None)
            if lr_final is not None and not lr_final > 0:
                raise InputError(f"--optimizers.{name}.scheduler.lr-final must be above 0, got {lr_final}")
            warmup = getattr(scheduler, "warmup_steps", 0)
            if warmup and warmup >= self.config.max_num_iterations > 0:
                raise InputError(f"--optimizers.{name}.scheduler.warmup-steps {warmup} must be below "
                                 f"--max-num-iterations {self.config.max_num_iterations}")
        return super().setup_optimizers()

    def checkpoint_state(self, step: int, copy: bool = False) -> dict[str, Any]:
        """What a checkpoint holds; with `copy`, detached from the tensors the next steps change."""
        pipeline = self.pipeline.state_dict()
        if isinstance(self.pipeline._model, DistributedDataParallel):
            # the keys a single process writes (DDP adds "module."), so that every reader loads the checkpoint
            wrapped = "_model.module."
            pipeline = {"_model." + key.removeprefix(wrapped) if key.startswith(wrapped) else key: value
                        for key, value in pipeline.items()}
        return {
            "step": step,
            "pipeline": plain(pipeline, copy),
            # plain(): the scheduler writes its learning rates into the param groups as numpy floats.
            "optimizers": {k: plain(v.state_dict(), copy) for k, v in self.optimizers.optimizers.items()},
            "schedulers": {k: plain(v.state_dict(), copy) for k, v in self.optimizers.schedulers.items()},
            "scalers": plain(self.grad_scaler.state_dict(), copy),
        }

    def save_checkpoint(self, step: int) -> None:
        if not comms.is_main_process():  # the processes hold the same state; one writes it
            return
        state = self.checkpoint_state(step)
        # A finite loss can still come with NaN gradients, and so NaN weights after the step: never save those.
        broken = first_non_finite(state["pipeline"])
        if broken is not None:
            raise self.diverged(step, f"{broken} holds NaN or infinite values")
        self.write_checkpoint(state)

    def write_checkpoint(self, state: dict[str, Any]) -> Path:
        path = checkpoint_path(self.checkpoint_dir, state["step"])
        save_atomically(state, path, temporary_dir=self.checkpoint_dir.parent)
        if self.config.save_only_latest_checkpoint:
            for old in self.checkpoint_dir.glob(STEP_CHECKPOINTS):
                if old != path:
                    old.unlink()
        return path

    def keep_finite_copy(self, step: int) -> None:
        """Before `step` runs: every steps_per_finite_copy steps, copy the state the previous steps left."""
        every = self.config.steps_per_finite_copy
        if every > 0 and comms.is_main_process() and step > self._start_step and step % every == 0:
            self.finite_copy = self.checkpoint_state(step - 1, copy=True)

    def save_finite_copy(self) -> Path | None:
        """After a divergence: write the in-memory copy when it is finite and newer than the last checkpoint."""
        state = getattr(self, "finite_copy", None)
        if state is None or first_non_finite(state["pipeline"]) is not None:
            return None
        try:
            if checkpoint_step(latest_checkpoint(self.checkpoint_dir)) >= state["step"]:
                return None
        except InputError:
            pass  # no checkpoint yet
        self.finite_copy = None
        return self.write_checkpoint(state)

    def _load_checkpoint(self) -> None:
        if comms.is_main_process():
            remove_stale_temporaries(self.checkpoint_dir.parent, STEP_CHECKPOINTS)
        if self.config.load_dir is not None:
            if self.config.load_step is None:
                path = latest_checkpoint(self.config.load_dir)
            else:
                path = checkpoint_path(self.config.load_dir, self.config.load_step)
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
        self.use_configured_learning_rates()
        self.grad_scaler.load_state_dict(state["scalers"])
        self._start_step = state["step"] + 1
        self.step = state["step"]
        remaining = max(self.config.max_num_iterations - self._start_step, 0)
        CONSOLE.print(f"Resumed from {path} (step {state['step']}); {remaining} of "
                      f"{self.config.max_num_iterations} steps to go.")
        self.config.max_num_iterations = remaining  # Trainer.train runs this many steps from _start_step

    def use_configured_learning_rates(self) -> None:
        """After loading a checkpoint: each group's learning rate (and Adam's betas and eps) from this run's
        flags, at the loaded step of its schedule, so that resuming with e.g. a lower
        --optimizers.fields.optimizer.lr (after a divergence) does what it says. With unchanged flags
        nothing changes."""
        for name, optimizer in self.optimizers.optimizers.items():
            flags = self.config.optimizers[name]["optimizer"]
            configured = flags.lr
            scheduler = self.optimizers.schedulers.get(name)
            for index, group in enumerate(optimizer.param_groups):
                group["initial_lr"] = configured
                # torch's load_state_dict brings back the checkpoint's betas and eps too
                if "betas" in group and hasattr(flags, "betas"):
                    group["betas"] = tuple(flags.betas)
                if "eps" in group:
                    group["eps"] = flags.eps
                if scheduler is None:
                    group["lr"] = configured
                elif isinstance(scheduler, LambdaLR):  # every nerfstudio scheduler; the lambdas are this run's
                    scheduler.base_lrs[index] = configured
                    group["lr"] = configured * scheduler.lr_lambdas[index](scheduler.last_epoch)

    def train_iteration(self, step: int):
        self.keep_finite_copy(step)
        try:
            loss, loss_dict, metrics_dict = super().train_iteration(step)
        except NonFiniteInputError:
            raise self.diverged(step, "NaN or infinite values reached an EUGen layer") from None
        except StepNotFinite as problem:  # known to every process, which all stop here
            raise self.diverged(step, str(problem), every_process=True) from None
        # One host sync per step: cheap next to a NeRF step, and it keeps a NaN state out of every checkpoint.
        if not torch.isfinite(loss).item():
            raise self.diverged(step, f"the loss is {loss.item()}")
        return loss, loss_dict, metrics_dict

    def eval_iteration(self, step: int) -> None:
        try:
            super().eval_iteration(step)
        except NonFiniteInputError:
            raise self.diverged(step, "NaN or infinite values reached an EUGen layer in evaluation") from None
        except RenderNotFinite as error:
            raise self.diverged(step, f"in evaluation, {error}") from None

    def diverged(self, step: int, what: str, every_process: bool = False) -> TrainingDiverged:
        """The one-line error of a divergence, after saving the last finite state; with `every_process`, all
        processes are here and raise rank 0's line (it alone saves)."""
        lr_flags = ", ".join(f"--optimizers.{name}.optimizer.lr {self.config.optimizers[name]['optimizer'].lr:g}"
                             for name in self.optimizers.optimizers)  # the groups this model has
        saved = self.save_finite_copy()
        if saved is not None:
            kept = f"its last finite state was saved in {saved}"
        else:
            try:
                kept = f"nothing after it was saved, the last checkpoint is {latest_checkpoint(self.checkpoint_dir)}"
            except InputError:
                kept = "no checkpoint was written yet"
        message = (f"training diverged at step {step}: {what}; {kept}. Train again with a lower learning rate "
                   f"(now {lr_flags}) or more rays per batch (--pipeline.datamanager.train-num-rays-per-batch)")
        if every_process and self.world_size > 1:
            message = message_of_rank_zero(message)
        return TrainingDiverged(message)

    def train(self) -> None:
        if self.config.max_num_iterations <= 0:
            # nerfstudio's Trainer.train crashes (KeyError 'step') when it has no step to run: a resumed
            # run already at its total, or --max-num-iterations 0.
            CONSOLE.print("No step to run: --max-num-iterations is 0 or the checkpoint has reached it.")
            return
        try:
            super().train()
        except KeyboardInterrupt:
            finished = getattr(self, "step", self._start_step) - 1
            if finished >= self._start_step:
                self.save_checkpoint(finished)
                said = (f"Interrupted: saved step {finished} in {self.checkpoint_dir}; resume with "
                        f"--load-dir {self.checkpoint_dir}")
            else:
                said = "Interrupted before the first step finished: nothing to save."
            # The resume line is the last word: ns-train would print the KeyboardInterrupt's traceback, and
            # its profiler's timings after it (printed here, before the line, and then not again).
            profiler.flush_profiler(self.config.logging)
            profiler.PROFILER.clear()
            CONSOLE.print(said, soft_wrap=True)
            raise SystemExit(130) from None
