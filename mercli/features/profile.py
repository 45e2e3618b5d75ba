"""Feature profiles: which extractors made a model's inputs, and whether ``analyze`` can redo them.

A checkpoint records the profile of the features it was trained on (``CheckpointMeta
.feature_profile``, written by :func:`mercli.experiment.feature_profile` or by ``mer prepare``).
``mer analyze`` computes features from raw media with the extractors of :func:`raw_profile`; a
model trained on anything else would see inputs unlike its training data, so
:func:`check_profile` refuses it before any media work, saying what differs and what to do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from mercli.features.acoustic import D_AUDIO
from mercli.schema import MAX_TEXT_TOKENS, MODALITIES

RAW_PROFILE_NAME = "mer-raw-v1"
TEXT_ONLY_PROFILE_NAME = "text-only"
AUDIO_EXTRACTOR = "librosa"  # mer's acoustic features (mercli.features.acoustic)
# Whisper tiny.en's encoder states (mercli.features.whisper_states), 384 wide, kept literal here
WHISPER_AUDIO_EXTRACTOR = "whisper-encoder:tiny.en"
AUDIO_EXTRACTORS: dict[str, int] = {AUDIO_EXTRACTOR: D_AUDIO, WHISPER_AUDIO_EXTRACTOR: 384}
# `mer prepare --audio-features` -> the audio extractor
AUDIO_FEATURES: dict[str, str] = {"acoustic": AUDIO_EXTRACTOR, "whisper": WHISPER_AUDIO_EXTRACTOR}
VISION_EXTRACTOR = "mtcnn+fer-mini-xception+landmarks"
D_VISION = 154  # mercli.features.faces.D_VISION; kept literal so this module imports no torch
DEFAULT_FPS = 5.0
DEFAULT_HOP_S = 0.02
# AudioProfile.normalise: each speaker's frames standardised over all their speech
# (mercli.features.speaker_norm); the only normalisation mer knows
SPEAKER_NORM = "speaker"


class ProfileError(ValueError):
    """A checkpoint's feature profile that ``analyze`` cannot reproduce from raw media, or a
    profile that is not well formed."""


# The type of each stored scalar (widths, counts and durations must also be positive).
_KINDS: dict[str, type] = {
    "name": str,
    "extractor": str,
    "max_tokens": int,
    "d": int,
    "hop_s": float,
    "fps": float,
    "max_clip_s": float,
    "normalise": str,
}


def _checked(cls: type, data: Any, where: str) -> dict[str, Any]:
    """The scalar fields of ``cls`` found in ``data`` (other keys are ignored), type-checked."""
    if not isinstance(data, Mapping):
        raise ProfileError(f"{where} must be an object, found {type(data).__name__}")
    out: dict[str, Any] = {}
    for f in fields(cls):
        value: Any = data.get(f.name)
        kind = _KINDS.get(f.name)
        if value is None or kind is None:
            continue
        accepted = (int, float) if kind is float else (kind,)
        if isinstance(value, bool) or type(value) not in accepted:
            raise ProfileError(
                f"{where}.{f.name} must be of type {kind.__name__}, found {value!r:.40}"
            )
        if kind is not str and not value > 0:  # also NaN
            raise ProfileError(f"{where}.{f.name} must be positive, found {value!r:.40}")
        out[f.name] = float(value) if kind is float else value
    return out


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sorted(values.items()) if v is not None}


@dataclass(frozen=True)
class TextProfile:
    """How the text reached the model."""

    # the backbone (tokenizer + encoder) name or path, or a description of precomputed states
    extractor: str | None = None
    max_tokens: int | None = None  # tokenizer truncation, when recorded

    def to_dict(self) -> dict[str, Any]:
        return _without_none({"extractor": self.extractor, "max_tokens": self.max_tokens})


@dataclass(frozen=True)
class AudioProfile:
    """The acoustic features' extractor."""

    extractor: str | None = None  # ``librosa`` for mer's own; ``covarep`` ... for CMU's
    d: int | None = None  # feature width
    hop_s: float | None = None  # frame step, seconds
    # ``speaker``: read relative to the speaker (:data:`SPEAKER_NORM`); None: as extracted
    normalise: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _without_none(
            {
                "extractor": self.extractor,
                "d": self.d,
                "hop_s": self.hop_s,
                "normalise": self.normalise,
            }
        )


