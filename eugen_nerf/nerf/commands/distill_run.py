"""`eugen distill`: a trained dense NeRF run -> an EUGen run, without backpropagation (docs/eugen-math.md §3).

The student is the teacher's architecture with EUGen layers at the chosen indices; every other weight
(encodings, hash grids, dense layers, heads) is copied. Each network with EUGen layers is fitted: the
NeRF fields (eugen-nerf's coarse and fine, the proposal methods' one field), the proposal MLPs
(eugen-mipnerf360, eugen-zipnerf) and a D-NeRF's deformation MLP. Their EUGen layers are fitted one
after the other by the closed form of `distill_linear` (by default on projections chosen from the data,
`fitted_projection`), on points sampled along training rays the way the teacher samples them (eugen-nerf:
uniform, then the coarse field's PDF; the proposal methods: each proposal level's samples for its MLP
and the last level's for the field; a D-NeRF's samples moved by the teacher's deformation, whose
network is fitted on the samples' positions and times), each layer on the student's *own* inputs, i.e.
after the layers before it were distilled, against the teacher's own activation at that layer (so that
earlier errors do not compound); the dense layers after the first EUGen layer, up to the density and
RGB outputs, are refitted the same way against the teacher's pre-activation outputs (right after a
least-squares EUGen layer that refit changes little, docs/eugen-math.md §3). --targets layer fits each
layer to the teacher layer applied to the student's input instead. Then the pixel refit
(`distill_pixels`) refits the rendered field's density and RGB heads so that the student's own renders
of training rays match the training images (or the teacher's renders), each step a least squares.

Optionally (--finetune-steps) the distilled student is then fine-tuned end to end on the teacher's
training images (photometric loss, Adam: backpropagation).
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch
import tyro
from rich.console import Console
from rich.table import Table
from torch import nn

from eugen_nerf.errors import InputError, check_flag_choice
from eugen_nerf.layers.distill import distill_linear, fit_linear
from eugen_nerf.layers.eugen import EUGenLinear
from eugen_nerf.nerf.commands.distill_pixels import PixelRefit
from eugen_nerf.nerf.commands.distill_report import evaluate_student
from eugen_nerf.nerf.engine.checkpoints import checkpoint_path, latest_checkpoint, save_atomically
from eugen_nerf.nerf.engine.runs import eval_setup_of, read_run_config

SUPPORTED = ("eugen-nerf", "eugen-dnerf", "eugen-mipnerf360", "eugen-zipnerf", "vanilla-nerf")


def load_teacher_config(path: Path):
    """The dense run's TrainerConfig, refusing what cannot be distilled before anything is loaded."""
    config = read_run_config(path, "--load-config")
    method = getattr(config, "method_name", None)
    if method not in SUPPORTED:
        raise InputError(f"{path}: method {method!r} cannot be distilled; supported: {', '.join(SUPPORTED)}")
    if getattr(config.pipeline.model, "layer", "dense") != "dense":
        raise InputError(f"{path}: already an EUGen run (--pipeline.model.layer eugen); distill a dense run")
    latest_checkpoint(config.get_checkpoint_dir())  # one-line error when there is none
    return config


def student_config(teacher, distill: Distill):
    """The teacher's method (eugen-nerf for vanilla-nerf) with its architecture and data, EUGen layers as asked."""
    from eugen_nerf.nerf.methods.nerf import EUGenNeRFModelConfig
    from eugen_nerf.nerf.methods.registry import eugen_nerf

    config = copy.deepcopy(teacher)
    if teacher.method_name == "vanilla-nerf":
        shared = {f.name: getattr(teacher.pipeline.model, f.name) for f in dataclasses.fields(teacher.pipeline.model)
                  if f.name != "_target" and f.init}
        config.pipeline.model = EUGenNeRFModelConfig(**shared)
        config.optimizers = copy.deepcopy(eugen_nerf.config.optimizers)
    model = config.pipeline.model
    model.layer = "eugen"
    if distill.eugen_base_layers is not None:
        model.eugen_base_layers = tuple(distill.eugen_base_layers)
    if distill.eugen_head_layers is not None:
        model.eugen_head_layers = tuple(distill.eugen_head_layers)
    for name in ("eugen_deformation_layers", "eugen_proposal_layers"):
        if getattr(distill, name) is not None and hasattr(model, name):
            setattr(model, name, tuple(getattr(distill, name)))
    model.eugen = dataclasses.replace(model.eugen, order=distill.order, num_features=distill.feature_count(),
                                      seed=distill.seed, soft_normalize=distill.soft_normalize)
    model.__post_init__()
    config.method_name = "eugen-nerf" if teacher.method_name == "vanilla-nerf" else teacher.method_name
    config.load_dir = config.load_checkpoint = None
    return config


def training_rays(model, cameras, num_rays: int, generator: torch.Generator):
    """`num_rays` rays through random points of random training pixels, clipped by the model's collider:
    the ray bundle (on the model's device), each ray's camera index (rays, 1) and its (row, column) in
    pixels (rays, 2), on the CPU where the generator and the images are."""
    cameras = cameras.to("cpu")
    index = torch.randint(len(cameras), (num_rays, 1), generator=generator)
    heights, widths = cameras.height[index[:, 0]].float(), cameras.width[index[:, 0]].float()
    coords = torch.cat([torch.rand(num_rays, 1, generator=generator) * heights,
                        torch.rand(num_rays, 1, generator=generator) * widths], dim=-1)
    bundle = model.collider(cameras.generate_rays(camera_indices=index, coords=coords).to(model.device))
    return bundle, index, coords


