"""Faces of every sampled frame, found in a background thread while Whisper transcribes.

Per-utterance face features need the utterance windows, which come from the ASR; searching
the frames window by window after it (:func:`mercli.features.extract.utterance_vision`) adds
the two stages' times. Here the frames are searched in file order while Whisper runs (both
release the GIL in their kernels, CTranslate2 and torch alike), each frame's candidate faces
kept with a feature row per face; once the windows are known, :meth:`FaceWorker.visuals` groups
the frames by window (the rule of :func:`~mercli.features.extract.assign_frames`) and picks
each window's speaker among the candidates (:func:`~mercli.features.faces.select_speaker`,
one tracker per window as before).

What differs from the per-window search: keyframes (searched whole, :class:`FaceConfig`
``detect_every``) lie on the file's grid instead of each window's, so a frame may be found by
a region search here and by a whole-frame search there (boxes within a pixel or two); frames
outside every window are searched too (the worker stops at the last window's end once that is
known); and every candidate face gets an expression-net pass, not only the chosen one.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mercli.features.faces import (
    D_VISION,
    FaceConfig,
    FaceObservation,
    FrameLike,
    VisualFeatures,
    detect_candidates,
    extract_features,
    select_speaker,
)

if TYPE_CHECKING:
    from mercli.features.extract import FrontEnd

# Keyframe periods per detection call: frames held at once (40 at 5 fps, 8 s of video).
KEYFRAMES_PER_CHUNK = 4


@dataclass
class FrameFaces:
    """The candidate faces of one sampled frame.

    Attributes:
        time_s: the frame's time, seconds.
        faces: every plausible face (:func:`~mercli.features.faces.detect_candidates`).
        rows: float32 ``(len(faces), D_VISION)``, the feature row of each face (as
            :func:`~mercli.features.faces.extract_features` makes for a chosen face).
    """

    time_s: float
    faces: list[FaceObservation]
    rows: np.ndarray


def detect_frame_faces(
    frames: Iterable[FrameLike],
    detector: Any,
    expression_net: Any,
    config: FaceConfig | None = None,
    stop: threading.Event | None = None,
    until_s: Callable[[], float] = lambda: math.inf,
) -> Iterator[FrameFaces]:
    """Candidate faces and their feature rows for each frame, in chunks of a few keyframe
    periods (keyframes on the stream's grid: frame ``i`` is one when ``i % detect_every == 0``).

    Args:
        frames: frames in time order (``time_s``, uint8 RGB ``rgb``).
        detector, expression_net: as :func:`~mercli.features.faces.visual_features` takes them.
        config: detection and tracking settings (default :class:`FaceConfig`).
        stop: when set, no further frame is read or searched.
        until_s: asked at every frame: frames at or past this time are not searched, and the
            stream is not read further (it may fall as the caller learns where it can stop).
    """
    from mercli.features.heap import release_free_memory

    config = config or FaceConfig()
    chunk_size = config.detect_every * KEYFRAMES_PER_CHUNK
    chunk: list[FrameLike] = []
    for frame in frames:
        if (stop is not None and stop.is_set()) or frame.time_s >= until_s():
            break
        chunk.append(frame)
        if len(chunk) == chunk_size:
            yield from _chunk_faces(chunk, detector, expression_net, config)
            chunk = []
            release_free_memory()  # the chunk's frames (see heap.py)
    if chunk and not (stop is not None and stop.is_set()):
        yield from _chunk_faces(chunk, detector, expression_net, config)


def _chunk_faces(
    frames: Sequence[FrameLike], detector: Any, expression_net: Any, config: FaceConfig
) -> list[FrameFaces]:
    images = [f.rgb for f in frames]
    candidates = detect_candidates(images, detector, config)
    pairs = [(images[i], face) for i, faces in enumerate(candidates) for face in faces]
    rows, _ = extract_features(
        [image for image, _ in pairs],
        [face for _, face in pairs],
        expression_net,
        config.crop_margin,
    )
    out, start = [], 0
    for frame, faces in zip(frames, candidates, strict=True):
        out.append(FrameFaces(frame.time_s, faces, rows[start : start + len(faces)]))
        start += len(faces)
    return out


def window_visuals(
    frames: Sequence[FrameFaces],
    windows: Sequence[tuple[float, float]],
    config: FaceConfig | None = None,
) -> list[VisualFeatures]:
    """Per window, the speaker's face features among its frames' candidates.

    A frame belongs to window ``k`` when ``start_k <= time_s < end_k`` (as in
    :func:`~mercli.features.extract.assign_frames`); the speaker is chosen per window
    (:func:`~mercli.features.faces.select_speaker`).

    Returns:
        one :class:`VisualFeatures` per window, in the order of ``windows``.
    """
    config = config or FaceConfig()
    times = np.array([f.time_s for f in frames], dtype=np.float64)
    out = []
    for start_s, end_s in windows:
        inside = [frames[int(i)] for i in np.flatnonzero((times >= start_s) & (times < end_s))]
        chosen = select_speaker([f.faces for f in inside], config)
        features = np.zeros((len(inside), D_VISION), np.float32)
        for row, (frame, face) in enumerate(zip(inside, chosen, strict=True)):
            if face is not None:
                features[row] = frame.rows[next(j for j, f in enumerate(frame.faces) if f is face)]
        mask = np.array([face is not None for face in chosen], dtype=bool)
        window_times = np.array([f.time_s for f in inside], dtype=np.float64)
        out.append(VisualFeatures(features, mask, window_times, chosen))
    return out


class FaceWorker:
    """Searches a video's sampled frames for faces in a background thread.

    Start it, do other work (Whisper), then call :meth:`visuals` with the windows; use it as a
    context manager so the thread is stopped and joined whatever happens in between. An error in
    the thread (a video that does not decode) is raised again by :meth:`visuals`.

    Attributes:
        busy_s: wall seconds the thread worked (reading frames, detection, features).
        wait_s: wall seconds :meth:`visuals` waited for the thread to finish.
    """

    def __init__(self, path: str | os.PathLike[str], front_end: FrontEnd) -> None:
        self.path = path
        self.front_end = front_end
        self.busy_s = 0.0
        self.wait_s = 0.0
        self._frames: list[FrameFaces] = []
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._until_s = math.inf  # the last window's end, once known
        self._thread = threading.Thread(target=self._run, name="mer-faces", daemon=True)

    def __enter__(self) -> FaceWorker:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        from mercli.features.media import iter_frames

        started = time.perf_counter()
        config = self.front_end.config
        try:
            detector, expression_net = self.front_end.faces()
            stream = iter_frames(self.path, fps=config.fps, max_side=config.max_side)
            try:
                found = detect_frame_faces(
                    stream, detector, expression_net, stop=self._stop, until_s=self._limit
                )
                self._frames.extend(found)
            finally:  # ffmpeg stops now, not when the generator is collected
                getattr(stream, "close", lambda: None)()
        except BaseException as error:  # raised again in the caller's thread by visuals()
            self._error = error
        finally:
            self.busy_s = time.perf_counter() - started

    def _limit(self) -> float:
        return self._until_s

    def visuals(self, windows: Sequence[tuple[float, float]]) -> list[VisualFeatures]:
        """Per window, the speaker's face features (see :func:`window_visuals`); waits for the
        thread, which stops reading at the last window's end.

        Raises:
            whatever the thread raised (e.g. ``MediaError`` for a video that does not decode).
        """
        if windows:
            self._until_s = max(end_s for _, end_s in windows)
        started = time.perf_counter()
        self._thread.join()
        self.wait_s = time.perf_counter() - started
        if self._error is not None:
            raise self._error
        return window_visuals(self._frames, windows)
