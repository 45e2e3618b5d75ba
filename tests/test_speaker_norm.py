"""Voice features relative to the speaker."""

from __future__ import annotations

import numpy as np
import pytest

from mercli.features.speaker_norm import normalise, speaker_stats


def test_each_speaker_comes_out_centred_and_scaled_over_all_their_frames() -> None:
    rng = np.random.default_rng(0)
    arrays = [rng.normal(3.0, 2.0, (n, 4)).astype(np.float32) for n in (30, 50, 0, 40)]
    groups = ["a", "a", "a", "b"]
    out = normalise(arrays, groups)
    assert [o.shape for o in out] == [a.shape for a in arrays] and out[2].size == 0
    a_frames = np.concatenate(out[:2])
    np.testing.assert_allclose(a_frames.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(a_frames.std(axis=0), 1.0, atol=1e-3)
    np.testing.assert_allclose(out[3].mean(axis=0), 0.0, atol=1e-5)
    # one utterance of a speaker is read against all of that speaker's frames, not alone
    assert np.abs(out[0].mean(axis=0)).max() > 0.01


def test_a_speakers_own_offset_and_gain_do_not_change_what_comes_out() -> None:
    rng = np.random.default_rng(1)
    arrays = [rng.normal(0.0, 1.0, (n, 3)).astype(np.float32) for n in (20, 35)]
    voiced = [a * 2.5 + np.array([1.0, -4.0, 0.5], np.float32) for a in arrays]
    np.testing.assert_allclose(
        np.concatenate(normalise(arrays, [0, 0])),
        np.concatenate(normalise(voiced, [0, 0])),
        atol=1e-2,  # EPS on each spread: 1e-3 against spreads of 1 and 2.5
    )
    # ... while two speakers normalised as one keep their difference
    together = normalise([arrays[0], voiced[1]], [0, 0])
    apart = normalise([arrays[0], voiced[1]], [0, 1])
    assert not np.allclose(together[1], apart[1], atol=0.1)


def test_a_feature_that_never_moves_is_centred_not_blown_up() -> None:
    flat = np.ones((10, 2), np.float32)
    (out,) = normalise([flat], ["a"])
    np.testing.assert_array_equal(out, 0.0)
    with pytest.raises(ValueError, match="no frames"):
        speaker_stats([np.zeros((0, 2), np.float32)])
    with pytest.raises(ValueError, match="groups"):
        normalise([flat], ["a", "b"])
