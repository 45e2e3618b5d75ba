"""The chunked log-mel spectrogram equals whisper's, and whisper's transcribe uses it."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

whisper = pytest.importorskip("whisper")

from mercli.features.log_mel import log_mel_spectrogram, use_chunked_log_mel  # noqa: E402


@pytest.mark.parametrize("n_samples", [400, 16000 * 3 + 37, 16000 * 31])
@pytest.mark.parametrize("padding", [0, 16000 * 30])
def test_equals_whisper_across_chunk_edges(n_samples: int, padding: int) -> None:
    rng = np.random.default_rng(n_samples)
    audio = (0.1 * rng.standard_normal(n_samples)).astype(np.float32)
    audio[: n_samples // 3] = 0.0  # silence: the floor under the maximum matters
    expected = whisper.log_mel_spectrogram(audio, 80, padding=padding)
    got = log_mel_spectrogram(audio, 80, padding=padding, chunk_frames=700)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=0, atol=1e-6)


def test_transcribe_uses_the_chunked_spectrogram() -> None:
    use_chunked_log_mel()
    use_chunked_log_mel()  # idempotent
    module = importlib.import_module("whisper.transcribe")
    assert module.log_mel_spectrogram is log_mel_spectrogram


@pytest.mark.parametrize("n_samples", [0, 399, 16000 * 3 + 37, 16000 * 31])
@pytest.mark.parametrize("chunk_length", [None, 30])
def test_ct2_chunked_features_equal_faster_whisper(
    n_samples: int, chunk_length: int | None
) -> None:
    feature_extractor = pytest.importorskip("faster_whisper.feature_extractor")
    from mercli.features.log_mel import chunked_ct2_features

    rng = np.random.default_rng(n_samples)
    audio = (0.1 * rng.standard_normal(n_samples)).astype(np.float32)
    audio[: n_samples // 3] = 0.0  # silence: the floor under the maximum matters
    whole = feature_extractor.FeatureExtractor(feature_size=80)
    chunked = chunked_ct2_features(whole, chunk_frames=700)
    assert isinstance(chunked, feature_extractor.FeatureExtractor)
    expected = whole(audio.copy(), chunk_length=chunk_length)
    got = chunked(audio.copy(), chunk_length=chunk_length)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert (chunked.n_samples, chunked.nb_max_frames) == (whole.n_samples, whole.nb_max_frames)


def test_the_ct2_backend_loads_with_the_chunked_features() -> None:
    pytest.importorskip("faster_whisper")
    from mercli.features.asr_ct2 import AsrLoadError, load_ct2_whisper

    try:
        model = load_ct2_whisper("tiny.en", "cpu")
    except AsrLoadError as error:  # the packaged weights are not installed
        pytest.skip(str(error))
    assert type(model.feature_extractor).__name__ == "ChunkedFeatureExtractor"
    audio = (0.1 * np.random.default_rng(1).standard_normal(16000 * 35)).astype(np.float32)
    from faster_whisper.feature_extractor import FeatureExtractor

    plain = FeatureExtractor(feature_size=model.feature_extractor.mel_filters.shape[0])
    np.testing.assert_allclose(model.feature_extractor(audio), plain(audio), rtol=0, atol=1e-6)
