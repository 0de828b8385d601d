"""Procedural textured scenes rendered by open3d ray casting, with exact depth and geometry.

A scene is a list of `Part`s: a closed triangle mesh, a base colour and a 3-D texture (a pattern of
the world position, so it is the same from every view). Shading: ambient + Lambert from a fixed
light, plus an optional Blinn-Phong highlight (the only view-dependent term).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d

from eugen_nerf.errors import InputError

WORLD_UP = np.array([0.0, 0.0, 1.0])
LIGHT_DIRECTION = np.array([0.35, 0.5, 0.8]) / np.linalg.norm([0.35, 0.5, 0.8])


@dataclass
class Part:
    mesh: o3d.geometry.TriangleMesh
    color: tuple[float, float, float]
    pattern: str = "stripes"  # stripes | checker | rings | plain
    frequency: float = 6.0
    detail: float = 0.0  # strength of a second, four times finer pattern over the first (0: none)


def texture(points: np.ndarray, part: Part) -> np.ndarray:
    """Albedo (N, 3) of `part` at world `points`: base colour modulated by a 3-D pattern."""
    base = np.asarray(part.color, dtype=np.float64)[None, :]
    f = part.frequency
    if part.pattern == "stripes":
        mod = 0.5 + 0.5 * np.sin(f * (points[:, 0] + 0.7 * points[:, 1] + 0.3 * points[:, 2]))
    elif part.pattern == "checker":
        # Offset so that axis-aligned faces at round coordinates (z = 0) never sit on a cell boundary.
        cells = np.floor(f * points / np.pi + 0.37).astype(np.int64).sum(axis=1)
        mod = (cells % 2).astype(np.float64)
    elif part.pattern == "rings":
        mod = 0.5 + 0.5 * np.cos(f * np.linalg.norm(points[:, :2], axis=1))
    else:
        mod = np.ones(len(points))
    if part.detail > 0:  # fine dots: a product of sines four times the pattern's frequency on every axis
        fine = 0.5 + 0.5 * np.prod(np.sin(4 * f * points + np.array([0.3, 1.1, 2.0])), axis=1)
        mod = (1 - part.detail) * mod + part.detail * fine
    # 45-100% of the base colour, plus a second hue so the pattern shows in every channel.
    return np.clip(base * (0.45 + 0.55 * mod[:, None]) + 0.15 * (1 - mod[:, None]) * base[:, ::-1], 0, 1)


class Scene:
    """Parts in one open3d `RaycastingScene`; geometry id i is `parts[i]`."""

    def __init__(self, parts: list[Part]) -> None:
        self.parts = parts
        self.raycaster = o3d.t.geometry.RaycastingScene()
        for part in parts:
            self.raycaster.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(part.mesh))

    def combined_mesh(self) -> o3d.geometry.TriangleMesh:
        mesh = o3d.geometry.TriangleMesh()
        for part in self.parts:
            mesh += part.mesh
        return mesh

    def cast(self, origins: np.ndarray, directions: np.ndarray) -> dict[str, np.ndarray]:
        rays = np.concatenate([origins, directions], axis=1).astype(np.float32)
        hits = self.raycaster.cast_rays(o3d.core.Tensor(rays))
        return {key: value.numpy() for key, value in hits.items()}

    def shade(
        self, origins: np.ndarray, directions: np.ndarray, specular: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Colour (N, 3) in [0, 1] and ray distance t (N,; inf where nothing is hit)."""
        hits = self.cast(origins, directions)
        t = hits["t_hit"].astype(np.float64)
        ids = hits["geometry_ids"].astype(np.int64)
        hit = np.isfinite(t)
        color = np.zeros((len(t), 3))
        normals = hits["primitive_normals"].astype(np.float64)
        # Face the normal towards the viewer: inside surfaces (rooms, domes) shade like outside ones.
        facing = np.where((normals * directions).sum(1, keepdims=True) > 0, -normals, normals)
        points = origins + directions * np.where(hit, t, 0)[:, None]
        for index, part in enumerate(self.parts):
            mask = hit & (ids == index)
            if not mask.any():
                continue
            albedo = texture(points[mask], part)
            lambert = np.clip(facing[mask] @ LIGHT_DIRECTION, 0, 1)[:, None]
            shaded = albedo * (0.35 + 0.65 * lambert)
            if specular > 0:
                half = LIGHT_DIRECTION[None] - directions[mask]
                half /= np.linalg.norm(half, axis=1, keepdims=True)
                shaded += specular * np.clip((facing[mask] * half).sum(1), 0, 1)[:, None] ** 32
            color[mask] = shaded
        return np.clip(color, 0, 1), t