def training_samples(model, cameras, num_rays: int, generator: torch.Generator) -> dict:
    """The samples each fitted network of the model sees on `num_rays` random training pixels (samples_of)."""
    return samples_of(model, training_rays(model, cameras, num_rays, generator)[0])


@torch.no_grad()
def samples_of(model, bundle) -> dict:
    """The samples each network of the model sees on a ray bundle, by its path in the model: eugen-nerf's
    coarse and fine RaySamples (a D-NeRF's moved by the model's deformation, and then `temporal_distortion`:
    (N, 4) sample positions before the move and times, coarse then fine); a proposal method's `field`
    samples and each proposal level's (`proposal_networks.L`)."""
    if hasattr(model, "proposal_sampler"):
        proposals = list(model.proposal_networks)
        samples, _, samples_list = model.proposal_sampler(bundle, density_fns=proposals)
        return {"field": samples, **{f"proposal_networks.{level}": samples_list[level]
                                     for level in range(len(proposals))}}
    return coarse_and_fine_samples(model, bundle)


def coarse_and_fine_samples(model, bundle) -> dict:
    """eugen-nerf's and eugen-dnerf's samples (samples_of)."""
    from nerfstudio.field_components.field_heads import FieldHeadNames

    deformation_inputs = []

    def deform(samples) -> None:  # as NeRFModel.get_outputs does before each field
        if model.temporal_distortion is not None:
            positions = samples.frustums.get_positions()
            deformation_inputs.append(torch.cat([positions, samples.times.expand(*positions.shape[:-1], 1)], -1))
            samples.frustums.set_offsets(model.temporal_distortion(positions, samples.times))

    coarse = model.sampler_uniform(bundle)
    deform(coarse)
    weights = coarse.get_weights(model.field_coarse.forward(coarse)[FieldHeadNames.DENSITY])
    fine = model.sampler_pdf(bundle, coarse, weights)
    deform(fine)
    samples = {"field_coarse": coarse, "field_fine": fine}
    if deformation_inputs:
        samples["temporal_distortion"] = torch.cat([inputs.reshape(-1, 4) for inputs in deformation_inputs])
    return samples


def is_deformation(module) -> bool:
    return hasattr(module, "mlp_deform")


def is_proposal(module) -> bool:
    from eugen_nerf.nerf.components.proposal_sampler import ProposalDensityField

    return isinstance(module, ProposalDensityField)


def is_sdf(module) -> bool:
    from eugen_nerf.isdf.network import SDFNetwork

    return isinstance(module, SDFNetwork)


def is_single_mlp(module) -> bool:
    """A network that is its encoding and one MLP: a proposal MLP, or iSDF's SDF network."""
    return is_proposal(module) or is_sdf(module)


def single_mlp_path(module) -> str:
    """Where a deformation network's or single-MLP network's MLP sits in it."""
    return "mlp_deform" if is_deformation(module) else "mlp"


def mlps_of(module) -> list:
    if is_deformation(module) or is_single_mlp(module):
        return [module.get_submodule(single_mlp_path(module))]
    return [module.mlp_base, module.mlp_head]


def density_readout(module) -> tuple[str, float] | None:
    """The layer whose output, plus the returned shift, is a density network's raw density (before its
    activation); None for a deformation or SDF network."""
    if is_deformation(module) or is_sdf(module):
        return None
    if is_proposal(module):
        return f"mlp.layers.{len(module.mlp.layers) - 1}", -1.0
    return "field_output_density.net", float(getattr(module, "density_bias", 0.0))


def fit_points(module) -> list[str]:
    """Names of the layers a student network fits, in the order data flows through them: its EUGen layers
    and every dense linear layer after the first of them (the read-outs, up to the density and RGB
    heads, a proposal MLP's density layer, an SDF network's output or the deformation's offset layer)."""
    if is_deformation(module) or is_single_mlp(module):
        (mlp,) = mlps_of(module)
        names = [f"{single_mlp_path(module)}.layers.{i}" for i in range(len(mlp.layers))]
    else:
        names = [f"mlp_base.layers.{i}" for i in range(len(module.mlp_base.layers))] + ["field_output_density.net"]
        names += [f"mlp_head.layers.{i}" for i in range(len(module.mlp_head.layers))] + ["field_heads.0.net"]
    first = next((i for i, name in enumerate(names) if isinstance(module.get_submodule(name), EUGenLinear)),
                 len(names))
    return names[first:]


def activation_slot(module, name: str) -> tuple[nn.Module, str, int] | None:
    """Where the activation after MLP layer `name` lives: (its MLP, the attribute holding it, which call
    of it follows this layer): `activation` at the layer's index-th call, or the last layer's
    `out_activation`; None for a head."""
    prefix, _, index = name.rpartition(".layers.")
    if not index.isdigit():
        return None
    mlp = module.get_submodule(prefix)
    return (mlp, "activation", int(index)) if int(index) < len(mlp.layers) - 1 else (mlp, "out_activation", 0)


def activation_after(module, name: str):
    """The activation a network applies to the output of its MLP layer `name` (None for a head)."""
    slot = activation_slot(module, name)
    return None if slot is None else getattr(slot[0], slot[1])


