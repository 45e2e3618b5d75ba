"""Live sources read through one ffmpeg process: audio chunks and sampled frames as they arrive.

A source is a stream URL (rtsp, rtmp, http/hls, udp, ...), ``-`` for stdin, a media file (read
as fast as ffmpeg decodes it), or a capture device through ffmpeg's device inputs:

=========  ===========================================  ==========================================
 spec       Linux                                        macOS / Windows
=========  ===========================================  ==========================================
 mic        ``-f pulse -i default``                      ``-f avfoundation -i :0`` /
                                                         ``-f dshow -i audio=NAME``
 mic:X      ``-f pulse -i X`` (``alsa:hw:1`` for ALSA)   ``-i :X`` / ``-i audio=X``
 webcam     ``-f v4l2 -i /dev/video0`` + the mic         ``-f avfoundation -i 0:0`` /
                                                         ``-f dshow -i video=NAME:audio=NAME``
 webcam:X   ``-f v4l2 -i X`` + the mic                   ``-i X`` (``video:audio``) /
                                                         ``-i video=V:audio=A``
=========  ===========================================  ==========================================

Device names are listed by ``ffmpeg -f avfoundation -list_devices true -i ""`` (macOS),
``ffmpeg -list_devices true -f dshow -i dummy`` (Windows), ``pactl list short sources`` and
``v4l2-ctl --list-devices`` (Linux).

ffmpeg writes 16 kHz mono float32 audio to its stdout and, when frames are wanted, PPM frames at
``fps`` to a second pipe (POSIX only: on Windows live analysis reads audio alone). Two threads
read the pipes into one bounded queue, so neither pipe can stall ffmpeg while the other is read.
Stream time comes from sample and frame counts, as for files (:mod:`mercli.features.media`).
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Literal

import numpy as np

from mercli.features.media import SAMPLE_RATE_HZ, Frame, MediaError, ffmpeg_exe

log = logging.getLogger(__name__)

SourceKind = Literal["stdin", "device", "file", "url"]
EndStatus = Literal["ended", "failed", "stalled", "stopped"]


class LiveSourceError(MediaError):
    """A live source cannot be opened (no such device, refused connection, no audio)."""


@dataclass(frozen=True)
class LiveSource:
    """How ffmpeg opens a source.

    Attributes:
        spec: as the user gave it (``udp://...``, ``-``, ``mic``, ``webcam:/dev/video2``, a file).
        kind: stdin, device, file or url.
        input_args: ffmpeg arguments that open it (up to and including the last ``-i``).
        audio_input, video_input: ffmpeg input indices of the audio and video (None: absent).
    """

    spec: str
    kind: SourceKind
    input_args: tuple[str, ...]
    audio_input: int = 0
    video_input: int | None = 0

    @property
    def can_reopen(self) -> bool:
        """Opening it again loses nothing that matters (not stdin)."""
        return self.kind != "stdin"


def parse_source(spec: str, platform: str = sys.platform) -> LiveSource:
    """The ffmpeg input for a ``--live`` spec (see the module docstring for the forms).

    Raises:
        LiveSourceError: a device that this platform cannot name by default (Windows needs a name).
    """
    if spec == "-":
        return LiveSource(spec, "stdin", ("-i", "pipe:0"))
    name, _, device = spec.partition(":")
    if name in ("mic", "webcam"):
        return _device_source(spec, name, device, platform)
    if "://" in spec:
        return LiveSource(spec, "url", ("-i", spec))
    return LiveSource(spec, "file", ("-i", spec))


def _device_source(spec: str, name: str, device: str, platform: str) -> LiveSource:
    if platform.startswith("linux"):
        if device.startswith("alsa:"):
            mic = ("-f", "alsa", "-i", device.removeprefix("alsa:"))
        else:
            mic = ("-f", "pulse", "-i", device if name == "mic" and device else "default")
        if name == "mic":
            return LiveSource(spec, "device", mic, 0, None)
        camera = ("-f", "v4l2", "-i", device or "/dev/video0")
        return LiveSource(spec, "device", (*camera, *mic), 1, 0)
    if platform == "darwin":
        if name == "mic":
            return LiveSource(
                spec, "device", ("-f", "avfoundation", "-i", f":{device or 0}"), 0, None
            )
        return LiveSource(spec, "device", ("-f", "avfoundation", "-i", device or "0:0"))
    if platform.startswith("win"):
        if not device:
            raise LiveSourceError(
                spec,
                f"name the device: --live {name}:NAME (list them with "
                "`ffmpeg -list_devices true -f dshow -i dummy`)",
            )
        if name == "mic":
            return LiveSource(spec, "device", ("-f", "dshow", "-i", f"audio={device}"), 0, None)
        target = device if "=" in device else f"video={device}"
        return LiveSource(spec, "device", ("-f", "dshow", "-i", target))
    raise LiveSourceError(spec, f"no device input known for platform {platform!r}")


@dataclass(frozen=True)
class AudioChunk:
    """Samples as they came off the pipe.

    Attributes:
        samples: float32 ``(n,)``, 16 kHz mono.
        wall_s: ``time.time()`` when they were read.
    """

    samples: np.ndarray
    wall_s: float


_AUDIO_DONE, _VIDEO_DONE = object(), object()


class LiveStream:
    """ffmpeg reading one live source. Iterate for :class:`AudioChunk` s and :class:`Frame` s in
    arrival order; the iteration ends with the source, and :attr:`status` / :attr:`reason` say
    how: ``ended`` (the source finished), ``failed`` (ffmpeg stopped with an error), ``stalled``
    (no data for ``stall_timeout_s``) or ``stopped`` (:meth:`close` was called).

    Args:
        source: from :func:`parse_source`.
        fps: frames sampled per second; ``use_video=False`` reads audio alone.
        max_side: the longer side of frames, pixels (never upscaled).
        stall_timeout_s: give up after this long without data.
        stdin: what ffmpeg reads for ``-`` (default: this process's stdin).
        realtime: read a file at its own pace (``-re``), as a live source would deliver it.

    Raises:
        LiveSourceError: on the first ``next()``, when ffmpeg cannot open the source.
    """

    def __init__(
        self,
        source: LiveSource,
        fps: float = 5.0,
        max_side: int = 640,
        use_video: bool = True,
        stall_timeout_s: float = 10.0,
        stdin: IO[bytes] | int | None = None,
        realtime: bool = False,
        chunk_s: float = 0.1,
    ) -> None:
        self.source = source
        self.fps = fps
        self.max_side = max_side
        self.use_video = use_video and source.video_input is not None and os.name == "posix"
        self.stall_timeout_s = stall_timeout_s
        self.stdin = stdin
        self.realtime = realtime
        self.chunk_bytes = max(4, round(chunk_s * SAMPLE_RATE_HZ) * 4)
        self.status: EndStatus | None = None
        self.reason: str | None = None
        self.n_samples = 0  # audio samples delivered
        self._queue: queue.Queue[object] = queue.Queue(maxsize=256)
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._closed = False

    @property
    def queued(self) -> int:
        """Chunks and frames read from ffmpeg but not yet taken (the consumer is behind)."""
        return self._queue.qsize()

    # -- ffmpeg -------------------------------------------------------------------------------

    def command(self, video_fd: int | None) -> list[str]:
        s = self.source
        command = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostats"]
        if s.kind != "stdin":
            command.append("-nostdin")
        if self.realtime and s.kind == "file":
            command.append("-re")
        command += [*s.input_args]
        command += ["-map", f"{s.audio_input}:a:0", "-vn", "-sn", "-dn", "-ac", "1"]
        command += ["-ar", str(SAMPLE_RATE_HZ), "-f", "f32le", "pipe:1"]
        if video_fd is not None:
            side = self.max_side
            scale = (
                f"scale='if(gte(iw,ih),min({side},iw),-2)':'if(gte(iw,ih),-2,min({side},ih))'"
                ":flags=area"
            )
            command += ["-map", f"{s.video_input}:v:0", "-an", "-sn", "-dn"]
            command += ["-vf", f"fps={self.fps},{scale}", "-f", "image2pipe", "-c:v", "ppm"]
            command.append(f"pipe:{video_fd}")
        return command

    def _start(self, use_video: bool) -> None:
        video_read, video_write = os.pipe() if use_video else (None, None)
        # stderr to a temporary file: a full pipe that nobody reads would block ffmpeg
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            self._process = subprocess.Popen(
                self.command(video_write),
                stdin=self.stdin if self.source.kind == "stdin" else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                pass_fds=() if video_write is None else (video_write,),
                # Ctrl-C reaches this process only: it stops ffmpeg itself, after the summary
                start_new_session=os.name == "posix",
                creationflags=getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0),
            )
        finally:
            if video_write is not None:
                os.close(video_write)
        assert self._process.stdout is not None
        threading.Thread(target=self._read_audio, args=(self._process.stdout,), daemon=True).start()
        if video_read is not None:
            video = os.fdopen(video_read, "rb")
            threading.Thread(target=self._read_video, args=(video,), daemon=True).start()

    def _stderr_text(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def _last_error(self) -> str:
        lines = [line.strip() for line in self._stderr_text().splitlines() if line.strip()]
        return lines[-1] if lines else "ffmpeg stopped without a message"

    # -- reader threads -------------------------------------------------------------------------

    def _read_audio(self, pipe: IO[bytes]) -> None:
        rest = b""
        try:
            while data := pipe.read1(self.chunk_bytes):  # type: ignore[attr-defined]
                data = rest + data
                n = len(data) - len(data) % 4
                rest = data[n:]
                if n:
                    samples = np.frombuffer(data[:n], np.float32).copy()
                    self._queue.put(AudioChunk(samples, time.time()))
        except (OSError, ValueError):  # the pipe was closed under us by close()
            pass
        finally:
            pipe.close()
            self._queue.put(_AUDIO_DONE)

    def _read_video(self, pipe: IO[bytes]) -> None:
        index = 0
        try:
            while (header := _read_ppm_header(pipe)) is not None:
                width, height = header
                data = pipe.read(width * height * 3)
                if len(data) < width * height * 3:
                    break
                rgb = np.frombuffer(bytearray(data), np.uint8).reshape(height, width, 3)
                self._queue.put(Frame(index, index / self.fps, rgb))
                index += 1
        except (OSError, ValueError):
            pass
        finally:
            pipe.close()
            self._queue.put(_VIDEO_DONE)

    # -- iteration ------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[AudioChunk | Frame]:
        self._start(self.use_video)
        first, open_pipes = self._first_data()
        if first is _AUDIO_DONE and self.use_video and self._no_video() and self.source.can_reopen:
            log.warning("%s: no video stream; reading audio only", self.source.spec)
            self.use_video = False
            self._start(False)
            first, open_pipes = self._first_data()
        if first is _AUDIO_DONE or first is None:
            self._fail_to_open(stalled=first is None)
        yield from self._items(first, open_pipes)

    def _first_data(self) -> tuple[object | None, int]:
        """The first data item and the pipes still open; ``_AUDIO_DONE`` when every pipe closed
        without data, None when nothing came in time."""
        open_pipes = 2 if self.use_video else 1
        while True:
            item = self._next()
            if item is not _AUDIO_DONE and item is not _VIDEO_DONE:
                return item, open_pipes
            open_pipes -= 1
            if open_pipes == 0:
                assert self._process is not None
                self._process.wait()
                return _AUDIO_DONE, 0

    def _no_video(self) -> bool:
        text = self._stderr_text()
        return "does not contain any stream" in text or (
            "matches no streams" in text and f"{self.source.video_input}:v:0" in text
        )

    def _fail_to_open(self, stalled: bool) -> None:
        self.close()
        spec = self.source.spec
        if stalled:
            raise LiveSourceError(spec, f"no data for {self.stall_timeout_s:g} s")
        text = self._stderr_text()
        if f"{self.source.audio_input}:a:0" in text and "matches no streams" in text:
            raise LiveSourceError(spec, "no audio stream (live analysis needs speech)")
        if "does not contain any stream" in text:
            raise LiveSourceError(spec, "no video stream: use --no-faces for audio-only sources")
        raise LiveSourceError(spec, f"cannot open ({self._last_error()})")

    def _next(self) -> object | None:
        """The next queue item; None when nothing came for ``stall_timeout_s``."""
        try:
            return self._queue.get(timeout=self.stall_timeout_s)
        except queue.Empty:
            return None

    def _items(self, first: object, open_pipes: int) -> Iterator[AudioChunk | Frame]:
        item: object | None = first
        try:
            while True:
                if item is None:
                    self._end("stalled", f"no data for {self.stall_timeout_s:g} s")
                    return
                if item is _AUDIO_DONE or item is _VIDEO_DONE:
                    open_pipes -= 1
                    if open_pipes == 0:
                        self._finish_process()
                        return
                else:
                    if isinstance(item, AudioChunk):
                        self.n_samples += len(item.samples)
                    yield item  # type: ignore[misc]
                item = self._next()
        finally:
            if self.status is None:  # the consumer stopped early
                self._end("stopped", None)

    def _finish_process(self) -> None:
        assert self._process is not None
        returncode = self._process.wait()
        if self._closed:
            self.status = "stopped"
        elif returncode == 0:
            self._end("ended", None)
        else:
            self._end("failed", self._last_error())

    def _end(self, status: EndStatus, reason: str | None) -> None:
        if self.status is None:
            self.status, self.reason = status, reason
        self.close()

    def close(self) -> None:
        """Stop ffmpeg (idempotent); the reader threads end on their own."""
        self._closed = True
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        if self.status is None:
            self.status = "stopped"
        # unblock readers waiting on a full queue
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break


def _read_ppm_header(pipe: IO[bytes]) -> tuple[int, int] | None:
    """``P6 <width> <height> <maxval>`` and one whitespace byte; None at the end of the stream."""
    fields: list[bytes] = []
    token = b""
    while len(fields) < 4:
        byte = pipe.read(1)
        if not byte:
            return None
        if byte.isspace():
            if token:
                fields.append(token)
                token = b""
        else:
            token += byte
    if fields[0] != b"P6":
        raise ValueError(f"not a PPM frame: {fields[0]!r}")
    return int(fields[1]), int(fields[2])
