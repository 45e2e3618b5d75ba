"""What ``mer analyze`` reports: one :class:`Prediction` per utterance, one :class:`FileResult`
per file. Both the Rich table and the JSON come from these dataclasses, so they cannot drift.
The JSON layout is documented in ``docs/analyze-schema.md`` (``schema_version`` 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from mercli.descriptors import Descriptors
from mercli.features.profile import FeatureProfile

SCHEMA_VERSION = 2
FileStatus = Literal["ok", "no_speech", "no_audio", "unreadable", "error"]
ANALYSED_STATUSES: tuple[str, ...] = ("ok", "no_speech", "no_audio")  # a result, not a failure
LABEL_NAMES: dict[int, str] = {
    -3: "strongly negative",
    -2: "negative",
    -1: "weakly negative",
    0: "neutral",
    1: "weakly positive",
    2: "positive",
    3: "strongly positive",
}


def polarity(label: int) -> str:
    """``positive`` / ``negative`` / ``neutral`` from the 7-class label (|score| < 0.5: neutral)."""
    return "positive" if label > 0 else "negative" if label < 0 else "neutral"


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


@dataclass(frozen=True)
class Prediction:
    """The model's reading of one utterance, with descriptors kept apart from it.

    Attributes:
        index: position of the utterance in its file.
        start_s, end_s: span, seconds from the start of the media.
        text: the transcript.
        score: sentiment in [-3, 3] (the model's regression output, clipped).
        label: the 7-class label, round(score) in -3..3.
        shared_weight: gate gamma, the weight of the shared branch (None without SGAFF).
        descriptors: what was observed beside the score (face coverage, facial expression,
            pitch, energy, voice emotion, speaker: :class:`~mercli.descriptors.Descriptors`).
        modalities_read: the model's modalities this utterance had (a video without a face in
            the window is read without vision).
        contributions: per modality of the model, the score minus the score with that modality
            left out (both clipped to [-3, 3]); None for a modality the utterance lacked.
    """

    index: int
    start_s: float
    end_s: float
    text: str
    score: float
    label: int
    shared_weight: float | None
    descriptors: Descriptors = field(default_factory=Descriptors)
    modalities_read: tuple[str, ...] = ()
    contributions: dict[str, float | None] = field(default_factory=dict)

    @property
    def label_name(self) -> str:
        return LABEL_NAMES[self.label]

    @property
    def polarity(self) -> str:
        return polarity(self.label)

    @property
    def specific_weight(self) -> float | None:
        return None if self.shared_weight is None else 1.0 - self.shared_weight

    def to_dict(self) -> dict[str, Any]:
        weights = None
        if self.shared_weight is not None:
            weights = {
                "shared": _round(self.shared_weight, 4),
                "specific": _round(self.specific_weight, 4),
            }
        d = self.descriptors
        return {
            "index": self.index,
            "start_s": _round(self.start_s),
            "end_s": _round(self.end_s),
            "text": self.text,
            "speaker": d.speaker,
            "score": _round(self.score, 4),
            "polarity": self.polarity,
            "label": self.label,
            "label_name": self.label_name,
            "branch_weights": weights,
            "modalities_read": list(self.modalities_read),
            "contributions": {m: _round(v, 4) for m, v in self.contributions.items()},
            "presence": {"speech": True, "face_coverage": _round(d.face_coverage)},
            "descriptors": {
                "expression": d.expression,
                "expression_prob": _round(d.expression_prob),
                "pitch_hz": _round(d.pitch_hz, 1),
                "energy_db": _round(d.energy_db, 1),
                "voice_emotion": d.voice_emotion,
                "voice_emotion_prob": _round(d.voice_emotion_prob),
            },
        }


@dataclass
class FileResult:
    """One analysed (or failed) file.

    Attributes:
        path: as given on the command line (or found in a directory).
        status: ``ok``, ``no_speech``, ``no_audio``, ``unreadable`` or ``error``.
        reason: why, for anything but ``ok`` (None for ok).
        predictions: per utterance, time order.
        duration_s: container duration (None when unknown or unreadable).
        descriptors: face coverage and dominant expression over the frames faces were looked
            for in (the front end's file descriptors).
        cached: the features came from the cache.
        timings_s: seconds per stage (decode, asr, audio, faces, model).
    """

    path: str
    status: FileStatus
    reason: str | None = None
    predictions: list[Prediction] = field(default_factory=list)
    sha256: str | None = None
    duration_s: float | None = None
    has_audio: bool | None = None
    has_video: bool | None = None
    descriptors: Descriptors = field(default_factory=Descriptors)
    cached: bool = False
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def is_analysed(self) -> bool:
        return self.status in ANALYSED_STATUSES

    @property
    def mean_score(self) -> float | None:
        """Duration-weighted mean score over the utterances (None without any)."""
        if not self.predictions:
            return None
        weights = [max(p.end_s - p.start_s, 1e-3) for p in self.predictions]
        total = sum(w * p.score for w, p in zip(weights, self.predictions, strict=True))
        return total / sum(weights)

    def summary(self) -> dict[str, Any]:
        from mercli.metrics import seven_class_label

        mean = self.mean_score
        return {
            "n_utterances": len(self.predictions),
            "speech_s": _round(sum(p.end_s - p.start_s for p in self.predictions)),
            "mean_score": _round(mean, 4),
            "mean_label_name": None if mean is None else LABEL_NAMES[seven_class_label(mean)],
            "face_coverage": _round(self.descriptors.face_coverage),
            "expression": self.descriptors.expression,
            "expression_prob": _round(self.descriptors.expression_prob),
        }

    def speaker_summaries(self) -> list[dict[str, Any]] | None:
        """Per-speaker summaries (``mer analyze --speakers``); None without speakers."""
        from mercli.speaker_report import summarise_speakers

        found = summarise_speakers(self.predictions)
        return None if found is None else [s.to_dict() for s in found]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "status": self.status,
            "reason": self.reason,
            "sha256": self.sha256,
            "duration_s": _round(self.duration_s),
            "streams": {"audio": self.has_audio, "video": self.has_video},
            "cached": self.cached,
            "summary": self.summary(),
            "speakers": self.speaker_summaries(),
            "utterances": [p.to_dict() for p in self.predictions],
        }

    def to_lines(self, model: ModelInfo) -> list[dict[str, Any]]:
        """The ``--jsonl`` records: one per utterance, or one with ``utterance: null``."""
        base = {
            "schema_version": SCHEMA_VERSION,
            "file": self.path,
            "status": self.status,
            "reason": self.reason,
            "modalities": list(model.modalities),
        }
        if not self.predictions:
            return [{**base, "utterance": None}]
        return [{**base, "utterance": p.to_dict()} for p in self.predictions]


@dataclass(frozen=True)
class ModelInfo:
    """Which model produced the predictions, and from which inputs."""

    checkpoint: str
    feature_profile: FeatureProfile | None
    modalities: tuple[str, ...]
    text_backbone: str | None

    @property
    def text_only(self) -> bool:
        return self.modalities == ("text",)

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "feature_profile": {}
            if self.feature_profile is None
            else self.feature_profile.to_dict(),
            "modalities": list(self.modalities),
            "text_only": self.text_only,
            "text_backbone": self.text_backbone,
        }


def analysis_document(model: ModelInfo, files: list[FileResult]) -> dict[str, Any]:
    """The single ``--json`` document."""
    from mercli import __version__

    return {
        "schema_version": SCHEMA_VERSION,
        "mer_version": __version__,
        "model": model.to_dict(),
        "files": [f.to_dict() for f in files],
    }
