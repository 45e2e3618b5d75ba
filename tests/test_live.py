"""Live analysis: the session fed directly, through ffmpeg from a file, from a pipe played at
real-time speed, from a source that dies or stalls; and ``mer analyze --live`` (fast: a fake
transcriber and a tiny random model; the real-Whisper check is marked slow)."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import wave
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mercli.cli import cli
from mercli.features.asr import Utterance, Word, merge_short
from mercli.features.extract import ExtractConfig, FrontEnd
from mercli.features.media import ffmpeg_exe
from mercli.features.stream import AudioChunk, LiveSourceError, LiveStream, parse_source
from mercli.live import EarlyEmission, LiveSession, LiveSummary, run_live
from tests.fakes import tiny_models
from tests.test_vad import RATE, SPANS, bursts

TEXTS = ("i love this camera", "the screen is terrible", "so happy")


def fake_transcribe(audio: np.ndarray) -> list[Utterance]:
    """One utterance over the loud part of the audio; its text depends on the loud duration,
    so that different bursts get different words and scores."""
    loud = np.flatnonzero(np.abs(audio) > 0.05)
    if not len(loud):
        return []
    start_s, end_s = loud[0] / RATE, loud[-1] / RATE
    return [Utterance(start_s, end_s, TEXTS[int(end_s - start_s) % len(TEXTS)])]


@pytest.fixture(scope="module")
def loaded():
    from mercli.checkpoint import load_model

    return load_model(str(tiny_models()["text"]))


def session_for(loaded, **options) -> LiveSession:
    config = ExtractConfig(use_faces=False)
    return LiveSession(loaded, FrontEnd(config, transcriber=fake_transcribe), **options)


def write_wav(path: Path, audio: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(RATE)
        f.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return write_wav(tmp_path / "bursts.wav", bursts(SPANS, 6.0))


def fed(session: LiveSession, audio: np.ndarray, chunk: int) -> list:
    out = []
    for i in range(0, len(audio), chunk):
        session.insert_audio_chunk(audio[i : i + chunk])
        out += session.process_iter()
    return out + session.finish()


def assert_same_utterances(live_run: list, file_run: list, atol: float) -> None:
    """Same texts, scores within ``atol``, spans within 0.5 s."""
    assert [u.prediction.text for u in live_run] == [u.prediction.text for u in file_run]
    np.testing.assert_allclose(
        [u.prediction.score for u in live_run], [u.prediction.score for u in file_run], atol=atol
    )
    for a, b in zip(live_run, file_run, strict=True):
        assert abs(a.prediction.start_s - b.prediction.start_s) <= 0.5
        assert abs(a.prediction.end_s - b.prediction.end_s) <= 0.5


def rows(utterances) -> list[tuple]:
    return [(u.prediction.index, u.prediction.text, u.prediction.score) for u in utterances]


def feed_in_chunks(session, audio: np.ndarray, chunk: int = 1600) -> list[tuple]:
    """Stream ``audio`` into ``session`` 0.1 s at a time; (stream seconds when it came out,
    utterance) for each utterance printed on the way."""
    emitted_at = []
    for i in range(0, len(audio), chunk):
        session.insert_audio_chunk(audio[i : i + chunk])
        emitted_at += [(session.stream_s, u) for u in session.process_iter()]
    return emitted_at


def test_each_burst_is_scored_when_it_ends(loaded) -> None:
    session = session_for(loaded)
    emitted_at = feed_in_chunks(session, bursts(SPANS, 6.0))
    assert len(emitted_at) == len(SPANS)
    for (now_s, u), (start, end) in zip(emitted_at, SPANS, strict=True):
        assert u.prediction.start_s == pytest.approx(start, abs=0.05)
        assert u.prediction.end_s == pytest.approx(end, abs=0.05)
        assert now_s <= end + session.vad.min_silence_s + 0.15  # out before the next chunks
    assert session.finish() == []


def test_chunking_does_not_change_the_results(loaded) -> None:
    audio = bursts(SPANS, 6.0)
    reference = rows(fed(session_for(loaded), audio, len(audio)))
    assert len(reference) == len(SPANS)
    assert rows(fed(session_for(loaded), audio, 1000)) == reference


def test_memory_stays_bounded_over_a_long_stream(loaded) -> None:
    session = session_for(loaded)
    spans = [(t + 0.5, t + 1.5 + (t % 3)) for t in range(0, 170, 5)]  # 34 bursts in 3 minutes
    audio = bursts(spans, 175.0)
    held = []
    n = 0
    for i in range(0, len(audio), 1600):
        session.insert_audio_chunk(audio[i : i + 1600])
        n += len(session.process_iter())
        held.append((session.buffered_s, len(session._arrivals)))
    assert n == len(spans)
    longest_s = max(end - start for start, end in spans)
    bound_s = longest_s + session.vad.min_silence_s + 2 * session.vad.pad_s + 0.2
    assert max(s for s, _ in held) <= bound_s
    assert max(a for _, a in held) <= 60  # arrival records trimmed with the audio


class CountingTranscriber:
    """``fake_transcribe`` that records the length of every audio it was given."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, audio: np.ndarray) -> list[Utterance]:
        self.calls.append(len(audio) / RATE)
        return fake_transcribe(audio)


