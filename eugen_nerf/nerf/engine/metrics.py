"""Image metrics of every method: PSNR and SSIM always, LPIPS where its backbone can be loaded."""

from __future__ import annotations

import contextlib
import io

import torch
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor

_warned = False


class OptionalLPIPS:
    """torchmetrics' LPIPS, or NaN with one warning per process where its AlexNet backbone cannot be
    loaded (no network and no cached weights). Callers drop the NaN from their metrics, so LPIPS is
    reported as unavailable, never as a number.

    Deliberately not an `nn.Module` attribute of the model: the frozen backbone stays out of the
    checkpoints, and a checkpoint saved with or without network access loads either way.
    """

    def __init__(self) -> None:
        global _warned
        self.metric = None
        try:
            from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

            # torch.hub prints a "Downloading ..." line (stdout) and a progress bar (stderr) before it
            # knows whether the download works; offline, the warning below is the one line a user gets.
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                self.metric = LearnedPerceptualImagePatchSimilarity(normalize=True)
        except Exception as error:  # noqa: BLE001 - any failure to fetch or build the backbone means "unavailable"
            if not _warned:
                reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                CONSOLE.print(f"[yellow]warning:[/yellow] LPIPS unavailable (backbone weights: {reason}); "
                              "reporting PSNR and SSIM only", soft_wrap=True)
                _warned = True

    @property
    def available(self) -> bool:
        return self.metric is not None

    def __call__(self, image: Tensor, prediction: Tensor) -> Tensor:
        if self.metric is None:
            return torch.tensor(float("nan"))
        return self.metric.to(image.device)(image, prediction)


def drop_unavailable(metrics: dict[str, float], lpips: OptionalLPIPS) -> dict[str, float]:
    if not lpips.available:
        return {name: value for name, value in metrics.items() if "lpips" not in name}
    return metrics
