"""The descriptors dataclass shared by features, predictions and file results."""

from __future__ import annotations

import numpy as np
import pytest

from mercli.descriptors import FILE_FIELDS, FRONT_END_FIELDS, Descriptors


def test_with_faces_takes_coverage_and_dominant_expression_of_face_frames() -> None:
    probs = np.zeros((4, 7), np.float32)
    probs[:, 3] = [0.9, 0.8, 0.0, 0.1]  # happy, in the frames with a face
    probs[2, 4] = 1.0  # sad, in a frame without one: ignored
    mask = np.array([True, True, False, False])
    d = Descriptors(pitch_hz=120.0, speaker="S2").with_faces(mask, probs)
    assert d.face_coverage == 0.5 and d.expression == "happy"
    assert d.expression_prob == pytest.approx(0.85)
    assert (d.pitch_hz, d.speaker) == (120.0, "S2")  # the rest is kept


def test_no_frame_is_not_no_face() -> None:
    d = Descriptors().with_faces(np.zeros(0, bool), np.zeros((0, 7)))
    assert d.face_coverage is None and d.expression is None
    none_found = Descriptors().with_faces(np.zeros(3, bool), np.ones((3, 7)))
    assert none_found.face_coverage == 0.0 and none_found.expression is None


def test_dict_round_trip_ignores_other_keys_and_fills_missing_ones() -> None:
    d = Descriptors(0.8, "sad", 0.6, 210.0, -20.0, "calm", 0.7, "S1")
    assert Descriptors.from_dict(d.to_dict()) == d
    stored = {"start_s": 1.0, "text": "hi", **d.to_dict(FRONT_END_FIELDS)}
    assert Descriptors.from_dict(stored) == Descriptors(0.8, "sad", 0.6, 210.0, -20.0)
    assert list(d.to_dict(FILE_FIELDS)) == ["face_coverage", "expression", "expression_prob"]
