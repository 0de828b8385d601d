"""Camera poses that data files give: each must be finite and rigid (a rotation and a translation)."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor


def first_bad_pose(poses: Float[Tensor, "N 3_or_4 4"]) -> tuple[int, str] | None:
    """(index, what is wrong) of the first camera-to-world that is not finite or not rigid, or None.

    A rotation may come scaled by one factor (parsers rescale scenes), so it is normalised before the test.
    """
    poses = poses.double()
    rotations = poses[:, :3, :3]
    scale = torch.linalg.matrix_norm(rotations, dim=(-2, -1), keepdim=True) / 3**0.5
    normalised = rotations / scale.clamp_min(1e-12)
    identity = torch.eye(3, dtype=poses.dtype)
    for index in range(len(poses)):
        if not torch.isfinite(poses[index]).all():
            return index, "holds NaN or infinite values"
        rotation = normalised[index]
        if not torch.allclose(rotation.T @ rotation, identity, atol=1e-3) or torch.det(rotation) < 0:
            return index, "is not a rotation and translation"
    return None
