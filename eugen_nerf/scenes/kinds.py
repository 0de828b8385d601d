"""`eugen scene KIND`: synthetic scenes with exact ground truth, written in the real data sets' formats.

    blender    object on a transparent background, Blender format (blender-data)
    dnerf      moving and deforming parts, D-NeRF format with per-frame time (dnerf-data)
    unbounded  object on a ground plane, geometry all around, nerfstudio-data transforms.json
    rgbd       camera path through a room, iSDF/ReplicaCAD layout, GT mesh and SDF grid

Deterministic from --seed: the same flags give the same bytes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import imageio.v3 as iio
import numpy as np
import open3d as o3d
from rich.console import Console
from rich.progress import Progress

from eugen_nerf.errors import InputError
from eugen_nerf.scenes.render import (
    Intrinsics,
    Part,
    Scene,
    depth_to_uint16,
    look_at,
    render_view,
    to_uint8,
)

DEPTH_SCALE = 1000.0  # 16-bit depth PNGs hold millimetres (nerfstudio's depth_unit_scale_factor 1e-3)
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenGL camera axes <-> OpenCV (x right, y down, z forward)


# -------------------------------------------------------------------------------------- geometry
def _box(size, center, rotation_z: float = 0.0) -> o3d.geometry.TriangleMesh:
    mesh = o3d.geometry.TriangleMesh.create_box(*size)
    mesh.translate(-np.asarray(size) / 2.0)
    mesh.rotate(o3d.geometry.get_rotation_matrix_from_xyz((0.0, 0.0, rotation_z)), center=(0, 0, 0))
    return mesh.translate(center)


def _sphere(radius: float, center, resolution: int = 24, stretch=(1.0, 1.0, 1.0)) -> o3d.geometry.TriangleMesh:
    mesh = o3d.geometry.TriangleMesh.create_sphere(radius, resolution)
    mesh.vertices = o3d.utility.Vector3dVector(np.asarray(mesh.vertices) * np.asarray(stretch))
    return mesh.translate(center)


def _cylinder(radius: float, height: float, center) -> o3d.geometry.TriangleMesh:
    return o3d.geometry.TriangleMesh.create_cylinder(radius, height, 32).translate(center)


def _torus(center, tube: float = 0.08, radius: float = 0.45) -> o3d.geometry.TriangleMesh:
    return o3d.geometry.TriangleMesh.create_torus(radius, tube, 32, 16).translate(center)


def finer(parts: list[Part], thin: list[Part]) -> list[Part]:
    """The harder version of a scene (--fine-detail): patterns twice as fine with a finer one over them,
    and thin structures a few pixels wide."""
    return [Part(p.mesh, p.color, p.pattern, 2 * p.frequency, 0.5) for p in parts] + thin


def object_parts(time: float | None = None, fine_detail: bool = False) -> list[Part]:
    """The object of the blender (static) and dnerf (time in [0, 1]) scenes, within about [-1, 1]^3."""
    t = 0.0 if time is None else time
    bob = 0.25 * math.sin(2 * math.pi * t) if time is not None else 0.0
    parts = [
        Part(_box((0.9, 0.9, 0.5), (0.0, 0.0, -0.45), rotation_z=math.pi * t * 0.5), (0.85, 0.55, 0.2), "checker", 9.0),
        Part(_sphere(0.35, (0.0, 0.0, 0.25 + bob)), (0.2, 0.45, 0.9), "stripes", 10.0),
        # Deforms over time: an ellipsoid that stretches along x while it flattens along z.
        Part(
            _sphere(0.22, (0.55, -0.45, -0.05), 20, (1.0 + 0.6 * t, 1.0, 1.0 - 0.4 * t)),
            (0.9, 0.25, 0.3),
            "rings",
            14.0,
        ),
        Part(_torus((-0.5, 0.45, -0.1)), (0.3, 0.8, 0.35), "stripes", 16.0),
    ]
    if not fine_detail:
        return parts
    thin = [Part(_cylinder(0.025, 1.1, (0.6 * math.cos(a), 0.6 * math.sin(a), 0.35)), (0.95, 0.9, 0.3), "rings", 40.0)
            for a in (0.6, 2.6, 4.6)]  # three rods standing on the box
    thin.append(Part(_torus((0.0, 0.0, 0.25 + bob), tube=0.02, radius=0.55), (0.9, 0.9, 0.95), "plain"))  # a hoop
    return finer(parts, thin)


def unbounded_parts(fine_detail: bool = False) -> list[Part]:
    """An object on a ground plane, pillars around it, a textured dome: every ray hits something."""
    parts = [
        Part(_box((40.0, 40.0, 0.2), (0.0, 0.0, -0.1)), (0.55, 0.6, 0.5), "checker", 3.0),
        Part(_box((0.7, 0.7, 0.6), (0.0, 0.0, 0.3), rotation_z=0.4), (0.85, 0.55, 0.2), "checker", 10.0),
        Part(_sphere(0.3, (0.05, 0.0, 0.9)), (0.2, 0.45, 0.9), "stripes", 12.0),
        Part(_sphere(14.0, (0.0, 0.0, 0.0), 32), (0.55, 0.7, 0.95), "stripes", 1.5),
    ]
    for k in range(8):
        angle = 2 * math.pi * k / 8 + 0.2
        color = (0.5 + 0.4 * math.cos(angle), 0.45, 0.5 + 0.4 * math.sin(angle))
        parts.append(
            Part(_cylinder(0.35, 3.0, (6.0 * math.cos(angle), 6.0 * math.sin(angle), 1.5)), color, "rings", 8.0)
        )
    if not fine_detail:
        return parts
    thin = [Part(_cylinder(0.03, 1.6, (1.1 * math.cos(a), 1.1 * math.sin(a), 0.8)), (0.95, 0.95, 0.9), "rings", 30.0)
            for a in np.linspace(0.0, 2 * math.pi, 6, endpoint=False)]  # a fence of thin poles round the object
    return finer(parts, thin)


ROOM_BOUNDS = np.array([[-2.6, -2.1, -0.1], [2.6, 2.1, 2.7]])  # outer faces of the walls, floor, ceiling


def room_parts() -> list[Part]:
    """Walls, floor and ceiling as separate non-overlapping slabs, furniture that touches nothing:
    closed, disjoint meshes, so open3d's inside/outside test (ray parity) gives the SDF sign."""
    parts = [
        Part(_box((5.2, 4.2, 0.1), (0.0, 0.0, -0.05)), (0.6, 0.5, 0.4), "checker", 4.0),  # floor
        Part(_box((5.2, 4.2, 0.1), (0.0, 0.0, 2.65)), (0.85, 0.85, 0.8), "plain"),  # ceiling
        Part(_box((0.1, 4.0, 2.6), (-2.55, 0.0, 1.3)), (0.75, 0.7, 0.55), "stripes", 3.0),
        Part(_box((0.1, 4.0, 2.6), (2.55, 0.0, 1.3)), (0.55, 0.7, 0.75), "stripes", 3.0),
        Part(_box((5.2, 0.1, 2.6), (0.0, -2.05, 1.3)), (0.7, 0.6, 0.7), "rings", 4.0),
        Part(_box((5.2, 0.1, 2.6), (0.0, 2.05, 1.3)), (0.6, 0.75, 0.6), "rings", 4.0),
        Part(_box((1.2, 0.8, 0.75), (1.1, 0.9, 0.376), rotation_z=0.2), (0.55, 0.35, 0.2), "stripes", 12.0),  # table
        Part(_box((0.5, 1.4, 1.6), (-2.1, -0.8, 0.801)), (0.3, 0.4, 0.7), "checker", 8.0),  # cabinet
        Part(_sphere(0.3, (0.2, -1.2, 0.301)), (0.9, 0.3, 0.3), "stripes", 14.0),  # ball
        Part(_cylinder(0.25, 0.5, (-0.6, 1.2, 0.251)), (0.3, 0.75, 0.4), "rings", 20.0),  # stool
    ]
    return parts