def trace(module, samples) -> None:
    """Run a NeRF field (this package's or nerfstudio's) or a proposal MLP on RaySamples, a deformation
    network on (N, 4) positions and times, or an SDF network on (N, 3) points, calling each of its
    linear layers, heads included, as a module, so that forward hooks on them fire; its MLPs must run
    layer by layer."""
    if is_deformation(module):
        module(samples[:, :3], samples[:, 3:])
        return
    if is_sdf(module):
        module(samples)
        return
    if is_proposal(module):
        module.mlp(module.encoding(samples))
        return
    if hasattr(module, "encode_positions"):
        encoded = module.encode_positions(samples)
    else:  # nerfstudio's NeRFField (vanilla-nerf)
        positions = samples.frustums.get_positions()
        if module.spatial_distortion is not None:
            positions = module.spatial_distortion(positions)
        encoded = module.position_encoding(positions)
    base = module.mlp_base(encoded)
    module.field_output_density.net(base)
    head = module.mlp_head(torch.cat([module.direction_encoding(samples.frustums.directions), base], -1))
    for field_head in module.field_heads:
        field_head.net(head)


class _Captured(Exception):  # noqa: N818 - control flow, not an error: ends a trace at the hooked layer
    def __init__(self, value: torch.Tensor) -> None:
        self.value = value


@torch.no_grad()
def captured(field_module, samples, name: str, which: int) -> torch.Tensor:
    """The input (which=0) or output (which=1) of layer `name` when `field_module` runs on `samples`;
    the trace stops there, so the layers after it are not evaluated."""

    def stop(_module, args, out):
        raise _Captured((args[0], out)[which].detach())

    hook = field_module.get_submodule(name).register_forward_hook(stop)
    try:
        trace(field_module, samples)
    except _Captured as capture:
        return capture.value
    finally:
        hook.remove()
    raise RuntimeError(f"{name} was not called by the field's trace")


@torch.no_grad()
def point_weights(teacher_module, samples, distill: Distill) -> torch.Tensor:
    """One weight per sample of a density network (a NeRF field or a proposal MLP). render: its render
    weight under the teacher plus the mean render weight, so that the fits favour the points that reach
    pixels and still see empty space; active: 1 where the teacher's raw density is above --active-above,
    --empty-weight elsewhere (empty space needs only to stay empty, and is most of the samples)."""
    flat = samples.reshape(-1)
    chunks = range(0, len(flat), distill.chunk)
    if distill.weights == "active":
        readout, shift = density_readout(teacher_module)
        raw = torch.cat([captured(teacher_module, flat[start : start + distill.chunk], readout, 1)
                         for start in chunks]).reshape(-1) + shift
        active = raw > distill.active_above
        if distill.empty_weight == 0 and not active.any():
            raise InputError(f"--weights active: no sample has a teacher raw density above --active-above "
                             f"{distill.active_above} (highest {float(raw.max()):.1f}); lower it or set --empty-weight")
        return torch.where(active, 1.0, distill.empty_weight)
    density = torch.cat([density_of(teacher_module, flat[start : start + distill.chunk]) for start in chunks])
    weights = samples.get_weights(density.reshape(*samples.shape, 1)).reshape(-1)
    return weights + weights.mean()


def density_of(module, samples) -> torch.Tensor:
    from nerfstudio.field_components.field_heads import FieldHeadNames

    return module(samples) if is_proposal(module) else module.forward(samples)[FieldHeadNames.DENSITY]


def emphasis_of(student_module, teacher_module, name: str, distill: Distill):
    """For the last EUGen layer before an output, the teacher's output layer on the layer's targets (the
    raw density, clamped at --density-floor, the RGB logits, the SDF, or the deformation's offset): what reaches
    the pixels, which its fitted projection must keep. Earlier layers get none (emphasising the density
    there too measured worse)."""
    if is_deformation(student_module) or density_readout(student_module) is None:
        (mlp,) = mlps_of(teacher_module)
        last = len(mlp.layers) - 1
        return mlp.layers[last] if name == f"{single_mlp_path(student_module)}.layers.{last - 1}" else None
    readout, shift = density_readout(student_module)
    if is_proposal(student_module):
        before_density = f"mlp.layers.{len(student_module.mlp.layers) - 2}"
    else:
        before_density = f"mlp_base.layers.{len(student_module.mlp_base.layers) - 1}"
        if name == f"mlp_head.layers.{len(student_module.mlp_head.layers) - 1}":
            return teacher_module.field_heads[0].net
    if name != before_density:
        return None
    head, floor = teacher_module.get_submodule(readout), distill.density_floor
    return lambda targets: head(targets) if floor is None else (head(targets) + shift).clamp_min(floor)


class _Perturbed(nn.Module):
    """An activation that adds `delta` to its output at its `at`-th call (a gradient probe)."""

    def __init__(self, activation: nn.Module | None, at: int) -> None:
        super().__init__()
        self.activation, self.at, self.calls, self.delta = activation, at, 0, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.activation is None else self.activation(x)
        if self.calls == self.at:
            self.delta = torch.zeros_like(y, requires_grad=True)
            y = y + self.delta
        self.calls += 1
        return y


