"""Faces searched alongside Whisper (mercli.features.frame_faces, ExtractConfig.overlap_faces)."""

from __future__ import annotations

import subprocess
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mercli.features import extract as front
from mercli.features import media
from mercli.features.asr import Utterance
from mercli.features.extract import ExtractConfig, FrontEnd
from mercli.features.faces import FaceConfig
from mercli.features.frame_faces import detect_frame_faces, window_visuals
from mercli.features.media import MediaError
from tests.fakes import SquareDetector
from tests.test_engine import assert_same_features

FPS = 5.0  # sampled frames per second; FaceConfig().detect_every = 10: keyframes every 2 s


class PixelExpressionNet(torch.nn.Module):
    """Stands in for the expression net: rows made of the crop's pixels (crops that differ give
    rows that differ)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = torch.nn.functional.adaptive_avg_pool2d(x, (8, 16)).flatten(1) * self.scale
        return pooled, pooled[:, :7].softmax(dim=-1)  # (B, 128), (B, 7)


def square_clip(path: Path, n_frames: int = 20, absent: tuple[int, ...] = (6, 7)) -> Path:
    """A 320x240 video at ``FPS`` of a white square (a face to ``SquareDetector``) moving right,
    gone in the ``absent`` frames, with a 220 Hz tone."""
    frames = np.full((n_frames, 240, 320, 3), 40, np.uint8)
    for i in range(n_frames):
        if i not in absent:
            x, y = 80 + 6 * i, 100 + 2 * i
            frames[i, y - 30 : y + 30, x - 30 : x + 30] = 255
    duration_s = n_frames / FPS
    command = [
        media.ffmpeg_exe(), "-v", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "320x240", "-r", str(FPS), "-i", "-",
        "-f", "lavfi", "-i", f"sine=frequency=220:sample_rate=16000:duration={duration_s}",
        "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-pix_fmt", "yuv444p",
        "-c:a", "aac", "-shortest", str(path),
    ]  # fmt: skip
    subprocess.run(command, input=frames.tobytes(), check=True)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return square_clip(tmp_path_factory.mktemp("frame-faces") / "squares.mp4")


def front_end(windows: list[tuple[float, float]], detector: object = None) -> FrontEnd:
    utterances = [Utterance(s, e, f"words {k}") for k, (s, e) in enumerate(windows)]
    return FrontEnd(
        ExtractConfig(fps=FPS),
        transcriber=lambda audio: list(utterances),
        face_models=(detector or SquareDetector(), PixelExpressionNet()),
    )


def extract_both(path: Path, end: FrontEnd) -> tuple[front.MediaFeatures, front.MediaFeatures]:
    """The file's features with faces searched after Whisper, then alongside it."""
    return tuple(  # type: ignore[return-value]
        front.extract(path, replace(end.config, overlap_faces=mode), end) for mode in ("off", "on")
    )


def no_face_threads() -> bool:
    return not any(t.name == "mer-faces" for t in threading.enumerate())


def test_overlapped_and_sequential_paths_give_the_same_features(clip: Path) -> None:
    """Windows that start on keyframes (every 2 s) see the same keyframes either way, so the
    features are equal; so are the 10 s chunks searched when there is no speech. One front end
    serves every file."""
    end = front_end([(0.0, 1.9), (2.0, 3.9)])
    sequential, overlapped = extract_both(clip, end)
    assert_same_features(sequential, overlapped)
    assert overlapped.frame_mask.tolist() == [i not in (6, 7) for i in range(20)]
    end.transcriber = lambda audio: []
    sequential, overlapped = extract_both(clip, end)
    assert sequential.status == overlapped.status == "no_speech"
    assert sequential.descriptors == overlapped.descriptors
    np.testing.assert_array_equal(sequential.frame_mask, overlapped.frame_mask)
    assert len(overlapped.frame_mask) == 20
    assert no_face_threads()


def test_windows_off_the_keyframe_grid_give_close_features(clip: Path) -> None:
    """Frames searched in a region here and whole there: the same faces, boxes within a pixel
    or two, and the frames outside every window are not in the result."""
    sequential, overlapped = extract_both(clip, front_end([(0.3, 1.5), (1.7, 3.5)]))
    np.testing.assert_array_equal(sequential.frame_times_s, overlapped.frame_times_s)
    np.testing.assert_array_equal(sequential.frame_mask, overlapped.frame_mask)
    assert not overlapped.frame_mask.all() and overlapped.frame_mask.any()
    for u, v in zip(sequential.utterances, overlapped.utterances, strict=True):
        np.testing.assert_array_equal(u.vision_mask, v.vision_mask)
        np.testing.assert_allclose(u.vision, v.vision, atol=0.05)
        assert u.descriptors.face_coverage == v.descriptors.face_coverage


def test_overlapped_timings_say_what_they_mean(clip: Path) -> None:
    _, overlapped = extract_both(clip, front_end([(0.0, 1.9)]))
    assert {"decode", "asr", "audio", "faces", "faces_wait"} <= set(overlapped.timings_s)
    assert overlapped.timings_s["faces"] > 0 and overlapped.timings_s["faces_wait"] >= 0


class BrokenDetector(SquareDetector):
    def detect(self, images: np.ndarray, landmarks: bool = True, min_face_px=None):
        raise ValueError("the detector broke")


