"""Process-wide settings that make torch's CPU paths faster, applied by the `eugen` command."""

from __future__ import annotations

import os

THP_VARIABLE = "THP_MEM_ALLOC_ENABLE"


def enable_huge_page_allocation() -> bool:
    """Ask torch's CPU allocator for transparent huge pages on large tensors (torch reads the
    variable lazily, at its first large allocation): a fresh large output tensor otherwise costs
    thousands of page faults, comparable to the GEMM that fills it. Applies to dense and EUGen paths
    alike. Returns whether it is on; a user's explicit setting (e.g. THP_MEM_ALLOC_ENABLE=0) is respected."""
    os.environ.setdefault(THP_VARIABLE, "1")
    return os.environ[THP_VARIABLE] == "1"


# Warnings of nerfstudio's and torch's own code that a user cannot act on, printed at every start.
KNOWN_HARMLESS_WARNINGS = (
    (UserWarning, r"Using a non-tuple sequence for multidimensional indexing is deprecated"),  # nerfstudio cameras
    (UserWarning, r"Converting a tensor with requires_grad=True to a scalar"),  # nerfstudio's writer
    (UserWarning, r"This DataLoader will create \d+ worker processes"),  # nerfstudio's eval data loader
    (FutureWarning, r"`torch\.cuda\.amp\.GradScaler\(args\.\.\.\)` is deprecated"),  # nerfstudio's trainer
    (FutureWarning, r"`torch\.cuda\.amp\.custom_(fwd|bwd)\(args\.\.\.\)` is deprecated"),
    (FutureWarning, r"`torch\.jit\.script` is deprecated"),
    (FutureWarning, r"We've integrated functorch into PyTorch"),  # nerfstudio's SceneContraction
    (FutureWarning, r"Importing `spectral_angle_mapper` from `torchmetrics\.functional`"),
)


def quiet_known_warnings() -> None:
    """Hide the warnings of KNOWN_HARMLESS_WARNINGS (every other warning still shows)."""
    import warnings

    for category, message in KNOWN_HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
