"""Rendering helpers beyond `ns-render`: frames to PNG + GIF, and `eugen render time-sweep` (a dynamic
run seen from one fixed camera while time runs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
import tyro
from rich.console import Console
from rich.progress import track

from eugen_nerf.errors import InputError
from eugen_nerf.nerf.engine.runs import load_pipeline


@torch.no_grad()
def render_frames(pipeline, cameras, folder: Path, gif_name: str, fps: float = 12) -> Path:
    """Render each camera (a batch of nerfstudio Cameras) to folder/frame_NNN.png and all of them to
    folder/gif_name (looping)."""
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for index in track(range(len(cameras)), description=f"rendering {gif_name}"):
        rgb = pipeline.model.get_outputs_for_camera(cameras[index : index + 1].to(pipeline.device))["rgb"]
        image = (rgb.clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
        imageio.imwrite(folder / f"frame_{index:03d}.png", image)
        images.append(image)
    gif = folder / gif_name
    imageio.mimsave(gif, images, duration=1000 / fps, loop=0)
    return gif


def cameras_at_times(camera, times: torch.Tensor):
    """One camera (a nerfstudio Cameras of size 1) repeated at each of `times`."""
    from nerfstudio.cameras.cameras import Cameras

    count = len(times)
    return Cameras(
        camera_to_worlds=camera.camera_to_worlds.expand(count, 3, 4), fx=camera.fx.expand(count, 1),
        fy=camera.fy.expand(count, 1), cx=camera.cx.expand(count, 1), cy=camera.cy.expand(count, 1),
        width=camera.width.expand(count, 1), height=camera.height.expand(count, 1),
        camera_type=camera.camera_type.expand(count, 1), times=times.reshape(count, 1).float(),
    )


@dataclass
class RenderTimeSweep:
    """Render a dynamic run (eugen-dnerf) from one fixed test camera at evenly spaced times: PNG frames
    and a looping GIF. (`ns-render interpolate` and `camera-path` with "render_time" move the camera too.)"""

    load_config: Path
    """config.yml of an eugen-dnerf run."""
    output: Path = Path("renders/time-sweep")
    """Folder for frame_NNN.png and time-sweep.gif."""
    camera: int = 0
    """Index of the test-split camera to render from."""
    frames: int = 24
    """Number of times between --start and --end (inclusive)."""
    start: float = 0.0
    """First time (the scenes' times lie in [0, 1])."""
    end: float = 1.0
    """Last time."""
    fps: float = 12.0
    """Frame rate of the GIF."""
    console: tyro.conf.Suppress[Console] = field(default_factory=Console, repr=False)

    def run(self) -> Path:
        if self.frames <= 0 or self.fps <= 0:
            raise InputError(f"--frames and --fps must be positive, got {self.frames} and {self.fps}")
        pipeline, _, _ = load_pipeline(self.load_config, "--load-config")
        if getattr(pipeline.model, "temporal_distortion", None) is None:
            raise InputError(f"{self.load_config}: not a dynamic run (no deformation network; train eugen-dnerf)")
        cameras = pipeline.datamanager.eval_dataset.cameras
        if not 0 <= self.camera < len(cameras):
            raise InputError(f"--camera {self.camera}: the test split has cameras 0..{len(cameras) - 1}")
        times = torch.linspace(self.start, self.end, self.frames)
        gif = render_frames(pipeline, cameras_at_times(cameras[self.camera : self.camera + 1], times), self.output,
                            "time-sweep.gif", self.fps)
        self.console.print(f"time sweep: {gif} ({self.frames} frames, t = {self.start:g} .. {self.end:g})")
        return gif