def downstream_metric(teacher_module, samples, name: str, weights: torch.Tensor | None, distill: Distill,
                      max_points: int = 16_384) -> torch.Tensor | None:
    """A factor S (S S^T = the metric, [l, l]) in which to fit layer `name`'s output (docs/eugen-math.md §3,
    "Downstream metric"): sum over fitting points of w J^T J, J the teacher's raw density and colour
    (sigmoid of the logits) by that output, each part scaled to trace 1, mixed with the identity
    (--metric-mix); None for a deformation or SDF network."""
    readout = density_readout(teacher_module)
    if readout is None:
        return None
    heads = {"density": readout[0]} | ({} if is_proposal(teacher_module) else {"rgb": "field_heads.0.net"})
    mlp, slot, call = activation_slot(teacher_module, name)  # the probe goes after the layer's activation
    original = getattr(mlp, slot)
    probe = _Perturbed(original, call)
    flat = samples if torch.is_tensor(samples) else samples.reshape(-1)
    point_weights = torch.ones(len(flat)) if weights is None else weights.reshape(-1).cpu()
    # a seeded random subset of the points that weigh anything (a stride could alias with the samples per ray)
    counted = torch.nonzero(point_weights > 0).reshape(-1)
    picked = counted[torch.randperm(len(counted), generator=torch.Generator().manual_seed(distill.seed))[:max_points]]
    outputs: dict[str, torch.Tensor] = {}
    metrics: dict[str, torch.Tensor] = {}
    hooks = []
    try:
        for key, path in heads.items():
            hooks.append(teacher_module.get_submodule(path).register_forward_hook(
                lambda _module, _args, out, key=key: outputs.__setitem__(key, out)))
        setattr(mlp, slot, probe)
        for start in range(0, len(picked), distill.chunk):
            rows = picked[start : start + distill.chunk]
            probe.calls, probe.delta = 0, None
            with torch.enable_grad():
                trace(teacher_module, flat[rows.to(flat.device) if torch.is_tensor(flat) else rows])
                if probe.delta is None:
                    raise RuntimeError(f"{name}: the teacher's MLP did not call its {slot} for this layer")
                root = point_weights[rows].to(probe.delta).sqrt()[:, None]
                for key, out in outputs.items():
                    # colour, not logits: a saturated logit's error does not show
                    colour = torch.sigmoid(out.detach())
                    scale = colour * (1 - colour) if key == "rgb" else torch.ones_like(colour)
                    for channel in range(out.shape[-1]):
                        (gradient,) = torch.autograd.grad(out[..., channel].sum(), probe.delta, retain_graph=True,
                                                          allow_unused=True)
                        if gradient is None:  # a view-head layer does not move the density
                            continue
                        gradient = gradient.reshape(len(rows), -1) * scale[..., channel].reshape(-1, 1)
                        gradient = (gradient * root).double()
                        metrics[key] = metrics.get(key, 0) + gradient.t() @ gradient
    finally:
        setattr(mlp, slot, original)
        for hook in hooks:
            hook.remove()
    parts = [metric / metric.trace() for metric in metrics.values() if float(metric.trace()) > 0]
    return _metric_factor(sum(parts) / len(parts), distill.metric_mix) if parts else None


def _metric_factor(metric: torch.Tensor, mix: float) -> torch.Tensor:
    """S with S S^T = the metric (trace 1) mixed with the identity (trace 1) in the share `mix`."""
    size = len(metric)
    metric = (1 - mix) * metric + mix * torch.eye(size, dtype=metric.dtype, device=metric.device) / size
    values, vectors = torch.linalg.eigh(metric)
    return ((vectors * values.clamp_min(0).sqrt()) @ vectors.t()).float()


def fit_pairs(student_field, teacher_field, samples, name: str, chunk: int, targets: str,
              weights: torch.Tensor | None = None):
    """(student input, teacher target[, point weight]) of layer `name`, chunk by chunk; an EUGen layer's
    target is the teacher layer's output after the activation that follows it (an EUGen layer includes
    its own), a dense read-out's the teacher layer's pre-activation output."""
    activation = activation_after(teacher_field, name) if isinstance(student_field.get_submodule(name),
                                                                      EUGenLinear) else None
    flat = samples if torch.is_tensor(samples) else samples.reshape(-1)
    for start in range(0, len(flat), chunk):
        part = flat[start : start + chunk]
        inputs = captured(student_field, part, name, 0)
        if targets == "teacher":  # the teacher's own activation there: errors of earlier layers do not compound
            outputs = captured(teacher_field, part, name, 1)
        else:  # the teacher layer on the student's input
            outputs = teacher_field.get_submodule(name)(inputs)
        outputs = activation(outputs) if activation is not None else outputs
        yield (inputs, outputs) if weights is None else (inputs, outputs, weights[start : start + chunk])


