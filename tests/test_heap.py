"""Freed heap memory goes back to the system after each window of frames."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import pytest

from mercli.features import extract as front
from mercli.features import heap
from mercli.features.extract import ExtractConfig, FrontEnd
from mercli.features.faces import VisualFeatures
from tests.fakes import make_media


def _resident_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_release_free_memory_returns_freed_heap_pages() -> None:
    # 200 MB in 64 KB blocks (under glibc's mmap threshold: they live on the heap), then every
    # block freed but one in 64 kept near the top: the heap cannot shrink by itself.
    blocks = [np.ones(16384, dtype=np.float32) for _ in range(3200)]
    keep = blocks[::64]
    del blocks
    held = _resident_mib()
    assert heap.release_free_memory()
    assert _resident_mib() < held - 100
    assert len(keep) == 50


def test_each_window_is_followed_by_a_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(heap, "release_free_memory", lambda: calls.append("release") or True)

    def window_features(frames: object, front_end: object) -> VisualFeatures:
        calls.append("window")
        return VisualFeatures(np.zeros((0, 154), np.float32), np.zeros(0, bool), np.zeros(0))

    video = make_media(tmp_path / "clip.mp4", duration_s=2.0)
    config = ExtractConfig(fps=5.0)
    windows = [(0.0, 0.9), (1.0, 1.9)]
    front.utterance_vision(video, windows, FrontEnd(config), window_features)
    assert calls == ["window", "release", "window", "release"]


@pytest.mark.parametrize(
    ("user_value", "expected"), [(None, str(heap.ONEDNN_CACHE_CAPACITY)), ("5", "5")]
)
def test_import_caps_the_onednn_cache_unless_the_user_did(
    user_value: str | None, expected: str
) -> None:
    """oneDNN kept a compiled convolution per shape the face nets met: memory grew per window."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    if user_value is not None:
        env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = user_value
    code = "import os, mercli; print(os.environ.get('ONEDNN_PRIMITIVE_CACHE_CAPACITY'))"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == expected
