"""Decoding with the ffmpeg binary, on synthetic media made on the fly."""

from __future__ import annotations

import inspect
import subprocess
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from mercli.features import media
from mercli.features.media import MediaError, iter_frames, load_audio, probe


def make_media(
    path: Path,
    duration_s: float = 2.0,
    size: str = "160x120",
    rate: int = 25,
    video_codec: str | None = "libx264",
    audio_rate_hz: int | None = 44100,
    extra: tuple[str, ...] = (),
) -> Path:
    """Write a lavfi test pattern (+ a 440 Hz sine) to ``path`` with the project's ffmpeg."""
    command = [media.ffmpeg_exe(), "-v", "error", "-y"]
    if video_codec:
        command += ["-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}:duration={duration_s}"]
    if audio_rate_hz:
        command += [
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:sample_rate={audio_rate_hz}:duration={duration_s}",
        ]
    if video_codec:
        command += ["-c:v", video_codec, "-pix_fmt", "yuv420p"]
        command += ["-preset", "ultrafast"] if video_codec.startswith("libx26") else []
    if audio_rate_hz:
        command += ["-c:a", "aac", "-ac", "2"]
    subprocess.run([*command, *extra, str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_media(tmp_path_factory.mktemp("media") / "clip.mp4")


def test_probe_reports_streams(clip: Path) -> None:
    info = probe(clip)
    assert info.has_audio and info.has_video
    assert (info.width, info.height) == (160, 120)
    assert (info.display_width, info.display_height) == (160, 120)
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert info.audio_sample_rate_hz == 44100
    assert info.duration_s == pytest.approx(2.0, abs=0.1)


def test_load_audio_resamples_to_16k_mono(clip: Path) -> None:
    audio = load_audio(clip)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) / 16000 == pytest.approx(2.0, abs=0.05)
    assert 0.1 < np.abs(audio).max() <= 1.0
    assert audio.flags.writeable  # whisper and torch.from_numpy want a writable array
    assert len(load_audio(clip, sample_rate_hz=8000)) == pytest.approx(len(audio) / 2, abs=50)


def test_iter_frames_count_size_and_times(clip: Path) -> None:
    frames = list(iter_frames(clip, fps=5.0, max_side=80))
    assert len(frames) == pytest.approx(2.0 * 5, abs=1)
    assert all(f.rgb.shape == (60, 80, 3) and f.rgb.dtype == np.uint8 for f in frames)
    assert [f.time_s for f in frames[:3]] == [0.0, 0.2, 0.4]
    assert frames[0].rgb.std() > 10  # a real picture, not a blank buffer
    assert frames[0].rgb.flags.writeable


def test_small_video_is_not_upscaled(clip: Path) -> None:
    frame = next(iter(iter_frames(clip, fps=1.0, max_side=640)))
    assert frame.rgb.shape == (120, 160, 3)


def test_frames_stream_with_bounded_memory(tmp_path: Path) -> None:
    """A generator holding one frame at a time: peak memory far below the decoded total."""
    video = make_media(
        tmp_path / "long.mp4", duration_s=20.0, size="320x240", rate=10, audio_rate_hz=None
    )
    frames = iter_frames(video, fps=5.0, max_side=320)
    assert inspect.isgenerator(frames)
    tracemalloc.start()
    n_frames = sum(1 for _ in frames)
    _, peak_bytes = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    total_bytes = n_frames * 320 * 240 * 3
    assert n_frames == pytest.approx(100, abs=1)
    assert peak_bytes < total_bytes / 10


def test_stopping_early_ends_ffmpeg(clip: Path) -> None:
    frames = iter_frames(clip, fps=25.0)
    next(frames)
    frames.close()  # must kill the pipe's ffmpeg, not wait for it to finish
    assert inspect.getgeneratorstate(frames) == inspect.GEN_CLOSED


def test_portrait_rotation_is_applied(tmp_path: Path) -> None:
    landscape = make_media(tmp_path / "landscape.mp4", size="160x96", audio_rate_hz=None)
    rotated = tmp_path / "rotated.mp4"
    subprocess.run(
        [
            media.ffmpeg_exe(),
            "-v",
            "error",
            "-y",
            "-display_rotation",
            "90",
            "-i",
            str(landscape),
            "-c",
            "copy",
            str(rotated),
        ],
        check=True,
    )
    info = probe(rotated)
    assert abs(info.rotation_deg) == 90
    assert (info.display_width, info.display_height) == (96, 160)
    frame = next(iter(iter_frames(rotated, fps=1.0)))
    assert frame.rgb.shape == (160, 96, 3)


@pytest.mark.parametrize(("codec", "name"), [("mpeg4", "mpeg4"), ("libx265", "hevc")])
def test_other_codecs_decode(tmp_path: Path, codec: str, name: str) -> None:
    video = make_media(
        tmp_path / f"{name}.mp4",
        video_codec=codec,
        audio_rate_hz=16000,
        extra=("-tag:v", "hvc1") if name == "hevc" else (),
    )
    assert probe(video).video_codec == name
    assert len(list(iter_frames(video, fps=5.0))) == pytest.approx(10, abs=1)
    assert len(load_audio(video)) / 16000 == pytest.approx(2.0, abs=0.05)


def test_variable_frame_rate_gives_constant_rate_frames(tmp_path: Path) -> None:
    """30 fps for the first second, then every third frame: frame count follows time only."""
    video = make_media(
        tmp_path / "vfr.mp4",
        duration_s=3.0,
        rate=30,
        audio_rate_hz=None,
        extra=("-vf", "select='lt(t,1)+not(mod(n,3))'", "-fps_mode", "vfr"),
    )
    frames = list(iter_frames(video, fps=10.0))
    assert len(frames) == pytest.approx(30, abs=1)
    assert frames[-1].time_s == pytest.approx(len(frames) / 10 - 0.1)


def test_no_audio_stream_raises_naming_the_file(tmp_path: Path) -> None:
    video = make_media(tmp_path / "silent_movie.mp4", audio_rate_hz=None)
    assert not probe(video).has_audio
    with pytest.raises(MediaError, match=r"silent_movie\.mp4.*no audio stream") as raised:
        load_audio(video)
    assert raised.value.path == str(video)


def test_audio_only_file_has_no_video(tmp_path: Path) -> None:
    audio = make_media(tmp_path / "tone.m4a", video_codec=None)
    assert not probe(audio).has_video
    with pytest.raises(MediaError, match=r"tone\.m4a.*no video stream"):
        iter_frames(audio)  # raised at call time, before any iteration


@pytest.mark.parametrize("decode", [probe, load_audio, lambda p: list(iter_frames(p))])
def test_unreadable_file_raises(tmp_path: Path, decode) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video" * 100)
    with pytest.raises(MediaError, match=r"garbage\.mp4"):
        decode(garbage)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match=r"nowhere\.mp4: file not found"):
        load_audio(tmp_path / "nowhere.mp4")