def fit_module(student_module, teacher_module, samples, distill: Distill, weights: torch.Tensor | None) -> list[dict]:
    """Fit a student network's layers one after the other (fit_points); returns one report per layer."""
    fits = []
    readout = density_readout(student_module)
    for mlp in mlps_of(student_module):
        mlp.bundle = "never"  # layer by layer, so each layer's input can be captured
    try:
        for name in fit_points(student_module):
            layer = student_module.get_submodule(name)
            # the floor is on the raw density, the layer's output plus the network's shift
            floor = None
            if distill.density_floor is not None and readout is not None and name == readout[0]:
                floor = distill.density_floor - readout[1]
            layer_weights = weights
            if floor is not None and weights is not None and distill.weights == "active":
                # one-sided, the empty points only keep the density below the floor; left out, the
                # student's density there is whatever its features extrapolate to
                layer_weights = torch.where(weights > 0, weights, distill.floor_weight)
            pairs = lambda name=name, w=layer_weights: fit_pairs(  # noqa: E731
                student_module, teacher_module, samples, name, distill.chunk, distill.targets, w)
            if isinstance(layer, EUGenLinear):
                refine = distill.refine_steps
                if refine:  # refinement reads the pairs once per epoch: trace them once
                    cached = list(pairs())
                    pairs = lambda cached=cached: iter(cached)  # noqa: E731
                metric = None
                if distill.target_metric != "identity" and distill.projection_kind() == "fitted":
                    metric = downstream_metric(teacher_module, samples, name, layer_weights, distill)
                report = distill_linear(layer, pairs if refine else pairs(), ridge=distill.ridge, refine_steps=refine,
                                        projection=distill.projection_kind(), target_metric=metric,
                                        quadratic_basis=distill.quadratic_basis,
                                        emphasis=emphasis_of(student_module, teacher_module, name, distill),
                                        emphasis_weight=distill.emphasis_weight)
            elif distill.targets == "teacher":  # against the teacher layer on the student's input it is exact
                report = fit_linear(layer, pairs(), ridge=distill.ridge, floor=floor)
            else:
                continue
            fits.append({"layer": name, "kind": "eugen" if isinstance(layer, EUGenLinear) else "dense read-out",
                         "relative_error_before": report.initial_relative_error,
                         "relative_error": report.relative_error,
                         "refined_relative_error": report.refined_relative_error,
                         "points": report.num_inputs, "seconds": report.seconds})
    finally:
        for mlp in mlps_of(student_module):
            mlp.bundle = "auto"
    return fits


