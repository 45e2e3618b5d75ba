"""Live analysis: one :class:`LiveSession` holds the stream state; the read loop feeds it.

The session follows the shape of ufal/whisper_streaming's online processor: audio and frames go
in with :meth:`LiveSession.insert_audio_chunk` / :meth:`LiveSession.insert_frame`,
:meth:`LiveSession.process_iter` returns the utterances that are final now, and
:meth:`LiveSession.finish` the rest. Endpointing is by voice activity
(:mod:`mercli.features.vad`): when a stretch of speech ends, its audio goes through the same front
end and model as a file's (:func:`mercli.features.extract.transcribe_audio`,
:func:`~mercli.features.extract.utterance_audio`, :func:`~mercli.features.extract.window_vision`,
:func:`mercli.pipeline.predict`), and its utterances come out at once. While a stretch is still
open, its tail is re-transcribed every ``EarlyEmission.step_s`` of stream and the utterances that
two successive transcripts agree on come out before the stretch ends
(:mod:`mercli.features.agreement`). The session knows nothing
of ffmpeg: :func:`run_live` reads a :class:`~mercli.features.stream.LiveStream` into it, and a
test can feed it a file's samples chunk by chunk.

Every decision is taken at fixed points of stream time (where a stretch closes, every ``step_s``
inside it), never on the wall clock, unless scoring falls behind (``max_lag_s``): a file read as
fast as ffmpeg decodes it and the same file streamed in real time give the same utterances.

Memory is bounded: the session holds the audio and frames of the speech in progress (at most
``VadConfig.max_segment_s`` plus padding), counters for the summary, and no history.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

from mercli.descriptors import Descriptors
from mercli.features.agreement import LocalAgreement
from mercli.features.asr import Utterance, Word, fails_thresholds, join_unfinished
from mercli.features.extract import (
    FrontEnd,
    UtteranceFeatures,
    transcribe_audio,
    utterance_audio,
    window_vision,
)
from mercli.features.media import SAMPLE_RATE_HZ, Frame
from mercli.features.speaker_norm import RunningStats
from mercli.features.vad import Endpointer, Pause, Segment, VadConfig
from mercli.prediction import LABEL_NAMES, SCHEMA_VERSION, Prediction

if TYPE_CHECKING:
    from mercli.checkpoint import LoadedModel
    from mercli.features.stream import LiveStream
    from mercli.prediction import ModelInfo

VIDEO_WAIT_S = 1.0  # how long a closed segment waits for frames that lag its audio
# Scoring falls behind when Whisper runs slower than real time. Whisper reads a 30 s window per
# call whatever the audio's length, so segments that wait together are then transcribed in one
# call (up to ``VadConfig.max_segment_s`` of stream): the cost per second of speech falls, and
# the latency stays bounded instead of growing with the backlog.
MAX_LAG_S = 2.0


@dataclass(frozen=True)
class EarlyEmission:
    """Early emission inside a stretch of speech (:mod:`mercli.features.agreement`).

    A full Whisper call reads a 30 s window whatever the tail's length (about 1 s of CPU for
    tiny.en on one core here), a draft a 10 s one (about half that; see
    :data:`mercli.features.asr_ct2.DRAFT_MIN_CONTEXT_S`): ``step_s`` and ``use_draft`` set the
    CPU spent on it.
    """

    step_s: float = 2.0  # re-transcribe the open stretch's tail every this much stream time
    min_tail_s: float = 1.0  # ... when the tail holds at least this much audio
    use_draft: bool = True  # with the transcriber's cheaper draft (FrontEnd.transcribe_draft)
    # Also transcribe the tail at each pause inside the stretch (VadConfig.pad_s of silence, a
    # vad.Pause): if the stretch ends there, that transcript is its last one (no call after the
    # endpoint); if speech goes on, the pause is a boundary the next transcript can agree on.
    use_pauses: bool = True
    # Pause transcripts read the full 30 s window even with ``use_draft``: one may become the
    # stretch's final transcript, and a short-window draft of a tail that ends where the speech
    # ends is fragile (whisper_jfk.flac: "ask not" drafted as "S NOT!" or "S n i" for tails a
    # few tens of ms apart; the full window reads "Ask not!" for each).
    draft_at_pauses: bool = False
    # After a pause check, the next check comes this much later, to see whether the words
    # before the pause hold once speech follows. Its transcript often keeps the next words in
    # the same utterance (asr.merge_short: under 1 s or 3 words), which use_pause_split cuts
    # at the pause when a sentence ends there. On the shared speech clips
    # (benchmarks/early_policy.py) early utterances came out a median 1.9 s of stream after
    # their end with 1 s, 3.4 s with 1.5 s (the next sentence then usually stands alone; two
    # of ten came out sooner with it); 0.75 s changed utterances of the two-speaker call.
    confirm_s: float = 1.0
    # Cut the newer transcript at a pause the older one ended in, when it holds all the older
    # one's words, ends a sentence there and runs on in the same utterance
    # (agreement.split_at_pause): what the older window heard before the pause is confirmed,
    # and the VAD heard the boundary, without waiting for Whisper to start a new segment. Also
    # final: a sentence that both transcripts end at that pause, the newer one hearing no word
    # after it yet (agreement.held_sentence; on musetalk_eng_60s.wav one utterance a minute
    # came out 2 s sooner, 1.1 s of stream after its end instead of 3.1 s).
    use_pause_split: bool = True

    def __post_init__(self) -> None:
        if self.step_s <= 0 or self.min_tail_s < 0 or self.confirm_s <= 0:
            raise ValueError("step_s, confirm_s must be positive and min_tail_s non-negative")


@dataclass
class _Stretch:
    """Early-emission state of one stretch of speech (open, or closed and waiting)."""

    start: int  # its first sample: identifies the stretch
    agreement: LocalAgreement
    next_check: int  # the next stream sample at which its tail is re-transcribed
    last_end: int = -1  # end sample of the last transcribed window (agreement.previous's)

    @property
    def tail(self) -> int:
        """First sample not yet emitted."""
        return max(self.start, round(self.agreement.start_s * SAMPLE_RATE_HZ))


def iso_time(wall_s: float) -> str:
    """``time.time()`` as ISO 8601 UTC with milliseconds."""
    return datetime.fromtimestamp(wall_s, timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Stages:
    """Where the wall time between an utterance's end and its output went (``time.time()``
    points and durations, seconds; benchmarks/live_latency.py reports them per stage).

    From the arrival of its last sample (``LiveUtterance.wall_end_s``) to ``decided_s`` it
    waited for the decision: the endpoint (``VadConfig.min_silence_s`` of silence) or the check
    whose transcript agreed; to ``started_s`` for the session (earlier scoring, reading); then
    the stages of the call that scored it, shared with the utterances scored with it.
    """

    decided_s: float  # arrival of the sample at which the endpoint closed, or of the check point
    started_s: float  # when the transcription that gave it began
    transcribe_s: float  # that transcription (0 when a transcript made at a pause was reused)
    acoustic_s: float  # acoustic features
    vision_s: float  # face features
    text_s: float  # model inputs, with the text states
    model_s: float  # the model's forward passes
    voice_s: float  # voice emotion


@dataclass(frozen=True)
class LiveUtterance:
    """One scored utterance of a live stream.

    Attributes:
        prediction: as for files; ``start_s``/``end_s`` are seconds of stream time (audio
            samples read since the stream began) and ``index`` counts from 0 over the stream.
        wall_start_s, wall_end_s: ``time.time()`` when its first / last sample arrived.
        emitted_s: ``time.time()`` when it was scored.
        is_early: emitted by local agreement before its stretch of speech ended.
    """

    prediction: Prediction
    wall_start_s: float
    wall_end_s: float
    emitted_s: float
    is_early: bool = False  # emitted while its stretch of speech was still open
    stages: Stages | None = None  # where its latency went

    @property
    def latency_s(self) -> float:
        """From the arrival of the utterance's last sample to its result."""
        return self.emitted_s - self.wall_end_s

    def to_line(self, source: str, model: ModelInfo) -> dict[str, Any]:
        """The ``--jsonl`` record (docs/analyze-schema.md, "Live lines")."""
        return {
            "schema_version": SCHEMA_VERSION,
            "source": source,
            "status": "ok",
            "modalities": list(model.modalities),
            "utterance": self.prediction.to_dict(),
            "wall_clock": {
                "start": iso_time(self.wall_start_s),
                "end": iso_time(self.wall_end_s),
                "emitted": iso_time(self.emitted_s),
            },
            "latency_s": round(self.latency_s, 3),
            "emitted_early": self.is_early,
        }