@dataclass(frozen=True)
class VisionProfile:
    """The visual features' extractor."""

    extractor: str | None = None  # mer's MTCNN + expression net + landmarks; ``facet`` ...
    d: int | None = None  # feature width
    fps: float | None = None  # frames sampled per second

    def to_dict(self) -> dict[str, Any]:
        return _without_none({"extractor": self.extractor, "d": self.d, "fps": self.fps})


@dataclass(frozen=True)
class FeatureProfile:
    """Which extractors made a model's (or a dataset's) inputs.

    Stored as a JSON object in ``checkpoint.json`` (``feature_profile``) and in ``mer prepare``
    pickles: :meth:`to_dict` writes that object (keys sorted, absent values left out) and
    :meth:`from_dict` reads it, checking the types.

    Attributes:
        name: ``mer-raw-v1`` (mer's extractors), ``text-only``, ``cmu-benchmark-<dataset>``.
        modalities: what goes to the model, canonical order.
        text, audio, vision: each modality's extractor, None where not recorded.
        max_clip_s: ``mer prepare``'s clip truncation, seconds.
    """

    name: str
    modalities: tuple[str, ...]
    text: TextProfile | None = None
    audio: AudioProfile | None = None
    vision: VisionProfile | None = None
    max_clip_s: float | None = None

    def __post_init__(self) -> None:
        ordered = tuple(m for m in MODALITIES if m in self.modalities)
        object.__setattr__(self, "modalities", ordered)

    @property
    def uses_only_text(self) -> bool:
        """Whether the model sees the transcript alone (audio and vision are descriptors)."""
        return self.modalities == ("text",)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``checkpoint.json`` and ``mer prepare`` pickles."""
        return _without_none(
            {
                "name": self.name,
                "modalities": list(self.modalities),
                "text": None if self.text is None else self.text.to_dict(),
                "audio": None if self.audio is None else self.audio.to_dict(),
                "vision": None if self.vision is None else self.vision.to_dict(),
                "max_clip_s": self.max_clip_s,
            }
        )

    @classmethod
    def from_dict(cls, data: Any, where: str = "feature_profile") -> FeatureProfile:
        """Read a stored profile; keys mer does not know are ignored.

        A profile that lists no ``modalities`` feeds the model those it has an entry for.

        Raises:
            ProfileError: not an object, or a value of the wrong type (naming it).
        """
        top = _checked(cls, data, where)
        parts: dict[str, Any] = {}
        for name, part in (
            ("text", TextProfile),
            ("audio", AudioProfile),
            ("vision", VisionProfile),
        ):
            if data.get(name) is not None:
                parts[name] = part(**_checked(part, data[name], f"{where}.{name}"))
        listed = data.get("modalities") or list(parts)
        if not isinstance(listed, list | tuple) or not all(isinstance(m, str) for m in listed):
            raise ProfileError(f"{where}.modalities must be a list of names, found {listed!r:.40}")
        return cls(name=top.pop("name", ""), modalities=tuple(listed), **parts, **top)

    def with_modalities(self, modalities: Sequence[str]) -> FeatureProfile:
        """The same extractors, feeding ``modalities`` to the model."""
        return replace(self, modalities=tuple(modalities))


def read_profile(data: Any, where: str = "feature_profile") -> FeatureProfile | None:
    """:meth:`FeatureProfile.from_dict`, with null or ``{}`` (nothing recorded) read as None."""
    if data is None or (isinstance(data, Mapping) and not data):
        return None
    return FeatureProfile.from_dict(data, where)


def raw_profile(
    text_extractor: str,
    fps: float = DEFAULT_FPS,
    hop_s: float = DEFAULT_HOP_S,
    audio_extractor: str = AUDIO_EXTRACTOR,
) -> FeatureProfile:
    """The canonical profile of features mer computes from raw video.

    Args:
        text_extractor: the text backbone (tokenizer + encoder) name or path.
        fps: frames per second sampled for the vision features.
        hop_s: acoustic frame step, seconds (Whisper's encoder states always step 0.02 s).
        audio_extractor: one of :data:`AUDIO_EXTRACTORS`.
    """
    if audio_extractor not in AUDIO_EXTRACTORS:
        raise ValueError(
            f"unknown audio extractor {audio_extractor!r}; expected one of {list(AUDIO_EXTRACTORS)}"
        )
    if audio_extractor == WHISPER_AUDIO_EXTRACTOR:
        hop_s = DEFAULT_HOP_S
    return FeatureProfile(
        name=RAW_PROFILE_NAME,
        modalities=MODALITIES,
        text=TextProfile(text_extractor),
        audio=AudioProfile(audio_extractor, AUDIO_EXTRACTORS[audio_extractor], hop_s),
        vision=VisionProfile(VISION_EXTRACTOR, D_VISION, fps),
    )


def text_only_profile(text_extractor: str) -> FeatureProfile:
    """The profile of a model that reads transcripts through ``text_extractor`` alone."""
    return FeatureProfile(TEXT_ONLY_PROFILE_NAME, ("text",), text=TextProfile(text_extractor))


def _describe(profile: FeatureProfile) -> str:
    parts = [
        f"{m}: {entry.extractor or '?'}"
        for m, entry in (
            ("text", profile.text),
            ("audio", profile.audio),
            ("vision", profile.vision),
        )
        if entry is not None
    ]
    return ", ".join(parts) or "no extractors recorded"


_ADVICE = (
    "train on raw videos with `mer prepare` + `mer train`, or use a text-only checkpoint "
    "(`mer train` on a transcript CSV)"
)


def check_profile(profile: FeatureProfile | None) -> None:
    """Raise :class:`ProfileError` unless ``analyze`` can compute this profile's features.

    Accepted: ``text-only`` profiles (only text goes to the model) and ``mer-raw-v1`` profiles
    whose audio and vision extractors and widths are mer's own (audio: either of
    :data:`AUDIO_EXTRACTORS`).

    Raises:
        ProfileError: with what differs and what to do instead.
    """
    if profile is None or not profile.name:
        raise ProfileError(
            "this checkpoint records no feature profile, so mer cannot tell which features it "
            f"was trained on; {_ADVICE}"
        )
    name = profile.name
    if name.startswith("cmu-benchmark"):
        dataset = name.removeprefix("cmu-benchmark").strip("-").upper() or "CMU"
        raise ProfileError(
            f"this checkpoint was trained on CMU-{dataset} benchmark features "
            f"({_describe(profile)}), which mer cannot compute from raw video; {_ADVICE}"
        )
    if name == TEXT_ONLY_PROFILE_NAME:
        if not profile.uses_only_text:
            raise ProfileError(
                f"a text-only profile must use the text modality alone, this one lists "
                f"{list(profile.modalities)}; the checkpoint is inconsistent"
            )
        return
    if name != RAW_PROFILE_NAME:
        raise ProfileError(
            f"unknown feature profile {name!r} ({_describe(profile)}); mer analyze computes "
            f"{RAW_PROFILE_NAME!r} or text-only features; {_ADVICE}"
        )
    _check_raw(profile)


def _check_raw(profile: FeatureProfile) -> None:
    expected = raw_profile(text_extractor="", audio_extractor=profile_audio_extractor(profile))
    differences = []
    for m in ("audio", "vision"):
        if m not in profile.modalities:
            continue
        got, want = getattr(profile, m), getattr(expected, m)
        for key in ("extractor", "d"):
            have = None if got is None else getattr(got, key)
            if have != getattr(want, key):
                differences.append(f"{m} {key} {have!r} (mer computes {getattr(want, key)!r})")
    normalisation = audio_normalisation(profile)
    if normalisation not in (None, SPEAKER_NORM):
        differences.append(f"audio normalise {normalisation!r} (mer knows {SPEAKER_NORM!r})")
    if differences:
        raise ProfileError(
            f"this checkpoint's features differ from what this version of mer computes: "
            f"{'; '.join(differences)}; re-extract with `mer prepare` and retrain"
        )


def profile_audio_extractor(profile: FeatureProfile | None) -> str:
    """The audio extractor ``analyze`` runs for a profile: the one it records when the model
    reads audio and mer knows the extractor, else mer's acoustic features (which also make the
    pitch, energy and voice-emotion descriptors)."""
    if profile is None or profile.audio is None or "audio" not in profile.modalities:
        return AUDIO_EXTRACTOR
    recorded = profile.audio.extractor
    return recorded if recorded in AUDIO_EXTRACTORS else AUDIO_EXTRACTOR


def audio_normalisation(profile: FeatureProfile | None) -> str | None:
    """How the model reads its audio frames (``AudioProfile.normalise``) when it reads audio:
    :data:`SPEAKER_NORM` or None (as extracted)."""
    if profile is None or profile.audio is None or "audio" not in profile.modalities:
        return None
    return profile.audio.normalise


def max_text_tokens(profile: FeatureProfile | None) -> int:
    """The tokenizer truncation a profile records (``text.max_tokens``), else the default."""
    if profile is None or profile.text is None or profile.text.max_tokens is None:
        return MAX_TEXT_TOKENS
    return profile.text.max_tokens