@dataclass
class Distill:
    """Turn a trained dense run (the dense twin of eugen-nerf, eugen-dnerf, eugen-mipnerf360 or
    eugen-zipnerf, or nerfstudio's vanilla-nerf) into an EUGen run of the same method (eugen-nerf for
    vanilla-nerf) by layer-wise closed-form fits (no backpropagation); ns-eval and ns-render load the
    result as it is."""

    load_config: Path
    """config.yml of the dense run."""
    output_dir: Path | None = None
    """As ns-train's --output-dir: the run is written to OUTPUT_DIR/EXPERIMENT/METHOD/TIMESTAMP-distilled
    (EXPERIMENT and TIMESTAMP the teacher's; a new -DATE_TIME suffix if that exists); default: the teacher's."""
    rays: int = 2048
    """Training rays whose samples the layers are fitted on."""
    num_features: int | None = None
    """m of the EUGen layers; default: 32 for the closed form alone (its student keeps the teacher's quality
    with more features than a trained EUGen layer needs, docs/results/distill.md), 16 when --finetune-steps
    follow (the presets' m: fine-tuning recovers the quality at the faster size)."""
    order: int = 2
    """k of the EUGen layers."""
    soft_normalize: bool = True
    """Soft normalisation of the EUGen layers' inputs (the layers' default; docs/eugen-math.md §6)."""
    eugen_base_layers: tuple[int, ...] | None = None
    """Base-MLP layers to replace; default: the run's --pipeline.model.eugen-base-layers (eugen-nerf's default
    for vanilla-nerf runs)."""
    eugen_head_layers: tuple[int, ...] | None = None
    """View-head layers to replace; default as for the base layers."""
    eugen_deformation_layers: tuple[int, ...] | None = None
    """eugen-dnerf: deformation-MLP layers to replace; default: the run's."""
    eugen_proposal_layers: tuple[int, ...] | None = None
    """eugen-mipnerf360, eugen-zipnerf: proposal-MLP hidden layers to replace; default: the run's."""
    ridge: float = 1e-6
    """Ridge lambda of the closed form, relative to the mean diagonal of F^T F."""
    targets: str = "teacher"
    """teacher | layer: each layer is fitted to the teacher's own activation there (teacher: earlier layers'
    errors do not compound, and the dense layers after the first EUGen layer, up to the density and RGB
    heads, are refitted too), or to the teacher layer applied to the student's own input (layer)."""
    projections: str = "auto"
    """fitted | random | auto: choose each EUGen layer's order-1 and order-2 projections from the data in
    closed form (docs/eugen-math.md §3), or keep the random ones; auto: fitted for the closed form alone,
    random when --finetune-steps follow (fine-tuning from fitted projections measured worse than from
    random ones, docs/results/distill.md)."""
    weights: str = "active"
    """active | uniform | render: weight fitting points by whether the teacher's raw density there is
    above --active-above (1, else --empty-weight), alike, or by their render weight under the teacher
    (plus their mean, so empty space still counts)."""
    emphasis_weight: float = 1.0
    """With --projections fitted: how much the head's outputs (raw density, RGB logits, offsets) weigh in
    choosing the last projections before each head, relative to that layer's own activation."""
    target_metric: str = "downstream"
    """identity | downstream: with fitted projections, choose each EUGen layer's projections to fit its
    activation in the Euclidean metric, or in the metric of how much each of its directions moves the
    teacher's raw density and colour (docs/eugen-math.md §3)."""
    quadratic_basis: int = 16
    """With fitted projections: the order-2 projections are chosen in the span of this many principal
    directions of each layer's input."""
    metric_mix: float = 0.1
    """With --target-metric downstream: the share of the identity in the metric."""
    active_above: float = -10.0
    """With --weights active: raw density (before the softplus) above which a point weighs 1."""
    empty_weight: float = 0.0
    """With --weights active: the weight of the other points (0: the fits ignore them)."""
    density_floor: float | None = -5.0
    """Raw densities below this all mean empty space: the density read-out is fitted one-sided there (its
    output need only stay below), and the fitted projections see the raw density clamped at it; None:
    plain least squares."""
    floor_weight: float = 1.0
    """With --weights active and a --density-floor: the weight, in the one-sided density read-out only, of
    the points the other fits leave out (below --active-above with --empty-weight 0); there they only
    keep the student's density below the floor."""
    pixel_refit_steps: int | None = None
    """Levenberg-Marquardt steps of the pixel refit after the layer fits: the rendered field's density and
    RGB heads are refitted so that the student's own renders of --pixel-rays training rays match
    --pixel-targets (each step a linear least squares, docs/eugen-math.md §3); 0: none; default: 6 for the
    closed form alone, 0 when --finetune-steps follow (as --projections auto)."""
    pixel_rays: int = 16384
    """Training rays of the pixel refit."""
    pixel_targets: str = "images"
    """images | teacher: what the pixel refit matches, the training images or the teacher's renders."""
    refine_steps: int = 0
    """Epochs of trainable-G refinement (Adam on G and A, each layer's MSE) after each closed form."""
    finetune_steps: int = 0
    """Steps of end-to-end fine-tuning on the training images after the closed form (0: none)."""
    finetune_rays: int = 128
    """Rays per fine-tuning step."""
    finetune_lr: float = 3e-3
    """Adam learning rate of the fine-tuning's fields, reached after a warm-up over the first tenth of its
    steps and decayed 10x over them (eugen-nerf's CPU preset: 3e-3); the run's other parameter groups
    (a D-NeRF's deformation, proposal MLPs) keep their rates relative to the fields'."""
    evaluate: bool = True
    """After writing the student: evaluate it and the teacher on the test split and time both side by side
    (eugen bench nerf's measurement), the report's last part (distill.json "evaluation")."""
    evaluate_views: int | None = 10
    """With --evaluate: the first N test views only (None: all; a full-size scene's whole test split takes
    long to render twice on a CPU)."""
    speed_repeats: int = 5
    """With --evaluate: timed repeats of each run (medians)."""
    seed: int = 0
    """Seed of the rays and of the random projections."""
    chunk: int = 65_536
    """Points per forward pass while collecting layer inputs."""
    console: tyro.conf.Suppress[Console] = field(default_factory=Console, repr=False)

    def feature_count(self) -> int:
        if self.num_features is None:
            return 16 if self.finetune_steps > 0 else 32
        return self.num_features

    def pixel_steps(self) -> int:
        if self.pixel_refit_steps is None:
            return 0 if self.finetune_steps > 0 else 6
        return self.pixel_refit_steps

    def projection_kind(self) -> str:
        if self.projections == "auto":
            return "random" if self.finetune_steps > 0 else "fitted"
        return self.projections

    def run(self) -> dict:
        for name in ("rays", "order", "chunk", "finetune_rays", "finetune_lr", "pixel_rays", "speed_repeats"):
            if getattr(self, name) <= 0:
                raise InputError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        check_flag_choice("--targets", self.targets, ("teacher", "layer"))
        check_flag_choice("--weights", self.weights, ("active", "render", "uniform"))
        check_flag_choice("--projections", self.projections, ("auto", "fitted", "random"))
        check_flag_choice("--target-metric", self.target_metric, ("downstream", "identity"))
        check_flag_choice("--pixel-targets", self.pixel_targets, ("images", "teacher"))
        if self.feature_count() <= 0:
            raise InputError(f"--num-features must be positive, got {self.num_features}")
        if self.evaluate_views is not None and self.evaluate_views <= 0:
            raise InputError(f"--evaluate-views must be positive, got {self.evaluate_views}")
        if self.pixel_steps() < 0:
            raise InputError(f"--pixel-refit-steps must be 0 or more, got {self.pixel_refit_steps}")
        if not 0 <= self.metric_mix <= 1:
            raise InputError(f"--metric-mix must be in [0, 1], got {self.metric_mix}")
        if self.quadratic_basis <= 0:
            raise InputError(f"--quadratic-basis must be positive, got {self.quadratic_basis}")
        for flag, value in (("--active-above", self.active_above), ("--density-floor", self.density_floor)):
            if value is not None and not math.isfinite(value):
                raise InputError(f"{flag} must be a finite number, got {value}")
        if not self.emphasis_weight >= 0:
            raise InputError(f"--emphasis-weight must be >= 0, got {self.emphasis_weight}")
        if not 0 <= self.empty_weight <= 1:
            raise InputError(f"--empty-weight must be in [0, 1], got {self.empty_weight}")
        if not (math.isfinite(self.floor_weight) and self.floor_weight >= 0):
            raise InputError(f"--floor-weight must be a finite number >= 0, got {self.floor_weight}")
        teacher_config = load_teacher_config(self.load_config)
        started = time.perf_counter()
        _, teacher, _, step = eval_setup_of(self.load_config, "--load-config")
        teacher.eval()
        config = student_config(teacher_config, self)
        # where ns-eval / ns-render look: OUTPUT_DIR/EXPERIMENT/METHOD/TIMESTAMP/nerfstudio_models
        run_dir = self.load_config.resolve().parent
        config.output_dir = self.output_dir or run_dir.parent.parent.parent
        config.experiment_name = run_dir.parent.parent.name
        config.timestamp = f"{run_dir.name}-distilled"
        config.relative_model_dir = Path("nerfstudio_models")
        if config.get_base_dir().exists():  # an earlier student of this teacher: keep it, as ns-train keeps runs
            config.timestamp = f"{run_dir.name}-distilled-{datetime.now():%Y-%m-%d_%H%M%S}"
        output = config.get_base_dir()
        torch.manual_seed(self.seed)
        student = config.pipeline.setup(device=teacher.device, test_mode="inference")
        student.eval()
        copied = copy_matching_weights(teacher.model, student.model)
        samples = training_samples(teacher.model, teacher.datamanager.train_dataset.cameras, self.rays,
                                   torch.Generator().manual_seed(self.seed))
        # the networks with something to fit (a method's dense proposal MLPs have none); a deformation
        # network's points are the fields' samples, coarse then fine, and take their weights
        fitted = {name for name in samples if fit_points(student.model.get_submodule(name))}
        weighed = fitted | ({"field_coarse", "field_fine"} if "temporal_distortion" in fitted else set())
        weights = {name: point_weights(teacher.model.get_submodule(name), samples[name], self)
                   for name in weighed - {"temporal_distortion"} if self.weights != "uniform"}
        if weights and "temporal_distortion" in fitted:
            weights["temporal_distortion"] = torch.cat([weights["field_coarse"], weights["field_fine"]])
        fits = []
        for name, module_samples in samples.items():
            if name not in fitted:
                continue
            fits += [{"field": name, **fit} for fit in fit_module(
                student.model.get_submodule(name), teacher.model.get_submodule(name), module_samples, self,
                weights.get(name))]
        pixel_refit = None
        if self.pixel_steps() > 0:
            pixel_refit = self.refit_on_pixels(teacher, student)
        closed_form_seconds = time.perf_counter() - started
        finetune_losses = []
        if self.finetune_steps > 0:
            finetune_losses = finetune(student.model, teacher.datamanager.train_dataset, self.finetune_steps,
                                       self.finetune_rays, self.finetune_lr, torch.Generator().manual_seed(self.seed),
                                       rates_relative_to_fields(config.optimizers))
        seconds = time.perf_counter() - started
        write_run(config, student, step, output)
        results = {"teacher": str(self.load_config), "student": str(output / "config.yml"), "seconds": seconds,
                   "closed_form_seconds": closed_form_seconds, "finetune_steps": self.finetune_steps,
                   "finetune_loss_first_last": finetune_losses[:1] + finetune_losses[-1:],
                   "rays": self.rays, "projections": self.projection_kind(), "copied_tensors": copied, "layers": fits,
                   "pixel_refit": pixel_refit,
                   "eugen": dataclasses.asdict(config.pipeline.model.eugen)}
        (output / "distill.json").write_text(json.dumps(results, indent=1) + "\n")
        print_fits(results, self.console)
        if self.evaluate:
            del teacher, student, samples, weights  # the comparison loads both runs from their folders, as a user would
            gc.collect()
            results["evaluation"] = evaluate_student(self.load_config, output / "config.yml", self.evaluate_views,
                                                     self.speed_repeats, self.console)
            (output / "distill.json").write_text(json.dumps(results, indent=1) + "\n")
        return results

    def refit_on_pixels(self, teacher, student) -> dict:
        """The pixel refit (distill_pixels) of the student's rendered field on fresh training rays; its
        seconds count everything, from drawing the rays to writing the heads."""
        started = time.perf_counter()
        dataset = teacher.datamanager.train_dataset
        bundle, index, coords = training_rays(student.model, dataset.cameras, self.pixel_rays,
                                              torch.Generator().manual_seed(self.seed + 1))
        rendered = "field" if hasattr(student.model, "proposal_sampler") else "field_fine"
        refit = PixelRefit(student.model, student.model.get_submodule(rendered),
                           samples_of(student.model, bundle)[rendered])
        with torch.no_grad():
            if self.pixel_targets == "teacher":
                rays_per_pass = max(self.chunk // 64, 1)
                outputs = (teacher.model.get_outputs(bundle[start : start + rays_per_pass])
                           for start in range(0, len(bundle), rays_per_pass))
                # vanilla-nerf names its render rgb_fine only
                targets = torch.cat([out["rgb"] if "rgb" in out else out["rgb_fine"] for out in outputs])
            else:  # each ray's pixel; an RGBA image blended as the model's own evaluation blends it
                pixels = coords.long()
                targets = torch.empty(len(index), 3)
                for camera in index[:, 0].unique().tolist():
                    rays = index[:, 0] == camera
                    image = student.model.renderer_rgb.blend_background(dataset.get_image_float32(camera))
                    targets[rays] = image[pixels[rays, 0], pixels[rays, 1], :3]
        report = refit.fit(targets.to(student.device), self.pixel_steps())
        return {"field": rendered, "targets": self.pixel_targets, **report, "seconds": time.perf_counter() - started}


def finetune(model, dataset, steps: int, rays_per_step: int, lr: float, generator: torch.Generator,
             relative_rates: dict[str, float] | None = None) -> list[float]:
    """Train every parameter of `model` on random pixels of `dataset`'s images with the model's own
    losses (Adam, learning rate warmed up over the first tenth of the steps and decayed 10x); each of the
    model's parameter groups at `lr` times its entry in `relative_rates` (1 if absent); returns the loss
    of each step."""
    cameras = dataset.cameras.to(model.device)
    images = [dataset.get_image_float32(index) for index in range(len(dataset))]
    height, width = images[0].shape[:2]
    if any(image.shape[:2] != (height, width) for image in images):
        raise InputError("--finetune-steps needs training images of one size")
    stacked = torch.stack(images)
    optimizer = finetune_optimizer(model, lr, relative_rates or {})
    # a linear warm-up over the first tenth: a closed-form student balances large weights against each
    # other, and Adam's first full-rate steps (every weight moved by the rate at once) undo that balance
    warmup, decay = max(1, steps // 10), 0.1 ** (1 / max(steps, 1))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup) * decay**step)
    model.train()
    losses = []
    for step in range(steps):
        index = torch.randint(len(images), (rays_per_step,), generator=generator)
        rows = torch.randint(height, (rays_per_step,), generator=generator)
        columns = torch.randint(width, (rays_per_step,), generator=generator)
        coords = torch.stack([rows, columns], dim=-1).float() + 0.5  # pixel centres, as nerfstudio's sampler
        bundle = cameras.generate_rays(camera_indices=index[:, None].to(model.device), coords=coords.to(model.device))
        try:
            outputs = model(bundle)  # applies the collider
        except ValueError as error:  # an EUGen layer refuses non-finite inputs
            raise InputError(f"--finetune-steps: diverged at step {step} ({error}); lower --finetune-lr") from None
        loss_dict = model.get_loss_dict(outputs, {"image": stacked[index, rows, columns].to(model.device)})
        loss = torch.stack(list(loss_dict.values())).sum()
        if not torch.isfinite(loss):
            raise InputError(f"--finetune-steps: diverged at step {step} (loss {float(loss)}); lower --finetune-lr")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss))
    model.eval()
    return losses


