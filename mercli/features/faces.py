"""Speaker face detection, tracking and per-frame visual features.

The pipeline has three separately callable steps, like facenet-pytorch's ``detect`` / ``select`` /
``extract``:

1. :func:`detect_candidates`: MTCNN over batches of frames -> every plausible face per frame
   (probability and relative-size thresholds drop most hands, cartoons and background crowds).
2. :func:`select_speaker` (a :class:`FaceTracker`): link faces over time by IoU / centre distance
   and keep, per frame, the face of the strongest track (most frames, then largest and most
   confident). :func:`detect_faces` is steps 1 + 2.
3. :func:`extract_features`: a roll-aligned 64x64 grey crop through the expression net
   (128-d penultimate features + 7 probabilities) and landmark geometry.

:func:`visual_features` runs all three over one utterance window. Frames without a face are masked
(``VisualFeatures.mask``), not filled with numbers that look like data.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from mercli.features.expression import D_FEATURES, EMOTIONS, INPUT_SIZE

if TYPE_CHECKING:
    from mercli.features.expression import ExpressionNet
    from mercli.features.mtcnn_nets import Mtcnn

GEOMETRY_NAMES: tuple[str, ...] = (
    # The 5 MTCNN landmarks relative to the box centre, in units of the box side (10 values).
    *(f"{p}_{a}" for p in ("eye_l", "eye_r", "nose", "mouth_l", "mouth_r") for a in ("x", "y")),
    "eye_distance",  # inter-ocular distance / box side
    "mouth_width",  # mouth-corner distance / box side
    "mouth_eye_ratio",  # mouth width / eye distance (smiles widen the mouth)
    "eye_mouth_height",  # eye-line to mouth-line distance / eye distance (jaw drop, surprise)
    "nose_offset_x",  # nose vs eye midpoint, along the eye line / eye distance (yaw proxy)
    "nose_height",  # nose below the eye line / eye-to-mouth distance (pitch proxy)
    "head_roll",  # angle of the eye line, radians (positive: clockwise in the image)
    "mouth_tilt",  # angle of the mouth line minus the eye line, radians
    "box_aspect",  # box height / width
)
D_GEOMETRY = len(GEOMETRY_NAMES)
D_VISION = D_FEATURES + len(EMOTIONS) + D_GEOMETRY  # 128 + 7 + 19 = 154


class FrameLike(Protocol):
    """A decoded video frame, e.g. ``mercli.features.media.Frame``."""

    @property
    def time_s(self) -> float:  # presentation time, seconds from the start of the media
        ...

    @property
    def rgb(self) -> np.ndarray:  # uint8 (H, W, 3)
        ...


@dataclass(frozen=True)
class FaceConfig:
    """Face detection and speaker selection settings."""

    min_prob: float = 0.95  # MTCNN's hands / cartoon false positives score about 0.96 at most
    min_face_frac: float = 0.06  # min box side / frame short side: skips background crowds
    # MTCNN sees frames shrunk to this short side: faces smaller than min_face_frac are dropped
    # anyway and those left stay >= 24 px, above MTCNN's 20 px minimum; a smaller image pyramid
    # is what makes detection fast (about 3x on 700x700 talking heads).
    detect_short_side: int = 400
    batch_size: int = 16  # frames per MTCNN call; batching is ~7x faster on a GPU
    # Tracking between detections: every detect_every-th frame is searched whole; the frames
    # between are searched only in a square roi_scale face sides wide around each face of that
    # keyframe, shrunk to fit roi_size pixels (about 10x fewer pixels than a whole frame). A frame
    # where a keyframe face is not found again near where it was (it moved fast, or left), or
    # whose keyframe had none, is searched whole. 1 searches every frame whole.
    detect_every: int = 10
    roi_scale: float = 2.0
    roi_size: int = 128
    # Between keyframes a face is not looked for below this share of its keyframe side: the
    # image pyramid's finest levels (most of MTCNN's work in a region) are skipped. A face that
    # shrank more than that is lost, and its frame searched whole.
    track_min_face: float = 0.5
    min_iou: float = 0.3  # a face continues a track when it overlaps its last box this much ...
    max_centre_shift: float = 0.5  # ... or its centre moved less than this many box sides
    max_gap: int = 10  # frames a track may miss (blink, occlusion) and still be continued
    min_track_frac: float = 0.2  # tracks shorter than this share of the longest one are dropped
    crop_margin: float = 0.2  # extra context around the MTCNN box (FER2013 crops are loose)

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_prob <= 1.0:
            raise ValueError("min_prob must be in [0, 1]")
        if self.detect_short_side < 32 or self.batch_size < 1:
            raise ValueError("detect_short_side must be >= 32 and batch_size >= 1")
        if self.detect_every < 1 or self.roi_scale < 1.0 or self.roi_size < 48:
            raise ValueError("detect_every must be >= 1, roi_scale >= 1 and roi_size >= 48")
        if not 0.0 <= self.track_min_face <= 1.0:
            raise ValueError("track_min_face must be in [0, 1]")


@dataclass(frozen=True)
class FaceObservation:
    """One face in one frame; coordinates are pixels of the original frame."""

    box: np.ndarray  # float (4,): x1, y1, x2, y2
    prob: float  # MTCNN face probability
    landmarks: np.ndarray  # float (5, 2) x, y: eye l, eye r, nose, mouth l, mouth r (image sides)

    @property
    def side(self) -> float:
        """Geometric mean of box width and height, pixels."""
        w, h = self.box[2] - self.box[0], self.box[3] - self.box[1]
        return float(math.sqrt(max(w, 0.0) * max(h, 0.0)))

    @property
    def centre(self) -> np.ndarray:
        return (self.box[:2] + self.box[2:]) / 2


@dataclass
class VisualFeatures:
    """Per-frame visual features of one window.

    Attributes:
        features: float32 ``(n_frames, D_VISION)`` = [expression features (128), expression
            probabilities (7, order of ``EMOTIONS``), landmark geometry (``GEOMETRY_NAMES``)];
            rows where ``mask`` is False are zeros and carry no information.
        mask: bool ``(n_frames,)``, True where the speaker's face was found.
        times_s: float64 ``(n_frames,)`` frame times, seconds.
        observations: the selected face per frame, or None.
    """

    features: np.ndarray
    mask: np.ndarray
    times_s: np.ndarray
    observations: list[FaceObservation | None] = field(default_factory=list)

    @property
    def face_coverage(self) -> float:
        """Share of frames with a face, in [0, 1] (0 for an empty window)."""
        return float(self.mask.mean()) if len(self.mask) else 0.0

    @property
    def expression_probs(self) -> np.ndarray:
        """float32 ``(n_frames, 7)`` expression probabilities (zeros where masked)."""
        return self.features[:, D_FEATURES : D_FEATURES + len(EMOTIONS)]


# ---------------------------------------------------------------------------------------------
# 1. detection


@functools.lru_cache(maxsize=4)
def load_detector(device: str = "cpu") -> Mtcnn:
    """MTCNN's P/R/O-nets with facenet-pytorch's packaged weights (no download), cached.

    Its ``detect`` runs :func:`mercli.features.mtcnn.detect_batch` (facenet's algorithm and
    results, crops of all candidate boxes made without one threaded call per box); the nets
    load without importing facenet-pytorch's or torchvision's package
    (:mod:`mercli.features.mtcnn_nets`).
    """
    import torch

    from mercli.features.mtcnn_nets import load_mtcnn

    detector = load_mtcnn(torch.device(device))
    if detector.device.type == "cpu":  # weights in the layout detect_batch feeds (net_layout)
        detector = detector.to(memory_format=torch.channels_last)
    return detector


def _shrink(rgb: np.ndarray, short_side: int) -> tuple[np.ndarray, float]:
    """Resize so the short side is at most ``short_side``; returns (image, scale applied)."""
    import cv2

    h, w = rgb.shape[:2]
    scale = min(1.0, short_side / min(h, w))
    if scale == 1.0:
        return rgb, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), scale


def _same_shape_runs(images: Sequence[np.ndarray], batch_size: int) -> list[list[int]]:
    """Indices of consecutive same-shape images in groups of at most ``batch_size``.

    MTCNN batches only equal-sized images; real videos keep one size, but callers may mix.
    """
    runs: list[list[int]] = []
    for i, image in enumerate(images):
        if runs and len(runs[-1]) < batch_size and images[runs[-1][0]].shape == image.shape:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _cast_detections(
    boxes: object, probs: object, points: object, scale: float
) -> list[FaceObservation]:
    """One image's MTCNN output (object-dtype arrays or None) -> observations in original pixels."""
    if boxes is None:
        return []
    box = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) / scale
    prob = np.asarray(probs, dtype=np.float64).reshape(-1)
    landmarks = np.asarray(points, dtype=np.float64).reshape(-1, 5, 2) / scale
    return [FaceObservation(b, float(p), lm) for b, p, lm in zip(box, prob, landmarks, strict=True)]