def counting_session(loaded, now_s: float, **options) -> tuple[LiveSession, CountingTranscriber]:
    """A session whose clock stands at ``now_s``; early emission off unless ``early`` is given
    (these tests count the Whisper calls that score closed segments)."""
    transcriber = CountingTranscriber()
    front_end = FrontEnd(ExtractConfig(use_faces=False), transcriber=transcriber)
    options.setdefault("early", None)
    return LiveSession(loaded, front_end, clock=lambda: now_s, **options), transcriber


@pytest.mark.parametrize("lag_s", [0.5, 30.0])
def test_segments_that_wait_too_long_share_one_whisper_call(loaded, lag_s: float) -> None:
    audio = bursts(SPANS, 6.0)  # three bursts, all arrived at wall time 0
    session, transcriber = counting_session(loaded, now_s=lag_s, max_lag_s=2.0)
    session.insert_audio_chunk(audio, wall_s=0.0)
    out = session.process_iter() + session.finish()
    if lag_s < 2.0:  # on time: one call and one utterance per burst
        assert len(transcriber.calls) == len(SPANS) == len(out)
        assert session.n_joined_calls == 0
        return
    assert len(transcriber.calls) == 1  # late: one call from the first burst to the last
    assert session.n_joined_calls == 1
    pad = session.vad.pad_s
    assert transcriber.calls[0] == pytest.approx(SPANS[-1][1] - SPANS[0][0] + 2 * pad, abs=0.1)
    (u,) = out
    assert u.prediction.start_s == pytest.approx(SPANS[0][0], abs=0.05)
    assert u.prediction.end_s == pytest.approx(SPANS[-1][1], abs=0.05)


def test_a_late_call_never_spans_more_than_whisper_reads(loaded) -> None:
    spans = [(t + 0.5, t + 1.5) for t in range(0, 60, 4)]  # 15 bursts over a minute
    session, transcriber = counting_session(loaded, now_s=1e6)
    session.insert_audio_chunk(bursts(spans, 62.0), wall_s=0.0)
    out = session.process_iter() + session.finish()
    assert len(transcriber.calls) >= 3
    assert max(transcriber.calls) <= session.vad.max_segment_s + 1e-6
    assert out[0].prediction.start_s == pytest.approx(spans[0][0], abs=0.05)
    assert out[-1].prediction.end_s == pytest.approx(spans[-1][1], abs=0.05)


class QueuedStream:
    """Chunks that are all there at once, as when the reader is ahead of the scoring."""

    def __init__(self, audio: np.ndarray, chunk: int, session: LiveSession) -> None:
        self.chunks = [audio[i : i + chunk] for i in range(0, len(audio), chunk)]
        self.queued = len(self.chunks)
        self.session = session
        self.held_s: list[float] = []  # the session's audio before each chunk

    def __iter__(self):
        for chunk in self.chunks:
            self.held_s.append(self.session.buffered_s)
            self.queued -= 1
            yield AudioChunk(chunk, 0.0)


def test_a_reader_behind_real_time_reads_the_queue_before_scoring(loaded) -> None:
    session, transcriber = counting_session(loaded, now_s=100.0)
    stream = QueuedStream(bursts(SPANS, 6.0), 1600, session)
    out = list(run_live(stream, session, LiveSummary("q")))
    assert len(transcriber.calls) == 1 and len(out) == 1


def test_a_reader_behind_real_time_keeps_memory_bounded(loaded) -> None:
    session, transcriber = counting_session(loaded, now_s=1e6)
    spans = [(t + 0.5, t + 1.5) for t in range(0, 170, 5)]
    stream = QueuedStream(bursts(spans, 175.0), 1600, session)
    out = list(run_live(stream, session, LiveSummary("q")))
    assert out and len(transcriber.calls) < len(spans) / 3
    assert max(stream.held_s) <= 2 * session.vad.max_segment_s  # of a 175 s stream


def test_a_file_through_ffmpeg_gives_what_the_samples_give(loaded, clip: Path) -> None:
    reference = rows(fed(session_for(loaded), bursts(SPANS, 6.0), 1600))
    stream = LiveStream(parse_source(str(clip)), use_video=False)
    summary = LiveSummary(str(clip))
    got = list(run_live(stream, session_for(loaded), summary))
    assert [(i, t) for i, t, _ in rows(got)] == [(i, t) for i, t, _ in reference]
    np.testing.assert_allclose([s for *_, s in rows(got)], [s for *_, s in reference], atol=1e-5)
    assert summary.status == "ended" and summary.n_utterances == len(SPANS)
    assert summary.stream_s == pytest.approx(6.0, abs=0.05)


