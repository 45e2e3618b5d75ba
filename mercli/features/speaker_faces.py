"""Which face is whose voice: every face track per utterance window, matched to the speakers.

Without speakers, :mod:`mercli.features.faces` keeps one face per window, the strongest track.
With several speakers that is often the wrong person (the listener, the larger face). Here:

1. :func:`window_faces`: per utterance window, every face track (the same detector and tracker),
   each with its feature rows (expression net + geometry, as for the chosen face) and its
   **mouth activity**: the mean absolute change of a grey crop around the mouth between
   consecutive sampled frames, relative to the face's size (a speaking mouth opens and closes).
2. :func:`link_tracks`: tracks of different windows are one face when their centres, in
   frame-relative units, are within ``max_shift`` face sides (cameras of interviews and panels
   hold their framing; a face that moves further becomes a new face).
3. :func:`match_speakers`: a face belongs to the speaker during whose speech its mouth moves
   more than it usually does (activity standardised per face, averaged over the speaker's
   windows); speakers and faces are paired one to one (Hungarian) and a pair is kept only when
   that score is positive. A speaker without a face gets no face features: the table then
   says so (face coverage 0) instead of describing someone else.
4. :func:`speaker_vision`: all of it over one pass of the video; per window the visual
   features of that window's speaker's face.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mercli.features.faces import D_VISION, FaceConfig, FaceObservation, VisualFeatures

if TYPE_CHECKING:
    from mercli.features.extract import FrontEnd
    from mercli.features.faces import FrameLike

MOUTH_SIZE = (24, 12)  # (width, height) pixels of the normalised mouth crop


@dataclass(eq=False)
class FaceTrack:
    """One face over one window's frames.

    Attributes:
        observations: the face per frame, or None.
        features: float32 ``(n_frames, D_VISION)``, zeros where the face is absent.
        mouth_activity: mean mouth change between consecutive frames with the face (see the
            module docstring); 0 when it is never seen twice in a row.
        centre: mean box centre as a share of the frame's width and height ``(2,)``.
        side: mean box side as a share of the frame's short side.
    """

    observations: list[FaceObservation | None]
    features: np.ndarray
    mouth_activity: float
    centre: np.ndarray
    side: float

    @property
    def mask(self) -> np.ndarray:
        return np.array([o is not None for o in self.observations], dtype=bool)


@dataclass
class WindowFaces:
    """Every face track of one window, and the frame times."""

    times_s: np.ndarray
    tracks: list[FaceTrack]


def mouth_crop(image: np.ndarray, face: FaceObservation) -> np.ndarray:
    """float32 ``MOUTH_SIZE`` grey crop around the mouth corners, values in [0, 1].

    The box spans the mouth width plus half of it either side and, vertically, from the nose
    tip down by as much again, so an opening jaw stays inside.
    """
    import cv2

    nose, mouth_l, mouth_r = face.landmarks[2], face.landmarks[3], face.landmarks[4]
    centre = (mouth_l + mouth_r) / 2
    width = max(float(np.linalg.norm(mouth_r - mouth_l)), 4.0) * 2.0
    top = min(float(nose[1]), float(centre[1]) - width / 4)
    bottom = float(centre[1]) + (float(centre[1]) - top)
    x0, x1 = int(centre[0] - width / 2), int(centre[0] + width / 2)
    y0, y1 = int(top), int(bottom)
    h, w = image.shape[:2]
    x0, x1, y0, y1 = max(0, x0), min(w, max(x1, x0 + 2)), max(0, y0), min(h, max(y1, y0 + 2))
    region = np.ascontiguousarray(image[y0:y1, x0:x1])
    if region.size == 0:
        return np.zeros(MOUTH_SIZE[::-1], np.float32)
    grey = cv2.cvtColor(region, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, MOUTH_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def mouth_activity(images: Sequence[np.ndarray], faces: Sequence[FaceObservation | None]) -> float:
    """Mean absolute change of the mouth crop between consecutive frames that show the face,
    each crop standardised first (so lighting and contrast do not count)."""
    changes = []
    previous: np.ndarray | None = None
    for image, face in zip(images, faces, strict=True):
        if face is None:
            previous = None
            continue
        crop = mouth_crop(image, face)
        crop = (crop - crop.mean()) / (crop.std() + 1e-3)
        if previous is not None:
            changes.append(float(np.abs(crop - previous).mean()))
        previous = crop
    return float(np.mean(changes)) if changes else 0.0


def window_faces(
    frames: Sequence[FrameLike],
    detector: Any = None,
    expression_net: Any = None,
    config: FaceConfig | None = None,
) -> WindowFaces:
    """Every face track of one window's frames, each described (see :class:`FaceTrack`)."""
    from mercli.features.faces import FaceTracker, detect_candidates, extract_features

    config = config or FaceConfig()
    images = [f.rgb for f in frames]
    times = np.array([f.time_s for f in frames], dtype=np.float64)
    tracker = FaceTracker(config)
    for faces in detect_candidates(images, detector, config):
        tracker.update(faces)
    if not tracker.tracks:
        return WindowFaces(times, [])
    longest = max(len(t.faces) for t in tracker.tracks)
    tracks = []
    for track in tracker.tracks:
        if len(track.faces) < config.min_track_frac * longest:
            continue  # a hand or a passer-by, as in FaceTracker.select
        observations = [track.faces.get(i) for i in range(len(images))]
        features, _ = extract_features(images, observations, expression_net, config.crop_margin)
        h, w = images[0].shape[:2]
        seen = list(track.faces.values())
        centre = np.mean([f.centre for f in seen], axis=0) / np.array([w, h])
        side = float(np.mean([f.side for f in seen])) / min(h, w)
        activity = mouth_activity(images, observations)
        tracks.append(FaceTrack(observations, features, activity, centre, side))
    return WindowFaces(times, tracks)


