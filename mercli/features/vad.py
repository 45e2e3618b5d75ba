"""Voice-activity endpointing for live input: where an utterance ends, as samples arrive.

The detector is an energy gate over 20 ms frames with an adaptive noise floor: a frame is voiced
when its level is ``margin_db`` above the floor and above ``min_level_db``. The floor is a low
percentile of the last ``floor_window_s`` of frame levels: speech dips between words and phrases,
so the percentile sits on the background (a hum, room noise, a raised microphone gain) and follows
it when it changes (updated every 0.1 s). It costs about 2 ms of CPU per second of audio (measured
on the shared clips), which leaves the CPU to Whisper. Silero (an ONNX or TorchScript net) is
more robust to loud non-speech noise, but needs onnxruntime or a second model load, and
Whisper's own hallucination filter already drops segments that hold no words (see
:func:`mercli.features.asr.drop_hallucinations`).

:class:`Endpointer` turns the per-frame decisions into closed :class:`Segment` s: speech starts
after ``min_voiced_s`` of consecutive voiced frames, ends after ``min_silence_s`` of silence
(the endpoint delay a user waits for), and is padded by ``pad_s`` on both sides. Segments longer
than ``max_segment_s`` are cut, which bounds the audio held in memory. It also reports each
:class:`Pause` inside speech: where ``pad_s`` of silence has followed the last voiced frame, the
segment would end there if the silence went on to ``min_silence_s``, so live early emission
can transcribe it before the endpoint is sure (:mod:`mercli.live`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from mercli.features.media import SAMPLE_RATE_HZ


@dataclass(frozen=True)
class VadConfig:
    """Endpointing settings (times in seconds, levels in dBFS)."""

    frame_s: float = 0.02  # analysis frame
    margin_db: float = 12.0  # voiced: this far above the noise floor
    min_level_db: float = -50.0  # ... and at least this loud
    floor_window_s: float = 5.0  # the noise floor is a percentile of this much recent audio
    floor_percentile: float = 10.0  # ... this one
    silence_db: float = -90.0  # levels are clipped here (digital silence is not a floor)
    min_voiced_s: float = 0.06  # consecutive voiced time that starts speech
    min_speech_s: float = 0.25  # voiced time a segment needs to be kept (drops clicks)
    min_silence_s: float = 0.6  # silence that ends an utterance (the endpoint delay)
    pad_s: float = 0.25  # audio kept before the onset and after the last voiced frame
    max_segment_s: float = 28.0  # longer speech is cut here (Whisper reads 30 s windows)

    def __post_init__(self) -> None:
        if self.frame_s <= 0 or self.min_silence_s < 0 or self.pad_s < 0:
            raise ValueError("frame_s must be positive; min_silence_s and pad_s non-negative")
        if self.max_segment_s <= self.min_voiced_s + 2 * self.pad_s:
            raise ValueError(f"max_segment_s too short: {self.max_segment_s}")

    def samples(self, seconds: float, rate_hz: int = SAMPLE_RATE_HZ) -> int:
        return round(seconds * rate_hz)


@dataclass(frozen=True)
class Segment:
    """A stretch of speech, in samples from the start of the stream (``end`` exclusive)."""

    start: int
    end: int
    voiced_s: float  # voiced time inside it
    is_cut: bool = False  # ended by ``max_segment_s``, not by silence
    closed_at: int | None = None  # the sample at which the endpointer closed it (None: ``end``)

    def start_s(self, rate_hz: int = SAMPLE_RATE_HZ) -> float:
        return self.start / rate_hz

    def end_s(self, rate_hz: int = SAMPLE_RATE_HZ) -> float:
        return self.end / rate_hz


@dataclass(frozen=True)
class Pause:
    """A pause inside open speech: silence for ``pad_s`` after the last voiced frame.

    Attributes:
        at: the sample at which it was seen (the end of the frame that completed ``pad_s``).
        end: where the open segment ends if it closes in this pause (its padded end, <= ``at``).
    """

    at: int
    end: int


def frame_levels_db(samples: np.ndarray) -> np.ndarray:
    """RMS level per row of ``samples`` ``(n_frames, frame_len)``, dBFS, ``(n_frames,)``."""
    power = np.mean(np.square(samples, dtype=np.float64), axis=1)
    return 10.0 * np.log10(power + 1e-12)


class Endpointer:
    """Incremental speech segmentation; feed samples with :meth:`push`, end with :meth:`flush`.

    Holds no audio, only counters: memory is constant however long the stream runs.
    """

    def __init__(self, config: VadConfig = VadConfig(), rate_hz: int = SAMPLE_RATE_HZ) -> None:
        self.config = config
        self.rate_hz = rate_hz
        self.frame_len = config.samples(config.frame_s, rate_hz)
        n_history = max(1, round(config.floor_window_s / config.frame_s))
        self._levels = np.full(n_history, np.nan)  # ring of recent frame levels
        self.floor_db = config.silence_db
        self._rest = np.zeros(0, np.float32)  # samples not yet making a whole frame
        self._n_frames = 0  # frames analysed so far
        self._run = 0  # consecutive voiced frames (before onset) / unvoiced frames (in speech)
        self._onset: int | None = None  # first voiced frame of the open segment
        self._last_voiced = 0  # last voiced frame of the open segment
        self._voiced = 0  # voiced frames in the open segment
        # pauses seen, oldest first, until the caller takes them (bounded if it never does)
        self.pauses: deque[Pause] = deque(maxlen=256)
        pad = config.samples(config.pad_s, rate_hz)
        self._pause_frames = max(1, -(-pad // self.frame_len))  # silent frames that cover pad_s

    @property
    def n_samples(self) -> int:
        """Samples consumed so far (whole frames; the rest is held back)."""
        return self._n_frames * self.frame_len

    @property
    def open_start(self) -> int | None:
        """Padded start sample of the segment in progress (None in silence)."""
        if self._onset is None:
            return None
        return max(0, self._onset * self.frame_len - self.config.samples(self.config.pad_s))

    def push(self, samples: np.ndarray) -> list[Segment]:
        """Consume samples; returns the segments that closed in them."""
        data = np.concatenate([self._rest, np.asarray(samples, np.float32)])
        n_whole = len(data) // self.frame_len
        self._rest = data[n_whole * self.frame_len :].copy()
        if n_whole == 0:
            return []
        levels = frame_levels_db(data[: n_whole * self.frame_len].reshape(n_whole, -1))
        closed = []
        for level in levels:
            segment = self._step(float(level))
            if segment is not None:
                closed.append(segment)
        return closed

    def take_pauses(self) -> list[Pause]:
        """The pauses seen since the last call (see :class:`Pause`), oldest first."""
        pauses = list(self.pauses)
        self.pauses.clear()
        return pauses

    def flush(self) -> list[Segment]:
        """End of stream: close the segment in progress, if it holds enough speech."""
        if self._onset is None:
            return []
        segment = self._close(self._last_voiced + 1, is_cut=False, closed_at=self.n_samples)
        return [] if segment is None else [segment]

    def _step(self, level_db: float) -> Segment | None:
        c = self.config
        frames = self.frame_len / self.rate_hz  # seconds per frame
        i = self._n_frames
        self._levels[i % len(self._levels)] = max(level_db, c.silence_db)
        if i % 5 == 0 or i < 5:  # the floor moves slowly: a 0.1 s update is enough
            self.floor_db = float(np.nanpercentile(self._levels, c.floor_percentile))
        voiced = level_db > max(self.floor_db + c.margin_db, c.min_level_db)
        self._n_frames += 1
        if self._onset is None:
            self._run = self._run + 1 if voiced else 0
            if self._run * frames >= c.min_voiced_s - 1e-9:
                self._onset = i - self._run + 1
                self._last_voiced, self._voiced, self._run = i, self._run, 0
            return None
        if voiced:
            self._last_voiced, self._voiced, self._run = i, self._voiced + 1, 0
        else:
            self._run += 1
        closed_at = (i + 1) * self.frame_len
        if self._run * frames >= c.min_silence_s - 1e-9:
            return self._close(self._last_voiced + 1, is_cut=False, closed_at=closed_at)
        if (i + 1 - self._onset) * frames >= c.max_segment_s - 2 * c.pad_s:
            return self._close(i + 1, is_cut=True, closed_at=closed_at)
        if self._run == self._pause_frames:
            end = (self._last_voiced + 1) * self.frame_len + c.samples(c.pad_s, self.rate_hz)
            self.pauses.append(Pause(closed_at, end))
        return None

    def _close(self, end_frame: int, is_cut: bool, closed_at: int) -> Segment | None:
        c = self.config
        assert self._onset is not None
        pad = c.samples(c.pad_s, self.rate_hz)
        start = max(0, self._onset * self.frame_len - pad)
        end = end_frame * self.frame_len + (0 if is_cut else pad)
        voiced_s = self._voiced * self.frame_len / self.rate_hz
        self._onset, self._run, self._voiced = None, 0, 0
        if voiced_s < c.min_speech_s:
            return None
        return Segment(start, end, voiced_s, is_cut, closed_at)


def speech_span(
    samples: np.ndarray,
    rate_hz: int = SAMPLE_RATE_HZ,
    config: VadConfig = VadConfig(),
    below_peak_db: float | None = None,
) -> tuple[int, int] | None:
    """Where the speech of a whole recording lies, for cutting off its leading and trailing
    silence.

    The recording goes through :class:`Endpointer`: the span runs from the padded start of its
    first segment to the padded end of its last (pauses inside are kept), in samples, ``end``
    exclusive and at most ``len(samples)``.

    Args:
        samples: mono waveform, shape = (n_samples,).
        rate_hz: its sample rate.
        config: the endpointing settings (``pad_s`` is the margin kept on each side).
        below_peak_db: when given, ``config.min_level_db`` is replaced by the level of the
            loudest frame minus this many dB: with the whole recording at hand, the gate follows
            its loudness, so a quietly recorded voice is found and a loud one's breaths and
            room tail are left out.

    Returns:
        ``(start, end)``, or None when no segment holds ``min_speech_s`` of voiced time.
    """
    if below_peak_db is not None:
        frame_len = config.samples(config.frame_s, rate_hz)
        n_frames = len(samples) // frame_len
        if n_frames == 0:
            return None
        levels = frame_levels_db(np.reshape(samples[: n_frames * frame_len], (n_frames, -1)))
        config = replace(config, min_level_db=float(levels.max()) - below_peak_db)
    endpointer = Endpointer(config, rate_hz)
    found = endpointer.push(samples) + endpointer.flush()
    if not found:
        return None
    return found[0].start, min(len(samples), found[-1].end)
