"""Face <-> speaker matching on synthetic tracks and activity (fast)."""

from __future__ import annotations

import numpy as np

from mercli.features.faces import D_VISION, FaceObservation
from mercli.features.speaker_faces import (
    FaceTrack,
    WindowFaces,
    link_tracks,
    match_speakers,
    mouth_activity,
)


def face_at(x: float, y: float = 50.0, side: float = 40.0) -> FaceObservation:
    box = np.array([x - side / 2, y - side / 2, x + side / 2, y + side / 2])
    landmarks = np.array(
        [[x - 8, y - 8], [x + 8, y - 8], [x, y], [x - 8, y + 10], [x + 8, y + 10]], float
    )
    return FaceObservation(box, 0.99, landmarks)


def track(centre_x: float, activity: float = 0.0) -> FaceTrack:
    return FaceTrack([None], np.zeros((1, D_VISION), np.float32), activity,
                     np.array([centre_x, 0.5]), 0.2)  # fmt: skip


def test_a_moving_mouth_is_more_active_than_a_still_one() -> None:
    rng = np.random.default_rng(0)
    still = rng.integers(0, 255, (100, 200, 3), dtype=np.uint8)
    frames = []
    for _ in range(6):
        frame = still.copy()
        frame[55:75, 85:115] = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)  # the mouth
        frames.append(frame)
    face = face_at(100)
    assert mouth_activity(frames, [face] * 6) > 0.5
    assert mouth_activity([still] * 6, [face] * 6) == 0.0
    assert mouth_activity(frames, [face, None, face, None, face, None]) == 0.0  # never twice


def test_tracks_of_one_face_in_different_windows_share_an_id() -> None:
    windows = [
        WindowFaces(np.zeros(1), [track(0.25), track(0.75)]),
        WindowFaces(np.zeros(1), [track(0.76)]),
        WindowFaces(np.zeros(1), [track(0.74), track(0.26), track(0.5, 0.0)]),
    ]
    ids = link_tracks(windows)
    left, right = ids[0]
    assert left != right and ids[1] == [right]
    assert ids[2][:2] == [right, left] and ids[2][2] not in (left, right)


def test_speakers_get_the_face_whose_mouth_moves_during_their_speech() -> None:
    nan = np.nan
    activity = np.array(  # faces 0, 1, 2 (2 never moves: a listener in the background)
        [[0.9, 0.1, 0.0], [0.1, 0.8, 0.0], [0.8, 0.2, 0.0], [0.2, 0.7, nan], [nan, 0.9, 0.0]]
    )
    speakers = ["S1", "S2", "S1", "S2", "S2"]
    assert match_speakers(activity, speakers) == {"S1": 0, "S2": 1}
    # a third voice whose face is not on screen gets none rather than someone else's
    off_screen = np.vstack([activity, [[0.1, 0.1, 0.0]]])
    assert match_speakers(off_screen, [*speakers, "S3"]) == {"S1": 0, "S2": 1}
    assert match_speakers(np.zeros((2, 0)), ["S1", "S2"]) == {}