def _plausible(face: FaceObservation, frame_shape: tuple[int, ...], config: FaceConfig) -> bool:
    short_side = min(frame_shape[:2])
    return face.prob >= config.min_prob and face.side >= config.min_face_frac * short_side


def _detect_whole(
    images: Sequence[np.ndarray],
    detector: Mtcnn,
    batch_size: int,
    min_face_px: Sequence[float] | None = None,
) -> list[list[FaceObservation]]:
    """All faces MTCNN finds in each image (pixels of that image), in same-shape batches.

    ``min_face_px``: per image, the smallest face worth looking for (pixels); a batch looks
    for the smallest of its images' (None: down to MTCNN's own minimum).
    """
    import torch

    found: list[list[FaceObservation]] = [[] for _ in images]
    for run in _same_shape_runs(images, batch_size):
        # MTCNN's image pyramid is empty (and its code fails) below min_face_size pixels.
        if min(images[run[0]].shape[:2]) < detector.min_face_size:
            continue
        batch = np.stack([images[i] for i in run])
        with torch.inference_mode():
            if min_face_px is None:
                boxes, probs, points = detector.detect(batch, True)
            else:
                smallest = min(min_face_px[i] for i in run)
                boxes, probs, points = detector.detect(batch, True, smallest)
        for j, i in enumerate(run):
            found[i] = _cast_detections(boxes[j], probs[j], points[j], 1.0)
    return found


