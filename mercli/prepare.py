"""Raw labelled videos -> an MMSA-layout feature pickle that ``mer train`` reads (``mer prepare``).

The input follows MMSA-FET (:mod:`mercli.data.clips`): a ``label.csv`` with
``video_id,clip_id,text,label,mode`` (mode train/valid/test; CMU-MOSI's ``id`` column and ``dev``
mode are accepted too) and one clip per row at ``RAW_DIR/Raw/<video_id>/<clip_id>.mp4`` or
``RAW_DIR/<video_id>/<clip_id>.mp4`` (any media extension). Each clip is one utterance: its text is
the CSV's (no ASR); audio and vision features are mer's own raw-media features
(:mod:`mercli.features.extract` in whole-clip mode), so a model trained on the result can be
used by ``mer analyze``.

- Per-clip features go through the feature cache (:mod:`mercli.features.cache`), keyed by the
  clip's content and the extractor settings (whole-clip mode included); each entry is written as
  soon as the clip is done, so a killed run resumes where it stopped.
- A clip that cannot be prepared (missing, unreadable, no audio stream, ...) is left out of the
  dataset and listed with its reason in the report (``<out stem>.report.json``), never skipped
  silently.
- Clips longer than ``max_clip_s`` (default 20 s) are truncated to their first ``max_clip_s``
  seconds, at the native frame rates (``analyze`` feeds utterances of at most 15 s at the same
  rates): ``T_a <= max_clip_s / hop_s`` (1000 steps of 20 ms), ``T_v <= max_clip_s * fps`` (100
  frames at 5 fps). The report lists the clips this cut.

The pickle (written atomically) holds per split ``raw_text`` (N,), ``text_bert`` (N, 3, 50) token
ids / attention mask / segment ids as floats (the tokenizer of the profile's text backbone),
``audio`` (N, T_a, 35) (or (N, T_a, 384), Whisper's encoder states, with
``ExtractConfig.audio_extractor`` Whisper's), ``vision`` (N, T_v, 154), ``audio_lengths`` /
``vision_lengths`` (N,), ``vision_mask`` (N, T_v) bool (False on frames without a face), ``id``
(N,) ``"<video_id>$_$<clip_id>"``, ``regression_labels`` (N,) and ``annotations`` (N,); and a
top-level ``feature_profile`` (:func:`mercli.features.profile.raw_profile`). Steps past a length
are zeros.
The writer is :func:`mercli.data.mmsa.build_dataset`, beside the reader.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mercli.atomic import write_atomically
from mercli.data import SPLITS
from mercli.data.clips import Clip, ClipFinder, read_clips
from mercli.engine import EngineConfig
from mercli.features.extract import ExtractConfig, FrontEnd, MediaFeatures, UtteranceFeatures
from mercli.features.media import MediaError
from mercli.features.profile import SPEAKER_NORM, FeatureProfile, TextProfile, raw_profile
from mercli.jsontext import dumps
from mercli.schema import MAX_TEXT_TOKENS

MAX_CLIP_S = 20.0  # longer clips are truncated (see the module docstring)


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
    # each video's audio frames standardised over all its clips (the video is the speaker;
    # mercli.features.speaker_norm), recorded in the profile so analyze reads voices the same way
    voice_relative: bool = False

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.max_clip_s <= 0:
            raise ValueError(f"max_clip_s must be positive, got {self.max_clip_s}")

    @property
    def clip_extract(self) -> ExtractConfig:
        """The front end's settings in whole-clip mode (one utterance, no ASR)."""
        return replace(self.extract, clip_s=self.max_clip_s)

    def feature_profile(self) -> FeatureProfile:
        """The features the dataset holds (recorded in the pickle and then in checkpoints)."""
        profile = raw_profile(
            self.text_backbone,
            fps=self.extract.fps,
            hop_s=self.extract.hop_s,
            audio_extractor=self.extract.audio_extractor,
        )
        profile = replace(
            profile,
            text=TextProfile(self.text_backbone, self.max_text_tokens),
            max_clip_s=self.max_clip_s,
        )
        if self.voice_relative and profile.audio is not None:
            profile = replace(profile, audio=replace(profile.audio, normalise=SPEAKER_NORM))
        if not self.extract.use_faces:  # no vision features were extracted
            profile = profile.with_modalities(("text", "audio"))
        return profile


# ---------------------------------------------------------------------------------------------
# one clip


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
    from mercli.features.media import FfmpegNotFoundError
    from mercli.pipeline import load_or_extract

    started = time.perf_counter()
    try:
        features, cached = load_or_extract(path, config.clip_extract, front_end, config.use_cache)
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
        self.front_end = FrontEnd(config.clip_extract)
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
    from mercli.features.extract import decode_ahead

    engine = engine or EngineConfig(workers=config.workers)
    decoder = partial(decode_ahead, config=config.clip_extract, use_cache=config.use_cache)
    yield from run_clips(paths, partial(ClipPreparer, config), engine, decoder=decoder)


# ---------------------------------------------------------------------------------------------
# the run


def report_path(out: str | Path) -> Path:
    """Where the report of a dataset goes: ``dataset.pkl`` -> ``dataset.report.json``."""
    return Path(out).with_suffix(".report.json")


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
    feature_profile: FeatureProfile
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
            "feature_profile": self.feature_profile.to_dict(),
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
    from mercli.data.mmsa import build_dataset, write_mmsa
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
            outcomes[i] = ClipOutcome(reason=finder.unsafe(clip.id) or finder.not_found(clip.id))
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
    if rows and config.voice_relative:
        rows = relative_voices(rows)
    if rows:
        data = build_dataset(rows, config.feature_profile(), tokenizer, config.max_text_tokens)
        write_mmsa(out, data)
    report.seconds = time.perf_counter() - started
    text = dumps(report.to_dict(), indent=2)
    write_atomically(report_path(out), lambda f: f.write(text.encode() + b"\n"))
    return report


def relative_voices(
    rows: Sequence[tuple[Clip, UtteranceFeatures]],
) -> list[tuple[Clip, UtteranceFeatures]]:
    """``rows`` with each clip's audio frames standardised over all the clips of its video (as
    ``analyze`` reads a file's utterances; a video of one clip keeps no audio): the features
    the cache holds stay as extracted."""
    from mercli.data.clips import split_id
    from mercli.features.speaker_norm import relative

    videos = [split_id(clip.id)[0] for clip, _ in rows]
    audio = relative([u.audio for _, u in rows], videos)
    return [(clip, replace(u, audio=a)) for (clip, u), a in zip(rows, audio, strict=True)]


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