def test_parse_probe_older_rotation_styles() -> None:
    stderr = (
        "Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'phone.mov':\n"
        "  Duration: 00:01:02.50, start: 0.000000, bitrate: 8000 kb/s\n"
        "  Stream #0:0(und): Video: hevc (Main) (hvc1 / 0x31637668), yuv420p(tv), 1920x1080,"
        " 7800 kb/s, 29.97 fps, 30 tbr, 600 tbn (default)\n"
        "    Metadata:\n"
        "      rotate          : 90\n"
        "    Side data:\n"
        "      displaymatrix: rotation of -90.00 degrees\n"
        "  Stream #0:1(und): Audio: aac (LC) (mp4a / 0x6134706D), 48000 Hz, stereo, fltp\n"
        "  Stream #0:2: Video: mjpeg (Baseline), yuvj420p, 600x600, 90k tbn (attached pic)\n"
    )
    info = media._parse_probe(stderr)
    assert info.duration_s == pytest.approx(62.5)
    assert (info.display_width, info.display_height) == (1080, 1920)
    assert info.audio_sample_rate_hz == 48000 and info.video_codec == "hevc"


def test_cover_art_is_not_video() -> None:
    stderr = (
        "Input #0, mp3, from 'song.mp3':\n  Duration: 00:00:03.00, start: 0.0, bitrate: 1 kb/s\n"
        "  Stream #0:0: Audio: mp3 (mp3float), 44100 Hz, stereo, fltp, 128 kb/s\n"
        "  Stream #0:1: Video: png, rgba(pc), 300x300, 90k tbn (attached pic)\n"
    )
    info = media._parse_probe(stderr)
    assert info.has_audio and not info.has_video


def test_output_size_keeps_aspect_and_caps_side() -> None:
    assert media.output_size(1080, 1920, 640) == (360, 640)
    assert media.output_size(700, 700, 640) == (640, 640)
    assert media.output_size(96, 96, 640) == (96, 96)
