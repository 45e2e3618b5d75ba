"""Raw labelled videos -> an MMSA-layout feature pickle that ``mer train`` reads (``mer prepare``).

The input follows MMSA-FET (DESIGN.md section 4): a ``label.csv`` with
``video_id,clip_id,text,label,mode`` (mode train/valid/test; CMU-MOSI's ``id`` column and ``dev``
mode are accepted too) and one clip per row at ``RAW_DIR/Raw/<video_id>/<clip_id>.mp4`` or
``RAW_DIR/<video_id>/<clip_id>.mp4`` (any media extension). Each clip is one utterance: its text is
the CSV's (no ASR); audio and vision features are mer's own raw-media features
(:mod:`mercli.features.extract`) over the whole clip, so a model trained on the result can be
used by ``mer analyze``.

- Per-clip features go through the feature cache (:mod:`mercli.cache`), keyed by the clip's
  content, the extractor settings and :data:`CLIP_SCOPE`; each entry is written as soon as the
  clip is done, so a killed run resumes where it stopped.
- A clip that cannot be prepared (missing, unreadable, no audio stream, ...) is left out of the
  dataset and listed with its reason in the report (``<out stem>.report.json``), never skipped
  silently.
- Clips longer than ``max_clip_s`` (default 20 s) are truncated to their first ``max_clip_s``
  seconds, at the native frame rates (``analyze`` feeds utterances of at most 15 s at the same
  rates): ``T_a <= max_clip_s / hop_s`` (1000 steps of 20 ms), ``T_v <= max_clip_s * fps`` (100
  frames at 5 fps). The report lists the clips this cut.

The pickle (written atomically) holds per split ``raw_text`` (N,), ``text_bert`` (N, 3, 50) token
ids / attention mask / segment ids as floats (the tokenizer of the profile's text backbone),
``audio`` (N, T_a, 35), ``vision`` (N, T_v, 154), ``audio_lengths`` / ``vision_lengths`` (N,),
``vision_mask`` (N, T_v) bool (False on frames without a face), ``id`` (N,)
``"<video_id>$_$<clip_id>"``, ``regression_labels`` (N,) and ``annotations`` (N,); and a top-level
``feature_profile`` (:func:`mercli.features.profile.raw_profile`). Steps past a length are zeros.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mercli.atomic import write_atomically
from mercli.data import SPLITS
from mercli.engine import EngineConfig
from mercli.features.acoustic import D_AUDIO
from mercli.features.extract import (
    ExtractConfig,
    FrontEnd,
    MediaFeatures,
    UtteranceFeatures,
    decode_audio,
    dominant_expression,
    utterance_audio,
    utterance_vision,
)
from mercli.features.media import SAMPLE_RATE_HZ, MediaError
from mercli.features.profile import D_VISION, raw_profile

MAX_TEXT_TOKENS = 50  # MMSA's text length (text_bert is (N, 3, 50))
MAX_CLIP_S = 20.0  # longer clips are truncated (see the module docstring)
VISION_WINDOW_S = 10.0  # frames of a clip are described in windows this long: bounded memory
CLIP_SCOPE = "prepare-clip-v1"  # cache scope of whole-clip features (not analyze's utterances)
ID_SEPARATOR = "$_$"  # MMSA's "<video_id>$_$<clip_id>"


class PrepareError(RuntimeError):
    """A problem that stops the whole run (not one clip's failure, which is reported)."""


@dataclass(frozen=True)
class PrepareConfig:
    """What ``mer prepare`` extracts and how."""

    extract: ExtractConfig = field(default_factory=ExtractConfig)  # fps, faces, hop, device
    text_backbone: str = "all-MiniLM-L6-v2"  # its tokenizer makes text_bert; recorded
    max_text_tokens: int = MAX_TEXT_TOKENS  # tokenizer truncation and text_bert's T_t
    max_clip_s: float = MAX_CLIP_S  # clips are truncated to this many seconds
    workers: int = 1  # processes extracting clips; 1 = in this process
    use_cache: bool = True  # read and write the per-clip feature cache

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.max_clip_s <= 0:
            raise ValueError(f"max_clip_s must be positive, got {self.max_clip_s}")

    @property
    def cache_scope(self) -> str:
        return f"{CLIP_SCOPE}:max_clip_s={self.max_clip_s:g}"

    def feature_profile(self) -> dict[str, Any]:
        """The features the dataset holds (recorded in the pickle and then in checkpoints)."""
        profile = raw_profile(self.text_backbone, fps=self.extract.fps, hop_s=self.extract.hop_s)
        profile["text"]["max_tokens"] = self.max_text_tokens
        profile["max_clip_s"] = self.max_clip_s
        if not self.extract.use_faces:  # no vision features were extracted
            profile["modalities"] = ["text", "audio"]
        return profile


# ---------------------------------------------------------------------------------------------
# the label CSV and the clips


@dataclass(frozen=True)
class Clip:
    """One labelled clip of the CSV.

    Attributes:
        id: ``"<video_id>$_$<clip_id>"`` (or the CSV's ``id`` as it is).
        text, label, split: from the CSV (split: train, valid or test).
        path: the media file found for it, or None.
    """

    id: str
    text: str
    label: float
    split: str
    path: Path | None


def split_id(clip_id: str) -> tuple[str, str]:
    """(video_id, clip_id) of an id; a CMU-MOSI ``id`` without ``$_$`` is split at its last
    underscore (``03bSnISJMiM_1`` -> ``03bSnISJMiM``, ``1``)."""
    if ID_SEPARATOR in clip_id:
        video, clip = clip_id.split(ID_SEPARATOR, 1)
        return video, clip
    video, _, clip = clip_id.rpartition("_")
    return video, clip


class ClipFinder:
    """Finds clip files under ``RAW_DIR`` (each folder is listed once)."""

    def __init__(self, raw_dir: Path) -> None:
        from mercli.pipeline import MEDIA_EXTENSIONS

        self.raw_dir = raw_dir
        self.extensions = MEDIA_EXTENSIONS
        self.listings: dict[Path, dict[str, list[Path]]] = {}

    def _listing(self, folder: Path) -> dict[str, list[Path]]:
        if folder not in self.listings:
            by_stem: dict[str, list[Path]] = {}
            if folder.is_dir():
                for p in sorted(folder.iterdir()):
                    if p.suffix.lower() in self.extensions and p.is_file():
                        by_stem.setdefault(p.stem, []).append(p)
            self.listings[folder] = by_stem
        return self.listings[folder]

    def candidates(self, id_: str) -> list[tuple[Path, str]]:
        """(folder, file stem) pairs where the clip ``id_`` may be, in the order searched."""
        video_id, clip_id = split_id(id_)
        pairs = [(self.raw_dir / "Raw", id_), (self.raw_dir, id_)]  # flat: <id>.*
        if video_id:
            pairs = [(self.raw_dir / "Raw" / video_id, clip_id), (self.raw_dir / video_id, clip_id)]
            pairs += [] if ID_SEPARATOR in id_ else [(self.raw_dir / "Raw", id_)]
        return pairs

    def find(self, id_: str) -> Path | None:
        """``Raw/<video>/<clip>.*`` then ``<video>/<clip>.*`` (a CMU-MOSI ``id`` may also be a
        flat ``Raw/<id>.*``); ``.mp4`` first where a stem has several media files."""
        for folder, stem in self.candidates(id_):
            found = self._listing(folder).get(stem)
            if found:
                return min(found, key=lambda p: (p.suffix.lower() != ".mp4", p.name))
        return None

    def not_found(self, id_: str) -> str:
        """The reason of a clip that is not there."""
        places = " or ".join(f"{folder / stem}.*" for folder, stem in self.candidates(id_))
        return f"file not found: no media file at {places}"


def read_clips(labels: str | Path, raw_dir: str | Path) -> list[Clip]:
    """The CSV's rows in order (train, valid, test), each with the file found for it.

    Raises:
        DatasetError: the CSV is missing or malformed (naming the line and column).
    """
    from mercli.data.labels_csv import read_label_csv

    finder = ClipFinder(Path(raw_dir))
    clips = []
    for split, rows in read_label_csv(labels).items():
        for row in rows:
            clips.append(Clip(row.id, row.text, row.label, split, finder.find(row.id)))
    return clips


# ---------------------------------------------------------------------------------------------
# one clip


def _vision_windows(span_s: float) -> list[tuple[float, float]]:
    n_windows = max(1, math.ceil(span_s / VISION_WINDOW_S))
    return [(k * VISION_WINDOW_S, min((k + 1) * VISION_WINDOW_S, span_s)) for k in range(n_windows)]


def extract_clip(
    path: str | os.PathLike[str],
    config: ExtractConfig,
    front_end: FrontEnd,
    sha256: str = "",
    max_clip_s: float = MAX_CLIP_S,
) -> MediaFeatures:
    """Whole-clip features: one utterance over the first ``max_clip_s`` seconds, no ASR.

    Returns:
        :class:`MediaFeatures` with one utterance (text empty: it comes from the CSV) holding
        ``audio`` (T_a, 35) and, with video and faces on, ``vision`` (T_v, 154) and its mask;
        ``duration_s`` is the clip's full length.

    Raises:
        MediaError: the file is missing, unreadable or has no audio stream.
    """
    from mercli.features.asr import Utterance
    from mercli.features.media import probe

    timings: dict[str, float] = {}
    started = time.perf_counter()
    info = probe(path)
    if not info.has_audio:
        raise MediaError(path, "no audio stream" + (" (video only)" if info.has_video else ""))
    audio = decode_audio(path, info)
    if audio is None or audio.size == 0:
        raise MediaError(path, "the audio stream holds no samples")
    timings["decode"] = time.perf_counter() - started
    audio_s = len(audio) / SAMPLE_RATE_HZ
    duration_s = max(audio_s, info.duration_s or 0.0)
    span_s = min(duration_s, max_clip_s)

    started = time.perf_counter()
    window = Utterance(0.0, min(audio_s, max_clip_s), "")
    features, pitch_hz, energy_db = utterance_audio(audio, window, config.hop_s)
    timings["audio"] = time.perf_counter() - started
    utterance = UtteranceFeatures(
        0.0,
        span_s,
        "",
        features,
        np.zeros((0, D_VISION), np.float32),
        np.zeros(0, bool),
        pitch_hz=pitch_hz,
        energy_db=energy_db,
    )
    result = MediaFeatures(
        path=str(path),
        sha256=sha256,
        status="ok",
        duration_s=duration_s,
        has_audio=True,
        has_video=info.has_video,
        utterances=[utterance],
        timings_s=timings,
    )
    if info.has_video and config.use_faces:
        started = time.perf_counter()
        visuals = utterance_vision(path, _vision_windows(span_s), front_end)
        utterance.vision = np.concatenate([v.features for v in visuals]).astype(np.float32)
        utterance.vision_mask = np.concatenate([v.mask for v in visuals]).astype(bool)
        coverage = float(utterance.vision_mask.mean()) if len(utterance.vision_mask) else 0.0
        expression, probability = dominant_expression([v.expression_probs[v.mask] for v in visuals])
        utterance.face_coverage = result.face_coverage = coverage
        utterance.expression = result.expression = expression
        utterance.expression_prob = result.expression_prob = probability
        result.frame_times_s = np.concatenate([v.times_s for v in visuals])
        result.frame_mask = utterance.vision_mask
        timings["faces"] = time.perf_counter() - started
    return result


@dataclass
class ClipOutcome:
    """What became of one clip: its features, or the reason it failed."""

    features: MediaFeatures | None = None
    cached: bool = False
    reason: str | None = None
    seconds: float = 0.0

    @property
    def utterance(self) -> UtteranceFeatures:
        assert self.features is not None
        return self.features.utterances[0]


def prepare_clip(path: Path, config: PrepareConfig, front_end: FrontEnd) -> ClipOutcome:
    """One clip's features through the cache; a clip that fails gets its reason.

    Raises:
        FfmpegNotFoundError: no ffmpeg at all (no clip can be prepared).
    """
    from mercli import cache
    from mercli.features.media import FfmpegNotFoundError

    def run(p: str | os.PathLike[str], c: ExtractConfig, sha256: str) -> MediaFeatures:
        return extract_clip(p, c, front_end, sha256, config.max_clip_s)

    started = time.perf_counter()
    try:
        if not path.is_file():
            raise MediaError(path, "file not found" if not path.exists() else "not a regular file")
        features, cached = cache.cached_extract(
            path, config.extract, run, config.use_cache, scope=config.cache_scope
        )
    except FfmpegNotFoundError:
        raise
    except MediaError as error:
        return ClipOutcome(reason=error.reason, seconds=time.perf_counter() - started)
    except OSError as error:
        reason = f"unreadable ({type(error).__name__}: {error.strerror or error})"
        return ClipOutcome(reason=reason, seconds=time.perf_counter() - started)
    except (ValueError, RuntimeError) as error:  # reported with the clip, the run goes on
        reason = f"{type(error).__name__}: {error}"
        return ClipOutcome(reason=reason, seconds=time.perf_counter() - started)
    return ClipOutcome(features, cached, seconds=time.perf_counter() - started)


class ClipPreparer:
    """:func:`prepare_clip` with the front-end models loaded once (per process or Ray actor).

    Args:
        config: what to extract.
        device: where the models run instead of ``config.extract.device`` (a Ray actor passes
            ``"cuda"`` when it holds a GPU, else ``"cpu"``); None keeps it.
    """

    def __init__(self, config: PrepareConfig, device: str | None = None) -> None:
        from dataclasses import replace

        if device is not None:
            config = replace(config, extract=replace(config.extract, device=device))
        self.config = config
        self.front_end = FrontEnd(config.extract)
        if config.extract.use_faces:
            self.front_end.faces()

    def __call__(self, path: Path) -> ClipOutcome:
        return prepare_clip(path, self.config, self.front_end)


def iter_outcomes(
    paths: Sequence[Path], config: PrepareConfig, engine: EngineConfig | None = None
) -> Iterator[tuple[int, ClipOutcome]]:
    """(index into ``paths``, outcome) per clip, as each is done (in order with one worker).

    Args:
        engine: where the clips run (default: ``config.workers`` local processes).

    Raises:
        EngineError: a worker process died, or Ray is missing or unreachable.
    """
    from functools import partial

    from mercli.engine import run_clips

    engine = engine or EngineConfig(workers=config.workers)
    yield from run_clips(paths, partial(ClipPreparer, config), engine)


# ---------------------------------------------------------------------------------------------
# the dataset


def token_arrays(texts: list[str], tokenizer: Any, max_tokens: int) -> np.ndarray:
    """``text_bert`` for ``texts``: float32 (N, 3, max_tokens) ids / attention mask / segments."""
    out = np.zeros((len(texts), 3, max_tokens), np.float32)
    if not texts:
        return out
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=max_tokens)
    for row, key in enumerate(("input_ids", "attention_mask", "token_type_ids")):
        if key in encoded:
            out[:, row] = np.asarray(encoded[key], np.float32)[:, :max_tokens]
    return out


