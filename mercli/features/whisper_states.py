"""Whisper's encoder states as the audio branch's input (``ExtractConfig.audio_extractor``).

mer's own acoustic features (:mod:`mercli.features.acoustic`: MFCCs, pitch, energy, spectral
shape, standardised over the utterance) read the voice through a few hand-made measures. The
encoder of Whisper tiny.en, which ``analyze`` already loads for the transcript, was trained on
680,000 hours of speech and its states keep how a thing was said as well as what; on RAVDESS
they separate the emotions of unseen actors better than the acoustic features do (README, "The
voice in the model").

Each utterance (or each ``WINDOW_S`` piece of a longer one) is encoded on its own: its log-mel
spectrogram padded with silence to a window a little longer than itself (:func:`window_s`;
CTranslate2's encoder accepts windows shorter than Whisper's 30 s; one utterance's states then
do not depend on the audio around it, so prepared clips and ``analyze``'s windows are encoded
alike), and the states over the audio kept: one row of ``d`` (384 for tiny.en) per ``HOP_S``
(two 10 ms log-mel frames).

The encoder's cost grows with its window, not with the audio in it: a 15 s window for every
utterance took 0.26 s of CPU per utterance of the shared speech (3.7 s on average), the fitted
window 0.11 s. The padding still changes the states a little (attention reads the silence), so
the fitted window is ``STATES_VERSION`` 2 of the states; models trained on version 1 (every
piece in a 15 s window) read version 2 within the differences README.md measures ("The voice in
the model").
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mercli.features.media import SAMPLE_RATE_HZ
from mercli.features.profile import AUDIO_EXTRACTORS, WHISPER_AUDIO_EXTRACTOR

WHISPER = "tiny.en"  # the encoder's weights: always these, whatever Whisper transcribes
D_STATES = AUDIO_EXTRACTORS[WHISPER_AUDIO_EXTRACTOR]  # tiny.en's encoder width, 384
HOP_S = 0.02  # an encoder step
WINDOW_S = 15.0  # audio encoded at once at most (analyze's utterances are at most 15 s)
MIN_WINDOW_S = 6.0  # shorter windows moved scores more (0.13 mean on RAVDESS at 4 s, 0.09 at 6 s)
PADDING_S = 2.0  # silence after the audio rounded up to whole seconds (below WINDOW_S)
STATES_VERSION = 2  # 1: every piece in a WINDOW_S window; 2: fitted windows (window_s)


def window_s(duration_s: float) -> float:
    """The encoder window of a piece of ``duration_s`` seconds (at most ``WINDOW_S``): its
    length rounded up to whole seconds plus ``PADDING_S``, at least ``MIN_WINDOW_S`` and at
    most ``WINDOW_S`` (a piece of over 13 s gets less padding)."""
    return min(WINDOW_S, max(MIN_WINDOW_S, math.ceil(duration_s - 1e-9) + PADDING_S))


def encoder_states(
    audio: np.ndarray, model: Any, start_s: float = 0.0, end_s: float | None = None
) -> np.ndarray:
    """Whisper's encoder states over ``audio[start_s:end_s]``.

    Args:
        audio: float32 mono samples at 16 kHz.
        model: a faster-whisper ``WhisperModel`` (its ``feature_extractor`` and ``encode``).
        start_s, end_s: the window, seconds (``end_s=None``: to the end).

    Returns:
        float32 ``(n_steps, d)``, ``n_steps = ceil(window samples / (HOP_S * 16 kHz))``; each
        ``WINDOW_S`` piece encoded alone, in a :func:`window_s` window. ``(0, D_STATES)`` for
        an empty window.
    """
    begin = max(0, round(start_s * SAMPLE_RATE_HZ))
    end = len(audio) if end_s is None else min(len(audio), round(end_s * SAMPLE_RATE_HZ))
    window = np.asarray(audio[begin:end], np.float32)
    piece = round(WINDOW_S * SAMPLE_RATE_HZ)
    parts = [_encoded(window[i : i + piece], model) for i in range(0, len(window), piece)]
    return np.concatenate(parts) if parts else np.zeros((0, D_STATES), np.float32)


def _encoded(samples: np.ndarray, model: Any) -> np.ndarray:
    n_steps = max(1, math.ceil(len(samples) / (HOP_S * SAMPLE_RATE_HZ)))
    mel = np.asarray(model.feature_extractor(samples), np.float32)  # (n_mels, n_frames)
    n_frames = round(window_s(len(samples) / SAMPLE_RATE_HZ) / HOP_S) * 2
    padded = np.zeros((1, mel.shape[0], n_frames), np.float32)
    kept = min(mel.shape[1], n_frames)
    padded[0, :, :kept] = mel[:, :kept]
    encoded = model.encode(padded)  # StorageView (1, n_frames / 2, d)
    if getattr(encoded, "device", "cpu") != "cpu":
        import ctranslate2

        encoded = encoded.to_device(ctranslate2.Device.cpu)
    states = np.asarray(encoded, np.float32)
    return np.ascontiguousarray(states[0, :n_steps])


def load_states_model(device: str = "cpu") -> Any:
    """faster-whisper's tiny.en (float32 on the CPU) for :func:`encoder_states`."""
    from mercli.features.asr_ct2 import load_ct2_whisper

    return load_ct2_whisper(WHISPER, device, "ct2")