def test_a_failing_face_search_raises_the_same_error_either_way(
    clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A video that does not decode (before or after its first frames) and a detector that
    fails: the error the sequential path raises, raised by the overlapped one, no thread left."""
    end = front_end([(0.0, 1.9), (2.0, 3.9)], BrokenDetector())
    for mode in ("off", "on"):
        with pytest.raises(ValueError, match="the detector broke"):
            front.extract(clip, replace(end.config, overlap_faces=mode), end)
    assert no_face_threads()

    real_frames = media.iter_frames

    def fails_at_once(path, fps=5.0, max_side=640):
        raise MediaError(path, "cannot decode video (broken stream)")

    def fails_after_three(path, fps=5.0, max_side=640):
        for frame in real_frames(path, fps, max_side):
            if frame.index == 3:
                raise MediaError(path, "cannot decode video (broken stream)")
            yield frame

    for failing in (fails_at_once, fails_after_three):
        monkeypatch.setattr(media, "iter_frames", failing)
        errors = []
        for mode in ("off", "on"):
            end = front_end([(0.0, 1.9), (2.0, 3.9)])
            with pytest.raises(MediaError) as caught:
                front.extract(clip, replace(end.config, overlap_faces=mode), end)
            errors.append(str(caught.value))
        assert errors[0] == errors[1] and "squares.mp4" in errors[0] and "broken" in errors[0]
        assert no_face_threads()


def test_a_failing_transcription_stops_the_face_search(clip: Path) -> None:
    def broken(audio: np.ndarray) -> list[Utterance]:
        raise RuntimeError("whisper broke")

    end = front_end([])
    end.transcriber = broken
    with pytest.raises(RuntimeError, match="whisper broke"):
        front.extract(clip, replace(end.config, overlap_faces="on"), end)
    assert no_face_threads()


def test_files_without_audio_and_other_modes_search_after_whisper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No audio (nothing to overlap), speakers and whole-clip mode keep the sequential path."""
    from tests.fakes import make_media

    def no_worker(*args: object) -> None:
        raise AssertionError("no face worker expected")

    monkeypatch.setattr("mercli.features.frame_faces.FaceWorker", no_worker)
    video = make_media(tmp_path / "video_only.mp4", duration_s=1.0, audio=False)
    end = front_end([])
    features = front.extract(video, replace(end.config, overlap_faces="on"), end)
    assert features.status == "no_audio" and len(features.frame_mask) == 5
    assert "faces_wait" not in features.timings_s
    config = replace(end.config, overlap_faces="on")
    assert config.use_face_overlap
    assert not replace(config, use_speakers=True).use_face_overlap
    assert not replace(config, clip_s=2.0).use_face_overlap
    assert not replace(config, use_faces=False).use_face_overlap


def test_auto_overlaps_with_two_threads_and_the_cache_key_ignores_it() -> None:
    config = ExtractConfig()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert config.overlap_faces == "auto" and not config.use_face_overlap
        torch.set_num_threads(2)
        assert config.use_face_overlap
    finally:
        torch.set_num_threads(threads)
    assert not replace(config, overlap_faces="off").use_face_overlap
    on = replace(config, overlap_faces="on")
    assert on.cache_fields() == config.cache_fields()
    with pytest.raises(ValueError, match="overlap_faces"):
        ExtractConfig(overlap_faces="sometimes")  # type: ignore[arg-type]


@dataclass
class Frame:
    index: int
    time_s: float
    rgb: np.ndarray


def test_the_search_stops_where_told_and_keeps_the_file_grid() -> None:
    """Frames at or past ``until_s`` are neither searched nor read; keyframes are every
    ``detect_every``-th frame of the stream, chunk after chunk."""
    read: list[int] = []

    def frames():
        for i in range(50):
            read.append(i)
            image = np.full((240, 320, 3), 40, np.uint8)
            image[100:160, 100:160] = 255
            yield Frame(i, i / FPS, image)

    detector = SquareDetector()
    config = FaceConfig(detect_every=4)
    found = list(
        detect_frame_faces(frames(), detector, PixelExpressionNet(), config, until_s=lambda: 9.0)
    )
    assert [f.time_s for f in found] == [i / FPS for i in range(45)]
    assert read == list(range(46))
    whole = [shape[0] for shape in detector.calls if shape[1:3] == (240, 320)]
    assert sum(whole) == len(range(0, 45, 4))  # keyframes only: every face found again nearby
    assert all(len(f.faces) == 1 and f.rows.shape == (1, 154) for f in found)
    visuals = window_visuals(found, [(1.0, 2.0), (8.0, 20.0), (30.0, 31.0)], config)
    assert [len(v.mask) for v in visuals] == [5, 5, 0]
    assert visuals[0].mask.all() and visuals[0].features.any(axis=1).all()
    np.testing.assert_array_equal(visuals[1].times_s, [i / FPS for i in range(40, 45)])


def test_media_decoded_ahead_feeds_the_face_thread(
    clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the media decoded ahead (``--engine ray``) the face thread reads the frames from
    memory too: no ffmpeg runs, and the features are the file's."""
    from tests.test_engine import refuse_ffmpeg

    end = front_end([(0.3, 1.5), (1.7, 3.5)])
    config = replace(end.config, overlap_faces="on")
    from_file = front.extract(clip, config, end)
    decoded = front.decode_ahead(clip, config, use_cache=False)
    assert decoded is not None and decoded.frames is not None
    with monkeypatch.context() as patched, media.preloaded(decoded):
        refuse_ffmpeg(patched)
        from_memory = front.extract(clip, config, end)
    assert_same_features(from_file, from_memory)
