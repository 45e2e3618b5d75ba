"""Handing freed heap memory back to the operating system between windows of frames.

Face detection decodes a frame (about 1 MB), shrinks, crops and runs networks on it, and keeps
only small results. glibc's allocator serves the large temporary buffers from its heap once a
large block has been freed (its mmap threshold rises), and the small long-lived results left
between them stop the heap from shrinking: resident memory then grows with the number of frames
(10 minutes of video at 5 fps: +660 MiB over the face stage, against +285 MiB for 1 minute).
:func:`release_free_memory` after each window (``malloc_trim``) bounds it: peak +435 MiB for
10 minutes against +319 MiB for 1 minute, and what stays resident after the stage is the same.

oneDNN, which runs torch's CPU convolutions, keeps a compiled primitive per input shape, up to
1024 of them, and the face nets meet a new shape at nearly every window (MTCNN's second and third
stages run on as many crops as there are candidate boxes, the expression net on as many faces as
the window has): resident memory grew by about 7 MiB per window. :func:`bound_onednn_cache`
caps that cache at :data:`ONEDNN_CACHE_CAPACITY` primitives (30 windows of a talking head: 844 ->
910 MiB against 892 -> 1144 MiB uncapped, in 54-63 s against 64 s, one thread).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable

ONEDNN_CACHE_CAPACITY = 16  # primitives; oneDNN's default is 1024


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return None


def release_free_memory() -> bool:
    """Return the heap's free pages to the operating system (glibc ``malloc_trim(0)``).

    Returns:
        whether anything could be asked of the allocator (False where it is not glibc's).
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def bound_onednn_cache(capacity: int = ONEDNN_CACHE_CAPACITY) -> None:
    """Cap oneDNN's primitive cache unless the user set ``ONEDNN_PRIMITIVE_CACHE_CAPACITY``.

    oneDNN reads the variable when it first compiles a primitive, so this must run before the
    process's first CPU convolution: ``import mercli`` calls it.
    """
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(capacity))
