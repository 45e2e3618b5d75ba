"""Frame-level acoustic features (mercli.features.acoustic)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from mercli.features.acoustic import (
    AUDIO_FEATURE_NAMES,
    D_AUDIO,
    acoustic_features,
    acoustic_summary,
    estimate_pitch,
    measure_frames,
)
from tests.conftest import SHARED

CREMA_CLIPS = SHARED / "data" / "crema-d" / "clips"
SR = 16_000
VOICING = AUDIO_FEATURE_NAMES.index("voicing")


def voice(f0_hz: float = 150.0, seconds: float = 1.0, amplitude: float = 0.3) -> np.ndarray:
    """A harmonic 'vowel': f0 plus two weaker harmonics, float32 mono at 16 kHz."""
    t = np.arange(round(seconds * SR)) / SR
    wave = sum(np.sin(2 * np.pi * k * f0_hz * t) / k for k in (1, 2, 3))
    return (amplitude * wave / 1.83).astype(np.float32)


def test_shapes_times_and_normalisation() -> None:
    audio = np.concatenate([voice(seconds=1.0), np.zeros(SR // 2, np.float32)])
    features, times = acoustic_features(audio, SR, start_s=0.5, end_s=1.3, hop_s=0.02)
    assert features.shape == (41, D_AUDIO)
    assert len(AUDIO_FEATURE_NAMES) == D_AUDIO
    assert features.dtype == np.float32 and np.isfinite(features).all()
    np.testing.assert_allclose(times[:3], [0.5, 0.52, 0.54])
    standardised = np.delete(features, VOICING, axis=1)
    np.testing.assert_allclose(standardised.mean(axis=0), 0.0, atol=1e-4)
    assert ((np.abs(standardised.std(axis=0) - 1) < 1e-3) | (standardised.std(axis=0) < 1e-6)).all()
    assert features[:, VOICING].min() >= 0.0 and features[:, VOICING].max() <= 1.0


@pytest.mark.parametrize("f0_hz", [90.0, 150.0, 260.0])
def test_pitch_of_a_harmonic_voice(f0_hz: float) -> None:
    frames = voice(f0_hz, 0.2).reshape(-1, 1600)[:, :1024].astype(np.float64)
    f0, voicing = estimate_pitch(frames, SR)
    np.testing.assert_allclose(f0, f0_hz, rtol=0.01)
    assert (voicing > 0.9).all()


def test_noise_is_unvoiced_and_voice_is_voiced() -> None:
    noise = np.random.default_rng(0).normal(0, 0.1, SR).astype(np.float32)
    assert acoustic_summary(noise, SR).voiced_fraction < 0.1
    summary = acoustic_summary(voice(200.0), SR)
    assert summary.voiced_fraction > 0.9
    assert summary.mean_pitch_hz == pytest.approx(200.0, rel=0.01)


def test_silence_gives_finite_features() -> None:
    silence = np.zeros(SR, np.float32)
    features, _ = acoustic_features(silence, SR)
    assert np.isfinite(features).all() and not features.any()  # constant columns -> 0
    summary = acoustic_summary(silence, SR)
    assert summary.mean_pitch_hz is None and summary.mean_energy_db == -100.0


def test_windows_shorter_than_a_frame_or_empty() -> None:
    audio = voice(seconds=0.5)
    features, times = acoustic_features(audio, SR, 0.1, 0.105)  # 5 ms: one padded frame
    assert features.shape == (1, D_AUDIO) and np.isfinite(features).all()
    np.testing.assert_allclose(times, [0.1])
    for start_s, end_s in [(0.2, 0.2), (0.3, 0.1), (2.0, 3.0)]:  # empty, reversed, past the end
        features, times = acoustic_features(audio, SR, start_s, end_s)
        assert features.shape == (0, D_AUDIO) and times.shape == (0,)
    assert acoustic_summary(audio, SR, 2.0, 3.0).mean_energy_db == -100.0


def test_energy_follows_amplitude() -> None:
    quiet = acoustic_summary(voice(amplitude=0.03), SR).mean_energy_db
    loud = acoustic_summary(voice(amplitude=0.3), SR).mean_energy_db
    assert loud - quiet == pytest.approx(20.0, abs=0.5)
    assert -20 < loud < 0


def test_raw_measures_keep_units() -> None:
    measures = measure_frames(voice(150.0), SR, hop_s=0.01)
    assert measures.n_frames == 101
    assert np.nanmedian(measures.f0_hz) == pytest.approx(150.0, rel=0.01)
    assert 100 < np.median(measures.centroid_hz) < 1000
    features, _ = acoustic_features(voice(150.0), SR, use_normalization=False)
    log_pitch = features[:, AUDIO_FEATURE_NAMES.index("log_pitch")]
    assert np.median(log_pitch) == pytest.approx(np.log2(1.5), abs=0.01)


def test_rejects_multichannel_audio() -> None:
    with pytest.raises(ValueError, match="mono"):
        acoustic_features(np.zeros((2, SR), np.float32), SR)


def decode(path: Path) -> np.ndarray:
    """16 kHz mono float32 through the imageio-ffmpeg binary (no ffmpeg on PATH needed)."""
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path)]
    command += ["-ac", "1", "-ar", str(SR), "-f", "f32le", "-"]
    return np.frombuffer(subprocess.run(command, capture_output=True, check=True).stdout, "<f4")


@pytest.mark.slow
@pytest.mark.skipif(not CREMA_CLIPS.is_dir(), reason=f"{CREMA_CLIPS} is absent")
def test_crema_angry_is_louder_and_higher_than_sad() -> None:
    angry = acoustic_summary(decode(CREMA_CLIPS / "1002_DFA_ANG_XX.mp3"), SR)
    sad = acoustic_summary(decode(CREMA_CLIPS / "1002_DFA_SAD_XX.mp3"), SR)
    # Measured: ANG -25.6 dB, 250 Hz; SAD -48.2 dB, 174 Hz.
    assert angry.mean_energy_db > sad.mean_energy_db + 10
    assert angry.mean_pitch_hz is not None and sad.mean_pitch_hz is not None
    assert angry.mean_pitch_hz > sad.mean_pitch_hz + 30
    features, _ = acoustic_features(decode(CREMA_CLIPS / "1002_DFA_ANG_XX.mp3"), SR)
    assert np.isfinite(features).all()


def test_spectra_mel_bands_and_mfccs_are_librosas() -> None:
    librosa = pytest.importorskip("librosa")
    from mercli.features.acoustic import _mfcc, _power_spectrum, mel_filters

    rng = np.random.default_rng(7)
    t = np.arange(12345) / 16000
    y = 0.3 * np.sin(2 * np.pi * 180 * t) + 0.05 * rng.standard_normal(len(t))
    power = np.abs(librosa.stft(y, n_fft=512, hop_length=320, center=True)) ** 2
    np.testing.assert_allclose(_power_spectrum(y, 512, 320), power, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(
        mel_filters(16000, 512, 40, 8000.0),
        librosa.filters.mel(sr=16000, n_fft=512, n_mels=40, fmax=8000.0),
    )
    mel = librosa.feature.melspectrogram(S=power, sr=16000, n_mels=40, fmax=8000.0)
    want = librosa.feature.mfcc(S=librosa.power_to_db(mel, ref=1.0, amin=1e-10), n_mfcc=13).T
    np.testing.assert_allclose(_mfcc(power, 16000, 512), want, rtol=1e-9, atol=1e-9)


def test_the_dct_matrix_is_scipys_orthonormal_dct() -> None:
    scipy_fft = pytest.importorskip("scipy.fft")
    from mercli.features.acoustic import dct_matrix

    x = np.random.default_rng(3).normal(size=(40, 17))
    want = scipy_fft.dct(x, type=2, norm="ortho", axis=0)[:13]
    np.testing.assert_allclose(dct_matrix(13, 40) @ x, want, rtol=1e-12, atol=1e-12)
