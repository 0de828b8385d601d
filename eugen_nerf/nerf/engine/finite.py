"""Renders that are finite or a one-line error: for ns-eval, ns-render, ns-export and evaluation in training."""

from __future__ import annotations

import torch
from torch import Tensor

from eugen_nerf.errors import InputError
from eugen_nerf.layers.eugen import NonFiniteInputError

CHECKED_OUTPUTS = ("rgb", "depth", "accumulation")


class RenderNotFinite(InputError):
    """A rendered image holds NaN or infinite values (the weights are not finite, or the field overflowed)."""


def check_field_output(values: Tensor, what: str) -> None:
    """Outside training, a field's density or colour must be finite: nerfstudio's renderers would turn NaN
    into black pixels and empty space without a word (in training the loss check catches it)."""
    if not torch.isfinite(values).all():
        raise RenderNotFinite(f"rendering stopped: the field's {what} holds NaN or infinite values (the "
                              "checkpoint's weights are not finite, or the field overflowed)")


class FiniteRenders:
    """Mixin of the methods' models: a whole-camera render is checked once, after it is complete."""

    def get_outputs_for_camera_ray_bundle(self, camera_ray_bundle) -> dict[str, Tensor]:
        try:
            outputs = super().get_outputs_for_camera_ray_bundle(camera_ray_bundle)  # type: ignore[misc]
        except NonFiniteInputError:
            raise RenderNotFinite("rendering stopped: NaN or infinite values reached an EUGen layer (the "
                                  "checkpoint's weights or the camera's rays are not finite)") from None
        broken = [name for name in CHECKED_OUTPUTS if name in outputs and not torch.isfinite(outputs[name]).all()]
        if broken:
            raise RenderNotFinite(f"rendering produced NaN or infinite values in {', '.join(broken)} (the "
                                  "checkpoint's weights are not finite, or the field overflowed)")
        return outputs