def rates_relative_to_fields(optimizers: dict) -> dict[str, float]:
    """Each parameter group's learning rate in a run's optimizers relative to the fields' (empty without a
    fields group): fine-tuning keeps them, as a D-NeRF's deformation MLP trains slower than its fields."""
    rates = {name: spec["optimizer"].lr for name, spec in optimizers.items()}
    return {name: rate / rates["fields"] for name, rate in rates.items()} if "fields" in rates else {}


def finetune_optimizer(model, lr: float, relative_rates: dict[str, float]) -> torch.optim.Adam:
    """Adam over every trainable parameter: each of the model's parameter groups (get_param_groups) at
    `lr` times its relative rate (1 if absent), parameters in no group at `lr`."""
    groups = [{"params": [p for p in params if p.requires_grad], "lr": lr * relative_rates.get(name, 1.0)}
              for name, params in model.get_param_groups().items()]
    grouped = {id(p) for group in groups for p in group["params"]}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in grouped]
    return torch.optim.Adam([group for group in groups if group["params"]] + ([{"params": rest}] if rest else []),
                            lr=lr)


def copy_matching_weights(teacher: nn.Module, student: nn.Module) -> int:
    """Copy every teacher tensor whose name and shape the student shares (all but the replaced layers)."""
    mine = student.state_dict()
    shared = {key: value for key, value in teacher.state_dict().items()
              if key in mine and mine[key].shape == value.shape and not key.startswith("lpips.")}
    student.load_state_dict({**mine, **shared})
    return len(shared)


