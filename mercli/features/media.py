"""Decode audio and video with the ffmpeg binary.

The binary is the one shipped by ``imageio-ffmpeg`` (a fresh machine has no ``ffmpeg`` on PATH),
falling back to a system ``ffmpeg``. Container metadata (frame counts, nominal fps) is never
trusted: audio is resampled by ffmpeg and video frames are resampled to a fixed rate by its ``fps``
filter, so timestamps follow from sample and frame indices alone. ffmpeg applies the display
rotation of portrait phone videos itself (autorotate is on by default).
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 16000  # what Whisper and the acoustic features expect


MEDIA_EXTENSIONS = frozenset(
    [
        *(".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".flv", ".mpg", ".mpeg", ".wmv"),
        *(".3gp", ".ts", ".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus", ".wma"),
    ]
)


def expand_inputs(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files as given, and the media files (by extension) inside directories, recursively.

    Paths that do not exist are kept, so that they get an ``unreadable`` status of their own.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(
                sorted(
                    f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in MEDIA_EXTENSIONS
                )
            )
        else:
            out.append(p)
    return out


class MediaError(Exception):
    """A media file cannot be decoded as asked (unreadable, no audio stream, ...)."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class FfmpegNotFoundError(RuntimeError):
    """Neither imageio-ffmpeg's binary nor an ``ffmpeg`` on PATH is available."""


@dataclass(frozen=True)
class MediaInfo:
    """What ``ffmpeg -i`` reports about a file. Sizes are in pixels, ``None`` when unknown."""

    duration_s: float | None  # container duration
    has_audio: bool
    has_video: bool  # a real video stream (cover art in audio files does not count)
    width: int | None = None  # coded size of the first video stream
    height: int | None = None
    display_width: int | None = None  # after rotation and sample aspect ratio
    display_height: int | None = None
    rotation_deg: float = 0.0  # display rotation from the stream's display matrix
    video_codec: str | None = None
    audio_codec: str | None = None
    audio_sample_rate_hz: int | None = None


@dataclass(frozen=True)
class Frame:
    """One sampled video frame.

    Attributes:
        index: position in the resampled stream (0, 1, 2, ...).
        time_s: ``index / fps``, seconds from the start of the video stream.
        rgb: pixels, shape = (H, W, 3), dtype uint8, display orientation.
    """

    index: int
    time_s: float
    rgb: np.ndarray


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary: imageio-ffmpeg's, else ``ffmpeg`` on PATH."""
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError) as error:
        log.debug("imageio-ffmpeg binary unavailable (%s); trying PATH", error)
    found = shutil.which("ffmpeg")
    if found is None:
        raise FfmpegNotFoundError(
            "ffmpeg not found: install imageio-ffmpeg (pip) or put ffmpeg on PATH"
        )
    return found


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise MediaError(path, "file not found")
    if not path.is_file():
        raise MediaError(path, "not a regular file")


def _last_error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return "ffmpeg failed without a message"
    # ffmpeg ends with generic lines ("Error opening input files: ..."); the cause is on them too.
    return lines[-1]


# ---------------------------------------------------------------------------------------------
# probe


_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_STREAM = re.compile(r"^\s*Stream #\d+:\d+.*?: (Video|Audio): ([\w-]+)(.*)$")
_SIZE = re.compile(r",\s(\d+)x(\d+)[\s,]")
_SAR = re.compile(r"\[SAR (\d+):(\d+)")
_SAMPLE_RATE = re.compile(r",\s(\d+) Hz")
_ROTATION = re.compile(r"(?:rotation of|rotate\s*:)\s*(-?\d+(?:\.\d+)?)")


def probe(path: str | os.PathLike[str]) -> MediaInfo:
    """Describe a media file by parsing ``ffmpeg -i`` (imageio-ffmpeg ships no ffprobe).

    Raises:
        MediaError: the file is missing or ffmpeg cannot open it.
    """
    path = Path(path)
    _check_exists(path)
    if (decoded := _preloaded_for(path)) is not None:
        return decoded.info
    result = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
        capture_output=True,
        text=True,
        errors="replace",
        check=False,
    )
    if "Input #0" not in result.stderr:
        raise MediaError(path, f"unreadable media ({_last_error_line(result.stderr)})")
    return _parse_probe(result.stderr)


