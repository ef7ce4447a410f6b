"""Leak checks by counting the interpreter's allocated memory blocks."""

from __future__ import annotations

import gc
import sys
from typing import Callable


def least_block_growth(run: Callable[[], object], runs: int = 1000, windows: int = 3) -> int:
    """Return the smallest growth of allocated blocks over ``windows`` rounds of ``runs`` calls.

    A leak of one block per call grows every round by ``runs`` or more.
    The interpreter's own caches grow now and then by one or two hundred
    blocks in one round but not in every round, so the smallest round
    shows a leak without those jumps.
    """
    smallest = None
    for _ in range(windows):
        gc.collect()
        allocated = sys.getallocatedblocks()
        for _ in range(runs):
            run()
        gc.collect()
        growth = sys.getallocatedblocks() - allocated
        if smallest is None or growth < smallest:
            smallest = growth
    assert smallest is not None
    return smallest
