"""Posed depth streams in the iSDF / ReplicaCAD layout, and their ground truth.

A sequence folder holds `results/depth%06d.png` (16-bit, value = metres x depth scale), optionally
`results/frame%06d.jpg`, and `traj.txt` (one flattened 4x4 camera-to-world per row, OpenCV camera:
x right, y down, z forward). The dataset config (JSON) names the camera and the depth scale; the
embedded scene carries its own as `dataset.json`, real ReplicaCAD / ScanNet exports get one passed
with `--dataset-config` (configs/isdf-replicacad.json is ReplicaCAD's).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch

from eugen_nerf.errors import InputError
from eugen_nerf.poses import first_bad_pose

REQUIRED_KEYS = ("width", "height", "fx", "fy", "cx", "cy", "depth_scale")
# Indoor depth sensors see 0.1-10 m; a median far outside means the depth scale is wrong.
PLAUSIBLE_MEDIAN_DEPTH_M = (0.05, 20.0)


@dataclass
class DatasetConfig:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    depth_scale: float
    """Depth PNG value per metre (ReplicaCAD 3276.75, ScanNet 1000)."""
    fps: float = 30.0
    depth_pattern: str = "results/depth{:06d}.png"
    trajectory: str = "traj.txt"
    gt_sdf: str | None = None
    gt_sdf_transform: str | None = None
    gt_mesh: str | None = None

    @classmethod
    def load(cls, path: Path) -> DatasetConfig:
        if not path.is_file():
            raise InputError(f"{path}: dataset config not found (pass --dataset-config FILE.json)")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise InputError(f"{path}: not valid JSON ({error.msg}, line {error.lineno})") from None
        missing = [key for key in REQUIRED_KEYS if key not in data]
        if missing:
            raise InputError(f"{path}: dataset config lacks {', '.join(missing)}")
        known = set(cls.__dataclass_fields__)
        config = cls(**{key: value for key, value in data.items() if key in known})
        for key in ("width", "height", "fx", "fy", "depth_scale", "fps"):
            if not float(getattr(config, key)) > 0:
                raise InputError(f"{path}: {key} must be positive, got {getattr(config, key)!r}")
        return config


class DepthStream:
    """The frames of one sequence: depth in metres, camera-to-world poses, pixel ray directions."""

    def __init__(self, root: Path, dataset_config: Path | None = None) -> None:
        if not root.is_dir():
            raise InputError(f"{root}: sequence folder not found")
        self.root = root
        self.config_path = dataset_config or root / "dataset.json"
        self.config = DatasetConfig.load(self.config_path)
        traj_path = root / self.config.trajectory
        if not traj_path.is_file():
            raise InputError(f"{traj_path}: trajectory file not found")
        try:
            rows = np.loadtxt(traj_path, ndmin=2)
        except ValueError as error:
            raise InputError(f"{traj_path}: not a table of numbers ({error})") from None
        if rows.shape[1] != 16:
            raise InputError(f"{traj_path}: each row must hold a flattened 4x4 pose (16 numbers), got {rows.shape[1]}")
        self.poses = torch.tensor(rows.reshape(-1, 4, 4), dtype=torch.float32)
        bad = first_bad_pose(self.poses)
        if bad is not None:
            raise InputError(f"{traj_path}: the pose of row {bad[0] + 1} (frame {bad[0]}) {bad[1]}")
        self.depth_paths = sorted((root / Path(self.config.depth_pattern).parent).glob(
            Path(self.config.depth_pattern.format(0)).name.replace("000000", "*")))
        if not self.depth_paths:
            raise InputError(f"{root / self.config.depth_pattern.format(0)}: no depth frames found")
        expected = [root / self.config.depth_pattern.format(i) for i in range(len(self.depth_paths))]
        for path in expected:
            if not path.is_file():
                raise InputError(f"{path}: depth frame missing (frames must be numbered from 0 without gaps)")
        if len(self.poses) != len(expected):
            raise InputError(f"{traj_path}: {len(self.poses)} poses for {len(expected)} depth frames; "
                             "the trajectory needs one row per frame")
        self.depth_paths = expected
        c = self.config
        v, u = torch.meshgrid(torch.arange(c.height, dtype=torch.float32),
                              torch.arange(c.width, dtype=torch.float32), indexing="ij")
        # camera-frame directions with z = 1, so that a point at z-depth d is d * direction
        self.directions = torch.stack([(u - c.cx) / c.fx, (v - c.cy) / c.fy, torch.ones_like(u)], -1)
        self._cache: dict[int, torch.Tensor] = {}
        self.check_depth_scale()

    def __len__(self) -> int:
        return len(self.depth_paths)

    def depth(self, index: int) -> torch.Tensor:
        """(H, W) z-depth in metres; 0 where the sensor saw nothing."""
        if index not in self._cache:
            path = self.depth_paths[index]
            try:
                raw = imageio.imread(path)
            except Exception as error:  # noqa: BLE001 - any decoding failure is an unreadable file
                raise InputError(f"{path}: not a readable depth image ({error})") from None
            if raw.shape[:2] != (self.config.height, self.config.width):
                raise InputError(f"{path}: depth is {raw.shape[1]}x{raw.shape[0]}, the dataset config says "
                                 f"{self.config.width}x{self.config.height}")
            depth = torch.tensor(raw.astype(np.float32) / self.config.depth_scale)
            if not bool((depth > 0).any()):
                raise InputError(f"{path}: depth is zero everywhere (no valid measurements)")
            self._cache[index] = depth
        return self._cache[index]

    def check_depth_scale(self) -> None:
        depth = self.depth(0)
        median = float(depth[depth > 0].median())
        low, high = PLAUSIBLE_MEDIAN_DEPTH_M
        if not low <= median <= high:
            raise InputError(f"{self.depth_paths[0]}: median depth {median:.3g} m with depth_scale "
                             f"{self.config.depth_scale:g} from {self.config_path}; the depth scale looks wrong")

    def world_rays(self, index: int, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Origins (N, 3), z-unit directions in world (N, 3) and depths (N,) of flat pixel indices."""
        pose = self.poses[index]
        directions = self.directions.reshape(-1, 3)[pixels] @ pose[:3, :3].T
        return pose[:3, 3].expand_as(directions), directions, self.depth(index).reshape(-1)[pixels]