# --------------------------------------------------------------------------------------- options
@dataclass
class SceneOptions:
    """Flags shared by every scene kind."""

    output: Path = Path("outputs/scene")
    """Directory to write the scene into (created; existing files are overwritten)."""
    width: int = 100
    """Image width in pixels."""
    height: int = 100
    """Image height in pixels."""
    seed: int = 0
    """Seed of the camera placement (the scene is the same for every seed)."""
    specular: float = 0.0
    """Strength of a view-dependent highlight (0 = view-independent shading)."""
    fine_detail: bool = False
    """The harder scene: patterns twice as fine with a finer one over them, and thin structures (rods and a
    hoop on the object, a fence of poles in the unbounded scene); the rgbd room is unchanged."""
    pixel_samples: int = 1
    """Rays per pixel along each axis: n > 1 averages n x n rays over each pixel (as a camera integrates
    over its pixel, anti-aliased); 1 point-samples the pixel centre. Depth images hold the centre's depth."""

    def validate(self, positive: dict[str, float], angles: dict[str, float] | None = None) -> None:
        """Check width, height, the kind's own `positive` flags (counts and finite sizes) and its
        field-of-view `angles` (radians, strictly between 0 and pi)."""
        for name, value in {"width": self.width, "height": self.height, **positive}.items():
            if not (math.isfinite(value) and value > 0):
                raise InputError(f"--{name.replace('_', '-')} must be positive, got {value}")
        for name, value in (angles or {}).items():
            if not (math.isfinite(value) and 0 < value < math.pi):
                raise InputError(f"--{name.replace('_', '-')} must be an angle in radians in (0, pi), got {value}")
        if not (math.isfinite(self.specular) and self.specular >= 0):
            raise InputError(f"--specular must be >= 0, got {self.specular}")
        if self.pixel_samples < 1:
            raise InputError(f"--pixel-samples must be 1 or more, got {self.pixel_samples}")
        try:
            self.output.mkdir(parents=True, exist_ok=True)
            probe = self.output / ".eugen-write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise InputError(f"--output {self.output}: cannot write there ({error.strerror})") from None

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)

    def rendering(self) -> dict:
        """How the images were rendered, where it differs from point sampling: a key of the metadata file
        (only then, so that the embedded scenes stay byte for byte as they were)."""
        return {"pixel_samples": self.pixel_samples} if self.pixel_samples > 1 else {}