def _annotation(label: float) -> str:
    return "Positive" if label > 0 else "Negative" if label < 0 else "Neutral"


def split_arrays(
    rows: Sequence[tuple[Clip, UtteranceFeatures]],
    n_audio: int,
    n_vision: int,
    tokenizer: Any,
    max_tokens: int,
) -> dict[str, np.ndarray]:
    """One split in the MMSA layout, audio/vision zero-padded to ``n_audio``/``n_vision``."""
    n = len(rows)
    audio = np.zeros((n, n_audio, D_AUDIO), np.float32)
    vision = np.zeros((n, n_vision, D_VISION), np.float32)
    vision_mask = np.zeros((n, n_vision), bool)
    audio_lengths = np.zeros(n, np.int64)
    vision_lengths = np.zeros(n, np.int64)
    for i, (_, u) in enumerate(rows):
        audio_lengths[i], vision_lengths[i] = len(u.audio), len(u.vision)
        audio[i, : len(u.audio)] = u.audio
        vision[i, : len(u.vision)] = u.vision
        vision_mask[i, : len(u.vision_mask)] = u.vision_mask
    texts = [clip.text for clip, _ in rows]
    labels = [clip.label for clip, _ in rows]
    return {
        "raw_text": np.array(texts, dtype=str),
        "text_bert": token_arrays(texts, tokenizer, max_tokens),
        "audio": audio,
        "vision": vision,
        "audio_lengths": audio_lengths,
        "vision_lengths": vision_lengths,
        "vision_mask": vision_mask,
        "id": np.array([clip.id for clip, _ in rows], dtype=str),
        "regression_labels": np.array(labels, np.float32),
        "annotations": np.array([_annotation(y) for y in labels], dtype=str),
    }