def play(clip: Path, *, realtime: bool = True, seconds: float | None = None, stdout=None):
    """A local ffmpeg playing ``clip`` into a pipe as a live sender would (matroska)."""
    command = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin"]
    command += ["-re"] if realtime else []
    command += ["-i", str(clip), *(["-t", f"{seconds:g}"] if seconds else [])]
    command += ["-c:a", "pcm_s16le", "-f", "matroska", "pipe:1"]
    return subprocess.Popen(command, stdout=stdout or subprocess.PIPE)


def test_a_clip_streamed_in_real_time_gives_the_files_utterances(loaded, clip: Path) -> None:
    file_run = list(run_live(LiveStream(parse_source(str(clip)), use_video=False),
                             session_for(loaded), LiveSummary("file")))  # fmt: skip
    sender = play(clip)
    stream = LiveStream(parse_source("-"), use_video=False, stdin=sender.stdout)
    summary = LiveSummary("-")
    live_run = []
    for u in run_live(stream, session_for(loaded), summary):
        live_run.append(u)
        assert 0 <= u.latency_s < 2.0  # scored while the stream still plays
    sender.wait()
    assert_same_utterances(live_run, file_run, atol=1e-5)
    assert summary.status == "ended"
    # real-time: the stream took about as long as the clip, and outputs followed its pace
    span = live_run[-1].wall_end_s - live_run[0].wall_end_s
    assert span == pytest.approx(SPANS[-1][1] - SPANS[0][1], abs=0.6)


def test_a_source_that_dies_midway_ends_cleanly(loaded, clip: Path) -> None:
    sender = play(clip)
    stream = LiveStream(parse_source("-"), use_video=False, stdin=sender.stdout)
    summary = LiveSummary("-")
    got = []
    for item in stream:
        assert isinstance(item, AudioChunk)
        if stream.n_samples >= 3.0 * RATE and sender.poll() is None:
            sender.kill()  # the sender disappears after the first burst
        got.append(item)
    sender.wait()
    assert stream.status in ("ended", "failed")
    session = session_for(loaded)
    out = list(run_live(iter(got), session, summary))  # what was read still scores
    assert [u.prediction.start_s for u in out][:1] == pytest.approx([SPANS[0][0]], abs=0.05)
    assert session.stream_s < 6.0


def test_a_dying_source_through_run_live_keeps_what_was_printed(loaded, clip: Path) -> None:
    sender = play(clip, seconds=3.0)  # stops mid-way through the second burst
    stream = LiveStream(parse_source("-"), use_video=False, stdin=sender.stdout)
    summary = LiveSummary("-")
    got = list(run_live(stream, session_for(loaded), summary))
    sender.wait()
    assert summary.status == "ended"
    assert len(got) == 2  # the first burst, and the part of the second that was heard
    assert got[1].prediction.end_s <= 3.05


def test_a_stalled_source_gets_a_status(loaded, clip: Path) -> None:
    read_end, write_end = os.pipe()
    sender = play(clip, realtime=False, seconds=2.0, stdout=write_end)  # then silence, pipe open
    try:
        stream = LiveStream(parse_source("-"), use_video=False, stdin=read_end, stall_timeout_s=1.0)
        summary = LiveSummary("-")
        got = list(run_live(stream, session_for(loaded), summary))
        assert summary.status == "stalled" and "no data" in (summary.reason or "")
        assert len(got) == 1  # the first burst was scored
    finally:
        sender.wait()
        os.close(write_end)
        os.close(read_end)


def test_a_source_that_cannot_be_opened_raises_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LiveSourceError, match=r"missing\.wav"):
        list(LiveStream(parse_source(str(tmp_path / "missing.wav")), use_video=False))


@pytest.mark.parametrize(
    ("spec", "platform", "expected"),
    [
        ("-", "linux", ("-i", "pipe:0")),
        ("udp://0.0.0.0:5000", "linux", ("-i", "udp://0.0.0.0:5000")),
        ("mic", "linux", ("-f", "pulse", "-i", "default")),
        ("mic:alsa:hw:1", "linux", ("-f", "alsa", "-i", "hw:1")),
        ("webcam", "linux", ("-f", "v4l2", "-i", "/dev/video0", "-f", "pulse", "-i", "default")),
        ("mic", "darwin", ("-f", "avfoundation", "-i", ":0")),
        ("webcam:1:0", "darwin", ("-f", "avfoundation", "-i", "1:0")),
        ("mic:Microphone (USB)", "win32", ("-f", "dshow", "-i", "audio=Microphone (USB)")),
    ],
)
def test_sources_map_to_ffmpeg_inputs(spec: str, platform: str, expected: tuple) -> None:
    assert parse_source(spec, platform).input_args == expected