def _region(
    image: np.ndarray, face: FaceObservation, config: FaceConfig
) -> tuple[np.ndarray, np.ndarray, float]:
    """The square ``roi_scale`` face sides wide around ``face``, on a ``roi_size`` canvas.

    A region wider than ``roi_size`` is shrunk to fit; a smaller one keeps its scale (the rest
    of the canvas is black), so a small face is searched at the scale a whole-frame search sees
    it at and is found (or missed) alike. Parts past the frame's edges are black.

    Returns:
        (canvas uint8 ``(roi_size, roi_size, 3)``, the region's top-left corner in ``image``
        pixels ``(2,)``, canvas pixels per image pixel).
    """
    import cv2

    side = max(round(config.roi_scale * face.side), 2)
    x0, y0 = (np.round(face.centre) - side // 2).astype(int)
    region: np.ndarray = np.zeros((side, side, 3), np.uint8)
    h, w = image.shape[:2]
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x0 + side), min(h, y0 + side)
    if sx1 > sx0 and sy1 > sy0:
        region[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    size = config.roi_size
    scale = min(1.0, size / side)
    if scale < 1.0:
        region = cv2.resize(region, (size, size), interpolation=cv2.INTER_AREA)
        scale = size / side
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[: region.shape[0], : region.shape[1]] = region
    return canvas, np.array([x0, y0], np.float64), scale


def _moved(face: FaceObservation, origin: np.ndarray, scale: float) -> FaceObservation:
    """``face`` found in a region, in the pixels of the image the region was cut from."""
    box = face.box / scale + np.tile(origin, 2)
    return FaceObservation(box, face.prob, face.landmarks / scale + origin)


def _distinct(faces: Sequence[FaceObservation], max_iou: float = 0.5) -> list[FaceObservation]:
    """The most probable of faces that overlap (two regions can hold the same face)."""
    kept: list[FaceObservation] = []
    for face in sorted(faces, key=lambda f: f.prob, reverse=True):
        if all(box_iou(face.box, k.box) < max_iou for k in kept):
            kept.append(face)
    return kept


def _track_between(
    small: Sequence[np.ndarray],
    key_faces: dict[int, list[FaceObservation]],
    detector: Mtcnn,
    config: FaceConfig,
) -> dict[int, list[FaceObservation]]:
    """Faces of non-key frames searched around the faces of their keyframe (small pixels).

    Only frames where every keyframe face is found again near where it was (centre within
    ``max_centre_shift`` of its side, the tracker's own continuity rule) are returned; in the
    others a face moved fast or left, and the caller searches them whole.
    """
    jobs: list[tuple[int, FaceObservation, np.ndarray, float]] = []
    regions: list[np.ndarray] = []
    min_faces: list[float] = []
    for i in range(len(small)):
        key = i - i % config.detect_every
        if key == i:
            continue
        for face in key_faces.get(key, []):
            region, origin, scale = _region(small[i], face, config)
            regions.append(region)
            jobs.append((i, face, origin, scale))
            min_faces.append(config.track_min_face * face.side * scale)
    found: dict[int, list[FaceObservation]] = {}
    lost: set[int] = set()
    detected = _detect_whole(regions, detector, config.batch_size, min_faces)
    for (i, key_face, origin, scale), faces in zip(jobs, detected, strict=True):
        moved = [_moved(f, origin, scale) for f in faces]
        shifts = [
            np.linalg.norm(f.centre - key_face.centre) / max(key_face.side, 1.0) for f in moved
        ]
        if not any(shift <= config.max_centre_shift for shift in shifts):
            lost.add(i)
        found.setdefault(i, []).extend(moved)
    return {i: _distinct(faces) for i, faces in found.items() if i not in lost}


def detect_candidates(
    images: Sequence[np.ndarray],
    detector: Mtcnn | None = None,
    config: FaceConfig = FaceConfig(),
) -> list[list[FaceObservation]]:
    """Every plausible face in each image, detected in batches, tracked between keyframes.

    Every ``detect_every``-th image is searched whole; the others around the faces of their
    keyframe, and whole when that finds nothing (see :class:`FaceConfig`).

    Args:
        images: uint8 RGB frames ``(H, W, 3)``, in time order; any size (large ones are shrunk
            first; boxes and landmarks are mapped back to the original pixels).
        detector: an MTCNN from :func:`load_detector` (default: CPU).
        config: thresholds, batching and tracking.

    Returns:
        Per image, the faces with ``prob >= min_prob`` and a side of at least ``min_face_frac``
        of the frame's short side, in original-frame pixels (possibly an empty list).
    """
    detector = detector if detector is not None else load_detector()
    shrunk = [_shrink(_checked_rgb(im), config.detect_short_side) for im in images]
    small = [im for im, _ in shrunk]

    def plausible(i: int, faces: Sequence[FaceObservation]) -> list[FaceObservation]:
        scale = shrunk[i][1]
        originals = [_moved(f, np.zeros(2), scale) for f in faces]
        return [f for f in originals if _plausible(f, images[i].shape, config)]

    def in_small(i: int, faces: Sequence[FaceObservation]) -> list[FaceObservation]:
        scale = shrunk[i][1]
        return [FaceObservation(f.box * scale, f.prob, f.landmarks * scale) for f in faces]

    found: list[list[FaceObservation]] = [[] for _ in images]
    keys = list(range(0, len(images), config.detect_every))
    whole = _detect_whole([small[i] for i in keys], detector, config.batch_size)
    for i, faces in zip(keys, whole, strict=True):
        found[i] = plausible(i, faces)
    key_faces = {i: in_small(i, found[i]) for i in keys if found[i]}
    tracked = _track_between(small, key_faces, detector, config)
    for i, faces in tracked.items():
        found[i] = plausible(i, faces)
    rest = [i for i in range(len(images)) if i not in keys and not (i in tracked and found[i])]
    whole = _detect_whole([small[i] for i in rest], detector, config.batch_size)
    for i, faces in zip(rest, whole, strict=True):
        found[i] = plausible(i, faces)
    return found


def _checked_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB frames (H, W, 3), got {image.dtype} {image.shape}")
    return image


# ---------------------------------------------------------------------------------------------
# 2. speaker selection


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ``(4,)`` x1, y1, x2, y2 boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class _Track:
    faces: dict[int, FaceObservation]  # frame index -> face
    last: FaceObservation
    last_index: int

    def score(self) -> float:
        """Most frames first; size and confidence break near ties (sqrt: a face twice as big
        outweighs a track only ~1.4x as long)."""
        sides = [f.side for f in self.faces.values()]
        probs = [f.prob for f in self.faces.values()]
        return len(self.faces) * float(np.mean(probs)) * math.sqrt(float(np.mean(sides)))


class FaceTracker:
    """Links per-frame faces into tracks and picks the speaker's face in every frame.

    Feed frames in order with :meth:`update`, then call :meth:`select`. A face continues the
    track whose last box it overlaps most (IoU >= ``min_iou``, or centre within
    ``max_centre_shift`` box sides) if that track was seen in the last ``max_gap`` frames.
    State grows with the window, so use one tracker per utterance window.
    """

    def __init__(self, config: FaceConfig = FaceConfig()) -> None:
        self.config = config
        self.tracks: list[_Track] = []
        self.n_frames = 0

    def _match(self, face: FaceObservation, frame_index: int, taken: set[int]) -> int | None:
        best, best_score = None, 0.0
        for k, track in enumerate(self.tracks):
            if k in taken or frame_index - track.last_index > self.config.max_gap:
                continue
            iou = box_iou(face.box, track.last.box)
            distance = float(np.linalg.norm(face.centre - track.last.centre))
            shift = distance / max(track.last.side, 1.0)
            if iou >= self.config.min_iou or shift <= self.config.max_centre_shift:
                score = iou + 1.0 / (1.0 + shift)
                if score > best_score:
                    best, best_score = k, score
        return best

    def update(self, faces: Sequence[FaceObservation]) -> None:
        """Add the next frame's candidate faces (possibly none)."""
        index = self.n_frames
        taken: set[int] = set()
        # Strong faces claim tracks first, so a weak detection cannot steal the speaker's track.
        for face in sorted(faces, key=lambda f: f.prob * f.side, reverse=True):
            k = self._match(face, index, taken)
            if k is None:
                self.tracks.append(_Track({index: face}, face, index))
                k = len(self.tracks) - 1
            else:
                track = self.tracks[k]
                track.faces[index], track.last, track.last_index = face, face, index
            taken.add(k)
        self.n_frames += 1

    def select(self) -> list[FaceObservation | None]:
        """Per frame, the face of the best-scoring track present in that frame, or None.

        Tracks much shorter than the longest one (``min_track_frac``) are dropped: a hand or
        a passer-by seen for a few frames does not stand in for the speaker.
        """
        if not self.tracks:
            return [None] * self.n_frames
        longest = max(len(t.faces) for t in self.tracks)
        kept = [t for t in self.tracks if len(t.faces) >= self.config.min_track_frac * longest]
        chosen: list[FaceObservation | None] = [None] * self.n_frames
        for track in sorted(kept, key=_Track.score):  # best last, so it overwrites
            for index, face in track.faces.items():
                chosen[index] = face
        return chosen


def select_speaker(
    candidates: Sequence[Sequence[FaceObservation]], config: FaceConfig = FaceConfig()
) -> list[FaceObservation | None]:
    """The speaker's face per frame from per-frame candidates (see :class:`FaceTracker`)."""
    tracker = FaceTracker(config)
    for faces in candidates:
        tracker.update(faces)
    return tracker.select()


def detect_faces(
    images: Sequence[np.ndarray],
    detector: Mtcnn | None = None,
    config: FaceConfig = FaceConfig(),
) -> list[FaceObservation | None]:
    """The speaker's face (or None) in each uint8 RGB image ``(H, W, 3)``."""
    return select_speaker(detect_candidates(images, detector, config), config)


# ---------------------------------------------------------------------------------------------
# 3. crops and features


def head_roll(landmarks: np.ndarray) -> float:
    """Angle of the eye line in radians (image y points down: positive = clockwise)."""
    dx, dy = landmarks[1] - landmarks[0]
    return float(math.atan2(dy, dx))


def crop_face(image: np.ndarray, face: FaceObservation, margin: float = 0.2) -> np.ndarray:
    """Roll-aligned square grey crop for the expression net.

    Args:
        image: uint8 RGB ``(H, W, 3)`` frame the face was found in.
        face: its observation.
        margin: extra context, as a fraction of the box side (split over both sides).

    Returns:
        uint8 ``(64, 64)`` grey face, eyes level, the box centre in the middle.
    """
    import cv2

    side = max(face.box[2] - face.box[0], face.box[3] - face.box[1]) * (1.0 + margin)
    centre = face.centre
    # Shrink the neighbourhood first: warpAffine interpolates bilinearly, which aliases when it
    # also has to downscale a 300-pixel face by 5x.
    # (Bounds come from the centre clamped into the frame, so the region is never empty.)
    bx, by = np.clip(centre, 0, (image.shape[1] - 1, image.shape[0] - 1))
    x0, y0 = int(max(0, bx - side)), int(max(0, by - side))
    region = image[y0 : int(by + side) + 1, x0 : int(bx + side) + 1]
    grey = cv2.cvtColor(np.ascontiguousarray(region), cv2.COLOR_RGB2GRAY)
    pre = min(1.0, 2 * INPUT_SIZE / max(side, 1.0))
    if pre < 1.0:
        grey = cv2.resize(grey, None, fx=pre, fy=pre, interpolation=cv2.INTER_AREA)
    cx, cy = (centre[0] - x0) * pre, (centre[1] - y0) * pre
    matrix = cv2.getRotationMatrix2D(
        (float(cx), float(cy)), math.degrees(head_roll(face.landmarks)), INPUT_SIZE / (side * pre)
    )
    matrix[:, 2] += (INPUT_SIZE / 2 - cx, INPUT_SIZE / 2 - cy)
    return cv2.warpAffine(
        grey,
        matrix,
        (INPUT_SIZE, INPUT_SIZE),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def landmark_geometry(face: FaceObservation) -> np.ndarray:
    """float32 ``(D_GEOMETRY,)`` landmark features in the order of :data:`GEOMETRY_NAMES`.

    Everything is divided by the box side or the eye distance, so it does not depend on how large
    the face is in the frame; all values are finite even for degenerate landmarks.
    """
    side = max(face.side, 1e-6)
    points = face.landmarks
    eye_l, eye_r, nose, mouth_l, mouth_r = points
    rel = ((points - face.centre) / side).reshape(-1)
    eye_mid, mouth_mid = (eye_l + eye_r) / 2, (mouth_l + mouth_r) / 2
    eye_dist = max(float(np.linalg.norm(eye_r - eye_l)), 1e-6)
    mouth_width = float(np.linalg.norm(mouth_r - mouth_l))
    roll = head_roll(points)
    # Work in the eye-line frame so roll does not leak into the other measures.
    axis = np.array([math.cos(roll), math.sin(roll)])
    normal = np.array([-axis[1], axis[0]])
    eye_mouth = max(float((mouth_mid - eye_mid) @ normal), 1e-6)
    mouth_angle = math.atan2(*(mouth_r - mouth_l)[::-1])
    width, height = face.box[2] - face.box[0], face.box[3] - face.box[1]
    derived = [
        eye_dist / side,
        mouth_width / side,
        mouth_width / eye_dist,
        eye_mouth / eye_dist,
        float((nose - eye_mid) @ axis) / eye_dist,
        float((nose - eye_mid) @ normal) / eye_mouth,
        roll,
        math.remainder(mouth_angle - roll, math.tau),
        float(height / width) if width > 0 else 1.0,
    ]
    out = np.concatenate([rel, derived]).astype(np.float32)
    return np.clip(np.nan_to_num(out), -10.0, 10.0)  # bounded: degenerate boxes stay finite


def extract_features(
    images: Sequence[np.ndarray],
    faces: Sequence[FaceObservation | None],
    expression_net: ExpressionNet | None = None,
    crop_margin: float = 0.2,
) -> tuple[np.ndarray, np.ndarray]:
    """Visual feature rows for frames with a face.

    Args:
        images: uint8 RGB frames ``(H, W, 3)``.
        faces: the selected face per frame, or None.
        expression_net: from :func:`load_expression_net` (default: cached CPU net).
        crop_margin: see :func:`crop_face`.

    Returns:
        ``features`` float32 ``(n_frames, D_VISION)`` (zero rows without a face) and ``mask``
        bool ``(n_frames,)``.
    """
    from mercli.features.expression import score_faces

    mask = np.array([f is not None for f in faces], dtype=bool)
    features = np.zeros((len(faces), D_VISION), np.float32)
    if not mask.any():
        return features, mask
    net = expression_net if expression_net is not None else _default_expression_net()
    present = [(im, f) for im, f in zip(images, faces, strict=True) if f is not None]
    crops = np.stack([crop_face(im, f, crop_margin) for im, f in present])
    expr_features, probs = score_faces(net, crops)
    geometry = np.stack([landmark_geometry(f) for _, f in present])
    features[mask] = np.concatenate([expr_features, probs, geometry], axis=1)
    return features, mask


@functools.lru_cache(maxsize=1)
def _default_expression_net() -> ExpressionNet:
    from mercli.features.expression import load_expression_net

    return load_expression_net("cpu")


def visual_features(
    frames: Sequence[FrameLike],
    detector: Mtcnn | None = None,
    expression_net: ExpressionNet | None = None,
    config: FaceConfig = FaceConfig(),
) -> VisualFeatures:
    """Detect, select and describe the speaker's face in one window of frames.

    Args:
        frames: decoded frames in time order (``time_s``, uint8 RGB ``rgb`` (H, W, 3)).
        detector: Mtcnn from :func:`load_detector` (default: cached CPU detector).
        expression_net: from ``load_expression_net`` (default: cached CPU net).
        config: detection / tracking settings.

    Returns:
        :class:`VisualFeatures` with ``features`` ``(n_frames, D_VISION)``, ``mask``, ``times_s``.
    """
    images = [f.rgb for f in frames]
    faces = detect_faces(images, detector, config)
    features, mask = extract_features(images, faces, expression_net, config.crop_margin)
    times = np.array([f.time_s for f in frames], dtype=np.float64)
    return VisualFeatures(features, mask, times, faces)