def build_dataset(
    rows: Sequence[tuple[Clip, UtteranceFeatures]], config: PrepareConfig, tokenizer: Any
) -> dict[str, Any]:
    """The pickle's content: the three splits plus ``feature_profile``."""
    n_audio = max([len(u.audio) for _, u in rows] + [1])
    n_vision = max([len(u.vision) for _, u in rows] + [1])
    data: dict[str, Any] = {
        split: split_arrays(
            [(c, u) for c, u in rows if c.split == split],
            n_audio,
            n_vision,
            tokenizer,
            config.max_text_tokens,
        )
        for split in SPLITS
    }
    data["feature_profile"] = config.feature_profile()
    return data


def report_path(out: str | Path) -> Path:
    """Where the report of a dataset goes: ``dataset.pkl`` -> ``dataset.report.json``."""
    return Path(out).with_suffix(".report.json")


# ---------------------------------------------------------------------------------------------
# the run


@dataclass
class PrepareReport:
    """What a run did; ``to_dict`` is the report file.

    Attributes:
        out: the pickle (written only when ``prepared`` is not empty).
        feature_profile: the profile recorded in it.
        n_clips: rows of the label CSV.
        prepared: clips in the dataset, per split.
        failed: one dict per clip left out (``id``, ``split``, ``path``, ``reason``).
        from_cache, extracted: prepared clips whose features came from the cache / were made.
        truncated: ids of clips longer than ``max_clip_s``.
        no_video, no_face: ids of clips without a video stream / without any face found.
        seconds: wall time of the run.
    """

    out: Path
    feature_profile: dict[str, Any]
    n_clips: int = 0
    prepared: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SPLITS})
    failed: list[dict[str, Any]] = field(default_factory=list)
    from_cache: int = 0
    extracted: int = 0
    truncated: list[str] = field(default_factory=list)
    no_video: list[str] = field(default_factory=list)
    no_face: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def n_prepared(self) -> int:
        return sum(self.prepared.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": str(self.out) if self.n_prepared else None,
            "clips": self.n_clips,
            "prepared": self.n_prepared,
            "prepared_per_split": self.prepared,
            "failed": self.failed,
            "from_cache": self.from_cache,
            "extracted": self.extracted,
            "truncated": self.truncated,
            "no_video": self.no_video,
            "no_face": self.no_face,
            "feature_profile": self.feature_profile,
            "seconds": round(self.seconds, 2),
        }


