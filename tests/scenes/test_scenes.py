"""Synthetic scenes: loaded by nerfstudio's own dataparsers, depth and SDF against the GT mesh,
determinism, bad flags."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import open3d as o3d
import pytest
import torch
from scipy.ndimage import map_coordinates

from eugen_nerf.cli import main
from eugen_nerf.scenes.kinds import BlenderScene, DNeRFScene, RGBDScene, UnboundedScene, object_parts, unbounded_parts
from eugen_nerf.scenes.render import Intrinsics, Scene, look_at, render_view


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scenes")
    return {
        "blender": BlenderScene(
            output=root / "blender", width=40, height=32, train_views=4, val_views=1, test_views=2
        ).run(),
        "dnerf": DNeRFScene(output=root / "dnerf", width=32, height=32, train_views=5, val_views=1, test_views=2).run(),
        "unbounded": UnboundedScene(output=root / "unbounded", width=48, height=36, views=10, test_every=4).run(),
        "rgbd": RGBDScene(output=root / "rgbd", width=48, height=28, focal=24.0, frames=6, sdf_spacing=0.1).run(),
    }


def _distance_to_mesh(mesh_path: Path, points: np.ndarray) -> np.ndarray:
    mesh = o3d.t.geometry.TriangleMesh.from_legacy(o3d.io.read_triangle_mesh(str(mesh_path)))
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(mesh)
    return scene.compute_distance(o3d.core.Tensor(points.astype(np.float32))).numpy()


def _unproject_with_nerfstudio(cameras, index: int, depth: np.ndarray) -> np.ndarray:
    """World points of a z-depth map, through nerfstudio's own ray generation."""
    rays = cameras.generate_rays(camera_indices=index)
    forward = -cameras.camera_to_worlds[index, :3, 2]
    cos_axis = (rays.directions * forward).sum(-1)
    t = torch.from_numpy(depth).float() / cos_axis
    points = rays.origins + rays.directions * t[..., None]
    return points[torch.from_numpy(depth > 0)].numpy()


def test_blender_scene_loads_with_blender_dataparser(scenes):
    from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig

    path = scenes["blender"]
    for split, count in (("train", 4), ("val", 1), ("test", 2)):
        outputs = BlenderDataParserConfig(data=path).setup().get_dataparser_outputs(split)
        assert len(outputs.image_filenames) == count
        assert int(outputs.cameras.width[0]) == 40 and int(outputs.cameras.height[0]) == 32
    outputs = BlenderDataParserConfig(data=path).setup().get_dataparser_outputs("train")
    frames = json.loads((path / "transforms_train.json").read_text())["frames"]
    expected = torch.tensor([f["transform_matrix"] for f in frames], dtype=torch.float32)[:, :3]
    assert torch.allclose(outputs.cameras.camera_to_worlds, expected, atol=1e-5)
    image = iio.imread(path / "train" / "r_0.png")
    assert image.shape == (32, 40, 4) and image[..., 3].min() == 0 and image[..., 3].max() == 255


def test_blender_depth_agrees_with_mesh(scenes):
    from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig

    path = scenes["blender"]
    cameras = BlenderDataParserConfig(data=path).setup().get_dataparser_outputs("train").cameras
    for index in range(2):
        depth = iio.imread(path / "train" / f"r_{index}_depth.png").astype(np.float64) / 1000.0
        points = _unproject_with_nerfstudio(cameras, index, depth)
        assert len(points) > 100
        # 1 mm depth quantisation, at grazing angles a little more along the surface
        assert np.percentile(_distance_to_mesh(path / "gt" / "mesh.ply", points), 99) < 3e-3


