"""Feature profiles: which extractors made a model's inputs, and whether ``analyze`` can redo them.

A checkpoint records the profile of the features it was trained on (``CheckpointMeta
.feature_profile``, written by :func:`mercli.experiment.feature_profile` or by ``mer prepare``).
``mer analyze`` computes features from raw media with the extractors of :func:`raw_profile`; a
model trained on anything else would see inputs unlike its training data, so
:func:`check_profile` refuses it before any media work, saying what differs and what to do.
"""

from __future__ import annotations

from typing import Any

from mercli.features.acoustic import D_AUDIO
from mercli.schema import MAX_TEXT_TOKENS, MODALITIES

RAW_PROFILE_NAME = "mer-raw-v1"
TEXT_ONLY_PROFILE_NAME = "text-only"
AUDIO_EXTRACTOR = "librosa"
VISION_EXTRACTOR = "mtcnn+fer-mini-xception+landmarks"
D_VISION = 154  # mercli.features.faces.D_VISION; kept literal so this module imports no torch
DEFAULT_FPS = 5.0
DEFAULT_HOP_S = 0.02


class ProfileError(ValueError):
    """A checkpoint's feature profile that ``analyze`` cannot reproduce from raw media."""


def raw_profile(
    text_extractor: str, fps: float = DEFAULT_FPS, hop_s: float = DEFAULT_HOP_S
) -> dict[str, Any]:
    """The canonical profile of features mer computes from raw video.

    Args:
        text_extractor: the text backbone (tokenizer + encoder) name or path.
        fps: frames per second sampled for the vision features.
        hop_s: acoustic frame step, seconds.
    """
    return {
        "name": RAW_PROFILE_NAME,
        "modalities": list(MODALITIES),
        "text": {"extractor": text_extractor},
        "audio": {"extractor": AUDIO_EXTRACTOR, "d": D_AUDIO, "hop_s": hop_s},
        "vision": {"extractor": VISION_EXTRACTOR, "d": D_VISION, "fps": fps},
    }


def profile_modalities(profile: dict[str, Any]) -> tuple[str, ...]:
    """The modalities a profile feeds to the model, in canonical order."""
    listed = profile.get("modalities") or [m for m in MODALITIES if m in profile]
    return tuple(m for m in MODALITIES if m in listed)


def _describe(profile: dict[str, Any]) -> str:
    parts = [
        f"{m}: {profile[m].get('extractor', '?')}"
        for m in MODALITIES
        if isinstance(profile.get(m), dict)
    ]
    return ", ".join(parts) or "no extractors recorded"


_ADVICE = (
    "train on raw videos with `mer prepare` + `mer train`, or use a text-only checkpoint "
    "(`mer train` on a transcript CSV)"
)


def check_profile(profile: dict[str, Any]) -> None:
    """Raise :class:`ProfileError` unless ``analyze`` can compute this profile's features.

    Accepted: ``text-only`` profiles (only text goes to the model) and ``mer-raw-v1`` profiles
    whose audio and vision extractors and widths are mer's own.

    Raises:
        ProfileError: with what differs and what to do instead.
    """
    name = str(profile.get("name") or "")
    if not profile or not name:
        raise ProfileError(
            "this checkpoint records no feature profile, so mer cannot tell which features it "
            f"was trained on; {_ADVICE}"
        )
    if name.startswith("cmu-benchmark"):
        dataset = name.removeprefix("cmu-benchmark").strip("-").upper() or "CMU"
        raise ProfileError(
            f"this checkpoint was trained on CMU-{dataset} benchmark features "
            f"({_describe(profile)}), which mer cannot compute from raw video; {_ADVICE}"
        )
    modalities = profile_modalities(profile)
    if name == TEXT_ONLY_PROFILE_NAME:
        if modalities != ("text",):
            raise ProfileError(
                f"a text-only profile must use the text modality alone, this one lists "
                f"{list(modalities)}; the checkpoint is inconsistent"
            )
        return
    if name != RAW_PROFILE_NAME:
        raise ProfileError(
            f"unknown feature profile {name!r} ({_describe(profile)}); mer analyze computes "
            f"{RAW_PROFILE_NAME!r} or text-only features; {_ADVICE}"
        )
    _check_raw(profile, modalities)


def _check_raw(profile: dict[str, Any], modalities: tuple[str, ...]) -> None:
    expected = raw_profile(text_extractor="")
    differences = []
    for m in ("audio", "vision"):
        if m not in modalities:
            continue
        got, want = profile.get(m) or {}, expected[m]
        for key in ("extractor", "d"):
            if got.get(key) != want[key]:
                differences.append(f"{m} {key} {got.get(key)!r} (mer computes {want[key]!r})")
    if differences:
        raise ProfileError(
            f"this checkpoint's features differ from what this version of mer computes: "
            f"{'; '.join(differences)}; re-extract with `mer prepare` and retrain"
        )


def max_text_tokens(profile: dict[str, Any] | None) -> int:
    """The tokenizer truncation a profile records (``text.max_tokens``), else the default."""
    text = (profile or {}).get("text")
    return int((text if isinstance(text, dict) else {}).get("max_tokens") or MAX_TEXT_TOKENS)


def uses_only_text(profile: dict[str, Any]) -> bool:
    """Whether the model sees the transcript alone (audio and vision are only descriptors)."""
    return profile_modalities(profile) == ("text",)
