"""Whisper's log-mel spectrogram computed a chunk of frames at a time.

``whisper.transcribe`` computes the log-mel spectrogram of the whole file at once
(``whisper.audio.log_mel_spectrogram``): the complex STFT, its magnitudes and the mel bands all
exist together, about 0.5 MB per second of audio (300 MB for 10 minutes), only to keep the
80-band result (0.03 MB per second). :func:`log_mel_spectrogram` gives the same values from
windows of ``chunk_frames`` STFT frames, so the transient memory no longer grows with the length
of the file; :func:`use_chunked_log_mel` makes whisper's ``transcribe`` call it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
