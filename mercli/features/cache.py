"""Feature files and the feature cache.

A :class:`~mercli.features.extract.MediaFeatures` is stored as one ``.npz``: numeric arrays
(``u<i>_audio``, ``u<i>_vision``, ``u<i>_vision_mask``, ``frame_times_s``, ``frame_mask``) plus
``meta``, a JSON string with everything else. Loading uses ``allow_pickle=False``: a feature file
cannot run code. ``mer extract -o`` writes the same format.

The cache lives in ``$XDG_CACHE_HOME/mer/features`` (default ``~/.cache/mer/features``), keyed by
the sha256 of the file's content and of the extractor configuration and versions, so a renamed
file hits and a changed setting misses. Entries are written atomically (temporary file, then
``os.replace``), so a crashed run never leaves a half-written entry. An entry that cannot be read
all the same (truncated, bit-flipped, empty: another program, a full disk) is removed and its
features extracted again; a cache that cannot be written (read-only, full) is a warning, and the
features computed are used all the same.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mercli.atomic import write_atomically
from mercli.descriptors import FILE_FIELDS, FRONT_END_FIELDS, Descriptors
from mercli.features.extract import (
    FEATURES_VERSION,
    ExtractConfig,
    MediaFeatures,
    UtteranceFeatures,
    package_version,
)

log = logging.getLogger(__name__)

FILE_FORMAT = "mer-features"
FILE_FORMAT_VERSION = 1
_CHUNK_BYTES = 1 << 20


class FeatureFileError(ValueError):
    """A feature file that is not one mer wrote, or of another format version."""


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mer/features``, or ``~/.cache/mer/features``."""
    from mercli.paths import mer_cache

    return mer_cache("features")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's content, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def extractor_versions() -> dict[str, str]:
    """Versions that change extracted features: mer's feature code and the libraries it uses."""
    from mercli import __version__

    versions = {"mercli": __version__, "features": str(FEATURES_VERSION)}
    for package in ("openai-whisper", "librosa", "facenet-pytorch", "fer"):
        versions[package] = package_version(package)
    return versions


def cache_key(sha256: str, config: ExtractConfig) -> str:
    """Hex digest of the media content hash, the settings, the kind of extraction
    (``config.cache_scope``: whole-clip features are not per-utterance ones) and the extractor
    versions."""
    identity: dict[str, Any] = {
        "media": sha256,
        "config": config.cache_fields(),
        "versions": extractor_versions(),
    }
    if config.cache_scope:
        identity["scope"] = config.cache_scope
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def cache_path(sha256: str, config: ExtractConfig) -> Path:
    return cache_dir() / f"{cache_key(sha256, config)}.npz"


def cached_extract(
    path: str | os.PathLike[str],
    config: ExtractConfig,
    extract: Callable[[str | os.PathLike[str], ExtractConfig, str], MediaFeatures],
    use_cache: bool = True,
) -> tuple[MediaFeatures, bool]:
    """Features of ``path`` from the cache, else from ``extract`` (then stored).

    Args:
        path: the media file.
        config: front-end settings (part of the key).
        extract: ``(path, config, sha256) -> MediaFeatures``, run on a miss.
        use_cache: False skips both reading and writing the cache.

    Returns:
        (features, whether they came from the cache).
    """
    sha256 = file_sha256(path)
    if not use_cache:
        return extract(path, config, sha256), False
    entry = cache_path(sha256, config)
    features = read_entry(entry)
    if features is not None:
        features.path = str(path)
        features.timings_s = {}  # nothing was extracted this time
        return features, True
    features = extract(path, config, sha256)
    store_entry(features, entry)
    return features, False


_warned: set[str] = set()


def _warn_once(key: str, message: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message, *args)


def read_entry(entry: Path) -> MediaFeatures | None:
    """The features of a cache entry, or None when there is none or it cannot be read (then
    it is removed, with a warning: it is extracted again)."""
    if not entry.is_file():
        return None
    try:
        return read_features(entry)
    except Exception as error:
        with contextlib.suppress(OSError):
            entry.unlink(missing_ok=True)
        log.warning(
            "feature cache entry %s is damaged (%s: %s); extracting again",
            entry,
            type(error).__name__,
            str(error).splitlines()[0][:120] if str(error) else "no details",
        )
        return None