def test_windows_devices_need_a_name() -> None:
    with pytest.raises(LiveSourceError, match="list_devices"):
        parse_source("webcam", "win32")


# ---------------------------------------------------------------------------------------------
# early emission inside a stretch of speech

PHRASES = [(0.5, 2.0), (2.3, 3.8), (4.1, 5.6), (5.9, 7.0)]  # 0.3 s pauses: one stretch


def phrase_transcribe(audio: np.ndarray) -> list[Utterance]:
    """One utterance per loud run (runs split by pauses of 0.2 s or more), one word per 0.25 s
    named by the run's length: a run the window cuts short gets other words."""
    frame = RATE // 100
    n = len(audio) // frame
    loud = np.abs(audio[: n * frame]).reshape(n, frame).max(axis=1) > 0.05
    runs: list[list[int]] = []
    for i in np.flatnonzero(loud):
        if runs and i - runs[-1][1] <= 20:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    out = []
    for first, last in runs:
        start_s, end_s = first / 100, (last + 1) / 100
        n_words = max(1, round((end_s - start_s) / 0.25))
        step = (end_s - start_s) / n_words
        words = [Word(f"w{last - first}x{k}", start_s + k * step, start_s + (k + 1) * step)
                 for k in range(n_words)]  # fmt: skip
        out.append(Utterance(start_s, end_s, " ".join(w.text for w in words), words))
    return out


def phrase_session(loaded, **options) -> LiveSession:
    """A session that transcribes with ``phrase_transcribe``, early emission on by default;
    its phrases end no sentence, so by default they are not joined at a stretch's end."""
    front_end = FrontEnd(ExtractConfig(use_faces=False), transcriber=phrase_transcribe)
    options.setdefault("early", EarlyEmission())
    options.setdefault("join_unfinished", False)
    return LiveSession(loaded, front_end, **options)


def test_phrases_that_end_no_sentence_are_joined_at_the_stretch_end(loaded) -> None:
    audio = bursts(PHRASES, 9.0)
    apart = fed(phrase_session(loaded, early=None), audio, 1600)
    joined = fed(phrase_session(loaded, early=None, join_unfinished=True), audio, 1600)
    assert len(apart) == len(PHRASES)
    (one,) = joined  # no phrase ends a sentence, 0.3 s pauses, 6.5 s in all
    assert one.prediction.text == " ".join(u.prediction.text for u in apart)
    assert one.prediction.start_s == apart[0].prediction.start_s
    assert one.prediction.end_s == apart[-1].prediction.end_s


def test_utterances_inside_a_stretch_come_out_before_it_ends(loaded) -> None:
    audio = bursts(PHRASES, 9.0)
    session = phrase_session(loaded)
    emitted_at = feed_in_chunks(session, audio)
    emitted_at += [(session.stream_s, u) for u in session.finish()]
    stretch_end_s = PHRASES[-1][1] + session.vad.min_silence_s
    early = [u for now_s, u in emitted_at if now_s < stretch_end_s]
    # each phrase is final once the next check sees the next one begin after its pause; the
    # last one ends the stretch, with the transcript made at its pause
    assert [u.is_early for _, u in emitted_at] == [True, True, True, False]
    assert len(early) == 3 and session.n_pause_checks == len(PHRASES)
    assert session.n_reused == 1
    # the same utterances, texts and scores as when the stretch is scored whole
    whole = fed(phrase_session(loaded, early=None), audio, 1600)
    got = [u for _, u in emitted_at]
    assert_same_utterances(got, whole, atol=1e-3)
    for u, (start, end) in zip(got, PHRASES, strict=True):
        assert u.prediction.start_s == pytest.approx(start, abs=0.05)
        assert u.prediction.end_s == pytest.approx(end, abs=0.05)
    assert [u.prediction.index for u in got] == [0, 1, 2, 3]


def test_early_emission_does_not_depend_on_chunking(loaded) -> None:
    audio = bursts(PHRASES, 9.0)
    runs = [fed(phrase_session(loaded, max_lag_s=None), audio, chunk)
            for chunk in (len(audio), 1000, 1600)]  # fmt: skip
    assert [u.is_early for u in runs[0]] == [True, True, True, False]
    for run in runs[1:]:
        assert rows(run) == rows(runs[0])
        assert [u.is_early for u in run] == [u.is_early for u in runs[0]]