@dataclass
class _VideoStream:
    """The first real video stream of an ``ffmpeg -i`` listing."""

    codec: str
    width: int | None
    height: int | None
    sar: tuple[int, int] = (1, 1)  # sample (pixel) aspect ratio
    rotation_deg: float = 0.0

    def display_size(self) -> tuple[int | None, int | None]:
        if self.width is None or self.height is None:
            return None, None
        sar_num, sar_den = self.sar
        width = self.width * sar_num // sar_den if sar_num and sar_den else self.width
        if round(abs(self.rotation_deg)) % 180 == 90:
            return self.height, width
        return width, self.height


def _parse_probe(stderr: str) -> MediaInfo:
    """Build a :class:`MediaInfo` from the text ``ffmpeg -i`` writes to stderr."""
    duration = _DURATION.search(stderr)
    duration_s = None
    if duration:
        hours, minutes, seconds = duration.groups()
        duration_s = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    video: _VideoStream | None = None
    audio: tuple[str, int | None] | None = None  # (codec, sample rate in Hz)
    in_first_video = False
    for line in stderr.splitlines():
        stream = _STREAM.match(line)
        if stream:
            kind, codec, rest = stream.groups()
            in_first_video = False
            if kind == "Video" and video is None and "(attached pic)" not in rest:
                video = _parse_video_stream(codec, rest)
                in_first_video = True
            elif kind == "Audio" and audio is None:
                rate = _SAMPLE_RATE.search(rest)
                audio = (codec, int(rate.group(1)) if rate else None)
        elif video is not None and in_first_video and (rotation := _ROTATION.search(line)):
            video.rotation_deg = float(rotation.group(1))
    return _media_info(duration_s, video, audio)


def _parse_video_stream(codec: str, rest: str) -> _VideoStream:
    size = _SIZE.search(rest)
    sar = _SAR.search(rest)
    return _VideoStream(
        codec=codec,
        width=int(size.group(1)) if size else None,
        height=int(size.group(2)) if size else None,
        sar=(int(sar.group(1)), int(sar.group(2))) if sar else (1, 1),
    )


def _media_info(
    duration_s: float | None, video: _VideoStream | None, audio: tuple[str, int | None] | None
) -> MediaInfo:
    if video is None:
        return MediaInfo(
            duration_s=duration_s,
            has_audio=audio is not None,
            has_video=False,
            audio_codec=audio[0] if audio else None,
            audio_sample_rate_hz=audio[1] if audio else None,
        )
    display_width, display_height = video.display_size()
    return MediaInfo(
        duration_s=duration_s,
        has_audio=audio is not None,
        has_video=True,
        width=video.width,
        height=video.height,
        display_width=display_width,
        display_height=display_height,
        rotation_deg=video.rotation_deg,
        video_codec=video.codec,
        audio_codec=audio[0] if audio else None,
        audio_sample_rate_hz=audio[1] if audio else None,
    )


# ---------------------------------------------------------------------------------------------
# audio