def _orbit_pose(
    rng: np.random.Generator, radius: tuple[float, float], elevation: tuple[float, float], target=(0.0, 0.0, 0.0)
) -> np.ndarray:
    azimuth = rng.uniform(0, 2 * math.pi)
    elev = rng.uniform(*elevation)
    r = rng.uniform(*radius)
    eye = np.array(
        [r * math.cos(elev) * math.cos(azimuth), r * math.cos(elev) * math.sin(azimuth), r * math.sin(elev)]
    ) + np.asarray(target)
    return look_at(eye, np.asarray(target, dtype=np.float64))


def _write_view(
    scene: Scene,
    intr: Intrinsics,
    pose: np.ndarray,
    opts: SceneOptions,
    image_path: Path,
    depth_path: Path,
    depth_scale: float = DEPTH_SCALE,
    alpha: bool = False,
) -> None:
    """Render one view; write its image (RGBA where `alpha`, else the colour over black; JPEG by suffix) and
    its 16-bit depth PNG."""
    rgb, coverage, depth = render_view(scene, intr, pose, opts.specular, opts.pixel_samples)
    if alpha:
        image = np.concatenate([to_uint8(rgb), to_uint8(coverage)[..., None]], axis=-1)
    else:
        image = to_uint8(rgb * coverage[..., None])
    for path in (image_path, depth_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(image_path, image, **({"quality": 95} if image_path.suffix == ".jpg" else {}))
    iio.imwrite(depth_path, depth_to_uint16(depth, depth_scale))


def _save_mesh(path: Path, mesh: o3d.geometry.TriangleMesh) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not o3d.io.write_triangle_mesh(str(path), mesh, write_ascii=False, compressed=False, print_progress=False):
        raise InputError(f"{path}: could not write the mesh")


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _progress(console: Console | None) -> Progress:
    return Progress(console=console or Console(), transient=False)


# ------------------------------------------------------------------------------------- blender
@dataclass
class BlenderScene(SceneOptions):
    """Object-centric static scene in the Blender format (blender-data), with depth and GT mesh."""

    timed: ClassVar[bool] = False  # D-NeRF: every frame has its own time and geometry
    output: Path = Path("outputs/scene-blender")
    train_views: int = 40
    val_views: int = 5
    test_views: int = 10
    camera_angle_x: float = 0.69
    """Horizontal field of view in radians (the Blender scenes' value)."""

    def run(self, console: Console | None = None) -> Path:
        splits = {"train": self.train_views, "val": self.val_views, "test": self.test_views}
        self.validate(
            {f"{split}_views": count for split, count in splits.items()}, {"camera_angle_x": self.camera_angle_x}
        )
        return write_blender_like(self, splits, timed=self.timed, console=console)


@dataclass
class DNeRFScene(BlenderScene):
    """Dynamic scene (moving and deforming parts) in the D-NeRF format (dnerf-data), depth per frame."""

    timed: ClassVar[bool] = True
    output: Path = Path("outputs/scene-dnerf")
    train_views: int = 50


def write_blender_like(opts: BlenderScene, splits: dict[str, int], timed: bool, console: Console | None) -> Path:
    """Blender / D-NeRF layout: transforms_{split}.json, {split}/r_i.png (RGBA), {split}/r_i_depth.png
    (16-bit, millimetres of z-depth), gt/mesh.ply (static) or gt/mesh_test_i.ply (each test frame's time)."""
    rng = opts.rng()
    out = opts.output
    intr = Intrinsics.from_fov(opts.width, opts.height, opts.camera_angle_x)
    static_scene = None if timed else Scene(object_parts(fine_detail=opts.fine_detail))
    total = sum(splits.values())
    with _progress(console) as progress:
        task = progress.add_task(f"rendering {out.name}", total=total)
        for split, count in splits.items():
            frames = []
            for index in range(count):
                pose = _orbit_pose(rng, (3.6, 4.4), (0.1, 1.2))
                # Train times evenly cover [0, 1]; val/test times fall between them.
                time = (index + (0.0 if split == "train" else 0.5)) / max(count - (1 if split == "train" else 0), 1)
                time = float(min(time, 1.0))
                scene = static_scene or Scene(object_parts(time, opts.fine_detail))
                _write_view(
                    scene,
                    intr,
                    pose,
                    opts,
                    out / split / f"r_{index}.png",
                    out / split / f"r_{index}_depth.png",
                    alpha=True,
                )
                frame = {
                    "file_path": f"./{split}/r_{index}",
                    "rotation": 0.0,
                    "transform_matrix": np.round(pose, 8).tolist(),
                }
                if timed:
                    frame["time"] = time
                    if split == "test":
                        _save_mesh(out / "gt" / f"mesh_test_{index}.ply", scene.combined_mesh())
                frames.append(frame)
                progress.advance(task)
            _write_json(out / f"transforms_{split}.json",
                        {"camera_angle_x": opts.camera_angle_x, **opts.rendering(), "frames": frames})
    if static_scene is not None:
        _save_mesh(out / "gt" / "mesh.ply", static_scene.combined_mesh())
    return out


# ----------------------------------------------------------------------------------- unbounded
@dataclass
class UnboundedScene(SceneOptions):
    """360-degree scene (object on a ground plane, geometry all around) as nerfstudio-data."""

    output: Path = Path("outputs/scene-unbounded")
    width: int = 120
    height: int = 90
    views: int = 60
    test_every: int = 8
    """Every n-th view goes to the eval split (listed in transforms.json)."""
    fov_x: float = 1.2

    def run(self, console: Console | None = None) -> Path:
        self.validate({"views": self.views, "test_every": self.test_every}, {"fov_x": self.fov_x})
        rng, out = self.rng(), self.output
        intr = Intrinsics.from_fov(self.width, self.height, self.fov_x)
        scene = Scene(unbounded_parts(self.fine_detail))
        frames, train, test = [], [], []
        with _progress(console) as progress:
            task = progress.add_task(f"rendering {out.name}", total=self.views)
            for index in range(self.views):
                azimuth = 2 * math.pi * index / self.views + rng.uniform(-0.1, 0.1)
                radius, height = rng.uniform(2.5, 4.0), rng.uniform(0.4, 1.6)
                eye = np.array([radius * math.cos(azimuth), radius * math.sin(azimuth), height])
                pose = look_at(eye, np.array([0.0, 0.0, 0.4]) + rng.uniform(-0.15, 0.15, 3))
                name, depth_name = f"images/frame_{index:05d}.png", f"depth/frame_{index:05d}.png"
                _write_view(scene, intr, pose, self, out / name, out / depth_name)
                frames.append(
                    {"file_path": name, "depth_file_path": depth_name, "transform_matrix": np.round(pose, 8).tolist()}
                )
                (test if index % self.test_every == 0 else train).append(name)
                progress.advance(task)
        _write_json(
            out / "transforms.json",
            {
                "camera_model": "OPENCV",
                "fl_x": intr.fx,
                "fl_y": intr.fy,
                "cx": intr.cx,
                "cy": intr.cy,
                "w": intr.width,
                "h": intr.height,
                "k1": 0.0,
                "k2": 0.0,
                "p1": 0.0,
                "p2": 0.0,
                **self.rendering(),
                "frames": frames,
                "train_filenames": train,
                "val_filenames": test,
                "test_filenames": test,
            },
        )
        _save_mesh(out / "gt" / "mesh.ply", scene.combined_mesh())
        return out


# ---------------------------------------------------------------------------------------- rgbd
@dataclass
class RGBDScene(SceneOptions):
    """A camera path through a room in the iSDF/ReplicaCAD layout, with GT mesh and SDF grid."""

    output: Path = Path("outputs/scene-rgbd")
    width: int = 120
    height: int = 68
    frames: int = 120
    focal: float = 60.0
    """fx = fy in pixels (ReplicaCAD's 600 px at a tenth of its 1200x680 resolution by default)."""
    depth_scale: float = DEPTH_SCALE
    """Depth PNG value per metre."""
    sdf_spacing: float = 0.075
    """Spacing of the ground-truth SDF grid in metres."""

    def run(self, console: Console | None = None) -> Path:
        self.validate(
            {
                "frames": self.frames,
                "focal": self.focal,
                "depth_scale": self.depth_scale,
                "sdf_spacing": self.sdf_spacing,
            }
        )
        out = self.output
        rng = self.rng()
        # The renderer puts pixel centres at i + 0.5; iSDF/ReplicaCAD at integer i (cx = 599.5 for 1200 px).
        # Render with the centre at W/2 and record (W - 1)/2: the same rays in either convention.
        intr = Intrinsics(self.width, self.height, self.focal, self.focal, self.width / 2, self.height / 2)
        scene = Scene(room_parts())
        poses = []
        phase = rng.uniform(0, 2 * math.pi)
        with _progress(console) as progress:
            task = progress.add_task(f"rendering {out.name}", total=self.frames + 1)
            for index in range(self.frames):
                s = 2 * math.pi * index / self.frames + phase
                eye = np.array([1.4 * math.cos(s), 1.0 * math.sin(s), 1.35 + 0.15 * math.sin(3 * s)])
                look = s + math.pi * 0.75 + 0.3 * math.sin(2 * s)  # look across the room, sweeping
                target = np.array([eye[0] + math.cos(look), eye[1] + math.sin(look), 0.9 + 0.2 * math.cos(s)])
                pose = look_at(eye, target)
                _write_view(
                    scene,
                    intr,
                    pose,
                    self,
                    out / "results" / f"frame{index:06d}.jpg",
                    out / "results" / f"depth{index:06d}.png",
                    self.depth_scale,
                )
                poses.append(pose @ GL_TO_CV)
                progress.advance(task)
            np.savetxt(out / "traj.txt", np.stack([p.reshape(-1) for p in poses]), fmt="%.8f")
            _write_json(
                out / "dataset.json",
                {
                    "format": "isdf-replicacad",
                    "camera_convention": "opencv (x right, y down, z forward)",
                    "width": intr.width,
                    "height": intr.height,
                    "fx": intr.fx,
                    "fy": intr.fy,
                    "cx": intr.cx - 0.5,
                    "cy": intr.cy - 0.5,
                    "pixel_centers": "integer coordinates",
                    "depth_scale": self.depth_scale,
                    "fps": 30,
                    "frames": self.frames,
                    "gt_mesh": "gt/mesh.ply",
                    "gt_sdf": "gt/sdf.npy",
                    "gt_sdf_transform": "gt/sdf_transform.txt",
                    **self.rendering(),
                },
            )
            _save_mesh(out / "gt" / "mesh.ply", scene.combined_mesh())
            grid, transform = sdf_grid(scene, ROOM_BOUNDS, self.sdf_spacing)
            np.save(out / "gt" / "sdf.npy", grid)
            np.savetxt(out / "gt" / "sdf_transform.txt", transform, fmt="%.8f")
            progress.advance(task)
        return out


def sdf_grid(scene: Scene, bounds: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Signed distances (negative inside solids) on a regular grid, and the 4x4 index-to-world transform."""
    counts = np.floor((bounds[1] - bounds[0]) / spacing).astype(int) + 1
    axes = [bounds[0][i] + spacing * np.arange(counts[i]) for i in range(3)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3).astype(np.float32)
    sdf = scene.raycaster.compute_signed_distance(o3d.core.Tensor(points)).numpy()
    transform = np.eye(4)
    transform[:3, :3] *= spacing
    transform[:3, 3] = bounds[0]
    return sdf.reshape(*counts).astype(np.float32), transform


