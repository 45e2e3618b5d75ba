"""Whisper's word-timestamp alignment (DTW) in numpy, without numba's per-process compile.

openai-whisper aligns tokens to audio frames with a dynamic time warping written for numba
(``whisper.timing.dtw_cpu``); numba compiles it again in every new process, about 5 s on a
2-core CPU, more than transcribing a short clip. :func:`dtw` computes the same recurrence one
anti-diagonal at a time with numpy (every cell of a diagonal depends only on the two before
it), with the same float32 cost table and the same tie-breaking, so the alignment is identical;
:func:`use_numpy_dtw` makes whisper call it.
"""

from __future__ import annotations

import numpy as np


def dtw(x: np.ndarray) -> np.ndarray:
    """Minimal-cost monotonic path through a cost matrix, as ``whisper.timing.dtw_cpu``.

    Args:
        x: costs, shape = (N, M) (text tokens x audio frames).

    Returns:
        int ``(2, path_length)``: the token and frame index of each step of the path.
    """
    n_rows, n_cols = x.shape
    cost = np.full((n_rows + 1, n_cols + 1), np.inf, dtype=np.float32)
    trace = np.full((n_rows + 1, n_cols + 1), -1, dtype=np.int8)
    cost[0, 0] = 0
    for diagonal in range(2, n_rows + n_cols + 1):  # cells (i, j) with i + j == diagonal
        i = np.arange(max(1, diagonal - n_cols), min(n_rows, diagonal - 1) + 1)
        j = diagonal - i
        c0, c1, c2 = cost[i - 1, j - 1], cost[i - 1, j], cost[i, j - 1]
        # whisper's order: diagonal if strictly smallest, else up if strictly smallest, else left.
        t = np.where((c0 < c1) & (c0 < c2), 0, np.where((c1 < c0) & (c1 < c2), 1, 2))
        c = np.where(t == 0, c0, np.where(t == 1, c1, c2))
        cost[i, j] = x[i - 1, j - 1] + c.astype(np.float64)
        trace[i, j] = t
    return _backtrace(trace)


def _backtrace(trace: np.ndarray) -> np.ndarray:
    trace = trace.copy()
    trace[0, :] = 2
    trace[:, 0] = 1
    i, j = trace.shape[0] - 1, trace.shape[1] - 1
    path = []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        step = trace[i, j]
        if step == 0:
            i, j = i - 1, j - 1
        elif step == 1:
            i -= 1
        elif step == 2:
            j -= 1
        else:
            raise ValueError(f"unexpected trace value {step} at ({i}, {j})")
    return np.array(path[::-1]).T


def use_numpy_dtw() -> None:
    """Make openai-whisper's CPU word alignment use :func:`dtw` (idempotent)."""
    import whisper.timing

    whisper.timing.dtw_cpu = dtw