def test_long_speech_is_emitted_once_in_bounded_windows(loaded) -> None:
    spans = [(0.5 + 1.8 * k, 2.0 + 1.8 * k) for k in range(40)]  # 72 s, never a 0.6 s pause
    audio = bursts(spans, 74.0)
    calls: list[float] = []

    def counting(audio: np.ndarray) -> list[Utterance]:
        calls.append(len(audio) / RATE)
        return phrase_transcribe(audio)

    front_end = FrontEnd(ExtractConfig(use_faces=False), transcriber=counting)
    session = LiveSession(loaded, front_end, max_lag_s=None, early=EarlyEmission())
    out, held = [], []
    for i in range(0, len(audio), 1600):
        session.insert_audio_chunk(audio[i : i + 1600])
        out += session.process_iter()
        held.append(session.buffered_s)
    out += session.finish()
    starts = [u.prediction.start_s for u in out]
    assert starts == sorted(starts) and len(out) >= len(spans) - 3  # cuts at 28 s may split one
    for a, b in itertools.pairwise(out):  # no utterance twice; the stretch after a
        # cut at max_segment_s starts pad_s before its onset, as without early emission
        assert a.prediction.end_s <= b.prediction.start_s + session.vad.pad_s + 1e-6
    assert sum(u.is_early for u in out) >= len(out) * 0.6
    assert max(calls) <= session.vad.max_segment_s + 1e-6
    # each check transcribes only the tail since the last emission, not the whole stretch
    assert np.median(calls) <= 2 * EarlyEmission().step_s + 2.0
    assert max(held) <= session.vad.max_segment_s + 1.0


def test_early_emission_streamed_in_real_time_gives_the_files_utterances(loaded, tmp_path):
    clip = write_wav(tmp_path / "phrases.wav", bursts(PHRASES, 9.0))
    file_run = list(run_live(LiveStream(parse_source(str(clip)), use_video=False),
                             phrase_session(loaded), LiveSummary("file")))  # fmt: skip
    sender = play(clip)
    stream = LiveStream(parse_source("-"), use_video=False, stdin=sender.stdout)
    live_run = list(run_live(stream, phrase_session(loaded), LiveSummary("-")))
    sender.wait()
    expected = [True, True, True, False]
    assert [u.is_early for u in live_run] == [u.is_early for u in file_run] == expected
    assert_same_utterances(live_run, file_run, atol=1e-5)
    # the early ones were printed while the stream still played the stretch (which ends 0.6 s
    # after the last phrase)
    stretch_end_wall_s = live_run[-1].wall_end_s + 0.6
    assert all(u.emitted_s < stretch_end_wall_s for u in live_run[:3])


class PhraseCounter:
    """``phrase_transcribe`` with a ``draft``, counting the calls of each (stream seconds of
    the window's end, from the session's counter, per call)."""

    def __init__(self) -> None:
        self.full: list[float] = []
        self.drafts: list[float] = []
        self.session: LiveSession | None = None

    def __call__(self, audio: np.ndarray) -> list[Utterance]:
        self.full.append(self.session.stream_s if self.session else 0.0)
        return phrase_transcribe(audio)

    def draft(self, audio: np.ndarray) -> list[Utterance]:
        self.drafts.append(self.session.stream_s if self.session else 0.0)
        return phrase_transcribe(audio)


@pytest.mark.parametrize("use_pauses", [True, False])
def test_a_stretch_that_ends_in_a_checked_pause_is_not_transcribed_again(loaded, use_pauses):
    audio = bursts(PHRASES, 9.0)
    transcriber = PhraseCounter()
    front_end = FrontEnd(ExtractConfig(use_faces=False), transcriber=transcriber)
    session = LiveSession(
        loaded, front_end, early=EarlyEmission(use_pauses=use_pauses), join_unfinished=False
    )
    transcriber.session = session
    emitted_at = feed_in_chunks(session, audio) + [(9.0, u) for u in session.finish()]
    got = [u for _, u in emitted_at]
    whole = fed(phrase_session(loaded, early=None), audio, 1600)
    assert_same_utterances(got, whole, atol=1e-3)  # the same utterances either way
    closed_s = PHRASES[-1][1] + session.vad.min_silence_s
    if use_pauses:
        # pause checks read the full window (EarlyEmission.draft_at_pauses off), other checks
        # draft; none comes after the endpoint
        assert len(transcriber.full) == session.n_pause_checks > 0 and session.n_reused == 1
        assert len(transcriber.drafts) == session.n_checks - session.n_pause_checks
        assert max(transcriber.full) < closed_s - 0.05
        # the last phrase came out at its endpoint, with no Whisper call after it
        assert emitted_at[-1][0] == pytest.approx(closed_s, abs=0.15)
        assert emitted_at[-1][1].stages.transcribe_s == 0.0
    else:  # checks every 2 s; the stretch's end is transcribed after its endpoint
        assert len(transcriber.full) == 1 and transcriber.full[0] >= closed_s - 0.05
        assert session.n_reused == 0 and session.n_pause_checks == 0
        assert [u.is_early for u in got] == [True, True, False, False]