def link_tracks(windows: Sequence[WindowFaces], max_shift: float = 0.5) -> list[list[int]]:
    """A face id for every track of every window, by position (see the module docstring).

    Returns:
        per window, the face id of each of its tracks (ids 0, 1, ... in order of appearance).
    """
    faces: list[tuple[np.ndarray, float]] = []  # running (centre, side) per face id
    ids: list[list[int]] = []
    for window in windows:
        taken: set[int] = set()
        row = []
        for i in sorted(range(len(window.tracks)), key=lambda j: -window.tracks[j].side):
            track = window.tracks[i]
            best, best_shift = None, max_shift
            for k, (centre, side) in enumerate(faces):
                shift = float(np.linalg.norm(track.centre - centre)) / max(side, 1e-3)
                if k not in taken and shift <= best_shift:
                    best, best_shift = k, shift
            if best is None:
                faces.append((track.centre, track.side))
                best = len(faces) - 1
            else:
                centre, side = faces[best]
                faces[best] = ((centre + track.centre) / 2, (side + track.side) / 2)
            taken.add(best)
            row.append((i, best))
        ids.append([k for _, k in sorted(row)])
    return ids


def match_speakers(activity: np.ndarray, speakers: Sequence[str | None]) -> dict[str, int]:
    """Pair speakers with faces by mouth activity.

    Args:
        activity: float ``(n_windows, n_faces)`` mouth activity, NaN where the face is absent.
        speakers: the speaker of each window.

    Returns:
        speaker -> face id, for the speakers that have a face (see the module docstring).
    """
    from scipy.optimize import linear_sum_assignment

    names = sorted({s for s in speakers if s is not None})
    n_faces = activity.shape[1] if activity.ndim == 2 else 0
    if not names or n_faces == 0:
        return {}
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(activity, axis=0)
        std = np.nanstd(activity, axis=0)
    z = (activity - mean) / np.where(std > 1e-6, std, 1.0)  # NaN stays NaN
    score = np.full((len(names), n_faces), -np.inf)
    who = np.array([s if s is not None else "" for s in speakers])
    for i, name in enumerate(names):
        rows = z[who == name]
        for f in range(n_faces):
            seen = rows[:, f][~np.isnan(rows[:, f])]
            if len(seen):
                score[i, f] = float(seen.mean())
    finite = np.where(np.isfinite(score), score, -1e6)
    rows, cols = linear_sum_assignment(-finite)
    return {names[i]: int(f) for i, f in zip(rows, cols, strict=True) if score[i, f] > 0}


def speaker_vision(
    path: str | os.PathLike[str],
    windows: Sequence[tuple[float, float]],
    speakers: Sequence[str | None],
    front_end: FrontEnd,
) -> list[VisualFeatures]:
    """Per window, the visual features of its speaker's face (masked where it is not seen).

    Args:
        path: the video.
        windows: (start_s, end_s) per utterance.
        speakers: the speaker of each utterance.
        front_end: models and settings (``fps``, ``max_side``).
    """
    from mercli.features.extract import assign_frames
    from mercli.features.media import iter_frames

    config = front_end.config
    detector, expression_net = front_end.faces()
    found: list[WindowFaces | None] = [None] * len(windows)
    stream = iter_frames(path, fps=config.fps, max_side=config.max_side)
    for k, frames in assign_frames(stream, windows):
        found[k] = window_faces(frames, detector, expression_net)
    described = [w if w is not None else WindowFaces(np.zeros(0), []) for w in found]
    ids = link_tracks(described)
    n_faces = max([max(row, default=-1) for row in ids], default=-1) + 1
    activity = np.full((len(described), n_faces), np.nan)
    for k, (window, row) in enumerate(zip(described, ids, strict=True)):
        for described_track, face_id in zip(window.tracks, row, strict=True):
            activity[k, face_id] = described_track.mouth_activity
    owner = match_speakers(activity, speakers)
    out = []
    for window, row, speaker in zip(described, ids, speakers, strict=True):
        n = len(window.times_s)
        face = owner.get(speaker) if speaker is not None else None
        own = next((t for t, f in zip(window.tracks, row, strict=True) if f == face), None)
        if own is None:
            empty = np.zeros((n, D_VISION), np.float32)
            out.append(VisualFeatures(empty, np.zeros(n, bool), window.times_s, [None] * n))
        else:
            out.append(VisualFeatures(own.features, own.mask, window.times_s, own.observations))
    return out