# ------------------------------------------------------------------------------------------ cameras
def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = WORLD_UP) -> np.ndarray:
    """4x4 camera-to-world in the OpenGL convention (x right, y up, looking along -z)."""
    forward = target - eye
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-8:  # looking straight along `up`
        right = np.cross(forward, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    true_up = np.cross(right, forward)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, true_up, -forward, eye
    return pose


@dataclass
class Intrinsics:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def from_fov(cls, width: int, height: int, fov_x: float) -> Intrinsics:
        focal = 0.5 * width / np.tan(0.5 * fov_x)
        return cls(width, height, focal, focal, width / 2.0, height / 2.0)


def camera_rays(
    intr: Intrinsics, pose_gl: np.ndarray, offset: tuple[float, float] = (0.5, 0.5)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel origins and unit directions (H*W, 3), and each direction's z in the camera (cos to axis);
    each ray passes through its pixel at `offset` (x, y in [0, 1]; the centre by default)."""
    i, j = np.meshgrid(np.arange(intr.width) + offset[0], np.arange(intr.height) + offset[1])
    dirs_cam = np.stack([(i - intr.cx) / intr.fx, -(j - intr.cy) / intr.fy, -np.ones_like(i)], -1).reshape(-1, 3)
    norms = np.linalg.norm(dirs_cam, axis=1, keepdims=True)
    directions = (dirs_cam / norms) @ pose_gl[:3, :3].T
    origins = np.broadcast_to(pose_gl[:3, 3], directions.shape).copy()
    return origins, directions, 1.0 / norms[:, 0]


def render_view(
    scene: Scene, intr: Intrinsics, pose_gl: np.ndarray, specular: float = 0.0, pixel_samples: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Colour (H, W, 3) float of the surfaces each pixel sees (0 where it sees none), their coverage of the
    pixel (H, W) in [0, 1], and the z-depth (H, W) of the pixel centre's ray in scene units (0 where empty).

    With `pixel_samples` n > 1, colour and coverage average n x n rays on a regular grid over each pixel, as a
    camera integrates the light over its pixel; one ray through the centre point-samples the pattern, which
    aliases patterns finer than two pixels differently in every view."""
    origins, directions, cos_axis = camera_rays(intr, pose_gl)
    if pixel_samples == 1:
        rgb, t = scene.shade(origins, directions, specular)
        coverage = np.isfinite(t).astype(np.float64)
    else:  # the centre ray gives the depth only: cast, not shaded
        t = scene.cast(origins, directions)["t_hit"].astype(np.float64)
        total, hits = np.zeros((len(t), 3)), np.zeros(len(t))
        for row in range(pixel_samples):
            for column in range(pixel_samples):
                offset = ((column + 0.5) / pixel_samples, (row + 0.5) / pixel_samples)
                colour, distance = scene.shade(*camera_rays(intr, pose_gl, offset)[:2], specular)
                total += colour  # shade gives 0 where a ray hits nothing
                hits += np.isfinite(distance)
        rgb, coverage = total / np.maximum(hits, 1)[:, None], hits / pixel_samples**2
    depth = np.where(np.isfinite(t), t * cos_axis, 0.0)
    shape = (intr.height, intr.width)
    return rgb.reshape(*shape, 3), coverage.reshape(shape), depth.reshape(shape)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def depth_to_uint16(depth: np.ndarray, scale: float) -> np.ndarray:
    """Depth in scene units to 16-bit integers (value = depth * scale); raises if it would overflow."""
    scaled = np.round(depth * scale)
    if scaled.max() > np.iinfo(np.uint16).max:
        raise InputError(f"depth {depth.max():.2f} does not fit 16 bits at depth scale {scale}")
    return scaled.astype(np.uint16)