@dataclass
class LiveSummary:
    """Running totals over a stream: constant size however long it runs.

    Attributes:
        source: the ``--live`` spec.
        status: ``running``, then how the stream ended: ``ended`` (source finished),
            ``duration`` (``--duration`` reached), ``interrupted`` (Ctrl-C), ``failed`` (ffmpeg
            error), ``stalled`` (no data), ``stopped``.
        reason: why, for failed and stalled.
    """

    source: str
    status: str = "running"
    reason: str | None = None
    stream_s: float = 0.0
    n_utterances: int = 0
    speech_s: float = 0.0
    weighted_score: float = 0.0  # sum of score * duration
    weight: float = 0.0  # sum of durations (at least 1 ms each)
    latency_sum_s: float = 0.0
    latency_max_s: float = 0.0

    def add(self, utterance: LiveUtterance) -> None:
        p = utterance.prediction
        duration = max(p.end_s - p.start_s, 1e-3)
        self.n_utterances += 1
        self.speech_s += p.end_s - p.start_s
        self.weighted_score += p.score * duration
        self.weight += duration
        self.latency_sum_s += utterance.latency_s
        self.latency_max_s = max(self.latency_max_s, utterance.latency_s)

    @property
    def mean_score(self) -> float | None:
        if not self.n_utterances:
            return None
        return self.weighted_score / self.weight

    def to_dict(self) -> dict[str, Any]:
        from mercli.metrics import seven_class_label

        mean = self.mean_score
        n = self.n_utterances
        return {
            "stream_s": round(self.stream_s, 3),
            "n_utterances": n,
            "speech_s": round(self.speech_s, 3),
            "mean_score": None if mean is None else round(mean, 4),
            "mean_label_name": None if mean is None else LABEL_NAMES[seven_class_label(mean)],
            "mean_latency_s": round(self.latency_sum_s / n, 3) if n else None,
            "max_latency_s": round(self.latency_max_s, 3) if n else None,
        }

    def to_line(self, model: ModelInfo) -> dict[str, Any]:
        """The last ``--jsonl`` record of a stream: ``utterance`` null, the summary."""
        return {
            "schema_version": SCHEMA_VERSION,
            "source": self.source,
            "status": self.status,
            "reason": self.reason,
            "modalities": list(model.modalities),
            "utterance": None,
            "summary": self.to_dict(),
        }