def prepare(
    raw_dir: str | Path,
    labels: str | Path,
    out: str | Path,
    config: PrepareConfig,
    log: Callable[[str], None] = lambda message: None,
    engine: EngineConfig | None = None,
) -> PrepareReport:
    """Extract every clip of ``labels``, write the dataset pickle and its report.

    The report is written in every case; the pickle only when at least one clip was prepared.

    Args:
        engine: where the clips are extracted (default: ``config.workers`` local processes).

    Raises:
        DatasetError: the label CSV is missing or malformed.
        EngineError: a worker process died, or Ray is missing or unreachable.
        FfmpegNotFoundError: no ffmpeg.
    """
    from mercli.model.text_backbone import load_tokenizer

    started = time.perf_counter()
    out = Path(out)
    clips = read_clips(labels, raw_dir)
    tokenizer = load_tokenizer(config.text_backbone)  # before any media work: fail fast
    report = PrepareReport(out, config.feature_profile(), n_clips=len(clips))
    finder = ClipFinder(Path(raw_dir))
    outcomes: dict[int, ClipOutcome] = {}
    seen: set[str] = set()
    todo: list[int] = []
    for i, clip in enumerate(clips):
        if clip.id in seen:
            outcomes[i] = ClipOutcome(reason="duplicate id: listed earlier in the label CSV")
        elif clip.path is None:
            outcomes[i] = ClipOutcome(reason=finder.not_found(clip.id))
        else:
            todo.append(i)
        seen.add(clip.id)
    for i, outcome in outcomes.items():
        log(f"{clips[i].id}: failed: {outcome.reason}")
    paths = [p for i in todo if (p := clips[i].path) is not None]  # all of them
    for done, (k, outcome) in enumerate(iter_outcomes(paths, config, engine), start=1):
        i = todo[k]
        outcomes[i] = outcome
        if outcome.reason is None:
            note = "features from cache" if outcome.cached else f"{outcome.seconds:.1f} s"
            status = f"ok ({note})"
        else:
            status = f"failed: {outcome.reason}"
        log(f"[{done}/{len(todo)}] {clips[i].id}: {status}")
    rows = _collect(clips, outcomes, config, report)
    if rows:
        data = build_dataset(rows, config, tokenizer)
        write_atomically(out, lambda f: pickle.dump(data, f, protocol=4))
    report.seconds = time.perf_counter() - started
    text = json.dumps(report.to_dict(), indent=2)
    write_atomically(report_path(out), lambda f: f.write(text.encode() + b"\n"))
    return report


def _collect(
    clips: Sequence[Clip],
    outcomes: dict[int, ClipOutcome],
    config: PrepareConfig,
    report: PrepareReport,
) -> list[tuple[Clip, UtteranceFeatures]]:
    """The prepared clips in CSV order, with their features; fills the report."""
    rows = []
    for i, clip in enumerate(clips):
        outcome = outcomes[i]
        if outcome.reason is not None or outcome.features is None:
            report.failed.append(
                {
                    "id": clip.id,
                    "split": clip.split,
                    "path": None if clip.path is None else str(clip.path),
                    "reason": outcome.reason,
                }
            )
            continue
        features = outcome.features
        rows.append((clip, outcome.utterance))
        report.prepared[clip.split] += 1
        if outcome.cached:
            report.from_cache += 1
        else:
            report.extracted += 1
        if (features.duration_s or 0.0) > config.max_clip_s:
            report.truncated.append(clip.id)
        if not features.has_video:
            report.no_video.append(clip.id)
        elif config.extract.use_faces and not outcome.utterance.vision_mask.any():
            report.no_face.append(clip.id)
    return rows
