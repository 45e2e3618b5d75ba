"""Per-speaker summary of one file's predictions (``mer analyze --speakers``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mercli.prediction import Prediction


@dataclass(frozen=True)
class SpeakerSummary:
    """One speaker's share of a file.

    Attributes:
        speaker: ``S1``, ``S2``, ... (order of first speech).
        speaking_s: summed duration of the speaker's utterances, seconds.
        n_utterances: how many utterances.
        mean_score: duration-weighted mean sentiment score, [-3, 3].
        expression: the speaker's dominant facial expression (most face-time-weighted over
            their utterances), or None when their face was never found.
        face_coverage: duration-weighted share of their utterances' frames with their face,
            [0, 1]; None without video or with faces off.
    """

    speaker: str
    speaking_s: float
    n_utterances: int
    mean_score: float
    expression: str | None
    face_coverage: float | None

    def to_dict(self) -> dict[str, Any]:
        from mercli.metrics import seven_class_label
        from mercli.prediction import LABEL_NAMES

        return {
            "speaker": self.speaker,
            "speaking_s": round(self.speaking_s, 3),
            "n_utterances": self.n_utterances,
            "mean_score": round(self.mean_score, 4),
            "mean_label_name": LABEL_NAMES[seven_class_label(self.mean_score)],
            "expression": self.expression,
            "face_coverage": None if self.face_coverage is None else round(self.face_coverage, 3),
        }


def _speaker_order(name: str) -> tuple[int, str]:
    return (int(name[1:]), name) if name[1:].isdigit() else (1 << 30, name)


def summarise_speakers(predictions: Sequence[Prediction]) -> list[SpeakerSummary] | None:
    """One summary per speaker, ``S1`` first; None when the utterances carry no speakers."""
    by_speaker: dict[str, list[Prediction]] = {}
    for p in predictions:
        if p.descriptors.speaker is not None:
            by_speaker.setdefault(p.descriptors.speaker, []).append(p)
    if not by_speaker:
        return None
    out = []
    for name in sorted(by_speaker, key=_speaker_order):
        ps = by_speaker[name]
        weights = [max(p.end_s - p.start_s, 1e-3) for p in ps]
        total = sum(weights)
        votes: dict[str, float] = {}
        for p, w in zip(ps, weights, strict=True):
            d = p.descriptors
            if d.expression is not None:
                votes[d.expression] = votes.get(d.expression, 0.0) + w * (d.face_coverage or 0.0)
        coverage = [(p.descriptors.face_coverage, w) for p, w in zip(ps, weights, strict=True)]
        known = [(c, w) for c, w in coverage if c is not None]
        out.append(
            SpeakerSummary(
                speaker=name,
                speaking_s=sum(p.end_s - p.start_s for p in ps),
                n_utterances=len(ps),
                mean_score=sum(w * p.score for p, w in zip(ps, weights, strict=True)) / total,
                expression=max(votes, key=lambda e: votes[e]) if votes else None,
                face_coverage=(
                    sum(c * w for c, w in known) / sum(w for _, w in known) if known else None
                ),
            )
        )
    return out