def test_an_unsure_draft_is_not_reused_at_the_stretch_end(loaded) -> None:
    class Unsure(PhraseCounter):
        def draft(self, audio: np.ndarray) -> list[Utterance]:
            super().draft(audio)  # counted; each one unsure as Whisper's fallback judges it
            return [replace(u, avg_logprob=-1.5) for u in phrase_transcribe(audio)]

    transcriber = Unsure()
    front_end = FrontEnd(ExtractConfig(use_faces=False), transcriber=transcriber)
    session = LiveSession(loaded, front_end, early=EarlyEmission(draft_at_pauses=True))
    out = fed(session, bursts(PHRASES, 9.0), 1600)
    assert len(out) == len(PHRASES) and session.n_reused == 0
    assert len(transcriber.full) == 1 and len(transcriber.drafts) >= len(PHRASES)


def sentence_transcribe(audio: np.ndarray) -> list[Utterance]:
    """``phrase_transcribe`` with each phrase ending a sentence, and a phrase under 1 s (one
    the window cuts short) joined to the one before it, as ``merge_short`` does."""
    out = []
    for u in phrase_transcribe(audio):
        last = u.words[-1]
        words = [*u.words[:-1], Word(f"{last.text}.", last.start_s, last.end_s)]
        out.append(replace(u, text=" ".join(w.text for w in words), words=words))
    return merge_short(out)


def test_a_transcript_that_runs_on_past_a_pause_is_cut_there(loaded) -> None:
    audio = bursts(PHRASES, 9.0)
    front_end = FrontEnd(ExtractConfig(use_faces=False), transcriber=sentence_transcribe)
    whole = fed(LiveSession(loaded, front_end, early=None), audio, 1600)
    delays = {}
    for use_pause_split in (True, False):
        session = LiveSession(
            loaded, front_end, early=EarlyEmission(use_pause_split=use_pause_split)
        )
        emitted_at = feed_in_chunks(session, audio) + [(9.0, u) for u in session.finish()]
        got = [u for _, u in emitted_at]
        # the same utterances either way, and as when the stretch is scored whole
        assert_same_utterances(got, whole, atol=1e-3)
        assert [u.is_early for u in got] == [True, True, True, False]
        delays[use_pause_split] = [now_s - u.prediction.end_s for now_s, u in emitted_at[:3]]
    # the check confirm_s after each pause holds under 1 s of the next phrase, joined to the
    # one before it: cut at the pause, the phrase is final there; otherwise it waits for the
    # next pause, where the next phrase stands alone
    soon_s = session.vad.pad_s + EarlyEmission().confirm_s + 0.1
    assert all(d <= soon_s for d in delays[True])
    assert all(d > soon_s for d in delays[False])


def test_late_checks_are_skipped_when_scoring_falls_behind(loaded) -> None:
    audio = bursts(PHRASES, 9.0)
    session = phrase_session(loaded, clock=lambda: 1e6)  # every sample arrived long ago
    for i in range(0, len(audio), 1600):
        session.insert_audio_chunk(audio[i : i + 1600], wall_s=0.0)
    out = session.process_iter() + session.finish()
    assert session.n_checks == 0 and session.n_skipped_checks >= 2
    assert len(out) == len(PHRASES) and not any(u.is_early for u in out)


# ---------------------------------------------------------------------------------------------
# the CLI