def test_dnerf_scene_has_times_and_moves(scenes):
    from nerfstudio.data.dataparsers.dnerf_dataparser import DNeRFDataParserConfig

    path = scenes["dnerf"]
    outputs = DNeRFDataParserConfig(data=path).setup().get_dataparser_outputs("train")
    assert len(outputs.image_filenames) == 5
    times = outputs.cameras.times.flatten()
    assert float(times.min()) == 0.0 and float(times.max()) == 1.0
    test = DNeRFDataParserConfig(data=path).setup().get_dataparser_outputs("test")
    # each test frame has the GT mesh of its own time, and the depth agrees with that mesh
    assert len(list((path / "gt").glob("mesh_test_*.ply"))) == 2
    a = np.asarray(o3d.io.read_triangle_mesh(str(path / "gt" / "mesh_test_0.ply")).vertices)
    b = np.asarray(o3d.io.read_triangle_mesh(str(path / "gt" / "mesh_test_1.ply")).vertices)
    assert a.shape == b.shape and np.abs(a - b).max() > 0.05
    depth = iio.imread(path / "test" / "r_1_depth.png").astype(np.float64) / 1000.0
    points = _unproject_with_nerfstudio(test.cameras, 1, depth)
    assert np.percentile(_distance_to_mesh(path / "gt" / "mesh_test_1.ply", points), 99) < 3e-3


def test_unbounded_scene_loads_with_nerfstudio_dataparser(scenes):
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    path = scenes["unbounded"]
    parser = NerfstudioDataParserConfig(data=path, load_3D_points=False).setup()
    train, test = parser.get_dataparser_outputs("train"), parser.get_dataparser_outputs("test")
    assert len(train.image_filenames) == 7 and len(test.image_filenames) == 3
    assert int(train.cameras.width[0]) == 48 and int(train.cameras.height[0]) == 36
    assert len(train.metadata["depth_filenames"]) == 7
    # nerfstudio re-centres and scales the poses: distances between cameras scale by dataparser_scale
    meta = json.loads((path / "transforms.json").read_text())
    by_name = {f["file_path"]: np.array(f["transform_matrix"]) for f in meta["frames"]}
    original = np.stack([by_name[f"images/{p.name}"][:3, 3] for p in train.image_filenames])
    parsed = train.cameras.camera_to_worlds[:, :3, 3].numpy()
    ours = np.linalg.norm(original[:, None] - original[None], axis=-1) * train.dataparser_scale
    theirs = np.linalg.norm(parsed[:, None] - parsed[None], axis=-1)
    assert np.allclose(ours, theirs, atol=1e-4)
    # the background is never empty: every pixel of every view has depth
    assert all(iio.imread(path / f["depth_file_path"]).min() > 0 for f in meta["frames"])


def test_rgbd_depth_and_trajectory_agree_with_mesh(scenes):
    path = scenes["rgbd"]
    info = json.loads((path / "dataset.json").read_text())
    trajectory = np.loadtxt(path / "traj.txt").reshape(-1, 4, 4)
    assert len(trajectory) == 6 == len(list((path / "results").glob("depth*.png")))
    assert len(list((path / "results").glob("frame*.jpg"))) == 6
    for index in (0, 3):
        depth = iio.imread(path / "results" / f"depth{index:06d}.png").astype(np.float64) / info["depth_scale"]
        v, u = np.nonzero(depth > 0)
        z = depth[v, u]
        camera = np.stack([(u - info["cx"]) / info["fx"] * z, (v - info["cy"]) / info["fy"] * z, z, np.ones_like(z)])
        world = (trajectory[index] @ camera)[:3].T  # OpenCV camera-to-world
        assert np.percentile(_distance_to_mesh(path / "gt" / "mesh.ply", world), 99) < 3e-3


