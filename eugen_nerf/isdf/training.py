"""Continual SDF learning from a depth stream, as iSDF does it (docs/methods/isdf.md):
samples along the rays of a window of frames, bounds on |SDF| from the depth, the truncated SDF loss
with eikonal and gradient terms, keyframes chosen by how badly the frozen map renders a new frame,
and a window of recent plus loss-weighted keyframes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from eugen_nerf.errors import InputError, check_flag_choice
from eugen_nerf.isdf.data import DepthStream
from eugen_nerf.isdf.network import SDFNetwork


@dataclass
class SamplingConfig:
    rays_per_frame: int = 200
    """Random pixels per window frame per step (zero depth dropped)."""
    stratified: int = 19
    """Depths per ray drawn stratified in [min-depth, depth + surface-margin]."""
    surface: int = 8
    """Depths per ray near the surface: one at the measured depth, the rest ~ N(depth, surface-std)."""
    min_depth: float = 0.07
    surface_margin: float = 0.1
    surface_std: float = 0.1
    bounds: str = "ray"
    """ray | pc. ray: distance along the ray to the measured point; pc: to the nearest measured point."""


@dataclass
class LossConfig:
    truncation: float = 0.294
    """Bounds above this are free space (one-sided loss); below, the SDF is fit to the bound."""
    truncation_weight: float = 5.38
    free_space_beta: float = 5.0
    """exp(-beta * sdf) - 1 penalises negative SDF in free space."""
    eikonal_weight: float = 0.268
    eikonal_min_bound: float = 0.1
    """The eikonal term applies where the bound is at least this."""
    gradient_weight: float = 0.018


@dataclass
class ScheduleConfig:
    mode: str = "steps"
    """steps | realtime. steps: fixed steps per frame; realtime: the next frame is the one the sensor
    would be at after the time spent (frames at the dataset's fps)."""
    frame_stride: int = 1
    """In steps mode, process every n-th frame of the stream."""
    first_frame_steps: int = 200
    steps_per_frame: int = 10
    keyframe_steps: int = 60
    final_steps: int = 400
    window: int = 5
    recent_keyframes: int = 2
    keyframe_pixel_ratio: float = 0.65
    """A frame becomes a keyframe when fewer than this share of its pixels render within 10% depth."""
    keyframe_max_interval_s: float = 5.0
    lr: float = 1.3e-3
    weight_decay: float = 0.012
    max_frames: int | None = None
    """Stop the stream after this many frames (None: the whole sequence)."""

    def validate(self) -> None:
        check_flag_choice("--schedule.mode", self.mode, ("steps", "realtime"))
        for name in ("frame_stride", "window"):
            if getattr(self, name) < 1:
                raise InputError(f"--schedule.{name.replace('_', '-')} must be at least 1")


def sample_rays(stream: DepthStream, frame: int, count: int, generator: torch.Generator):
    """Origins, directions (z = 1 in camera), depths of `count` random pixels with valid depth."""
    valid = torch.nonzero(stream.depth(frame).reshape(-1) > 0).squeeze(1)
    pick = valid[torch.randint(len(valid), (count,), generator=generator)]
    return stream.world_rays(frame, pick)


def sample_depths(depth: Tensor, config: SamplingConfig, generator: torch.Generator) -> Tensor:
    """(N, S) z-depths: stratified between min_depth and depth + margin, then near the surface."""
    n = depth.shape[0]
    far = depth + config.surface_margin
    bins = torch.linspace(0, 1, config.stratified + 1)[:-1]
    u = bins + torch.rand(n, config.stratified, generator=generator) / config.stratified
    stratified = config.min_depth + u * (far - config.min_depth)[:, None]
    near_surface = depth[:, None] + config.surface_std * torch.randn(n, config.surface - 1, generator=generator)
    return torch.cat([stratified, depth[:, None], near_surface.clamp(min=config.min_depth)], 1)


def bounds_and_targets(origins: Tensor, directions: Tensor, depth: Tensor, z: Tensor, kind: str):
    """Points (N, S, 3), the bound on |SDF| at each, and a gradient target (unit, or zero if none)."""
    points = origins[:, None] + z[..., None] * directions[:, None]
    ray_length = directions.norm(dim=-1, keepdim=True)
    view = directions / ray_length
    if kind == "ray":
        bound = (depth[:, None] - z) * ray_length
        target = -view[:, None].expand_as(points)
        return points, bound, target
    surface = origins + depth[:, None] * directions  # (N, 3): the measured points of this batch
    distance = torch.cdist(points.reshape(-1, 3), surface)
    nearest, index = distance.min(-1)
    behind = (z > depth[:, None]).reshape(-1)
    bound = torch.where(behind, -nearest, nearest).reshape(z.shape)
    direction = points.reshape(-1, 3) - surface[index]
    target = direction / direction.norm(dim=-1, keepdim=True).clamp(min=1e-9)
    target = torch.where(behind[:, None], -target, target)
    return points, bound, target.reshape(points.shape)


def sdf_losses(sdf: Tensor, gradient: Tensor, bound: Tensor, target: Tensor, config: LossConfig) -> dict[str, Tensor]:
    """Per-sample loss terms (same shape as sdf)."""
    free = bound > config.truncation
    free_loss = torch.maximum(torch.relu(sdf - bound), torch.exp(-config.free_space_beta * sdf) - 1)
    band_loss = config.truncation_weight * (sdf - bound).abs()
    sdf_term = torch.where(free, free_loss, band_loss)
    norm = gradient.norm(dim=-1)
    eikonal = torch.where(bound >= config.eikonal_min_bound, (norm - 1).abs(), torch.zeros_like(norm))
    cosine = torch.nn.functional.cosine_similarity(gradient, target, dim=-1)
    return {"sdf": sdf_term, "eikonal": config.eikonal_weight * eikonal,
            "gradient": config.gradient_weight * (1 - cosine)}


@torch.no_grad()
def rendered_depth(network: SDFNetwork, origins: Tensor, directions: Tensor, far: float, samples: int = 64) -> Tensor:
    """z-depth of the first sign change of the SDF along each ray (far where there is none)."""
    z = torch.linspace(0.07, far, samples)
    points = origins[:, None] + z[None, :, None] * directions[:, None]
    sdf = network(points.reshape(-1, 3)).reshape(len(origins), samples)
    crossing = (sdf[:, :-1] > 0) & (sdf[:, 1:] <= 0)
    has = crossing.any(1)
    first = crossing.float().argmax(1)
    s0, s1 = sdf.gather(1, first[:, None])[:, 0], sdf.gather(1, first[:, None] + 1)[:, 0]
    fraction = s0 / (s0 - s1).clamp(min=1e-9)
    depth = z[first] + fraction * (z[1] - z[0])
    return torch.where(has, depth, torch.full_like(depth, far))


@dataclass
class StreamState:
    """What a run remembers between steps, saved in its checkpoints."""

    frame: int = -1
    """Last frame taken from the stream."""
    step: int = 0
    keyframes: list[int] = field(default_factory=list)
    keyframe_losses: list[float] = field(default_factory=list)
    last_keyframe_time: float = 0.0
    elapsed: float = 0.0
    """Seconds of simulated stream time (realtime mode: training time; steps mode: frames / fps)."""
    history: list[dict] = field(default_factory=list)
    """Per processed frame: frame, step, loss, keyframe flag, and evaluation figures when computed."""
    finished: bool = False


class ContinualTrainer:
    """Runs the stream: take a frame, decide keyframe, train on the window, repeat; then final steps."""

    def __init__(self, network: SDFNetwork, stream: DepthStream, sampling: SamplingConfig, losses: LossConfig,
                 schedule: ScheduleConfig, seed: int = 0) -> None:
        schedule.validate()
        check_flag_choice("--sampling.bounds", sampling.bounds, ("ray", "pc"))
        self.network, self.stream = network, stream
        self.sampling, self.losses, self.schedule = sampling, losses, schedule
        self.optimizer = torch.optim.AdamW(network.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay)
        self.generator = torch.Generator().manual_seed(seed)
        self.state = StreamState()
        self.current: int | None = None  # the live frame (may not be a keyframe)
        self.step_seconds: list[float] = []

    # ------------------------------------------------------------------ one optimisation step
    def window(self) -> list[int]:
        s = self.schedule
        keyframes = self.state.keyframes
        recent = keyframes[-s.recent_keyframes:]
        chosen = list(recent)
        if self.current is not None and self.current not in chosen:
            chosen.append(self.current)
        older = keyframes[: -s.recent_keyframes] if len(keyframes) > s.recent_keyframes else []
        extra = min(s.window - len(chosen), len(older))
        if extra > 0:
            weights = torch.tensor(self.state.keyframe_losses[: len(older)]).clamp(min=1e-6)
            picks = torch.multinomial(weights, extra, replacement=False, generator=self.generator)
            chosen += [older[int(i)] for i in picks]
        return chosen

    def step(self) -> float:
        start = time.perf_counter()
        frames = self.window()
        rays = [sample_rays(self.stream, f, self.sampling.rays_per_frame, self.generator) for f in frames]
        origins, directions, depth = (torch.cat(parts) for parts in zip(*rays, strict=True))
        z = sample_depths(depth, self.sampling, self.generator)
        points, bound, target = bounds_and_targets(origins, directions, depth, z, self.sampling.bounds)
        sdf, gradient = self.network.with_gradient(points.reshape(-1, 3), create_graph=True)
        terms = sdf_losses(sdf.view(z.shape), gradient.view(points.shape), bound, target, self.losses)
        per_sample = sum(terms.values())
        loss = per_sample.mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        # per-frame losses steer which old keyframes the window revisits
        per_frame = per_sample.detach().view(len(frames), -1).mean(1)
        for frame, value in zip(frames, per_frame.tolist(), strict=True):
            if frame in self.state.keyframes:
                self.state.keyframe_losses[self.state.keyframes.index(frame)] = value
        self.state.step += 1
        self.step_seconds.append(time.perf_counter() - start)
        return float(loss.detach())

    # ------------------------------------------------------------------ the stream
    def is_keyframe(self, frame: int) -> bool:
        s = self.schedule
        if not self.state.keyframes:
            return True
        if self.state.elapsed - self.state.last_keyframe_time > s.keyframe_max_interval_s:
            return True
        # The map as it stands before training on this frame is the "frozen" map: rendering is
        # gradient-free and nothing trains in between, so no copy of the network is needed.
        origins, directions, depth = sample_rays(self.stream, frame, self.sampling.rays_per_frame, self.generator)
        predicted = rendered_depth(self.network, origins, directions, float(depth.max()) + 0.5)
        good = ((predicted - depth).abs() / depth < 0.1).float().mean()
        return bool(good < s.keyframe_pixel_ratio)

    def next_frame(self) -> int | None:
        s, state = self.schedule, self.state
        limit = len(self.stream) if s.max_frames is None else min(len(self.stream), s.max_frames)
        if state.frame < 0:
            candidate = 0
        elif s.mode == "steps":
            candidate = state.frame + s.frame_stride
        else:
            candidate = max(state.frame + 1, int(state.elapsed * self.stream.config.fps))
        return candidate if candidate < limit else None

    def take_frame(self, frame: int) -> tuple[bool, int]:
        """Add a frame to the stream state; returns (keyframe?, steps to run on it)."""
        s, state = self.schedule, self.state
        first = state.frame < 0
        if s.mode == "steps":
            state.elapsed = frame / self.stream.config.fps
        state.frame = frame
        keyframe = self.is_keyframe(frame)
        self.current = frame
        if keyframe:
            state.keyframes.append(frame)
            state.keyframe_losses.append(1.0)
            state.last_keyframe_time = state.elapsed
        steps = s.first_frame_steps if first else (s.keyframe_steps if keyframe else s.steps_per_frame)
        return keyframe, steps

    def run_steps(self, count: int) -> float:
        start = time.perf_counter()
        loss = float("nan")
        for _ in range(count):
            loss = self.step()
        if self.schedule.mode == "realtime":
            self.state.elapsed += time.perf_counter() - start
        return loss


def save_run(path: Path, trainer: ContinualTrainer) -> None:
    """An atomic checkpoint with tensors and plain values only (loads with weights_only=True)."""
    from dataclasses import asdict

    from eugen_nerf.nerf.engine.checkpoints import save_atomically

    save_atomically({"network": trainer.network.state_dict(), "optimizer": trainer.optimizer.state_dict(),
                     "state": asdict(trainer.state), "generator": trainer.generator.get_state()}, path)


def load_run(path: Path, trainer: ContinualTrainer) -> None:
    from eugen_nerf.nerf.engine.checkpoints import check_state_fits, load_safely

    checkpoint = load_safely(path)
    check_state_fits(trainer.network.state_dict(), checkpoint["network"], "--network.layer")
    trainer.network.load_state_dict(checkpoint["network"])
    trainer.optimizer.load_state_dict(checkpoint["optimizer"])
    trainer.state = StreamState(**checkpoint["state"])
    trainer.generator.set_state(checkpoint["generator"])
    if trainer.state.frame >= 0:
        trainer.current = trainer.state.frame