@pytest.fixture
def fake_whisper(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mercli.features.extract.load_transcriber", lambda config: fake_transcribe)


def test_cli_prints_one_json_line_per_utterance_then_the_summary(fake_whisper, clip) -> None:
    checkpoint = str(tiny_models()["text"])
    result = CliRunner().invoke(
        cli,
        ["analyze", "--live", str(clip), "--jsonl", "--no-faces", "--checkpoint", checkpoint],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == len(SPANS) + 1
    for line, (start, _) in zip(lines, SPANS, strict=False):
        assert set(line) == {
            "schema_version", "source", "status", "modalities", "utterance", "wall_clock",
            "latency_s", "emitted_early",
        }  # fmt: skip
        assert line["utterance"]["start_s"] == pytest.approx(start, abs=0.05)
        assert set(line["wall_clock"]) == {"start", "end", "emitted"}
    last = lines[-1]
    assert last["utterance"] is None and last["status"] == "ended"
    assert last["summary"]["n_utterances"] == len(SPANS)
    assert last["summary"]["stream_s"] == pytest.approx(6.0, abs=0.05)


def test_cli_ctrl_c_prints_the_summary_and_exits_0(fake_whisper, clip, monkeypatch) -> None:
    import mercli.live

    real = mercli.live.run_live

    def interrupted(stream, session, summary, duration_s=None):
        for utterance in real(stream, session, summary, duration_s):
            yield utterance
            raise KeyboardInterrupt  # the user presses Ctrl-C after the first utterance

    monkeypatch.setattr(mercli.live, "run_live", interrupted)
    checkpoint = str(tiny_models()["text"])
    result = CliRunner().invoke(
        cli, ["analyze", "--live", str(clip), "--no-faces", "--checkpoint", checkpoint]
    )
    assert result.exit_code == 0, result.output
    assert "summary" in result.stdout and "interrupted" in result.stdout


def test_cli_duration_stops_the_stream(fake_whisper, clip) -> None:
    checkpoint = str(tiny_models()["text"])
    result = CliRunner().invoke(
        cli,
        ["analyze", "--live", str(clip), "--jsonl", "--no-faces", "--checkpoint", checkpoint,
         "--duration", "2"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    last = json.loads(result.stdout.splitlines()[-1])
    assert last["status"] == "duration"
    assert 2.0 <= last["summary"]["stream_s"] < 2.5
    assert last["summary"]["n_utterances"] == 1


@pytest.mark.parametrize(("silence", "n_utterances"), [(None, len(SPANS)), ("1.0", 1)])
def test_cli_endpoint_silence_sets_where_utterances_end(fake_whisper, clip, silence, n_utterances):
    # the bursts are 0.9 s apart: the default 0.6 s ends each one, 1 s joins them
    checkpoint = str(tiny_models()["text"])
    args = ["analyze", "--live", str(clip), "--jsonl", "--no-faces", "--checkpoint", checkpoint]
    if silence is not None:
        args += ["--endpoint-silence", silence]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[-1])["summary"]["n_utterances"] == n_utterances


@pytest.mark.parametrize(
    ("early", "expected"),
    # by default each phrase agrees at the check after the next pause; with checks every 1 s
    # too; the last one ends the stretch. Off, the stretch's phrases come out at its end, as
    # one utterance since none ends a sentence (LiveSession.join_unfinished)
    [(None, [True, True, True, False]), ("0", [False]), ("1", [True, True, True, False])],
)
def test_cli_early_emit_prints_utterances_before_the_pause(monkeypatch, tmp_path, early, expected):
    monkeypatch.setattr("mercli.features.extract.load_transcriber", lambda c: phrase_transcribe)
    clip = write_wav(tmp_path / "phrases.wav", bursts(PHRASES, 9.0))
    args = ["analyze", "--live", str(clip), "--jsonl", "--no-faces"]
    args += ["--checkpoint", str(tiny_models()["text"])]
    result = CliRunner().invoke(cli, args + (["--early-emit", early] if early else []))
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()[:-1]]
    assert [line["emitted_early"] for line in lines] == expected


def test_cli_no_pause_split_reaches_the_session(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr("mercli.features.extract.load_transcriber", lambda c: sentence_transcribe)
    import mercli.live

    seen, run_live = [], mercli.live.run_live

    def spy(stream, session, summary, duration_s=None):
        seen.append(session.early)
        return run_live(stream, session, summary, duration_s)

    monkeypatch.setattr(mercli.live, "run_live", spy)
    clip = write_wav(tmp_path / "phrases.wav", bursts(PHRASES, 9.0))
    args = ["analyze", "--live", str(clip), "--jsonl", "--no-faces"]
    args += ["--checkpoint", str(tiny_models()["text"])]
    for flags in ([], ["--no-pause-split"], ["--no-pause-split", "--early-emit", "1"]):
        result = CliRunner().invoke(cli, args + flags)
        assert result.exit_code == 0, result.output
        assert len(result.stdout.splitlines()) == len(PHRASES) + 1
    assert [(e.use_pause_split, e.step_s) for e in seen] == [
        (True, 2.0),
        (False, 2.0),
        (False, 1.0),
    ]
    result = CliRunner().invoke(cli, ["analyze", str(clip), "--no-pause-split"])
    assert result.exit_code == 2 and "--no-pause-split" in result.output


def test_cli_table_marks_the_rows_emitted_early(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr("mercli.features.extract.load_transcriber", lambda c: phrase_transcribe)
    clip = write_wav(tmp_path / "phrases.wav", bursts(PHRASES, 9.0))
    args = ["analyze", "--live", str(clip), "--no-faces", "--checkpoint"]
    result = CliRunner().invoke(cli, [*args, str(tiny_models()["text"])])
    assert result.exit_code == 0, result.output
    marks = [m.group(1) for m in re.finditer(r"\+\d+\.\d s(\*| ) w", result.stdout)]
    assert marks == ["*"] * 3 + [" "]


def test_cli_refuses_live_with_files_and_reports_bad_sources(fake_whisper, clip, tmp_path):
    result = CliRunner().invoke(cli, ["analyze", str(clip), "--live", "-"])
    assert result.exit_code == 2 and "--live" in result.output
    result = CliRunner().invoke(cli, ["analyze", "--duration", "3"])
    assert result.exit_code == 2
    result = CliRunner().invoke(cli, ["analyze", str(clip), "--early-emit", "2"])
    assert result.exit_code == 2 and "--early-emit" in result.output
    missing = tmp_path / "gone.mp4"
    result = CliRunner().invoke(
        cli,
        ["analyze", "--live", str(missing), "--checkpoint", str(tiny_models()["text"])],
    )
    assert result.exit_code == 1
    assert "gone.mp4" in result.output and "Traceback" not in result.output


# ---------------------------------------------------------------------------------------------
# real Whisper and faces on shared clips (slow)


def real_session(loaded, use_faces: bool) -> LiveSession:
    # every segment alone, however late: these tests compare segmentations, and on a loaded
    # machine the catch-up (``max_lag_s``) would join segments depending on the load
    config = ExtractConfig.for_profile(loaded.meta.feature_profile, use_faces=use_faces)
    session = LiveSession(loaded, FrontEnd(config), use_video=use_faces, max_lag_s=None)
    session.warm_up()
    return session


@pytest.mark.slow
def test_real_speech_streamed_in_real_time_matches_the_file(shared_dir: Path) -> None:
    from mercli.checkpoint import load_model
    from mercli.features.asr import normalize_text
    from mercli.pipeline import Analyzer

    clip = shared_dir / "media" / "audio_speech" / "whisper_jfk.flac"
    loaded = load_model("default")
    file_run = list(
        run_live(
            LiveStream(parse_source(str(clip)), use_video=False),
            real_session(loaded, False),
            LiveSummary("file"),
        )
    )
    sender = subprocess.Popen(
        [ffmpeg_exe(), "-v", "error", "-nostdin", "-re", "-i", str(clip), "-c", "copy",
         "-f", "matroska", "pipe:1"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    stream = LiveStream(parse_source("-"), use_video=False, stdin=sender.stdout)
    live_run = list(run_live(stream, real_session(loaded, False), LiveSummary("-")))
    sender.wait()
    assert len(file_run) >= 2
    assert_same_utterances(live_run, file_run, atol=1e-4)
    # `mer analyze FILE` (Whisper over the whole file) hears the same words over the same span
    config = ExtractConfig.for_profile(loaded.meta.feature_profile, use_faces=False)
    analysed = Analyzer(loaded, config, use_cache=False).analyze_file(clip)
    words = normalize_text(" ".join(p.text for p in analysed.predictions))
    assert normalize_text(" ".join(u.prediction.text for u in live_run)) == words
    assert live_run[0].prediction.start_s == pytest.approx(analysed.predictions[0].start_s, abs=0.5)
    assert live_run[-1].prediction.end_s == pytest.approx(analysed.predictions[-1].end_s, abs=0.5)


@pytest.mark.slow
def test_a_video_stream_through_a_pipe_gets_faces(shared_dir: Path) -> None:
    from mercli.checkpoint import load_model

    clip = shared_dir / "media" / "talking_head" / "real3dportrait_May_5s.mp4"
    sender = subprocess.Popen(
        [ffmpeg_exe(), "-v", "error", "-nostdin", "-re", "-i", str(clip), "-c", "copy",
         "-f", "matroska", "pipe:1"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    stream = LiveStream(parse_source("-"), stdin=sender.stdout)
    got = list(run_live(stream, real_session(load_model("default"), True), LiveSummary("-")))
    sender.wait()
    assert got and all(
        (c := u.prediction.descriptors.face_coverage) is not None and c > 0.8 for u in got
    )


@pytest.mark.slow
def test_sigint_prints_the_summary_and_exits_0(shared_dir: Path, tmp_path: Path) -> None:
    import signal
    import sys
    import time

    clip = shared_dir / "media" / "audio_speech" / "musetalk_eng_60s.wav"
    sender = subprocess.Popen(
        [ffmpeg_exe(), "-v", "error", "-nostdin", "-re", "-i", str(clip), "-c", "copy",
         "-f", "matroska", "pipe:1"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    mer = subprocess.Popen(
        [sys.executable, "-m", "mercli", "analyze", "--live", "-", "--jsonl", "--no-faces"],
        stdin=sender.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert mer.stderr is not None
    for line in mer.stderr:  # wait until it listens, then for some stream to be read
        if b"listening" in line:
            break
    time.sleep(20)
    mer.send_signal(signal.SIGINT)
    stdout, stderr = mer.communicate(timeout=600)
    sender.kill()
    sender.wait()
    assert mer.returncode == 0, stderr.decode()
    lines = [json.loads(line) for line in stdout.decode().splitlines()]
    assert lines[-1]["status"] == "interrupted" and lines[-1]["utterance"] is None
    assert lines[-1]["summary"]["stream_s"] >= 5  # under load the stream is read slower
    assert lines[-1]["summary"]["n_utterances"] == len(lines) - 1 >= 1