def test_rgbd_sdf_grid_matches_mesh_distance_and_sign(scenes):
    path = scenes["rgbd"]
    grid = np.load(path / "gt" / "sdf.npy")
    transform = np.loadtxt(path / "gt" / "sdf_transform.txt")
    rng = np.random.default_rng(0)
    lo = transform[:3, 3]
    hi = lo + transform[0, 0] * (np.array(grid.shape) - 1)
    points = rng.uniform(lo, hi, size=(2000, 3))
    index = (points - lo) / transform[0, 0]
    interpolated = map_coordinates(grid, index.T, order=1)
    exact = _distance_to_mesh(path / "gt" / "mesh.ply", points)
    # |trilinear SDF| vs unsigned distance: within the grid's interpolation error
    assert np.median(np.abs(np.abs(interpolated) - exact)) < 0.01
    assert np.percentile(np.abs(np.abs(interpolated) - exact), 95) < 0.1

    def sdf_at(point):
        return float(map_coordinates(grid, ((np.array(point) - lo) / transform[0, 0])[:, None], order=1)[0])

    assert sdf_at([0.0, 0.0, 1.9]) == pytest.approx(0.7, abs=0.01)  # free space: the ceiling is 0.7 m away
    assert sdf_at([1.1, 0.9, 0.35]) < 0  # inside the table
    assert sdf_at([-2.1, -0.8, 0.8]) == pytest.approx(-0.25, abs=0.02)  # middle of the 0.5 m deep cabinet
    assert sdf_at([0.2, -1.2, 0.301]) == pytest.approx(-0.3, abs=0.02)  # centre of the ball


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


@pytest.mark.parametrize("kind", ["blender", "rgbd"])
def test_same_seed_same_bytes(tmp_path, kind):
    def make(out, seed):
        if kind == "blender":
            return BlenderScene(
                output=out, width=16, height=16, train_views=2, val_views=1, test_views=1, seed=seed
            ).run()
        return RGBDScene(output=out, width=16, height=12, focal=8.0, frames=2, sdf_spacing=0.3, seed=seed).run()

    assert _digest(make(tmp_path / "a", 3)) == _digest(make(tmp_path / "b", 3))
    assert _digest(make(tmp_path / "c", 4)) != _digest(make(tmp_path / "a", 3))


def test_pixel_samples_average_the_rays_over_each_pixel():
    """n x n rays per pixel are the box-filtered render at n times the resolution: colour, and coverage where
    the object's silhouette cuts a pixel; the depth stays the pixel centre's."""
    pose = look_at(np.array([3.0, 0.5, 1.2]), np.zeros(3))
    small, large = Intrinsics.from_fov(24, 18, 1.2), Intrinsics.from_fov(96, 72, 1.2)
    for scene in (Scene(unbounded_parts(fine_detail=True)), Scene(object_parts(fine_detail=True))):
        rgb, coverage, depth = render_view(scene, small, pose, 0.5, pixel_samples=4)
        fine_rgb, fine_coverage, _ = render_view(scene, large, pose, 0.5)
        blocks = fine_coverage.reshape(18, 4, 24, 4).sum((1, 3))
        straight = (fine_rgb.reshape(18, 4, 24, 4, 3).sum((1, 3))) / np.maximum(blocks, 1)[..., None]
        assert np.allclose(coverage, blocks / 16) and np.allclose(rgb, straight, atol=1e-9)
        point_rgb, point_coverage, point_depth = render_view(scene, small, pose, 0.5)
        assert np.array_equal(point_depth, depth) and not np.allclose(point_rgb, rgb, atol=0.02)
    assert ((coverage > 0) & (coverage < 1)).any()  # the object scene's silhouette: partly covered pixels


