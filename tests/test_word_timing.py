"""Whisper's word-alignment DTW in numpy (mercli.features.word_timing)."""

from __future__ import annotations

import numpy as np
import pytest

from mercli.features.word_timing import dtw


def whisper_dtw(x: np.ndarray) -> np.ndarray:
    """openai-whisper's ``dtw_cpu`` + ``backtrace`` loops, in plain Python (no numba)."""
    n, m = x.shape
    cost = np.ones((n + 1, m + 1), dtype=np.float32) * np.inf
    trace = -np.ones((n + 1, m + 1), dtype=np.float32)
    cost[0, 0] = 0
    for j in range(1, m + 1):
        for i in range(1, n + 1):
            c0, c1, c2 = cost[i - 1, j - 1], cost[i - 1, j], cost[i, j - 1]
            if c0 < c1 and c0 < c2:
                c, t = c0, 0
            elif c1 < c0 and c1 < c2:
                c, t = c1, 1
            else:
                c, t = c2, 2
            cost[i, j] = x[i - 1, j - 1] + c
            trace[i, j] = t
    i, j = n, m
    trace[0, :], trace[:, 0] = 2, 1
    path = []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        if trace[i, j] == 0:
            i, j = i - 1, j - 1
        elif trace[i, j] == 1:
            i -= 1
        else:
            j -= 1
    return np.array(path[::-1]).T


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (6, 1), (7, 40), (25, 120)])
def test_same_path_as_whisper(shape: tuple[int, int]) -> None:
    x = -np.random.default_rng(sum(shape)).random(shape)  # float64, as whisper passes it
    np.testing.assert_array_equal(dtw(x), whisper_dtw(x))


def test_same_tie_breaking_as_whisper() -> None:
    rng = np.random.default_rng(0)
    for x in (np.zeros((6, 30)), np.round(-rng.random((12, 50)), 1)):
        np.testing.assert_array_equal(dtw(x), whisper_dtw(x))


def test_path_is_monotonic_and_covers_both_ends() -> None:
    path = dtw(-np.random.default_rng(3).random((9, 31)))
    assert path.shape[0] == 2 and tuple(path[:, 0]) == (0, 0) and tuple(path[:, -1]) == (8, 30)
    steps = np.diff(path, axis=1)
    assert ((steps >= 0) & (steps <= 1)).all() and (steps.sum(axis=0) >= 1).all()


@pytest.mark.slow
def test_same_path_as_whispers_numba_dtw() -> None:
    timing = pytest.importorskip("whisper.timing")
    x = -np.random.default_rng(5).random((40, 600))
    np.testing.assert_array_equal(dtw(x), timing.dtw_cpu(x))


def test_use_numpy_dtw_replaces_whispers_cpu_dtw() -> None:
    timing = pytest.importorskip("whisper.timing")
    from mercli.features.word_timing import use_numpy_dtw

    use_numpy_dtw()
    assert timing.dtw_cpu is dtw
