"""What mer reports about an utterance or a file beside the model's reading.

One :class:`Descriptors` is filled by the front end (face coverage and expression from the
frames, pitch and energy from the audio, the speaker from diarization), carried by
:class:`~mercli.features.extract.UtteranceFeatures` and ``MediaFeatures`` (and their cache
entries), completed by :func:`mercli.pipeline.predict` (the voice emotion) and handed unchanged
to :class:`~mercli.prediction.Prediction` and :class:`~mercli.prediction.FileResult`, which
render it (``docs/analyze-schema.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

# What the front end finds per utterance (``mer extract`` prints these; cache entries hold them).
FRONT_END_FIELDS: tuple[str, ...] = (
    "face_coverage",
    "expression",
    "expression_prob",
    "pitch_hz",
    "energy_db",
)
# What a file has over all its frames (file results and cache entries).
FILE_FIELDS: tuple[str, ...] = ("face_coverage", "expression", "expression_prob")


@dataclass(frozen=True)
class Descriptors:
    """Observations beside the model's score; None where there was nothing to observe.

    Attributes:
        face_coverage: share of the sampled frames with the speaker's face, [0, 1]; None
            without video, with faces off, or when no frame was sampled.
        expression: the dominant facial expression (highest mean probability over the frames
            with a face), or None without any.
        expression_prob: its mean probability, [0, 1], or None.
        pitch_hz: mean pitch over voiced frames, or None when nothing is voiced.
        energy_db: RMS level of the window, dBFS.
        voice_emotion, voice_emotion_prob: the vocal emotion of the utterance's audio and its
            probability (:mod:`mercli.features.vocal_emotion`; None for windows under 0.2 s
            and before the model is run).
        speaker: ``S1``, ``S2``, ... with speakers on, else None.
    """

    face_coverage: float | None = None
    expression: str | None = None
    expression_prob: float | None = None
    pitch_hz: float | None = None
    energy_db: float | None = None
    voice_emotion: str | None = None
    voice_emotion_prob: float | None = None
    speaker: str | None = None

    def with_faces(self, mask: np.ndarray, expression_probs: np.ndarray) -> Descriptors:
        """These descriptors with the face coverage and dominant expression of some frames.

        Args:
            mask: bool ``(n_frames,)``, True where the face was found.
            expression_probs: float ``(n_frames, 7)`` expression probabilities (rows where
                ``mask`` is False are ignored).
        """
        from mercli.features.extract import dominant_expression

        mask = np.asarray(mask, bool)
        expression, prob = dominant_expression([np.asarray(expression_probs)[mask]])
        coverage = float(mask.mean()) if len(mask) else None  # nothing sampled is not "no face"
        return replace(self, face_coverage=coverage, expression=expression, expression_prob=prob)

    def to_dict(self, names: tuple[str, ...] | None = None) -> dict[str, Any]:
        """The fields (``names`` only, in that order, when given) as plain values."""
        values = asdict(self)
        return values if names is None else {n: values[n] for n in names}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Descriptors:
        """Descriptors from a mapping that may hold other keys (ignored) and lack some (None)."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})