def load_audio(
    path: str | os.PathLike[str],
    sample_rate_hz: int = SAMPLE_RATE_HZ,
    errors: list[str] | None = None,
) -> np.ndarray:
    """Decode the first audio stream to mono float32 at ``sample_rate_hz``.

    Channels are averaged. Samples are in [-1, 1]. ``errors``, when given, receives the lines
    ffmpeg reported while decoding succeeded all the same (a truncated file: "partial file").

    Returns:
        waveform, shape = (n_samples,), dtype float32. Zero length when the stream is empty.

    Raises:
        MediaError: the file is missing, unreadable, or has no audio stream.
    """
    path = Path(path)
    _check_exists(path)
    decoded = _preloaded_for(path)
    if decoded is not None and decoded.audio is not None and sample_rate_hz == SAMPLE_RATE_HZ:
        if errors is not None:
            errors.extend(decoded.audio_errors)
        return decoded.audio.copy()
    command = [
        ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error",
        "-i", str(path), "-map", "0:a:0", "-vn", "-sn", "-dn",
        "-ac", "1", "-ar", str(sample_rate_hz), "-f", "f32le", "-",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0:
        stderr = result.stderr.decode(errors="replace")
        if "matches no streams" in stderr:
            raise MediaError(path, "no audio stream")
        raise MediaError(path, f"cannot decode audio ({_last_error_line(stderr)})")
    if errors is not None and result.stderr.strip():
        errors.extend(result.stderr.decode(errors="replace").strip().splitlines())
    n_bytes = len(result.stdout) - len(result.stdout) % 4
    return np.frombuffer(result.stdout[:n_bytes], dtype=np.float32).copy()


# ---------------------------------------------------------------------------------------------
# video


def early_end(decoded_s: float, duration_s: float | None, errors: Sequence[str]) -> str | None:
    """Why a decode that stopped short of the container's duration is suspect, or None.

    A stream may end before the container legitimately (audio shorter than the video), so a
    short decode counts only together with decoder errors (a truncated file: "partial file").
    """
    if not errors or duration_s is None:
        return None
    if decoded_s >= duration_s - max(1.0, 0.05 * duration_s):
        return None
    first = next(line.strip() for line in errors if line.strip())  # the cause; then echoes
    detail = re.sub(r"^\[[^\]]*\]\s*", "", first)  # without "[in#0/mov @ 0x...]"
    return (
        f"decoding stopped at {decoded_s:.1f} s of {duration_s:.1f} s ({detail}): the file is "
        "truncated or damaged, only the part decoded was analysed"
    )


def output_size(display_width: int, display_height: int, max_side: int) -> tuple[int, int]:
    """Frame size after fitting the longer side into ``max_side`` (never upscaled).

    Returns:
        (width, height) in pixels, both even (friendlier to every scaler) and >= 2.
    """
    scale = min(1.0, max_side / max(display_width, display_height))
    width = max(2, round(display_width * scale / 2) * 2)
    height = max(2, round(display_height * scale / 2) * 2)
    return width, height


def iter_frames(
    path: str | os.PathLike[str], fps: float = 5.0, max_side: int = 640
) -> Iterator[Frame]:
    """Stream RGB frames sampled at ``fps`` from an ffmpeg pipe.

    Memory holds one frame at a time whatever the video length. Frames come out at a constant
    rate whatever the container says (variable frame rate included): ffmpeg's ``fps`` filter
    picks, for each output time ``i / fps``, the nearest source frame.

    Args:
        path: a video file.
        fps: output frame rate, frames per second.
        max_side: the longer side of the output in pixels; smaller videos keep their size.

    Returns:
        an iterator of :class:`Frame` with ``rgb`` of shape (H, W, 3), uint8, writable, in display
        orientation. The file is probed now; decoding starts at the first ``next()``.

    Raises:
        MediaError: at call time when the file is missing, unreadable or has no video stream;
            during iteration when decoding fails before the first frame.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    path = Path(path)
    info = probe(path)
    if not info.has_video or info.display_width is None or info.display_height is None:
        raise MediaError(path, "no video stream")
    width, height = output_size(info.display_width, info.display_height, max_side)
    decoded = _preloaded_for(path)
    if decoded is not None and decoded.matches(fps, max_side):
        return _replayed_frames(decoded, lambda: _frames_from_file(path, fps, width, height))
    return _frames_from_file(path, fps, width, height)


def _frames_from_file(path: Path, fps: float, width: int, height: int) -> Iterator[Frame]:
    command = [
        ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error",
        "-i", str(path), "-map", "0:v:0", "-an", "-sn", "-dn",
        "-vf", f"fps={fps},scale={width}:{height}:flags=area",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-",
    ]  # fmt: skip
    return _read_frames(path, command, width, height, fps)


def _read_exact(stream: IO[bytes], n_bytes: int) -> bytearray | None:
    """Exactly ``n_bytes`` from ``stream`` into a fresh (writable) buffer; ``None`` at the end."""
    buffer = bytearray(n_bytes)
    view = memoryview(buffer)
    filled = 0
    while filled < n_bytes:
        n_read = stream.readinto(view[filled:])  # type: ignore[attr-defined]
        if not n_read:
            return None  # end of stream; a trailing partial frame is dropped
        filled += n_read
    return buffer


# Frames ffmpeg may have decoded ahead of the one the caller works on (bounded memory).
READ_AHEAD_FRAMES = 4


def _frames_ahead(
    stream: IO[bytes], frame_bytes: int, stop: threading.Event
) -> tuple[queue.Queue[bytearray | None], threading.Thread]:
    """A thread that reads whole frames from ``stream`` into a bounded queue (None at the end),
    so ffmpeg, another process, decodes the next frames while the caller works on this one;
    it ends at the end of the stream or soon after ``stop`` is set."""
    frames: queue.Queue[bytearray | None] = queue.Queue(maxsize=READ_AHEAD_FRAMES)

    def put(item: bytearray | None) -> None:
        while not stop.is_set():
            try:
                frames.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read() -> None:
        try:
            while not stop.is_set() and (buffer := _read_exact(stream, frame_bytes)) is not None:
                put(buffer)
        except (OSError, ValueError):  # the pipe went away under it: the caller stopped
            pass
        finally:
            put(None)

    reader = threading.Thread(target=read, name="mer-frames", daemon=True)
    reader.start()
    return frames, reader


def _read_frames(
    path: Path, command: list[str], width: int, height: int, fps: float
) -> Iterator[Frame]:
    frame_bytes = width * height * 3
    # stderr goes to a file: a pipe nobody reads would block ffmpeg once it fills.
    with tempfile.TemporaryFile() as stderr_file:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr_file)
        assert process.stdout is not None
        stop = threading.Event()
        frames, reader = _frames_ahead(process.stdout, frame_bytes, stop)
        index = 0
        try:
            while (buffer := frames.get()) is not None:
                rgb = np.frombuffer(buffer, dtype=np.uint8).reshape(height, width, 3)
                yield Frame(index=index, time_s=index / fps, rgb=rgb)
                index += 1
        finally:
            stop.set()
            if process.poll() is None:
                process.kill()  # the consumer stopped early
            reader.join()
            process.stdout.close()
            returncode = process.wait()
        stderr_file.seek(0)
        stderr = stderr_file.read().decode(errors="replace")
    if returncode != 0 and index == 0:
        raise MediaError(path, f"cannot decode video ({_last_error_line(stderr)})")
    if returncode != 0:
        log.warning(
            "%s: video decoding stopped after %d frames: %s", path, index, _last_error_line(stderr)
        )


# ---------------------------------------------------------------------------------------------
# decoded ahead (a CPU stage apart from the models: ``--engine ray``)

MAX_DECODED_BYTES = 256 * 1024**2  # audio + frames of one file decoded ahead; more: not ahead


@dataclass
class DecodedMedia:
    """What :func:`probe`, :func:`load_audio` and :func:`iter_frames` give for one file, decoded
    ahead (by :func:`decode_media`, possibly in another process) and read back through
    :func:`preloaded`.

    Attributes:
        path: the file, absolute.
        info: :func:`probe`'s result.
        audio: float32 ``(n_samples,)`` at :data:`SAMPLE_RATE_HZ`, or None (not decoded ahead:
            no audio stream, or too large).
        audio_errors: what ffmpeg reported while decoding the audio all the same.
        fps, max_side: the frames' sampling.
        frames: uint8 ``(n_frames, H, W, 3)``, frame ``i`` at ``i / fps`` seconds, or None (not
            decoded ahead: no video stream, frames not asked for, or too large).
        frames_error: the reason :func:`iter_frames` gave up before its first frame, or None.
        frames_complete: False when the stream goes on past ``frames`` (decoded up to a time).
    """

    path: str
    info: MediaInfo
    audio: np.ndarray | None = None
    audio_errors: tuple[str, ...] = ()
    fps: float = 5.0
    max_side: int = 640
    frames: np.ndarray | None = None
    frames_error: str | None = None
    frames_complete: bool = True

    def matches(self, fps: float, max_side: int) -> bool:
        """Frames decoded ahead at this sampling."""
        return self.frames is not None and (self.fps, self.max_side) == (fps, max_side)

    @property
    def n_bytes(self) -> int:
        return sum(a.nbytes for a in (self.audio, self.frames) if a is not None)


def decode_media(
    path: str | os.PathLike[str],
    fps: float = 5.0,
    max_side: int = 640,
    use_frames: bool = True,
    until_s: float | None = None,
    max_bytes: int = MAX_DECODED_BYTES,
) -> DecodedMedia:
    """Decode a file's audio and sampled frames now, for :func:`preloaded` to give back later.

    Args:
        path: the media file.
        fps, max_side: the frames' sampling (as :func:`iter_frames`).
        use_frames: decode frames at all (False: audio only).
        until_s: keep only frames before this time, and the first at or past it (which tells a
            reader that a window ending there is closed); a reader that goes further gets the
            rest from the file.
        max_bytes: the most audio + frame bytes held; frames (then audio) that would exceed it
            are left to be decoded from the file by the reader.

    Raises:
        MediaError: the file is missing or unreadable, or its audio cannot be decoded.
    """
    path = Path(path).absolute()
    info = probe(path)
    decoded = DecodedMedia(str(path), info, fps=fps, max_side=max_side)
    if info.has_audio:
        errors: list[str] = []
        audio = load_audio(path, SAMPLE_RATE_HZ, errors)
        if audio.nbytes <= max_bytes:
            decoded.audio, decoded.audio_errors = audio, tuple(errors)
    if use_frames and info.has_video and info.display_width and info.display_height:
        _decode_frames(decoded, until_s, max_bytes - decoded.n_bytes)
    return decoded


def _decode_frames(decoded: DecodedMedia, until_s: float | None, max_bytes: int) -> None:
    info = decoded.info
    assert info.display_width is not None and info.display_height is not None
    spans = [s for s in (info.duration_s, until_s) if s is not None]
    if not spans:
        return  # no known length: the reader streams them
    width, height = output_size(info.display_width, info.display_height, decoded.max_side)
    frame_bytes = width * height * 3
    if (int(min(spans) * decoded.fps) + 3) * frame_bytes > max_bytes:
        return
    frames: list[np.ndarray] = []
    complete = True
    try:
        for frame in iter_frames(decoded.path, decoded.fps, decoded.max_side):
            if (len(frames) + 1) * frame_bytes > max_bytes:  # longer than its container says
                return
            frames.append(frame.rgb)
            if until_s is not None and frame.time_s >= until_s:  # kept: it closes the window
                complete = False
                break
    except MediaError as error:  # before the first frame: the reader meets it again
        decoded.frames_error = error.reason
    shape = (len(frames), height, width, 3)
    decoded.frames = np.stack(frames) if frames else np.zeros(shape, np.uint8)
    decoded.frames_complete = complete


_preloaded: dict[str, DecodedMedia] = {}


@contextmanager
def preloaded(decoded: DecodedMedia | None) -> Iterator[None]:
    """Within the block, :func:`probe`, :func:`load_audio` and :func:`iter_frames` of
    ``decoded.path`` give what :func:`decode_media` decoded instead of running ffmpeg (the same
    values: the front end's results do not change); None: nothing preloaded."""
    if decoded is None:
        yield
        return
    _preloaded[decoded.path] = decoded
    try:
        yield
    finally:
        _preloaded.pop(decoded.path, None)


def _preloaded_for(path: Path) -> DecodedMedia | None:
    if not _preloaded:
        return None
    return _preloaded.get(str(path.absolute()))


def _replayed_frames(
    decoded: DecodedMedia, from_file: Callable[[], Iterator[Frame]]
) -> Iterator[Frame]:
    assert decoded.frames is not None
    n_frames = len(decoded.frames)
    for index in range(n_frames):
        yield Frame(index=index, time_s=index / decoded.fps, rgb=decoded.frames[index])
    if decoded.frames_error is not None:
        raise MediaError(decoded.path, decoded.frames_error)
    if not decoded.frames_complete:  # read past what was decoded ahead: the rest from the file
        yield from itertools.islice(from_file(), n_frames, None)
