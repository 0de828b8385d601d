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
from jaxtyping import Float
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

    def design(self, features: Tensor) -> Tensor:
        """F: the features in float64, after the constant column when there is one."""
        design = features.to(torch.float64)
        return torch.cat([torch.ones_like(design[:, :1]), design], dim=1) if self.with_constant else design

    def add(self, features: Tensor, targets: Tensor, weights: Tensor | None = None) -> None:
        design = self.design(features)
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
    before = _stacked(layer)
    _assign(layer, solution)
    return equations.relative_error(before), equations.relative_error(solution), equations.count


def _stacked(layer: nn.Module) -> Tensor:
    """The layer's [c; A^T] (or A^T) in float64, as `_NormalEquations.solve` returns it."""
    stacked = layer.weight.detach().t().to(torch.float64)
    return stacked if layer.bias is None else torch.cat([layer.bias.detach().to(torch.float64)[None], stacked])


@torch.no_grad()
def _assign(layer: nn.Module, solution: Tensor) -> None:
    """Copy a stacked [c; A^T] (or A^T) into the layer's weight and bias."""
    has_bias = layer.bias is not None
    layer.weight.copy_(solution[int(has_bias) :].t().to(layer.weight.dtype))
    if has_bias:
        layer.bias.copy_(solution[0].to(layer.bias.dtype))


def fit_linear(layer: nn.Linear, batches: Iterable[Batch], *, ridge: float = 1e-6, floor: float | None = None,
               iterations: int = 30) -> DistillReport:
    """Refit a dense `nn.Linear` in closed form to (inputs, targets[, point weights]) pairs, in place:
    the read-out of a distilled student (targets: the teacher's pre-activation outputs, inputs: the
    student's own).

    With a `floor`, a target below it only asks the output to stay below it too (a one-sided least
    squares: a raw density of -60 and one of -6 both mean empty space, and fitting them exactly would
    spend the fit on them): from the better of the least squares to the clamped targets and the layer's
    own weights, `iterations` least-squares solves, each with those targets moved to min(current output,
    floor), which lowers the one-sided loss at every solve."""
    if not isinstance(layer, nn.Linear):
        raise ValueError(f"layer must be an nn.Linear, got {type(layer).__name__}")
    start = time.perf_counter()
    if floor is None:
        before, error, count = _fit_readout(layer, lambda inputs: inputs, batches, None, ridge)
        return DistillReport(error, count, time.perf_counter() - start, initial_relative_error=before)
    if not math.isfinite(floor) or iterations < 1:
        raise ValueError(f"floor must be finite and iterations >= 1, got {floor!r}, {iterations!r}")
    if not (math.isfinite(ridge) and ridge >= 0):
        raise ValueError(f"ridge must be a finite number >= 0, got {ridge!r}")
    data = [_split(batch, None) for batch in batches]
    if not data:
        raise ValueError("batches is empty")
    device = layer.weight.device
    equations = _NormalEquations(layer.weight.shape[1], layer.weight.shape[0], device,
                                 with_constant=layer.bias is not None)
    for _, targets, _ in data:
        if targets.shape[-1] != layer.weight.shape[0]:
            raise ValueError(f"targets have width {targets.shape[-1]}, expected out_features={layer.weight.shape[0]}")
    design = equations.design(torch.cat([inputs for inputs, _, _ in data]).to(device))
    targets = torch.cat([batch_targets for _, batch_targets, _ in data]).to(device, torch.float64)
    weights = torch.cat([torch.ones(len(inputs)) if batch_weights is None else batch_weights.reshape(-1).cpu()
                         for inputs, _, batch_weights in data]).to(design)[:, None]
    weighted = (design * weights).t()
    equations.gram = weighted @ design  # F^T W F, the same in every solve: only the targets move

    def one_sided(solution: Tensor) -> float:
        out = design @ solution
        miss = torch.where(targets > floor, out - targets, (out - floor).clamp_min(0))
        energy = (targets.clamp_min(floor).square() * weights).sum()
        return math.sqrt(float((miss.square() * weights).sum()) / max(float(energy), 1e-300))

    initial = _stacked(layer)
    before = one_sided(initial)
    equations.cross = weighted @ targets.clamp_min(floor)
    current = equations.solve(ridge)  # the plain least squares to the targets clamped at the floor
    if one_sided(current) > before:  # the layer's own weights are the better start
        current = initial
    for _ in range(iterations):  # each solve lowers the one-sided loss of the one before
        equations.cross = weighted @ torch.where(targets > floor, targets, (design @ current).clamp_max(floor))
        current = equations.solve(ridge)
    if one_sided(current) > before:  # with a ridge the solves lower the penalised loss, not quite this one
        current = initial
    _assign(layer, current)
    # the error reported is the one-sided one: below the floor only an output above it counts
    return DistillReport(one_sided(current), len(design), time.perf_counter() - start, initial_relative_error=before)


