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
