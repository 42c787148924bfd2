"""Pausing Python's cyclic garbage collector during allocation-heavy work, and restoring it after.

The conversion and the mixed-precision search allocate hundreds of thousands of small objects (protobuf
messages, onnx-ir nodes and values, arrays) that reference counting frees; the collector's repeated passes
over them are pure overhead there (measurements at the two callers). It is restored on the way out, even on an
error, and left alone when the caller already had it off.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc(pause: bool = True) -> Iterator[None]:
    """The collector off for the block when `pause` (and it was on); as it was after the block."""
    paused = pause and gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


__all__ = ["paused_gc"]
