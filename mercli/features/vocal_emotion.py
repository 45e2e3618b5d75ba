"""The vocal emotion of an utterance: a descriptor, beside the facial expression, not a model input.

A multinomial logistic regression on statistics pooled over the utterance's acoustic frames
(:mod:`mercli.features.acoustic`, already standardised per utterance, so they are free of
microphone gain and of the speaker's pitch level): per feature the skewness, excess kurtosis,
mean absolute frame-to-frame change, 10-90 % spread, and mean and standard deviation over the
voiced frames; plus the voicing level and the voiced share. Trained on RAVDESS speech
(Livingstone & Russo 2018; actors 1-16, selected on actors 17-20; 8 acted emotions) by
``benchmarks/vocal_emotion_train.py``, which prints its accuracy on the held-out actors. Its
weights (``mercli/weights/vocal_emotion/classifier.json``, a few thousand numbers) derive from
RAVDESS, CC BY-NC-SA 4.0: non-commercial research use.

For models that read Whisper's encoder states instead (:mod:`mercli.features.whisper_states`,
384 per 20 ms) the same kind of classifier reads the states' mean and standard deviation over the
utterance (``classifier_whisper.json``, trained the same way on those states): the classifier is
chosen by the width of the frames it is given.

Inference is numpy only (no scikit-learn): standardise, an affine map, a softmax.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mercli.features.acoustic import AUDIO_FEATURE_NAMES, D_AUDIO, VOICING_THRESHOLD
from mercli.features.whisper_states import D_STATES

_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "vocal_emotion"
WEIGHTS_FILE = _WEIGHTS / "classifier.json"  # on mer's acoustic features
WEIGHTS_FILES: dict[int, Path] = {  # per frame width (D_STATES: Whisper tiny.en's encoder states)
    D_AUDIO: WEIGHTS_FILE,
    D_STATES: _WEIGHTS / "classifier_whisper.json",
}
MIN_FRAMES = 10  # shorter windows (0.2 s at a 20 ms hop) get no vocal emotion
_VOICING = AUDIO_FEATURE_NAMES.index("voicing")
D_POOLED = 6 * D_AUDIO + 3
POOLED_WIDTHS: dict[int, int] = {D_AUDIO: D_POOLED, D_STATES: 2 * D_STATES}


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Skewness and excess kurtosis per column (biased moments), 0 for a constant column."""
    centred = x - x.mean(axis=0)
    variance = (centred**2).mean(axis=0)
    safe = np.where(variance > 1e-12, variance, 1.0)
    skewness = (centred**3).mean(axis=0) / safe**1.5
    kurtosis = (centred**4).mean(axis=0) / safe**2 - 3.0
    constant = variance <= 1e-12
    return np.where(constant, 0.0, skewness), np.where(constant, 0.0, kurtosis)


def pooled_features(audio: np.ndarray) -> np.ndarray:
    """Statistics of one utterance's frames.

    Args:
        audio: ``(T, 35)`` acoustic features or ``(T, 384)`` Whisper encoder states (T >= 2).

    Returns:
        float64 ``(POOLED_WIDTHS[width],)``. Acoustic features: skewness, kurtosis, mean
        |delta|, 10-90 % spread, voiced mean, voiced std (35 each), then voicing mean, voicing
        std and voiced share. Encoder states: their mean, then their standard deviation.
    """
    a = np.asarray(audio, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] not in POOLED_WIDTHS or len(a) < 2:
        raise ValueError(f"expected (T >= 2, {D_AUDIO} or {D_STATES}) frames, got {a.shape}")
    if a.shape[1] == D_STATES:
        return np.concatenate([a.mean(axis=0), a.std(axis=0)])
    skewness, kurtosis = _moments(a)
    change = np.abs(np.diff(a, axis=0)).mean(axis=0)
    low, high = np.percentile(a, [10, 90], axis=0)
    voiced = a[:, _VOICING] > VOICING_THRESHOLD
    if voiced.sum() > 3:
        voiced_mean, voiced_std = a[voiced].mean(axis=0), a[voiced].std(axis=0)
    else:
        voiced_mean = voiced_std = np.zeros(D_AUDIO)
    voicing = [a[:, _VOICING].mean(), a[:, _VOICING].std(), voiced.mean()]
    parts = [skewness, kurtosis, change, high - low, voiced_mean, voiced_std, voicing]
    return np.nan_to_num(np.concatenate([np.ravel(p) for p in parts]))


@dataclass(frozen=True)
class VocalEmotionClassifier:
    """Standardisation + multinomial logistic regression over :func:`pooled_features`.

    Attributes:
        classes: the emotion names, in the order of ``coef``'s rows.
        mean, scale: ``(D_POOLED,)`` standardisation.
        coef: ``(n_classes, D_POOLED)``; intercept: ``(n_classes,)``.
    """

    classes: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray

    def probabilities(self, pooled: np.ndarray) -> np.ndarray:
        """``(N, D_POOLED)`` -> ``(N, n_classes)`` class probabilities."""
        logits = ((pooled - self.mean) / self.scale) @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, audio: np.ndarray) -> tuple[str, float] | None:
        """The most likely emotion of one utterance's frames (of the width this classifier
        reads) and its probability, or None when the window is shorter than
        :data:`MIN_FRAMES`."""
        if len(audio) < MIN_FRAMES:
            return None
        p = self.probabilities(pooled_features(audio)[None])[0]
        best = int(np.argmax(p))
        return self.classes[best], float(p[best])

    def to_dict(self) -> dict[str, object]:
        return {
            "classes": list(self.classes),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> VocalEmotionClassifier:
        classifier = cls(
            tuple(data["classes"]),
            np.asarray(data["mean"], dtype=np.float64),
            np.asarray(data["scale"], dtype=np.float64),
            np.asarray(data["coef"], dtype=np.float64),
            np.asarray(data["intercept"], dtype=np.float64),
        )
        n, d = len(classifier.classes), classifier.mean.size
        shapes = (classifier.mean.shape, classifier.scale.shape, classifier.coef.shape)
        if d not in POOLED_WIDTHS.values():
            widths = sorted(POOLED_WIDTHS.values())
            raise ValueError(f"vocal emotion weights for {d} pooled features, not one of {widths}")
        if shapes != ((d,), (d,), (n, d)) or classifier.intercept.shape != (n,):
            raise ValueError(f"vocal emotion weights do not fit {n} classes x {d} features")
        return classifier


@functools.cache
def load_classifier(path: Path = WEIGHTS_FILE) -> VocalEmotionClassifier | None:
    """The packaged classifier, or None when its weights file is absent."""
    if not path.is_file():
        return None
    return VocalEmotionClassifier.from_dict(json.loads(path.read_text(encoding="utf-8")))


def vocal_emotion(audio: np.ndarray) -> tuple[str, float] | None:
    """(emotion, probability) of one utterance's frames by the packaged classifier for their
    width (:data:`WEIGHTS_FILES`), or None (window too short, a width no classifier reads, or
    no packaged weights)."""
    path = WEIGHTS_FILES.get(audio.shape[-1]) if audio.ndim == 2 else None
    classifier = None if path is None else load_classifier(path)
    return None if classifier is None else classifier.predict(audio)