def write_run(config, pipeline, step: int, output: Path) -> None:
    """config.yml + nerfstudio_models/step-N.ckpt, as ns-train writes them (atomically, safe-loadable)."""
    output.mkdir(parents=True, exist_ok=True)
    (output / "config.yml").write_text(_yaml(config))
    state = {"step": step, "pipeline": pipeline.state_dict(), "optimizers": {}, "schedulers": {}, "scalers": {}}
    save_atomically(state, checkpoint_path(output / "nerfstudio_models", step), temporary_dir=output)


def _yaml(config) -> str:
    import yaml

    return yaml.dump(config)


def print_fits(results: dict, console: Console) -> None:
    table = Table(title=f"closed form in {results['closed_form_seconds']:.1f} s on {results['rays']:,} training rays")
    columns = ("field", "layer", "kind", "points", "error before", "relative error", "after refinement", "s")
    for column in columns:
        table.add_column(column, justify="left" if column in ("field", "layer", "kind") else "right")

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    for fit in results["layers"]:
        table.add_row(fit["field"], fit["layer"], fit["kind"], f"{fit['points']:,}",
                      number(fit["relative_error_before"]), number(fit["relative_error"]),
                      number(fit["refined_relative_error"]), f"{fit['seconds']:.1f}")
    console.print(table)
    if results["finetune_steps"]:
        first, last = results["finetune_loss_first_last"]
        console.print(f"fine-tuned {results['finetune_steps']} steps end to end: loss {first:.4f} -> {last:.4f} "
                      f"({results['seconds'] - results['closed_form_seconds']:.1f} s)")
    if results.get("pixel_refit"):
        refit = results["pixel_refit"]
        console.print(f"pixel refit of {refit['field']}'s heads on {refit['rays']:,} rays ({refit['targets']}): "
                      f"PSNR {refit['psnr_before']:.2f} -> {refit['psnr_after']:.2f} dB in {refit['steps']} steps "
                      f"({refit['seconds']:.1f} s)")
    console.print(f"student run: {results['student']}")