def test_pixel_samples_one_is_the_point_sampled_scene(tmp_path):
    a = UnboundedScene(output=tmp_path / "a", width=20, height=15, views=2, test_every=2).run()
    b = UnboundedScene(output=tmp_path / "b", width=20, height=15, views=2, test_every=2, pixel_samples=1).run()
    c = UnboundedScene(output=tmp_path / "c", width=20, height=15, views=2, test_every=2, pixel_samples=3).run()
    assert _digest(a) == _digest(b) != _digest(c)
    # the metadata says how the images were made, where they were not point-sampled
    assert "pixel_samples" not in json.loads((b / "transforms.json").read_text())
    assert json.loads((c / "transforms.json").read_text())["pixel_samples"] == 3
    blender = BlenderScene(output=tmp_path / "blender", width=12, height=12, train_views=1, val_views=1, test_views=1,
                           pixel_samples=2).run()
    assert all(json.loads((blender / f"transforms_{split}.json").read_text())["pixel_samples"] == 2
               for split in ("train", "val", "test"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["scene", "blender", "--train-views", "0"], "--train-views"),
        (["scene", "unbounded", "--width", "-4"], "--width"),
        (["scene", "rgbd", "--frames", "0"], "--frames"),
        (["scene", "blender", "--camera-angle-x", "0"], "--camera-angle-x"),
        (["scene", "dnerf", "--camera-angle-x", "-0.5"], "--camera-angle-x"),
        (["scene", "unbounded", "--fov-x", "3.2"], "--fov-x"),
        (["scene", "unbounded", "--pixel-samples", "0"], "--pixel-samples"),
        (["scene", "rgbd", "--output", "/proc/no-such-dir/x"], "--output"),
    ],
)
def test_bad_scene_flags_give_one_line_errors(args, message, capsys):
    assert main(args) == 2
    out = capsys.readouterr().err.strip()
    assert out.count("\n") == 0 and message in out


def test_unknown_scene_kind(capsys):
    assert main(["scene", "forest"]) == 2
    out = capsys.readouterr().err.strip()
    assert "unknown scene command" in out and out.count("\n") == 0


def _same_up_to_float_rounding(a, b) -> bool:
    """Equal JSON values, floats within a relative 1e-12 (a few units in the last place)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and math.isclose(a, b, rel_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_up_to_float_rounding(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_up_to_float_rounding(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.slow
def test_embedded_data_regenerates_byte_for_byte(tmp_path):
    """data/ is what scripts/make-data.sh makes: same commands, same bytes."""
    assert _same_up_to_float_rounding({"f": [87.70175682468613]}, {"f": [87.70175682468614]})
    assert not _same_up_to_float_rounding({"f": [87.7017568246]}, {"f": [87.7017568247]})
    assert not _same_up_to_float_rounding({"f": 1.0}, {"g": 1.0})
    data = Path(__file__).resolve().parents[2] / "data"
    kinds = {"blender": BlenderScene, "dnerf": DNeRFScene, "unbounded": UnboundedScene, "rgbd": RGBDScene,
             "blender-fine": BlenderScene, "dnerf-fine": DNeRFScene, "unbounded-fine": UnboundedScene}
    harder = {"fine_detail": True, "specular": 0.5}  # scripts/make-data.sh's flags of the -fine scenes
    for name, kind in kinds.items():
        made = kind(output=tmp_path / name, seed=0, **(harder if name.endswith("-fine") else {})).run()
        if _digest(made) == _digest(data / name):
            continue
        # Another CPU or thread count may round a ray hit differently: allow a rare one-level pixel
        # difference in images and float noise in grids; everything else must match exactly.
        files = sorted(p.relative_to(made) for p in made.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(data / name) for p in (data / name).rglob("*") if p.is_file())
        for file in files:
            fresh, stored = made / file, data / name / file
            if fresh.read_bytes() == stored.read_bytes():
                continue
            where = f"data/{name}/{file} differs from a fresh `eugen scene {name}`"
            if file.suffix in (".png", ".jpg"):
                a, b = (iio.imread(f).astype(np.int32) for f in (fresh, stored))
                tolerance = 1 if file.suffix == ".png" else 8
                assert np.abs(a - b).max() <= tolerance and (a != b).mean() < 0.01, where
            elif file.suffix == ".npy":
                assert np.allclose(np.load(fresh), np.load(stored), atol=1e-5), where
            elif file.suffix == ".json":  # e.g. a focal length from tan(), whose last bit differs between libms
                assert _same_up_to_float_rounding(json.loads(fresh.read_text()), json.loads(stored.read_text())), where
            else:
                raise AssertionError(where)
