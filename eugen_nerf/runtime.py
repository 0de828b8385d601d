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
