"""Adam with its betas as a flag (`--optimizers.NAME.optimizer.betas 0.9 0.99`): nerfstudio's Adam config
passes only the learning rate, eps and weight decay, and Zip-NeRF's reference uses beta2 = 0.99."""

from __future__ import annotations

from dataclasses import dataclass

from nerfstudio.engine.optimizers import AdamOptimizerConfig

from eugen_nerf.errors import InputError


@dataclass
class AdamWithBetasConfig(AdamOptimizerConfig):
    """nerfstudio's Adam config, and its two decay rates."""

    betas: tuple[float, float] = (0.9, 0.999)
    """Adam's decay rates of the gradient's first and second moments (torch's defaults)."""

    def setup(self, params):
        if not all(0.0 <= beta < 1.0 for beta in self.betas):
            raise InputError(f"--optimizers.*.optimizer.betas must lie in [0, 1), got {self.betas}")
        return super().setup(params)