def read_sdf_grid(sdf_path: Path, transform_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The grid and its index -> world transform, read once per process while the files are unchanged:
    a run asks for them when it places the network (scene centre) and again to evaluate. Callers must
    not modify them in place."""
    stats = [path.stat() for path in (sdf_path, transform_path)]
    stamps = tuple((stat.st_mtime_ns, stat.st_size) for stat in stats)
    return _read_sdf_grid(sdf_path, transform_path, stamps)


@lru_cache(maxsize=2)
def _read_sdf_grid(sdf_path: Path, transform_path: Path, stamps: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    sdf = torch.tensor(np.load(sdf_path), dtype=torch.float32)
    transform = torch.tensor(np.loadtxt(transform_path), dtype=torch.float32)
    return sdf, transform


@dataclass
class GroundTruth:
    """A signed-distance grid (index -> world transform) and optionally the surface mesh."""

    sdf: torch.Tensor
    index_to_world: torch.Tensor
    mesh_path: Path | None

    @classmethod
    def of(cls, stream: DepthStream) -> GroundTruth:
        c = stream.config
        if c.gt_sdf is None or c.gt_sdf_transform is None:
            raise InputError(f"{stream.config_path}: no ground truth (gt_sdf and gt_sdf_transform) to evaluate against")
        sdf_path, transform_path = stream.root / c.gt_sdf, stream.root / c.gt_sdf_transform
        for path in (sdf_path, transform_path):
            if not path.is_file():
                raise InputError(f"{path}: ground-truth file not found")
        sdf, transform = read_sdf_grid(sdf_path, transform_path)
        mesh = stream.root / c.gt_mesh if c.gt_mesh else None
        return cls(sdf, transform, mesh if mesh is not None and mesh.is_file() else None)

    @property
    def bounds(self) -> torch.Tensor:
        """(2, 3) world-space corners of the grid."""
        far = torch.tensor(self.sdf.shape, dtype=torch.float32) - 1
        corners = torch.stack([torch.zeros(3), far])
        return corners @ self.index_to_world[:3, :3].T + self.index_to_world[:3, 3]

    def world_to_index(self, points: torch.Tensor) -> torch.Tensor:
        inverse = torch.linalg.inv(self.index_to_world)
        return points @ inverse[:3, :3].T + inverse[:3, 3]

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        """Trilinear interpolation of the grid at world points (N, 3); clamped at the grid's border."""
        index = self.world_to_index(points)
        size = torch.tensor(self.sdf.shape, dtype=torch.float32)
        # grid_sample's (x, y, z) address the last, middle, first axes; align_corners: -1/+1 = end cells
        normalised = (2 * index / (size - 1) - 1).flip(-1)
        volume = self.sdf[None, None]
        values = torch.nn.functional.grid_sample(volume, normalised.view(1, -1, 1, 1, 3), mode="bilinear",
                                                 padding_mode="border", align_corners=True)
        return values.view(-1)

    def gradient(self, points: torch.Tensor, step: float | None = None) -> torch.Tensor:
        """Central differences of the interpolated grid (one cell wide by default)."""
        step = step or float(self.index_to_world[0, 0])
        offsets = torch.eye(3) * step
        return torch.stack([(self(points + o) - self(points - o)) / (2 * step) for o in offsets], -1)