def store_entry(features: MediaFeatures, entry: Path) -> bool:
    """Write a cache entry; a cache that cannot be written is a warning (once per folder), not a
    failure. Returns whether it was written."""
    try:
        write_features(features, entry)
    except OSError as error:
        _warn_once(
            str(entry.parent),
            "cannot write the feature cache in %s (%s); features are not cached",
            entry.parent,
            error.strerror or type(error).__name__,
        )
        return False
    return True


# ---------------------------------------------------------------------------------------------
# the .npz format

# The meta entry holds these keys (the descriptors' flat, beside the other fields).
_UTTERANCE_FIELDS = ("start_s", "end_s", "text")
_UTTERANCE_DESCRIPTORS = (*FRONT_END_FIELDS, "speaker")
_MEDIA_FIELDS = ("path", "sha256", "status", "duration_s", "has_audio", "has_video",
                 "timings_s", "warning")  # fmt: skip


def _arrays(features: MediaFeatures) -> dict[str, np.ndarray]:
    meta = {
        "format": FILE_FORMAT,
        "format_version": FILE_FORMAT_VERSION,
        **{k: getattr(features, k) for k in _MEDIA_FIELDS},
        **features.descriptors.to_dict(FILE_FIELDS),
        "utterances": [
            {
                **{k: getattr(u, k) for k in _UTTERANCE_FIELDS},
                **u.descriptors.to_dict(_UTTERANCE_DESCRIPTORS),
            }
            for u in features.utterances
        ],
    }
    arrays = {
        "meta": np.array(json.dumps(meta)),
        "frame_times_s": np.asarray(features.frame_times_s, np.float64),
        "frame_mask": np.asarray(features.frame_mask, bool),
    }
    for i, u in enumerate(features.utterances):
        arrays[f"u{i}_audio"] = np.asarray(u.audio, np.float32)
        arrays[f"u{i}_vision"] = np.asarray(u.vision, np.float32)
        arrays[f"u{i}_vision_mask"] = np.asarray(u.vision_mask, bool)
    return arrays


def write_features(features: MediaFeatures, path: str | os.PathLike[str]) -> Path:
    """Write ``features`` to one ``.npz`` at ``path``, atomically."""
    arrays = _arrays(features)
    return write_atomically(path, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]


def _meta(data: Any, path: Path) -> dict[str, Any]:
    if "meta" not in data.files:
        raise FeatureFileError(f"{path}: not a mer feature file (no meta entry)")
    meta = json.loads(str(data["meta"][()]))
    if meta.get("format") != FILE_FORMAT or meta.get("format_version") != FILE_FORMAT_VERSION:
        raise FeatureFileError(f"{path}: not a mer feature file of format {FILE_FORMAT_VERSION}")
    return meta


def read_features(path: str | os.PathLike[str]) -> MediaFeatures:
    """Load a feature file written by :func:`write_features` (no pickle involved).

    Raises:
        FeatureFileError: not a mer feature file, or a damaged one (naming the file).
        OSError: it cannot be read.
    """
    path = Path(path)
    try:
        return _read_features(path)
    except (FeatureFileError, OSError):
        raise
    except Exception as error:
        detail = str(error).splitlines()[0][:160] if str(error) else "no details"
        raise FeatureFileError(
            f"{path}: damaged feature file ({type(error).__name__}: {detail})"
        ) from error


def _read_features(path: Path) -> MediaFeatures:
    with np.load(path, allow_pickle=False) as data:
        meta = _meta(data, path)
        utterances = [
            UtteranceFeatures(
                audio=data[f"u{i}_audio"],
                vision=data[f"u{i}_vision"],
                vision_mask=data[f"u{i}_vision_mask"],
                descriptors=Descriptors.from_dict(u),
                **{k: u[k] for k in _UTTERANCE_FIELDS},
            )
            for i, u in enumerate(meta.pop("utterances"))
        ]
        frame_times_s, frame_mask = data["frame_times_s"], data["frame_mask"]
    meta.setdefault("warning", None)  # entries written before it was recorded
    kwargs: dict[str, Any] = {k: meta[k] for k in _MEDIA_FIELDS}
    return MediaFeatures(
        **kwargs,
        utterances=utterances,
        frame_times_s=frame_times_s,
        frame_mask=frame_mask,
        descriptors=Descriptors.from_dict({k: meta[k] for k in FILE_FIELDS}),
    )