@dataclass
class LiveSession:
    """The state of one live stream: buffered audio and frames, the endpointer, counters.

    Args:
        loaded: the model.
        front_end: Whisper, faces and their settings (``front_end.config``).
        vad: endpointing settings.
        use_video: frames will be inserted (a closed segment waits up to ``VIDEO_WAIT_S`` of
            stream time for the frames that cover it).
        clock: wall clock, ``time.time`` (a test can pass its own).
        max_lag_s: when the oldest closed segment has waited longer than this (wall clock, from
            the arrival of its last sample), the closed segments are transcribed together in one
            Whisper call (see ``MAX_LAG_S``), and early-emission checks that are this late are
            skipped; None scores every segment alone and makes every check, however late.
        early: early emission inside stretches of speech; None: each stretch's utterances come
            out when it ends.
        join_unfinished: when a stretch ends, an utterance of its last transcript that does not
            end a sentence joins the next one (:func:`mercli.features.asr.join_unfinished`):
            Whisper cuts segments mid-sentence, and the first piece would otherwise wait for the
            stretch's end all the same.
    """

    loaded: LoadedModel
    front_end: FrontEnd
    vad: VadConfig = field(default_factory=VadConfig)
    use_video: bool = False
    clock: Callable[[], float] = time.time
    max_lag_s: float | None = MAX_LAG_S
    early: EarlyEmission | None = field(default_factory=EarlyEmission)
    join_unfinished: bool = True
    endpointer: Endpointer = field(init=False)
    _audio: np.ndarray = field(init=False)
    _audio_start: int = field(init=False, default=0)  # stream sample index of _audio[0]
    _arrivals: deque[tuple[int, float]] = field(init=False)  # (end sample, wall time) per chunk
    _frames: deque[Frame] = field(init=False)
    _video_end_s: float = field(init=False, default=-1.0)  # time of the last frame seen
    _pending: deque[Segment] = field(init=False)
    _pauses: deque[Pause] = field(init=False)  # pauses inside speech not yet checked
    _n_emitted: int = field(init=False, default=0)
    n_joined_calls: int = field(init=False, default=0)  # Whisper calls that took late segments
    n_checks: int = field(init=False, default=0)  # early-emission re-transcriptions made
    n_skipped_checks: int = field(init=False, default=0)  # ... and skipped, being late
    n_pause_checks: int = field(init=False, default=0)  # checks made at pauses (n_checks has them)
    n_reused: int = field(init=False, default=0)  # stretch ends that reused a pause's transcript
    _stretch: _Stretch | None = field(init=False, default=None)
    # the voice so far, for a model that reads it relative to the speaker (one speaker a session)
    voice: RunningStats = field(init=False, default_factory=RunningStats)

    def __post_init__(self) -> None:
        self.endpointer = Endpointer(self.vad)
        self._audio = np.zeros(0, np.float32)
        self._arrivals = deque()
        self._frames = deque()
        self._pending = deque()
        self._pauses = deque()

    @property
    def n_samples(self) -> int:
        """Samples inserted so far."""
        return self._audio_start + len(self._audio)

    @property
    def stream_s(self) -> float:
        return self.n_samples / SAMPLE_RATE_HZ

    @property
    def waiting_s(self) -> float:
        """Stream seconds from the start of the first closed, unscored segment to the end of
        the last (0 when none waits)."""
        if not self._pending:
            return 0.0
        return (self._pending[-1].end - self._pending[0].start) / SAMPLE_RATE_HZ

    @property
    def buffered_s(self) -> float:
        """Audio held now, seconds (bounded by the longest segment plus padding)."""
        return len(self._audio) / SAMPLE_RATE_HZ

    def warm_up(self) -> None:
        """Load Whisper and run every stage once on a second of low noise, so that the first
        utterance does not pay for model loading and librosa's JIT compilation."""
        noise = np.random.default_rng(0).normal(0, 1e-3, SAMPLE_RATE_HZ).astype(np.float32)
        self.front_end.transcribe(noise)
        from mercli.pipeline import predict

        acoustic, _, _ = utterance_audio(noise, Utterance(0.0, 1.0, "warm up"), self.front_end)
        empty = np.zeros((0, _d_vision()), np.float32)
        warm = UtteranceFeatures(0.0, 1.0, "warm up", acoustic, empty, np.zeros(0, bool))
        predict([warm], self.loaded, audio=[acoustic])  # the audio branch too, whatever the model

    # -- the three verbs -----------------------------------------------------------------------

    def insert_audio_chunk(self, samples: np.ndarray, wall_s: float | None = None) -> None:
        """Append 16 kHz mono float32 samples; ``wall_s``: when they arrived (default now)."""
        samples = np.asarray(samples, np.float32)
        self._audio = np.concatenate([self._audio, samples])
        self._arrivals.append((self.n_samples, self.clock() if wall_s is None else wall_s))
        self._pending.extend(self.endpointer.push(samples))
        pauses = self.endpointer.take_pauses()
        if self.early is not None and self.early.use_pauses:
            self._pauses.extend(pauses)

    def insert_frame(self, frame: Frame) -> None:
        """Append a sampled video frame (``time_s`` in stream time)."""
        self._video_end_s = max(self._video_end_s, frame.time_s)
        if self.front_end.config.use_faces:
            self._frames.append(frame)

    def process_iter(self) -> list[LiveUtterance]:
        """Score the speech segments that have ended; returns their utterances, time order."""
        return self._score_pending(wait_for_video=True)

    def finish(self) -> list[LiveUtterance]:
        """End of stream: score whatever speech is still open or pending."""
        self._pending.extend(self.endpointer.flush())
        return self._score_pending(wait_for_video=False)

    # -- internals ------------------------------------------------------------------------------

    def _score_pending(self, wait_for_video: bool) -> list[LiveUtterance]:
        def ready(segment: Segment) -> bool:
            return not wait_for_video or self._video_ready(segment)

        out: list[LiveUtterance] = []
        while self._pending:
            first = self._pending[0]
            closed_at = first.end if first.closed_at is None else first.closed_at
            out.extend(self._check_early(first.start, closed_at, wait_for_video))
            if not ready(first):
                break
            n = self._n_to_join(ready) if self._is_late() else 1
            self.n_joined_calls += n > 1
            segment = _joined([self._pending[i] for i in range(n)])
            decided = self._pending[n - 1].closed_at or self._pending[n - 1].end
            reused = self._reusable(segment) if n == 1 else None
            segment = replace(segment, start=self._tail_of(segment.start))
            if reused is not None:
                out.extend(self._emit_reused(segment, reused, self._wall_at(decided - 1)))
            else:
                out.extend(self._score(segment, self._wall_at(decided - 1)))
            for _ in range(n):  # only now: a Ctrl-C while scoring leaves them to finish()
                self._pending.popleft()
            self._stretch = None
            while self._pauses and self._pauses[0].at <= decided:
                self._pauses.popleft()
        open_start = self.endpointer.open_start
        if not self._pending and open_start is not None:
            out.extend(self._check_early(open_start, self.endpointer.n_samples + 1, wait_for_video))
        self.trim()
        return out

    def _reusable(self, segment: Segment) -> list[Utterance] | None:
        """The last transcript of the stretch's tail, when its window ended where ``segment``
        ends (a pause check in the silence that closed it), it found speech, and no utterance
        of it would have gone through Whisper's temperature fallback (drafts decode once): the
        transcript of the segment's tail, already made."""
        stretch = self._stretch
        if stretch is None or stretch.start != segment.start or stretch.last_end != segment.end:
            return None
        previous = stretch.agreement.previous
        if not previous or any(fails_thresholds(u) for u in previous):
            return None
        return list(previous)

    def _emit_reused(
        self, segment: Segment, utterances: list[Utterance], decided_s: float
    ) -> list[LiveUtterance]:
        audio = self._audio[segment.start - self._audio_start : segment.end - self._audio_start]
        offset_s = segment.start_s()
        relative = self._sentences([_shifted(u, -offset_s) for u in utterances])
        self.n_reused += 1
        timing = _Timing(decided_s, self.clock(), 0.0)
        return self._emit(relative, audio, offset_s, timing, is_early=False)

    def _tail_of(self, start: int) -> int:
        """The first sample not yet emitted of the stretch that starts at ``start``."""
        stretch = self._stretch
        return stretch.tail if stretch is not None and stretch.start == start else start

    def _check_early(self, start: int, until: int, wait_for_video: bool) -> list[LiveUtterance]:
        """Re-transcribe the tail of the stretch that starts at ``start`` at each check point
        before ``until`` (exclusive: it was still open there) not yet passed, and emit what the
        transcripts agree on. Check points are the stretch's pauses (``EarlyEmission.use_pauses``;
        the window then ends at the pause's ``end``, where the segment ends if it closes there)
        and, between them, points ``step_s`` apart (``confirm_s`` after a pause): all fixed by
        the stream's samples, the same for any chunking of the stream."""
        if self.early is None:
            return []
        step, min_tail = (
            self.vad.samples(self.early.step_s),
            self.vad.samples(self.early.min_tail_s),
        )
        stretch = self._stretch
        if stretch is None or stretch.start != start:
            agreement = LocalAgreement(
                start / SAMPLE_RATE_HZ, use_pause_split=self.early.use_pause_split
            )
            stretch = _Stretch(start, agreement, start + step)
            self._stretch = stretch
        out: list[LiveUtterance] = []
        while self._pauses and self._pauses[0].at <= start:  # an earlier stretch's
            self._pauses.popleft()
        while True:
            pause = self._pauses[0] if self._pauses and self._pauses[0].at < until else None
            if pause is None and stretch.next_check >= until:
                break
            is_pause = pause is not None and pause.at <= stretch.next_check
            check = pause.at if pause is not None and is_pause else stretch.next_check
            if wait_for_video and not self._video_ready_at(check / SAMPLE_RATE_HZ):
                break
            if pause is not None and is_pause:
                self._pauses.popleft()
                end, need = pause.end, self.vad.samples(self.vad.min_speech_s)
                stretch.next_check = check + self.vad.samples(self.early.confirm_s)
            else:
                end, need = check, min_tail
                stretch.next_check += step
            tail = stretch.tail
            if end - tail < need:
                continue
            if self._is_late_at(check):
                self.n_skipped_checks += 1
                continue
            self.n_checks += 1
            self.n_pause_checks += is_pause
            audio = self._audio[tail - self._audio_start : end - self._audio_start]
            offset_s = tail / SAMPLE_RATE_HZ
            use_draft = self.early.use_draft and (self.early.draft_at_pauses or not is_pause)
            transcribe = self.front_end.transcribe_draft if use_draft else None
            started_s = self.clock()
            utterances = transcribe_audio(audio, self.front_end, transcribe)
            timing = _Timing(self._wall_at(check - 1), started_s, self.clock() - started_s)
            hypothesis = [_shifted(u, offset_s) for u in utterances]
            final = stretch.agreement.update(
                hypothesis, paused=is_pause, window_end_s=end / SAMPLE_RATE_HZ
            )
            stretch.last_end = end
            if final:
                relative = [_shifted(u, -offset_s) for u in final]
                out.extend(self._emit(relative, audio, offset_s, timing, is_early=True))
        return out

    def _video_ready(self, segment: Segment) -> bool:
        return self._video_ready_at(segment.end_s())

    def _video_ready_at(self, end_s: float) -> bool:
        """The frames up to ``end_s`` are in (or will not come: ``VIDEO_WAIT_S``)."""
        if not (self.use_video and self.front_end.config.use_faces):
            return True
        return self._video_end_s >= end_s - 1e-6 or self.stream_s >= end_s + VIDEO_WAIT_S

    def _is_late(self) -> bool:
        return self._is_late_at(self._pending[0].end)

    def _is_late_at(self, end: int) -> bool:
        """Sample ``end - 1`` arrived more than ``max_lag_s`` ago."""
        if self.max_lag_s is None:
            return False
        return self.clock() - self._wall_at(end - 1) > self.max_lag_s

    def _n_to_join(self, ready: Callable[[Segment], bool]) -> int:
        """How many of the closed segments, from the first, one Whisper call takes: those
        ``ready`` within ``max_segment_s`` of stream from the first's start."""
        first, limit = self._pending[0], self.vad.samples(self.vad.max_segment_s)
        n = 1
        while (
            n < len(self._pending)
            and self._pending[n].end - first.start <= limit
            and ready(self._pending[n])
        ):
            n += 1
        return n

    def _wall_at(self, sample: int) -> float:
        """When the chunk holding ``sample`` arrived."""
        for end, wall_s in self._arrivals:
            if sample < end:
                return wall_s
        return self._arrivals[-1][1] if self._arrivals else self.clock()

    def _score(self, segment: Segment, decided_s: float) -> list[LiveUtterance]:
        """Transcribe and score a closed segment (``decided_s``: when its closing sample
        arrived)."""
        if segment.end <= segment.start:
            return []
        first = segment.start - self._audio_start
        audio = self._audio[max(0, first) : max(0, segment.end - self._audio_start)]
        started_s = self.clock()
        utterances = self._sentences(transcribe_audio(audio, self.front_end))
        timing = _Timing(decided_s, started_s, self.clock() - started_s)
        return self._emit(utterances, audio, segment.start_s(), timing, is_early=False)

    def _sentences(self, utterances: list[Utterance]) -> list[Utterance]:
        """A stretch's last transcript, with the utterances that end mid-sentence joined to the
        next (``join_unfinished``)."""
        return join_unfinished(utterances) if self.join_unfinished else utterances

    def _emit(
        self,
        utterances: list[Utterance],
        audio: np.ndarray,
        offset_s: float,
        timing: _Timing,
        is_early: bool,
    ) -> list[LiveUtterance]:
        """Features, scores and wall times of ``utterances`` (times in seconds of ``audio``,
        which starts at ``offset_s`` of stream time)."""
        from mercli.pipeline import predict

        features = []
        acoustic_s = vision_s = 0.0
        for u in utterances:
            t0 = time.perf_counter()
            acoustic, pitch_hz, energy_db = utterance_audio(audio, u, self.front_end)
            start_s, end_s = offset_s + u.start_s, offset_s + u.end_s
            feature = UtteranceFeatures(
                start_s,
                end_s,
                u.text,
                acoustic,
                np.zeros((0, _d_vision()), np.float32),
                np.zeros(0, bool),
                Descriptors(pitch_hz=pitch_hz, energy_db=energy_db),
            )
            t1 = time.perf_counter()
            self._add_vision(feature)
            features.append(feature)
            acoustic_s, vision_s = acoustic_s + t1 - t0, vision_s + time.perf_counter() - t1
        if not features:
            return []
        spent: dict[str, float] = {}
        predictions = predict(
            features, self.loaded, timings=spent, audio=self._model_audio(features)
        )
        emitted_s = self.clock()
        stages = Stages(
            timing.decided_s,
            timing.started_s,
            timing.transcribe_s,
            acoustic_s,
            vision_s,
            spent.get("text", 0.0),
            spent.get("model", 0.0),
            spent.get("voice", 0.0),
        )
        out = []
        for p in predictions:
            p = _renumbered(p, self._n_emitted)
            self._n_emitted += 1
            start = round(p.start_s * SAMPLE_RATE_HZ)
            end = max(start, round(p.end_s * SAMPLE_RATE_HZ) - 1)
            wall_start, wall_end = self._wall_at(start), self._wall_at(end)
            out.append(LiveUtterance(p, wall_start, wall_end, emitted_s, is_early, stages))
        return out

    def _model_audio(self, features: list[UtteranceFeatures]) -> list[np.ndarray] | None:
        """For a model that reads the voice relative to the speaker: the utterances' frames
        standardised by the session's statistics so far, these utterances included (None for
        other models: their frames as they are). The first utterance of a session is scored
        without its voice, later ones against less speech than a whole file's."""
        from mercli.features.profile import SPEAKER_NORM, audio_normalisation

        if audio_normalisation(self.loaded.meta.feature_profile) != SPEAKER_NORM:
            return None
        for u in features:
            self.voice.add(u.audio)
        return [self.voice.relative(u.audio) for u in features]

    def _add_vision(self, u: UtteranceFeatures) -> None:
        if not (self.use_video and self.front_end.config.use_faces):
            return
        frames = [f for f in self._frames if u.start_s <= f.time_s < u.end_s]
        if not frames:
            u.descriptors = replace(u.descriptors, face_coverage=0.0)
            return
        visual = window_vision(frames, self.front_end)
        u.vision, u.vision_mask = visual.features, visual.mask
        u.descriptors = u.descriptors.with_faces(visual.mask, visual.expression_probs)

    def trim(self) -> None:
        """Drop audio and frames that no pending or open segment can need (``process_iter``
        does it too; a reader that skips ``process_iter`` to catch up calls this)."""
        keep = self.n_samples - self.vad.samples(self.vad.pad_s)
        # an onset not yet confirmed (min_voiced_s) starts up to that much before the last frame
        margin_s = self.vad.pad_s + self.vad.min_voiced_s + 2 * self.vad.frame_s
        keep = min(keep, self.endpointer.n_samples - self.vad.samples(margin_s))
        if self.endpointer.open_start is not None:
            keep = min(keep, self._tail_of(self.endpointer.open_start))
        if self._pending:
            keep = min(keep, self._tail_of(self._pending[0].start))
        drop = keep - self._audio_start
        if drop > 0:
            self._audio = self._audio[drop:].copy()
            self._audio_start = keep
        while len(self._arrivals) > 1 and self._arrivals[0][0] <= self._audio_start:
            self._arrivals.popleft()
        keep_s = self._audio_start / SAMPLE_RATE_HZ
        while self._frames and self._frames[0].time_s < keep_s:
            self._frames.popleft()


