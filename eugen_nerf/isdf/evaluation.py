"""How good a learned SDF is, against ground truth, as iSDF measures it: SDF L1 (overall and binned by
true distance), gradient cosine distance, collision-cost error, and the mesh's accuracy, completion and
Chamfer distance. Meshes come from marching cubes (scikit-image) and are written with open3d."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from eugen_nerf.isdf.data import DepthStream, GroundTruth
from eugen_nerf.isdf.network import SDFNetwork

DISTANCE_BINS = (-float("inf"), 0.0, 0.1, 0.2, 0.5, 1.0, float("inf"))
COLLISION_EPSILONS = (1.0, 1.5, 2.0)


def visible_points(stream: DepthStream, frames: list[int], count: int, seed: int = 0) -> Tensor:
    """Points the sensor has seen: uniform along the observed rays of `frames`, up to the surface
    (iSDF evaluates on the visible region; space never observed is not a fair test)."""
    generator = torch.Generator().manual_seed(seed)
    per_frame = max(1, count // max(1, len(frames)))
    parts = []
    for frame in frames:
        depth = stream.depth(frame).reshape(-1)
        valid = torch.nonzero(depth > 0).squeeze(1)
        pixels = valid[torch.randint(len(valid), (per_frame,), generator=generator)]
        origins, directions, depth = stream.world_rays(frame, pixels)
        z = 0.07 + torch.rand(per_frame, generator=generator) * (depth - 0.07).clamp(min=0)
        parts.append(origins + z[:, None] * directions)
    return torch.cat(parts)


def chomp_cost(sdf: Tensor, epsilon: float) -> Tensor:
    """CHOMP's obstacle cost of a signed distance."""
    return torch.where(sdf < 0, -sdf + epsilon / 2,
                       torch.where(sdf <= epsilon, (sdf - epsilon) ** 2 / (2 * epsilon), torch.zeros_like(sdf)))


def query_in_chunks(network: SDFNetwork, points: Tensor, gradient: bool = False, chunk: int = 65536):
    sdfs, grads = [], []
    for start in range(0, len(points), chunk):
        part = points[start : start + chunk]
        if gradient:
            sdf, grad = network.with_gradient(part, create_graph=False)
            grads.append(grad.detach())
        else:
            with torch.no_grad():
                sdf = network(part)
        sdfs.append(sdf.detach())
    return (torch.cat(sdfs), torch.cat(grads)) if gradient else torch.cat(sdfs)


def sdf_metrics(network: SDFNetwork, truth: GroundTruth, points: Tensor) -> dict[str, float]:
    network.eval()
    predicted, gradient = query_in_chunks(network, points, gradient=True)
    actual = truth(points)
    error = (predicted - actual).abs()
    metrics: dict[str, float] = {"sdf_l1": float(error.mean())}
    for low, high in zip(DISTANCE_BINS[:-1], DISTANCE_BINS[1:], strict=True):
        inside = (actual >= low) & (actual < high)
        metrics[f"sdf_l1_bin_{low:g}_{high:g}"] = float(error[inside].mean()) if bool(inside.any()) else float("nan")
    true_gradient = truth.gradient(points)
    cosine = torch.nn.functional.cosine_similarity(gradient, true_gradient, dim=-1)
    metrics["gradient_cosine_distance"] = float((1 - cosine).mean())
    for epsilon in COLLISION_EPSILONS:
        cost_error = (chomp_cost(predicted, epsilon) - chomp_cost(actual, epsilon)).abs().mean()
        metrics[f"collision_cost_error_{epsilon:g}"] = float(cost_error)
    return metrics


def extract_mesh(network: SDFNetwork, bounds: Tensor, resolution: float):
    """Marching cubes of the zero level set on a grid over `bounds` (2, 3); an open3d TriangleMesh."""
    import open3d as o3d
    from skimage.measure import marching_cubes

    counts = ((bounds[1] - bounds[0]) / resolution).floor().long() + 1
    axes = [bounds[0, i] + resolution * torch.arange(int(counts[i])) for i in range(3)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    network.eval()
    values = query_in_chunks(network, grid).reshape(*counts.tolist()).numpy()
    if not values.min() < 0 < values.max():
        return o3d.geometry.TriangleMesh()
    vertices, faces, _, _ = marching_cubes(values, level=0.0, spacing=(resolution,) * 3)
    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(vertices + bounds[0].numpy()),
                                     o3d.utility.Vector3iVector(faces[:, ::-1].copy()))
    mesh.compute_vertex_normals()
    return mesh


def crop(mesh, low: np.ndarray, high: np.ndarray):
    import open3d as o3d

    return mesh.crop(o3d.geometry.AxisAlignedBoundingBox(low, high))


def mesh_metrics(mesh, truth_mesh_path: Path, low: np.ndarray, high: np.ndarray, samples: int) -> dict[str, float]:
    """Accuracy (predicted -> true), completion (true -> predicted) and their sum, in metres, on
    `samples` points of each surface inside the observed box."""
    import open3d as o3d

    truth = crop(o3d.io.read_triangle_mesh(str(truth_mesh_path)), low, high)
    mesh = crop(mesh, low, high)
    if len(mesh.triangles) == 0 or len(truth.triangles) == 0:
        return {"mesh_accuracy": float("nan"), "mesh_completion": float("nan"), "chamfer": float("nan")}
    predicted_points = mesh.sample_points_uniformly(samples)
    true_points = truth.sample_points_uniformly(samples)
    accuracy = float(np.mean(np.asarray(predicted_points.compute_point_cloud_distance(true_points))))
    completion = float(np.mean(np.asarray(true_points.compute_point_cloud_distance(predicted_points))))
    return {"mesh_accuracy": accuracy, "mesh_completion": completion, "chamfer": accuracy + completion}


def observed_box(stream: DepthStream, frames: list[int], margin: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box around the surface points of `frames` (meshes are compared inside it)."""
    points = []
    for frame in frames:
        depth = stream.depth(frame).reshape(-1)
        pixels = torch.nonzero(depth > 0).squeeze(1)[::7]
        origins, directions, depth = stream.world_rays(frame, pixels)
        points.append(origins + depth[:, None] * directions)
    cloud = torch.cat(points).numpy()
    return cloud.min(0) - margin, cloud.max(0) + margin


def plot_history(histories: dict[str, list[dict]], path: Path) -> None:
    """SDF L1 over the stream, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.5))
    for name, history in histories.items():
        rows = [row for row in history if "sdf_l1" in row]
        axes.plot([row["frame"] for row in rows], [row["sdf_l1"] * 100 for row in rows], marker="o", label=name)
    axes.set_xlabel("frame of the stream")
    axes.set_ylabel("SDF L1 on visible points (cm)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
