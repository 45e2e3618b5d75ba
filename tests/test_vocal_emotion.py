"""The vocal-emotion descriptor: pooled statistics, the classifier and its packaged weights."""

from __future__ import annotations

import numpy as np
import pytest

from mercli.data.ravdess import EMOTIONS
from mercli.features.acoustic import AUDIO_FEATURE_NAMES, D_AUDIO
from mercli.features.vocal_emotion import (
    D_POOLED,
    MIN_FRAMES,
    VocalEmotionClassifier,
    load_classifier,
    pooled_features,
    vocal_emotion,
)


def _frames(seed: int = 0, n: int = 80) -> np.ndarray:
    rng = np.random.default_rng(seed)
    audio = rng.normal(size=(n, D_AUDIO))
    audio[:, AUDIO_FEATURE_NAMES.index("voicing")] = rng.uniform(0, 1, n)
    return audio.astype(np.float32)


def test_pooled_features_shape_and_moments() -> None:
    audio = _frames()
    pooled = pooled_features(audio)
    assert pooled.shape == (D_POOLED,) and np.isfinite(pooled).all()
    # skewness and kurtosis do not change under a positive affine map of a column
    shifted = audio.copy()
    shifted[:, 0] = 3.0 * shifted[:, 0] + 1.0
    again = pooled_features(shifted)
    np.testing.assert_allclose(again[[0, D_AUDIO]], pooled[[0, D_AUDIO]], rtol=1e-6)
    skewed = audio.copy()
    skewed[:, 0] = np.exp(skewed[:, 0])  # right-skewed
    assert pooled_features(skewed)[0] > 1.0
    flat = pooled_features(np.zeros((20, D_AUDIO), np.float32))  # silence: constant columns
    assert np.isfinite(flat).all() and flat[:D_AUDIO].tolist() == [0.0] * D_AUDIO
    with pytest.raises(ValueError, match="expected"):
        pooled_features(np.zeros((1, D_AUDIO)))
    with pytest.raises(ValueError, match="expected"):
        pooled_features(np.zeros((10, 5)))


def _classifier(n_classes: int = 3, seed: int = 0) -> VocalEmotionClassifier:
    rng = np.random.default_rng(seed)
    return VocalEmotionClassifier(
        tuple(f"c{i}" for i in range(n_classes)),
        rng.normal(size=D_POOLED),
        rng.uniform(0.5, 2.0, D_POOLED),
        rng.normal(size=(n_classes, D_POOLED)) * 0.1,
        rng.normal(size=n_classes),
    )


def test_classifier_probabilities_round_trip_and_short_windows() -> None:
    classifier = _classifier()
    x = np.stack([pooled_features(_frames(s)) for s in range(4)])
    p = classifier.probabilities(x)
    logits = ((x - classifier.mean) / classifier.scale) @ classifier.coef.T + classifier.intercept
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(p, expected, rtol=1e-10)
    again = VocalEmotionClassifier.from_dict(classifier.to_dict())
    np.testing.assert_array_equal(again.probabilities(x), p)
    label, prob = classifier.predict(_frames(1))  # type: ignore[misc]
    assert label == classifier.classes[int(np.argmax(p[1]))] and prob == pytest.approx(p[1].max())
    assert classifier.predict(_frames(n=MIN_FRAMES - 1)) is None
    broken = classifier.to_dict() | {"intercept": [0.0]}
    with pytest.raises(ValueError, match="do not fit"):
        VocalEmotionClassifier.from_dict(broken)


def test_packaged_weights_cover_the_ravdess_emotions() -> None:
    classifier = load_classifier()
    assert classifier is not None, "mercli/weights/vocal_emotion/classifier.json is missing"
    assert set(classifier.classes) == set(EMOTIONS.values())
    result = vocal_emotion(_frames())
    assert result is not None and result[0] in classifier.classes and 0 < result[1] <= 1


def test_whisper_states_get_their_own_classifier() -> None:
    from mercli.features.vocal_emotion import D_STATES, WEIGHTS_FILES

    states = np.random.default_rng(3).normal(size=(60, D_STATES)).astype(np.float32)
    pooled = pooled_features(states)
    assert pooled.shape == (2 * D_STATES,)
    wide = states.astype(np.float64)
    np.testing.assert_allclose(pooled[:D_STATES], wide.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(pooled[D_STATES:], wide.std(axis=0), rtol=1e-12)
    classifier = load_classifier(WEIGHTS_FILES[D_STATES])
    assert classifier is not None, "mercli/weights/vocal_emotion/classifier_whisper.json is missing"
    assert set(classifier.classes) == set(EMOTIONS.values()) and len(classifier.mean) == 768
    result = vocal_emotion(states)
    assert result is not None and result == classifier.predict(states)
    assert load_classifier() is not classifier  # the acoustic frames keep theirs
    assert vocal_emotion(np.zeros((60, 5), np.float32)) is None  # no classifier for the width
    assert vocal_emotion(states[: MIN_FRAMES - 1]) is None
