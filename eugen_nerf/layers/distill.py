"""Layer-wise distillation of a dense layer into an EUGen layer without backpropagation (docs/eugen-math.md §3).

    A^T = (F^T F + lambda I)^-1 F^T Y      F = [1, f(X)],  Y = teacher outputs

F^T F and F^T Y are accumulated batch by batch, so memory is O(D^2 + D l) whatever the number of inputs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from eugen_nerf.layers.eugen import EUGenLinear

# inputs, (inputs, targets), or (inputs, targets, point weights) for a weighted least squares
Batch = Tensor | tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]


@dataclass
class DistillReport:
    """How well the student fits its teacher, on the inputs it was fitted on."""

    relative_error: float  # ||F A^T - Y||_F / ||Y||_F after the closed form
    num_inputs: int
    seconds: float
    refined_relative_error: float | None = None  # after trainable-G refinement, when run
    initial_relative_error: float | None = None  # of the weights the layer had before the fit (fit_linear)


class _NormalEquations:
    """Running sums F^T F, F^T Y, ||Y||^2 in float64 (F includes the constant column)."""

    def __init__(self, feature_dim: int, out_dim: int, device: torch.device, with_constant: bool) -> None:
        self.with_constant = with_constant
        size = feature_dim + int(with_constant)
        self.gram = torch.zeros(size, size, dtype=torch.float64, device=device)
        self.cross = torch.zeros(size, out_dim, dtype=torch.float64, device=device)
        self.target_energy = 0.0
        self.count = 0

    def add(self, features: Tensor, targets: Tensor, weights: Tensor | None = None) -> None:
        design = features.to(torch.float64)
        if self.with_constant:
            design = torch.cat([torch.ones_like(design[:, :1]), design], dim=1)
        targets = targets.to(torch.float64)
        weights = None if weights is None else weights.to(design).reshape(-1, 1)
        weighted = design if weights is None else design * weights
        self.gram += weighted.t() @ design
        self.cross += weighted.t() @ targets
        squares = targets.square() if weights is None else targets.square() * weights
        self.target_energy += float(squares.sum())
        self.count += features.shape[0]

    def solve(self, ridge: float) -> Tensor:
        """Stacked [c; A^T] (or A^T); the ridge (relative to the mean diagonal) spares the constant."""
        penalty = torch.full(
            (self.gram.shape[0],),
            ridge * float(self.gram.diagonal().mean()),
            dtype=torch.float64,
            device=self.gram.device,
        )
        if self.with_constant:
            penalty[0] = 0.0
        system = self.gram + torch.diag(penalty)
        if ridge > 0:
            return torch.linalg.solve(system, self.cross)
        return torch.linalg.lstsq(system, self.cross).solution  # tolerates a singular F^T F

    def relative_error(self, solution: Tensor) -> float:
        residual = (solution * (self.gram @ solution)).sum() - 2.0 * (solution * self.cross).sum() + self.target_energy
        return math.sqrt(max(float(residual), 0.0) / max(self.target_energy, 1e-300))


def _split(batch: Batch, teacher: Callable[[Tensor], Tensor] | None) -> tuple[Tensor, Tensor, Tensor | None]:
    weights = None
    if isinstance(batch, tuple | list):
        inputs, targets, *rest = batch
        weights = rest[0] if rest else None
        if weights is not None and not (torch.isfinite(weights).all() and (weights >= 0).all()):
            raise ValueError("point weights must be finite and >= 0")
    else:
        if teacher is None:
            raise ValueError("teacher is required when batches hold inputs only (not (inputs, targets) pairs)")
        inputs = batch
        with torch.no_grad():
            targets = teacher(batch)
    if not torch.isfinite(inputs).all() or not torch.isfinite(targets).all():
        raise ValueError("batches contain NaN or infinite values")
    return inputs, targets, weights


def _fit_readout(layer: nn.Module, features: Callable[[Tensor], Tensor], batches: Iterable[Batch],
                 teacher, ridge: float) -> tuple[float, float, int]:
    """Least-squares `layer.weight` / `layer.bias` (the read-out of `features`) in place; returns the
    relative error of the weights before and after the fit, and the number of inputs."""
    if not (math.isfinite(ridge) and ridge >= 0):
        raise ValueError(f"ridge must be a finite number >= 0, got {ridge!r}")
    device = layer.weight.device
    has_bias = layer.bias is not None
    equations = _NormalEquations(layer.weight.shape[1], layer.weight.shape[0], device, with_constant=has_bias)
    with torch.no_grad():
        for batch in batches:
            inputs, targets, weights = _split(batch, teacher)
            if targets.shape[-1] != layer.weight.shape[0]:
                raise ValueError(
                    f"targets have width {targets.shape[-1]}, expected out_features={layer.weight.shape[0]}"
                )
            equations.add(features(inputs.to(device)), targets.to(device), weights)
    if equations.count == 0:
        raise ValueError("batches is empty")
    solution = equations.solve(ridge)
    before = layer.weight.detach().t().to(torch.float64)
    if has_bias:
        before = torch.cat([layer.bias.detach().to(torch.float64)[None], before])
    with torch.no_grad():
        layer.weight.copy_(solution[int(has_bias) :].t().to(layer.weight.dtype))
        if has_bias:
            layer.bias.copy_(solution[0].to(layer.bias.dtype))
    return equations.relative_error(before), equations.relative_error(solution), equations.count


def fit_linear(layer: nn.Linear, batches: Iterable[tuple[Tensor, Tensor]], *, ridge: float = 1e-6) -> DistillReport:
    """Refit a dense `nn.Linear` in closed form to (inputs, targets) pairs, in place: the read-out of
    a distilled student (targets: the teacher's pre-activation outputs, inputs: the student's own)."""
    if not isinstance(layer, nn.Linear):
        raise ValueError(f"layer must be an nn.Linear, got {type(layer).__name__}")
    start = time.perf_counter()
    before, error, count = _fit_readout(layer, lambda inputs: inputs, batches, None, ridge)
    return DistillReport(error, count, time.perf_counter() - start, initial_relative_error=before)


def distill_linear(
    student: EUGenLinear,
    batches: Iterable[Batch] | Callable[[], Iterable[Batch]],
    teacher: Callable[[Tensor], Tensor] | nn.Module | None = None,
    *,
    ridge: float = 1e-6,
    refine_steps: int = 0,
    refine_lr: float = 1e-3,
) -> DistillReport:
    """Fit `student.weight` and `student.bias` to the teacher's outputs in closed form, in place.

    Args:
        student: the EUGen layer to fit; its projection G is kept.
        batches: input batches (N, d) (then `teacher` gives the targets) or (inputs, targets) pairs.
            Pass a callable returning a fresh iterable when `refine_steps` > 0 (it is read again).
        teacher: e.g. `nn.Sequential(linear, nn.ReLU())`; the layer being replaced.
        ridge: lambda, relative to the mean diagonal of F^T F; 0 gives the plain least squares.
        refine_steps: epochs of Adam on G and A (MSE) after the closed form ("trainable G").
    """
    if not isinstance(student, EUGenLinear):
        raise ValueError(f"student must be an EUGenLinear, got {type(student).__name__}")
    if student.linear_inputs:
        raise ValueError("distillation fits only the random features' weights: the student has linear_inputs")
    if refine_steps < 0:
        raise ValueError(f"refine_steps must be >= 0, got {refine_steps!r}")
    if refine_steps > 0 and not callable(batches):
        raise ValueError("batches must be a callable returning an iterable when refine_steps > 0")
    if refine_steps > 0 and not student.store_projection:
        raise ValueError("refine_steps > 0 changes G: the student needs store_projection=True to keep it")
    start = time.perf_counter()
    _, error, count = _fit_readout(student, student.features, batches() if callable(batches) else batches, teacher,
                                   ridge)
    report = DistillReport(error, count, 0.0)
    if refine_steps > 0:
        report.refined_relative_error = _refine(student, batches, teacher, refine_steps, refine_lr)
    report.seconds = time.perf_counter() - start
    return report


def _refine(student: EUGenLinear, batches: Callable[[], Iterable[Batch]], teacher, steps: int, lr: float) -> float:
    """Gradient refinement of G and A on the layer's MSE; returns the final relative error."""
    was_trainable = student.projection.requires_grad
    projection = student.projection
    if not isinstance(projection, nn.Parameter):
        # Temporarily train G: a fixed buffer becomes a parameter-like leaf for the optimiser.
        projection.requires_grad_(True)
    params = [projection, student.weight] + ([student.bias] if student.bias is not None else [])
    optimiser = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        for batch in batches():
            inputs, targets, _ = _split(batch, teacher)
            optimiser.zero_grad(set_to_none=True)
            loss = (student(inputs) - targets).square().mean()
            loss.backward()
            optimiser.step()
    projection.requires_grad_(was_trainable)
    error = energy = 0.0
    with torch.no_grad():
        for batch in batches():
            inputs, targets, _ = _split(batch, teacher)
            error += float((student(inputs) - targets).square().sum())
            energy += float(targets.square().sum())
    return math.sqrt(error / max(energy, 1e-300))
