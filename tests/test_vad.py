"""Voice-activity endpointing on synthetic audio (tone bursts in low noise)."""

from __future__ import annotations

import numpy as np
import pytest

from mercli.features.vad import Endpointer, VadConfig, speech_span

RATE = 16000


def bursts(spans: list[tuple[float, float]], total_s: float, noise: float = 1e-3, seed: int = 0):
    """Amplitude-modulated 220 Hz bursts over ``spans`` (seconds) in Gaussian noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(total_s * RATE)) / RATE
    audio = rng.normal(0, noise, len(t))
    for start, end in spans:
        inside = (t >= start) & (t < end)
        audio[inside] += (
            0.3
            * np.sin(2 * np.pi * 220 * t[inside])
            * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t[inside]))
        )
    return audio.astype(np.float32)


def segments(audio: np.ndarray, chunk: int, config: VadConfig | None = None):
    endpointer = Endpointer(config or VadConfig())
    found = []
    for i in range(0, len(audio), chunk):
        found += endpointer.push(audio[i : i + chunk])
    return found + endpointer.flush()


SPANS = [(0.5, 1.3), (2.2, 3.6), (4.5, 5.2)]


def test_each_burst_is_one_padded_segment() -> None:
    found = segments(bursts(SPANS, 6.0), 1600)
    assert len(found) == len(SPANS)
    pad = VadConfig().pad_s
    for segment, (start, end) in zip(found, SPANS, strict=True):
        assert segment.start_s() == pytest.approx(start - pad, abs=0.05)
        assert segment.end_s() == pytest.approx(end + pad, abs=0.05)
        assert not segment.is_cut


def test_segments_do_not_depend_on_chunk_size() -> None:
    audio = bursts(SPANS, 6.0)
    reference = segments(audio, len(audio))
    for chunk in (1, 333, 1600, 4801):
        assert segments(audio, chunk) == reference


def test_silence_and_clicks_give_no_segment() -> None:
    audio = bursts([(1.0, 1.05), (2.0, 2.08)], 4.0)  # two clicks shorter than min_speech_s
    assert segments(audio, 1600) == []
    assert segments(np.zeros(RATE * 3, np.float32), 1600) == []


def test_a_loud_steady_background_is_not_speech() -> None:
    t = np.arange(8 * RATE) / RATE
    hum = (0.05 * np.sin(2 * np.pi * 50 * t)).astype(np.float32)  # -29 dBFS, above min_level
    audio = hum + bursts([(6.0, 7.0)], 8.0)
    found = segments(audio, 1600)
    assert len(found) == 1  # the hum became the floor within floor_window_s
    assert found[0].start_s() == pytest.approx(6.0 - VadConfig().pad_s, abs=0.1)


def test_long_speech_is_cut_at_max_segment() -> None:
    config = VadConfig(max_segment_s=4.0)
    found = segments(bursts([(0.5, 11.0)], 12.0), 1600, config)
    assert len(found) >= 3
    assert all(s.end_s() - s.start_s() <= config.max_segment_s + 1e-6 for s in found)
    assert all(s.is_cut for s in found[:-1])


def test_the_endpoint_comes_min_silence_after_the_speech() -> None:
    config = VadConfig(min_silence_s=0.5)
    audio = bursts([(0.5, 1.5)], 4.0)
    endpointer = Endpointer(config)
    for i in range(0, len(audio), 160):  # 10 ms chunks: when does the segment close?
        if endpointer.push(audio[i : i + 160]):
            closed_at_s = (i + 160) / RATE
            break
    else:
        pytest.fail("no segment closed")
    assert closed_at_s == pytest.approx(1.5 + config.min_silence_s, abs=0.06)


def test_a_pause_is_reported_where_the_segment_would_end() -> None:
    config = VadConfig()
    audio = bursts([(0.5, 1.5), (1.8, 2.6)], 4.0)  # a 0.3 s gap: a pause, not an endpoint
    for chunk in (160, 1600, len(audio)):
        endpointer = Endpointer(config)
        found, pauses = [], []
        for i in range(0, len(audio), chunk):
            found += endpointer.push(audio[i : i + chunk])
            pauses += endpointer.take_pauses()
        assert len(found) == 1 and len(pauses) == 2  # in the gap, and in the final silence
        gap, last = pauses
        assert gap.end / RATE == pytest.approx(1.5 + config.pad_s, abs=0.05)
        assert last.end == found[0].end  # the transcript made there is the segment's
        for pause in pauses:  # seen once pad_s of silence has arrived, never sooner
            assert pause.end <= pause.at < pause.end + endpointer.frame_len
        assert endpointer.take_pauses() == []


def test_speech_span_runs_from_the_first_segment_to_the_last_with_the_margin() -> None:
    config = VadConfig(pad_s=0.15)
    span = speech_span(bursts([(1.0, 1.8), (2.1, 3.0)], 4.0), RATE, config)  # a pause inside
    assert span is not None
    assert span[0] / RATE == pytest.approx(1.0 - 0.15, abs=0.03)
    assert span[1] / RATE == pytest.approx(3.0 + 0.15, abs=0.03)
    late = speech_span(bursts([(3.5, 3.95)], 4.0), RATE, config)  # speech up to the end
    assert late is not None and late[1] <= 4 * RATE


def test_speech_span_below_peak_finds_quiet_speech_wherever_the_gain_is() -> None:
    audio = bursts([(1.0, 2.5)], 4.0, noise=1e-6)
    quiet = audio * 3e-3  # the tone near -60 dBFS: under the absolute gate (min_level_db)
    assert speech_span(quiet, RATE, VadConfig()) is None
    loud_span = speech_span(audio, RATE, VadConfig(), below_peak_db=30.0)
    assert loud_span is not None
    assert speech_span(quiet, RATE, VadConfig(), below_peak_db=30.0) == loud_span
    assert loud_span[0] / RATE == pytest.approx(1.0 - VadConfig().pad_s, abs=0.03)


def test_speech_span_of_silence_and_noise_is_none() -> None:
    assert speech_span(np.zeros(3 * RATE, np.float32), RATE, below_peak_db=30.0) is None
    noise = np.random.default_rng(1).normal(0, 1e-2, 3 * RATE).astype(np.float32)
    assert speech_span(noise, RATE) is None  # steady noise becomes the floor
    assert speech_span(np.zeros(10, np.float32), RATE, below_peak_db=30.0) is None
