"""Whisper's log-mel spectrogram computed a chunk of frames at a time.

``whisper.transcribe`` computes the log-mel spectrogram of the whole file at once
(``whisper.audio.log_mel_spectrogram``): the complex STFT, its magnitudes and the mel bands all
exist together, about 0.5 MB per second of audio (300 MB for 10 minutes), only to keep the
80-band result (0.03 MB per second). :func:`log_mel_spectrogram` gives the same values from
windows of ``chunk_frames`` STFT frames, so the transient memory no longer grows with the length
of the file; :func:`use_chunked_log_mel` makes whisper's ``transcribe`` call it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

CHUNK_FRAMES = 3000  # 30 s of 10 ms frames: one Whisper window


def log_mel_spectrogram(
    audio: str | np.ndarray | torch.Tensor,
    n_mels: int = 80,
    padding: int = 0,
    device: str | torch.device | None = None,
    chunk_frames: int = CHUNK_FRAMES,
) -> torch.Tensor:
    """``whisper.audio.log_mel_spectrogram`` with the same arguments and values, chunked.

    Frame ``i`` of ``torch.stft(center=True)`` covers samples ``[i * hop - n_fft / 2,
    i * hop + n_fft / 2)`` of the reflect-padded signal, so slices of that signal give the same
    frames; the floor (8 log10 units under the maximum) is applied to the whole result, as
    whisper does.

    Returns:
        float32 ``(n_mels, n_frames)`` log-mel spectrogram, ``n_frames = n_samples // 160``.
    """
    import torch
    import torch.nn.functional as F
    from whisper.audio import HOP_LENGTH, N_FFT, load_audio, mel_filters

    if not torch.is_tensor(audio):
        if isinstance(audio, str):
            audio = load_audio(audio)
        audio = torch.from_numpy(np.asarray(audio))
    if device is not None:
        audio = audio.to(device)
    if padding > 0:
        audio = F.pad(audio, (0, padding))
    n_frames = audio.shape[-1] // HOP_LENGTH  # torch.stft's count, less the last frame
    half = N_FFT // 2
    signal = F.pad(audio[None, None], (half, half), mode="reflect")[0, 0]  # stft's center=True
    del audio
    window = torch.hann_window(N_FFT).to(signal.device)
    filters = mel_filters(signal.device, n_mels)
    log_spec = torch.empty(n_mels, n_frames, dtype=filters.dtype, device=signal.device)
    for start in range(0, n_frames, chunk_frames):
        stop = min(start + chunk_frames, n_frames)
        segment = signal[start * HOP_LENGTH : (stop - 1) * HOP_LENGTH + N_FFT]
        stft = torch.stft(
            segment, N_FFT, HOP_LENGTH, window=window, center=False, return_complex=True
        )
        mel = filters @ (stft.abs() ** 2)
        log_spec[:, start:stop] = torch.clamp(mel, min=1e-10).log10()
    floor = log_spec.max() - 8.0 if n_frames else 0.0
    return log_spec.clamp_(min=floor).add_(4.0).div_(4.0)  # in place: no full-size temporaries


def use_chunked_log_mel() -> None:
    """Make ``whisper.transcribe`` compute its spectrogram with :func:`log_mel_spectrogram`
    (idempotent)."""
    import importlib

    # the module, not the function that ``whisper/__init__`` binds to the same name
    module = importlib.import_module("whisper.transcribe")
    module.log_mel_spectrogram = log_mel_spectrogram  # type: ignore[attr-defined]


def chunked_ct2_features(extractor: Any, chunk_frames: int = CHUNK_FRAMES) -> Any:
    """faster-whisper's ``FeatureExtractor`` made to compute its log-mel ``chunk_frames`` STFT
    frames at a time, same values (its own whole-file version holds the windowed frames, the
    complex128 and complex64 spectra together: about 0.6 MB per second of audio, 385 MB for 10
    minutes, against 0.03 MB per second kept).

    Args:
        extractor: ``WhisperModel.feature_extractor`` (its settings and filters are kept).

    Returns:
        an extractor of the same class family, to assign back to ``feature_extractor``.
    """
    from faster_whisper.feature_extractor import FeatureExtractor

    class ChunkedFeatureExtractor(FeatureExtractor):  # type: ignore[misc]
        def __call__(
            self, waveform: np.ndarray, padding: int = 160, chunk_length: int | None = None
        ) -> np.ndarray:
            return _ct2_log_mel(self, waveform, padding, chunk_length, chunk_frames)

    chunked = ChunkedFeatureExtractor.__new__(ChunkedFeatureExtractor)
    chunked.__dict__.update(extractor.__dict__)
    return chunked


def _ct2_log_mel(
    extractor: Any,
    waveform: np.ndarray,
    padding: int,
    chunk_length: int | None,
    chunk_frames: int,
) -> np.ndarray:
    """``FeatureExtractor.__call__`` (faster-whisper 1.2) over slices of the padded signal:
    frame ``i`` of its ``center=True`` STFT covers padded samples ``[i * hop, i * hop + n_fft)``.

    Returns:
        float32 ``(n_mels, n_frames)``.
    """
    if chunk_length is not None:
        extractor.n_samples = chunk_length * extractor.sampling_rate
        extractor.nb_max_frames = extractor.n_samples // extractor.hop_length
    waveform = np.asarray(waveform, dtype=np.float32)
    if padding:
        waveform = np.pad(waveform, (0, padding))
    n_fft, hop = extractor.n_fft, extractor.hop_length
    signal = np.pad(waveform, (n_fft // 2, n_fft // 2), mode="reflect")
    del waveform
    window = np.hanning(n_fft + 1)[:-1].astype("float32")
    n_frames = 1 + (len(signal) - n_fft) // hop - 1  # faster-whisper drops the last frame
    mel_spec = np.empty((extractor.mel_filters.shape[0], max(n_frames, 0)), np.float32)
    for start in range(0, n_frames, chunk_frames):
        stop = min(start + chunk_frames, n_frames)
        segment = signal[start * hop : (stop - 1) * hop + n_fft]
        stft = extractor.stft(
            segment, n_fft, hop, window=window, center=False, return_complex=True
        ).astype("complex64")
        mel_spec[:, start:stop] = extractor.mel_filters @ (np.abs(stft) ** 2)
    log_spec = np.log10(np.clip(mel_spec, a_min=1e-10, a_max=None))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0