def distill_linear(
    student: EUGenLinear,
    batches: Iterable[Batch] | Callable[[], Iterable[Batch]],
    teacher: Callable[[Tensor], Tensor] | nn.Module | None = None,
    *,
    ridge: float = 1e-6,
    refine_steps: int = 0,
    refine_lr: float = 1e-3,
    projection: str = "random",
    emphasis: Tensor | Callable[[Tensor], Tensor] | None = None,
    emphasis_weight: float = 1.0,
    target_metric: Tensor | None = None,
    quadratic_basis: int = 24,
) -> DistillReport:
    """Fit `student.weight` and `student.bias` to the teacher's outputs in closed form, in place.

    Args:
        student: the EUGen layer to fit.
        batches: input batches (N, d) (then `teacher` gives the targets) or (inputs, targets) pairs.
            Pass a callable returning a fresh iterable when `refine_steps` > 0 (it is read again).
        teacher: e.g. `nn.Sequential(linear, nn.ReLU())`; the layer being replaced.
        ridge: lambda, relative to the mean diagonal of F^T F; 0 gives the plain least squares.
        refine_steps: epochs of Adam on G and A (MSE) after the closed form ("trainable G").
        projection: "random" keeps the student's G; "fitted" first replaces its order-1 and order-2
            blocks by directions chosen from the data in closed form (`fitted_projection`).
        emphasis: with "fitted", the outputs downstream of this layer that matter most (e.g. a NeRF's
            raw density), one row per input row of the batches in order, or a map of the targets to
            them (e.g. the density head).
        emphasis_weight: the emphasis columns together weigh this many times all targets together.
        target_metric: with "fitted", an (l, r) factor S: the projections are chosen for the targets Y S,
            i.e. to fit the targets in the metric S S^T (e.g. how much each direction of the layer's
            output moves what reaches the pixels) instead of the Euclidean one.
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
    if projection not in ("random", "fitted"):
        raise ValueError(f"projection must be random or fitted, got {projection!r}")
    if projection == "fitted" and not student.store_projection:
        raise ValueError("projection='fitted' changes G: the student needs store_projection=True to keep it")
    start = time.perf_counter()
    if projection == "fitted":  # the data is read twice: once for G, once for A
        cached = [_split(batch, teacher) for batch in (batches() if callable(batches) else batches)]
        with torch.no_grad():
            chosen = fitted_projection(student, cached, emphasis, emphasis_weight=emphasis_weight,
                                       target_metric=target_metric, quadratic_basis=quadratic_basis)
            student.projection.copy_(chosen.to(student.projection))
        batches = (lambda: iter(cached)) if callable(batches) else cached  # (inputs, targets, weights or None)
        teacher = None
    _, error, count = _fit_readout(student, student.features, batches() if callable(batches) else batches, teacher,
                                   ridge)
    report = DistillReport(error, count, 0.0)
    if refine_steps > 0:
        report.refined_relative_error = _refine(student, batches, teacher, refine_steps, refine_lr)
    report.seconds = time.perf_counter() - start
    return report


def _unit_rms(rows: Tensor, inputs: Tensor, weights: Tensor) -> Tensor:
    """Rows rescaled so that their projections of the inputs have weighted mean square 1."""
    mean_square = ((inputs @ rows.t()).square() * weights[:, None]).sum(0) / weights.sum()
    return rows / mean_square.sqrt().clamp_min(1e-12)[:, None]


@torch.no_grad()
def fitted_projection(
    layer: EUGenLinear,
    batches: list[tuple[Tensor, Tensor, Tensor | None]],
    emphasis: Tensor | Callable[[Tensor], Tensor] | None = None,
    *,
    emphasis_weight: float = 1.0,
    target_metric: Tensor | None = None,
    max_points: int = 65_536,
    quadratic_basis: int = 24,
    seed: int = 0,
) -> Float[Tensor, "rows augmented"]:
    """A projection G for `layer` chosen from (inputs, targets, weights) in closed form (eugen-math.md §3,
    "Fitted projections"); the blocks above order 2 keep the layer's rows.

    Order 1: the m directions of x+ that predict the targets best in a rank-m linear map (reduced-rank
    regression: the top singular directions of the least-squares fit). Order 2 (both factors alike,
    so each feature is a square (u.x+)^2): in the span of the `quadratic_basis` principal directions
    of x+, the quadratic forms that fit what the order-1 part leaves, one per target, are combined
    and their m leading eigen-directions kept.
    """
    inputs = torch.cat([batch[0] for batch in batches])
    targets = torch.cat([batch[1] for batch in batches])
    weights = torch.cat([torch.ones(len(batch[0])) if batch[2] is None else batch[2].reshape(-1).cpu()
                         for batch in batches])
    if torch.is_tensor(emphasis) and len(emphasis) != len(inputs):
        raise ValueError(f"emphasis has {len(emphasis)} rows, the batches {len(inputs)}")
    if len(inputs) > max_points:
        keep = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(seed))[:max_points]
        inputs, targets, weights = inputs[keep], targets[keep], weights[keep]
        emphasis = emphasis[keep.to(emphasis.device)] if torch.is_tensor(emphasis) else emphasis
    device = layer.projection.device
    # the point-sized products run in float32 (they only choose directions); the small systems in float64
    augmented = layer.augmented_input(inputs.to(device, torch.float32))
    targets = targets.to(device, torch.float32)
    extra = None
    if emphasis is not None:
        extra = (emphasis if torch.is_tensor(emphasis) else emphasis(targets.to(inputs.dtype)))
        extra = extra.to(device, torch.float32).reshape(len(targets), -1)
    if target_metric is not None:
        targets = targets @ target_metric.to(device, torch.float32)
    if extra is not None:
        scale = (emphasis_weight * targets.var(0).sum() / extra.var(0).sum().clamp_min(1e-30)).sqrt()
        targets = torch.cat([targets, extra * scale], dim=1)
    weights = weights.to(device, torch.float32)
    root = (weights / weights.mean()).sqrt()[:, None]
    centred_x = (augmented - (augmented * root.square()).mean(0)) * root
    centred_y = (targets - (targets * root.square()).mean(0)) * root
    m = layer.num_features
    gram = (centred_x.t() @ centred_x).double()
    ridge = 1e-6 * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype, device=device)
    coefficients = torch.linalg.solve(gram + ridge, (centred_x.t() @ centred_y).double())  # [d+, l]
    # top right singular vectors of the fit X B, from (XB)^T XB = B^T (X^T X) B without forming XB
    directions = torch.linalg.eigh(coefficients.t() @ gram @ coefficients).eigenvectors[:, -m:]
    projection = layer.projection.detach().to(torch.float64).clone()
    augmented, weights = augmented.double(), weights.double()  # for the row scales and the quadratic basis
    # fewer directions than m (a narrow layer) leave the remaining rows random
    projection[: directions.shape[1]] = _unit_rms((coefficients @ directions).t(), augmented, weights)
    if layer.order >= 2:
        # the quadratic fit has K(K+1)/2 unknowns per target: a quarter of the points is plenty
        part = slice(0, max_points // 4)
        residual = centred_y[part].double() - centred_x[part].double() @ coefficients @ directions @ directions.t()
        basis_size = min(max(quadratic_basis, m), len(gram))
        basis = torch.linalg.eigh(gram).eigenvectors[:, -basis_size:].t()  # [K, d+] principal directions
        z = augmented[part] @ basis.t()
        root = root[part].double()
        upper = torch.triu_indices(basis_size, basis_size, device=device)
        design = torch.cat([torch.ones_like(z[:, :1]), z, z[:, upper[0]] * z[:, upper[1]]], dim=1) * root
        normal = design.t() @ design
        normal += 1e-8 * normal.diagonal().mean() * torch.eye(len(normal), dtype=normal.dtype, device=device)
        quadratic = torch.linalg.solve(normal, design.t() @ residual)[1 + basis_size:]  # [K(K+1)/2, l]
        forms = torch.zeros(residual.shape[1], basis_size, basis_size, dtype=torch.float64, device=device)
        forms[:, upper[0], upper[1]] = quadratic.t()
        forms = 0.5 * (forms + forms.transpose(1, 2))
        leading = torch.linalg.eigh((forms @ forms).sum(0)).eigenvectors[:, -m:].t()  # [m, K]
        rows = _unit_rms(leading @ basis, augmented, weights)
        projection[m : m + len(rows)] = rows
        projection[2 * m : 2 * m + len(rows)] = rows
    return projection


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
