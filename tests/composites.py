"""Several-speaker media built from one-speaker clips, with their reference turns.

- :func:`voice_composite`: pieces of different recordings, concatenated (who speaks when is
  known exactly).
- :func:`face_composite`: two talking-head videos side by side, taking turns: during a turn the
  speaker's half plays their own clip (moving mouth, their voice on the audio track) while the
  other half holds a still frame of the other person.

Used by the speaker tests and by ``benchmarks/diarization.py``.
"""

from __future__ import annotations

import os
import subprocess
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE_HZ = 16000


@dataclass(frozen=True)
class Turn:
    """``source[start_s:end_s]`` spoken by ``speaker`` (a reference label)."""

    speaker: str
    source: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class ReferenceSpan:
    start_s: float
    end_s: float
    speaker: str


def _audio(path: str | os.PathLike[str], cache: dict[str, np.ndarray]) -> np.ndarray:
    from mercli.features.media import load_audio

    key = str(path)
    if key not in cache:
        cache[key] = load_audio(path, SAMPLE_RATE_HZ)
    return cache[key]


def voice_composite(
    turns: Sequence[Turn], media: Path, gap_s: float = 0.0
) -> tuple[np.ndarray, list[ReferenceSpan]]:
    """The turns' audio one after another (``gap_s`` of silence between), and the reference.

    Returns:
        float32 16 kHz mono ``(n,)``, and one reference span per turn.
    """
    cache: dict[str, np.ndarray] = {}
    pieces, reference, t = [], [], 0.0
    gap = np.zeros(int(gap_s * SAMPLE_RATE_HZ), np.float32)
    for i, turn in enumerate(turns):
        x = _audio(media / turn.source, cache)
        piece = x[int(turn.start_s * SAMPLE_RATE_HZ) : int(turn.end_s * SAMPLE_RATE_HZ)]
        if i:
            pieces.append(gap)
            t += gap_s
        pieces.append(piece)
        reference.append(ReferenceSpan(t, t + len(piece) / SAMPLE_RATE_HZ, turn.speaker))
        t += len(piece) / SAMPLE_RATE_HZ
    return np.concatenate(pieces).astype(np.float32), reference


def write_wav(path: str | os.PathLike[str], audio: np.ndarray) -> None:
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE_HZ)
        w.writeframes(pcm.tobytes())


def _frames(path: Path, fps: float, side: int) -> tuple[np.ndarray, list[np.ndarray]]:
    import cv2

    from mercli.features.media import iter_frames

    times, images = [], []
    for frame in iter_frames(path, fps=fps, max_side=2 * side):
        times.append(frame.time_s)
        images.append(cv2.resize(frame.rgb, (side, side), interpolation=cv2.INTER_AREA))
    return np.array(times), images


def face_composite(
    left: Path,
    right: Path,
    turns: Sequence[Turn],
    out: Path,
    fps: float = 10.0,
    side: int = 240,
) -> list[ReferenceSpan]:
    """Write an mp4 of ``left`` and ``right`` side by side, taking the given turns.

    Each turn's ``speaker`` is ``"left"`` or ``"right"`` and its ``source`` the file name of
    that side's clip; the silent side shows its clip's frame at the time it last spoke
    (its first frame before that).

    Returns:
        the reference turns, in the composite's time.
    """
    from mercli.features.media import ffmpeg_exe

    clips = {"left": left, "right": right}
    frames = {k: _frames(p, fps, side) for k, p in clips.items()}
    held = {k: frames[k][1][0] for k in clips}
    audio_cache: dict[str, np.ndarray] = {}
    video: list[np.ndarray] = []
    pieces, reference, t = [], [], 0.0
    for turn in turns:
        times, images = frames[turn.speaker]
        x = _audio(clips[turn.speaker], audio_cache)
        piece = x[int(turn.start_s * SAMPLE_RATE_HZ) : int(turn.end_s * SAMPLE_RATE_HZ)]
        n_frames = round(len(piece) / SAMPLE_RATE_HZ * fps)
        for j in range(n_frames):
            k = int(np.argmin(np.abs(times - (turn.start_s + j / fps))))
            held[turn.speaker] = images[k]
            video.append(np.concatenate([held["left"], held["right"]], axis=1))
        pieces.append(piece[: int(n_frames / fps * SAMPLE_RATE_HZ)])
        duration = n_frames / fps
        reference.append(ReferenceSpan(t, t + duration, turn.speaker))
        t += duration
    wav = out.with_suffix(".wav")
    write_wav(wav, np.concatenate(pieces))
    command = [
        ffmpeg_exe(), "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{2 * side}x{side}", "-r", str(fps),
        "-i", "-", "-i", str(wav),
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "veryfast", "-crf", "20",
        "-c:a", "aac", "-shortest", str(out),
    ]  # fmt: skip
    subprocess.run(command, input=np.stack(video).tobytes(), check=True)
    wav.unlink()
    return reference


# Clips of ../shared/media/talking_head (all English, one frontal face each).
MAN_1 = "talking_head/retalking_face1_interview_man.mp4"  # speech 0.0-2.5, 3.5-4.6
MAN_2 = "talking_head/retalking_face2_man_map_bg.mp4"  # speech 0.3-2.3, 2.7-4.0, 4.4-4.9
WOMAN_1 = "talking_head/retalking_face3_aoc.mp4"  # speech 0.2-3.2, 3.4-4.5, 4.7-5.0
WOMAN_2 = "talking_head/sadtalker_WDA_KatieHill_000.mp4"  # speech 0.1-1.2, 1.3-4.7, 5.3-7.9
JFK = "audio_speech/whisper_jfk.flac"

# Two voices, four turns each way; reference labels A and B.
MAN_WOMAN = [
    Turn("A", JFK, 0.0, 5.0),
    Turn("B", WOMAN_2, 0.0, 4.7),
    Turn("A", JFK, 5.0, 11.0),
    Turn("B", WOMAN_2, 4.7, 8.0),
]
MAN_MAN = [
    Turn("A", JFK, 0.0, 5.0),
    Turn("B", MAN_2, 0.0, 2.5),
    Turn("A", JFK, 5.0, 11.0),
    Turn("B", MAN_2, 2.5, 5.0),
]
WOMAN_WOMAN = [
    Turn("A", WOMAN_1, 0.0, 3.3),
    Turn("B", WOMAN_2, 0.0, 4.7),
    Turn("A", WOMAN_1, 3.3, 5.0),
    Turn("B", WOMAN_2, 4.7, 8.0),
]

# Side by side: a man on the left, a woman on the right, two turns each.
LEFT_RIGHT = [
    Turn("left", MAN_1, 0.0, 3.0),
    Turn("right", WOMAN_2, 0.0, 4.7),
    Turn("left", MAN_1, 3.0, 6.1),
    Turn("right", WOMAN_2, 4.7, 8.0),
]
