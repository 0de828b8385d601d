"""The pixel refit of `eugen distill` (docs/eugen-math.md §3, "Pixel refit").

After the layer-wise closed form, the rendered field's two read-outs, the density head and the RGB head,
are refitted so that the student's own renders of training rays match the targets (the training images
or the teacher's renders). With everything before the heads fixed, a pixel depends on the heads' weights
only through the raw densities and RGB logits of its ray's samples, so each Levenberg-Marquardt step is
one linear least squares in those weights: the Jacobian of the pixels with respect to the samples' raw
densities and logits (a backward pass through the volume renderer, nothing else), times the heads'
inputs. No weight is trained by gradient descent.
"""

from __future__ import annotations

import time

import torch
from jaxtyping import Float
from nerfstudio.cameras.rays import RaySamples
from torch import Tensor

from eugen_nerf.layers.factored import Factored, Piece


def _with_constant(piece: Piece, shape: tuple[int, int]) -> Float[Tensor, "rays samples width_plus_1"]:
    """A head's input (N, width), formed if factored, with a constant 1 appended (the bias's feature)."""
    dense = piece.dense() if isinstance(piece, Factored) else piece
    return torch.cat([dense, dense.new_ones(len(dense), 1)], dim=1).reshape(*shape, -1)


class PixelRefit:
    """The rendered field's density and RGB heads as the only unknowns of the student's renders.

    Args:
        model: the student model (its renderer composites the pixels, with its evaluation background).
        field: the field whose samples are rendered (eugen-nerf's fine field, a proposal method's field).
        samples: the student's own samples of the fitting rays, (rays, samples per ray).
    """

    def __init__(self, model, field, samples: RaySamples) -> None:
        self.model, self.field, self.samples = model, field, samples
        shape = tuple(samples.shape)
        with torch.no_grad():
            _, base = field.get_density(samples)
            self.base = _with_constant(base, shape)
            self.head = _with_constant(field.head_features(samples, base), shape)
        self.density_head, self.rgb_head = field.field_output_density, field.field_heads[0]
        self.shift = float(getattr(field, "density_bias", 0.0))

    def weights(self) -> tuple[Float[Tensor, "1 base_plus_1"], Float[Tensor, "3 head_plus_1"]]:
        """The heads' current [weight | bias], in float64."""
        return tuple(torch.cat([head.net.weight, head.net.bias[:, None]], dim=1).detach().double()
                     for head in (self.density_head, self.rgb_head))

    def set_weights(self, density_weights: Tensor, rgb_weights: Tensor) -> None:
        """Write [weight | bias] of each head into the field (the inverse of `weights`)."""
        with torch.no_grad():
            for head, weights in ((self.density_head, density_weights), (self.rgb_head, rgb_weights)):
                head.net.weight.copy_(weights[:, :-1])
                head.net.bias.copy_(weights[:, -1])

    def render(self, density_weights: Tensor, rgb_weights: Tensor, with_inputs: bool = False):
        """Pixels (rays, 3) with the given heads; with_inputs: also the raw densities and logits, as leaves
        of the graph (for their Jacobian)."""
        raw = (self.base @ density_weights.to(self.base.dtype).T)[..., 0] + self.shift
        logits = self.head @ rgb_weights.to(self.head.dtype).T
        if with_inputs:
            raw.requires_grad_(True)
            logits.requires_grad_(True)
        density = self.density_head.activation(raw)[..., None]
        rgb = self.rgb_head.activation(logits)
        pixels = self.model.renderer_rgb(rgb=rgb, weights=self.samples.get_weights(density))
        return (pixels, raw, logits) if with_inputs else pixels

    def normal_equations(self, density_weights: Tensor, rgb_weights: Tensor,
                         targets: Float[Tensor, "rays 3"]) -> tuple[Tensor, Tensor]:
        """J^T J and J^T r of the pixels' residuals r with respect to the heads' weights (float64),
        unknowns ordered [density head | RGB head, row by row]."""
        with torch.enable_grad():
            pixels, raw, logits = self.render(density_weights, rgb_weights, with_inputs=True)
            residuals = (pixels - targets).detach().double()
            jtj, jtr = 0.0, 0.0
            for channel in range(3):
                d_raw, d_logits = torch.autograd.grad(pixels[:, channel].sum(), [raw, logits], retain_graph=True)
                # each ray's pixel depends on its own samples only, so these are its Jacobian's rows
                jacobian = torch.cat([torch.einsum("rs,rsf->rf", d_raw, self.base),
                                      torch.einsum("rsc,rsf->rcf", d_logits, self.head).flatten(1)], dim=1).double()
                jtj = jtj + jacobian.T @ jacobian
                jtr = jtr + jacobian.T @ residuals[:, channel]
        return jtj, jtr

    def loss(self, density_weights: Tensor, rgb_weights: Tensor, targets: Float[Tensor, "rays 3"]) -> float:
        with torch.no_grad():
            return float((self.render(density_weights, rgb_weights) - targets).square().mean())

    def fit(self, targets: Float[Tensor, "rays 3"], steps: int, damping: float = 1e-3) -> dict:
        """Levenberg-Marquardt on the pixels' mean squared error; writes the heads' weights. Returns the
        report (PSNR of the fitting rays before and after, steps taken, seconds of the solves)."""
        started = time.perf_counter()
        density_weights, rgb_weights = self.weights()
        split = density_weights.numel()
        loss = first = self.loss(density_weights, rgb_weights, targets)
        taken = 0
        for _ in range(steps):
            jtj, jtr = self.normal_equations(density_weights, rgb_weights, targets)
            if not (torch.isfinite(jtj).all() and torch.isfinite(jtr).all()) or float(jtj.diagonal().max()) <= 0:
                break  # no weight moves any pixel (every sample empty or saturated), or the Jacobian overflowed
            scale = jtj.diagonal() + jtj.diagonal().mean() * 1e-6  # Marquardt's scaling, kept off zero
            while damping <= 1e4:
                step, failed = torch.linalg.solve_ex(jtj + damping * torch.diag(scale), -jtr)
                trial = (density_weights + step[:split].reshape(density_weights.shape),
                         rgb_weights + step[split:].reshape(rgb_weights.shape))
                trial_loss = float("inf") if failed else self.loss(*trial, targets)
                if trial_loss < loss:
                    (density_weights, rgb_weights), loss, damping = trial, trial_loss, max(damping / 3, 1e-7)
                    taken += 1
                    break
                damping *= 10
            else:
                break  # no step lowers the loss: at a minimum
        self.set_weights(density_weights, rgb_weights)
        return {"rays": len(targets), "steps": taken, "psnr_before": psnr(first), "psnr_after": psnr(loss),
                "solve_seconds": time.perf_counter() - started}


def psnr(mse: float) -> float:
    return float(-10.0 * torch.log10(torch.tensor(max(mse, 1e-12))))