@dataclass(frozen=True)
class _Timing:
    """The decision and the transcription behind some utterances (see :class:`Stages`)."""

    decided_s: float
    started_s: float
    transcribe_s: float


def _joined(segments: list[Segment]) -> Segment:
    """One segment from the first's start to the last's end (the pauses between included)."""
    if len(segments) == 1:
        return segments[0]
    voiced_s = sum(s.voiced_s for s in segments)
    return Segment(segments[0].start, segments[-1].end, voiced_s, segments[-1].is_cut)


def _shifted(u: Utterance, offset_s: float) -> Utterance:
    """``u`` with its times (and its words' times) moved by ``offset_s``."""
    words = [Word(w.text, w.start_s + offset_s, w.end_s + offset_s) for w in u.words]
    return replace(u, start_s=u.start_s + offset_s, end_s=u.end_s + offset_s, words=words)


def _d_vision() -> int:
    from mercli.features.profile import D_VISION

    return D_VISION


def _renumbered(p: Prediction, index: int) -> Prediction:
    from dataclasses import replace

    return replace(p, index=index)


# ---------------------------------------------------------------------------------------------
# the read loop


def run_live(
    stream: Iterable[Any],
    session: LiveSession,
    summary: LiveSummary,
    duration_s: float | None = None,
) -> Iterator[LiveUtterance]:
    """Feed a stream into a session and yield each utterance as soon as it is scored.

    Ends with the stream, or when ``duration_s`` of stream time has been read; then scores the
    speech still open. ``summary`` is updated as utterances come out (its ``status`` is set to
    ``duration`` or, for a :class:`~mercli.features.stream.LiveStream`, how the stream ended).
    A KeyboardInterrupt propagates: the caller calls :func:`finish_live` and prints the summary.
    """
    from mercli.features.stream import AudioChunk

    for item in stream:
        # a LiveStream finds out on opening whether the source has video
        session.use_video = session.use_video and getattr(stream, "use_video", True)
        if isinstance(item, AudioChunk):
            session.insert_audio_chunk(item.samples, item.wall_s)
        elif isinstance(item, Frame):
            session.insert_frame(item)
        else:
            session.insert_audio_chunk(np.asarray(item, np.float32))
        summary.stream_s = session.stream_s
        if duration_s is not None and session.stream_s >= duration_s:
            summary.status = "duration"
            break
        if reads_ahead(stream, session):
            continue
        for utterance in session.process_iter():
            summary.add(utterance)
            yield utterance
    yield from finish_live(stream, session, summary)


def reads_ahead(stream: Iterable[Any], session: LiveSession) -> bool:
    """Whether the loop should read on before scoring: the stream already holds more data (a
    :class:`LiveStream` whose reader is ahead, because scoring fell behind), and less than
    ``max_segment_s`` of closed speech waits, so that late segments go to Whisper together.
    Trims the session's buffers when it says yes."""
    if getattr(stream, "queued", 0) and session.waiting_s < session.vad.max_segment_s:
        session.trim()
        return True
    return False


def finish_live(
    stream: Iterable[Any], session: LiveSession, summary: LiveSummary
) -> Iterator[LiveUtterance]:
    """Close the stream, score the open speech, and record how the stream ended."""
    close = getattr(stream, "close", None)
    if close is not None:
        close()
    if summary.status == "running":
        live: LiveStream | None = stream if hasattr(stream, "status") else None  # type: ignore[assignment]
        summary.status = (live.status if live is not None else None) or "ended"
        summary.reason = live.reason if live is not None else None
    for utterance in session.finish():
        summary.add(utterance)
        yield utterance
    summary.stream_s = session.stream_s
