"""Raw media to per-utterance predictions: decode -> ASR -> features -> batched model.

Each stage can be called on its own:

- :func:`extract`: one file's :class:`~mercli.features.extract.MediaFeatures`, through the
  feature cache (:mod:`mercli.features.cache`).
- :func:`make_batch`: utterances -> a :class:`~mercli.schema.Batch` for the model's modalities.
- :func:`predict`: utterances -> :class:`~mercli.prediction.Prediction` s, in batches.
- :class:`Analyzer`: all of it per file, turning a file's failure into a status with its reason.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mercli.features.extract import ExtractConfig, FrontEnd, MediaFeatures, UtteranceFeatures
from mercli.features.media import expand_inputs
from mercli.prediction import FileResult, ModelInfo, Prediction

if TYPE_CHECKING:
    from mercli.checkpoint import LoadedModel
    from mercli.schema import Batch


def load_or_extract(
    path: str | os.PathLike[str],
    config: ExtractConfig,
    front_end: FrontEnd | None = None,
    use_cache: bool = True,
    on_miss: Callable[[], None] | None = None,
) -> tuple[MediaFeatures, bool]:
    """Features of one file, from the cache when it holds them.

    ``on_miss``: called before the features are extracted (not when the cache holds them).

    Returns:
        (features, whether they came from the cache).

    Raises:
        MediaError: missing or undecodable file; OSError: unreadable file.
    """
    from mercli.features import cache
    from mercli.features import extract as front
    from mercli.features.media import MediaError

    if not Path(path).exists():
        raise MediaError(path, "file not found")
    if not Path(path).is_file():
        raise MediaError(path, "not a regular file")
    front_end = front_end or FrontEnd(config)

    def run(p: str | os.PathLike[str], c: ExtractConfig, sha256: str) -> MediaFeatures:
        if on_miss is not None:
            on_miss()
        return front.extract(p, c, front_end, sha256=sha256)

    return cache.cached_extract(path, config, run, use_cache=use_cache)


# ---------------------------------------------------------------------------------------------
# model


def _padded(arrays: Sequence[np.ndarray], d: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack ``(T_i, d)`` arrays into ``(B, T_max, d)`` (T_max >= 1) and a ``(B, T_max)`` mask
    (an empty array, whatever its width, is an all-masked row).

    Raises:
        ValueError: a non-empty array is not ``d`` wide.
    """
    steps = max([len(a) for a in arrays] + [1])
    x = np.zeros((len(arrays), steps, d), np.float32)
    mask = np.zeros((len(arrays), steps), bool)
    for i, a in enumerate(arrays):
        if len(a) == 0:
            continue
        if a.shape[-1] != d:
            raise ValueError(f"features {a.shape[-1]} wide where the model reads {d}")
        x[i, : len(a)] = a
        mask[i, : len(a)] = True
    return x, mask


def make_batch(
    utterances: Sequence[UtteranceFeatures], loaded: LoadedModel, use_cache: bool = True
) -> Batch:
    """The model inputs of some utterances, for the model's modalities only.

    text: token ids ``(B, T_t)`` long (tokenizer of the backbone, truncated as in training),
    or, with ``loaded.text_states``, the frozen backbone's states ``(B, T_t, H)`` float32 (from
    its cache unless ``use_cache`` is False);
    audio: ``(B, T_a, 35)`` (``(B, T_a, 384)`` for Whisper's encoder states); vision:
    ``(B, T_v, 154)`` with frames without a face masked. An utterance with no valid step of a
    modality (no face in any frame, no video) lacks it: the model scores it from the modalities
    it has.

    Raises:
        ValueError: the features are not the ones the model reads (made with another
            extractor than its feature profile's: see ``ExtractConfig.for_profile``).
    """
    import torch

    from mercli.model.text_backbone import tokenize
    from mercli.schema import Batch

    inputs: dict[str, torch.Tensor] = {}
    masks: dict[str, torch.Tensor] = {}
    for m in loaded.modalities:
        if m == "text" and loaded.text_states is not None:
            texts = [u.text for u in utterances]
            states = loaded.text_states.states(texts, use_cache)
            x, mask_np = _padded(states, states[0].shape[1])
            inputs[m], masks[m] = torch.from_numpy(x), torch.from_numpy(mask_np)
            continue
        if m == "text":
            ids, mask = tokenize(
                [u.text for u in utterances], loaded.tokenizer, loaded.max_text_tokens
            )
            inputs[m], masks[m] = ids, mask
            continue
        arrays = [u.audio if m == "audio" else u.vision for u in utterances]
        try:
            x, mask_np = _padded(arrays, loaded.model.config.encoder(m).d_in)
        except ValueError as error:
            profile = loaded.meta.feature_profile
            part = None if profile is None else getattr(profile, m)
            extractor = None if part is None else part.extractor
            raise ValueError(
                f"{m} {error} ({extractor or 'extractor not recorded'}): extract them with "
                "ExtractConfig.for_profile(<the checkpoint's feature profile>)"
            ) from error
        if m == "vision":
            for i, u in enumerate(utterances):  # frames without a face carry no data
                mask_np[i, : len(u.vision_mask)] &= u.vision_mask
        inputs[m], masks[m] = torch.from_numpy(x), torch.from_numpy(mask_np)
    return Batch(inputs, masks)


# Padded steps per model call (batch size x longest audio/vision sequence): attention memory
# grows with B x T^2, so a long input's many long utterances are scored in smaller batches.
MAX_BATCH_STEPS = 8192


def _steps(u: UtteranceFeatures) -> int:
    return max(len(u.audio), len(u.vision), 1)


def batch_spans(
    utterances: Sequence[UtteranceFeatures], batch_size: int, max_steps: int = MAX_BATCH_STEPS
) -> list[tuple[int, int]]:
    """(first, end) index ranges of consecutive utterances: at most ``batch_size`` each, and
    at most ``max_steps`` padded steps (count x longest), except a single longer utterance."""
    spans: list[tuple[int, int]] = []
    first, longest = 0, 0
    for i, u in enumerate(utterances):
        longest_with = max(longest, _steps(u))
        if i > first and (i - first >= batch_size or (i - first + 1) * longest_with > max_steps):
            spans.append((first, i))
            first, longest_with = i, _steps(u)
        longest = longest_with
    if len(utterances) > first:
        spans.append((first, len(utterances)))
    return spans


def model_audio(
    utterances: Sequence[UtteranceFeatures],
    loaded: LoadedModel,
    speakers: Sequence[Hashable] | None = None,
) -> list[np.ndarray]:
    """The audio frames the model reads of each utterance: its own, or, for a model that reads
    the voice relative to the speaker (its profile's ``audio.normalise``), the frames
    standardised over all of ``utterances`` of the same speaker (:mod:`mercli.features
    .speaker_norm`), empty (so the model scores without the voice) for a speaker with fewer
    than ``MIN_UTTERANCES`` utterances.

    ``speakers``: each utterance's speaker; by default the diarised speaker of its descriptors,
    and without diarisation all of them are one speaker.
    """
    from mercli.features.profile import SPEAKER_NORM, audio_normalisation
    from mercli.features.speaker_norm import relative

    arrays = [u.audio for u in utterances]
    if audio_normalisation(loaded.meta.feature_profile) != SPEAKER_NORM:
        return arrays
    if speakers is None:
        speakers = [u.descriptors.speaker for u in utterances]
    return relative(arrays, speakers)


def predict(
    utterances: Sequence[UtteranceFeatures],
    loaded: LoadedModel,
    batch_size: int = 32,
    use_cache: bool = True,
    timings: dict[str, float] | None = None,
    speakers: Sequence[Hashable] | None = None,
    audio: Sequence[np.ndarray] | None = None,
) -> list[Prediction]:
    """Score utterances in batches of at most ``batch_size`` utterances and
    :data:`MAX_BATCH_STEPS` padded steps (results do not depend on the batching).
    ``use_cache``: whether text states may come from (and go to) their disk cache.
    ``timings``: when given, wall seconds are added to its ``text`` (model inputs, with the text
    states), ``model`` (the forward passes) and ``voice`` (voice emotion) entries.
    ``speakers``: each utterance's speaker, for a model that reads the voice relative to the
    speaker (:func:`model_audio`); ``audio``: the audio frames the model reads instead of
    :func:`model_audio`'s (a live session's running statistics). The voice-emotion descriptor
    always reads the utterances' own frames.

    Returns:
        one :class:`Prediction` per utterance, same order.
    """
    import time

    import torch

    from mercli.features.vocal_emotion import vocal_emotion
    from mercli.metrics import seven_class_label

    spent = timings if timings is not None else {}
    predictions: list[Prediction] = []
    model = loaded.model
    if audio is None:
        audio = model_audio(utterances, loaded, speakers)
    if len(audio) != len(utterances):
        raise ValueError(f"{len(audio)} audio arrays for {len(utterances)} utterances")
    inputs = [
        u if a is u.audio else replace(u, audio=a) for u, a in zip(utterances, audio, strict=True)
    ]
    for first, end in batch_spans(inputs, batch_size):
        chunk = utterances[first:end]
        t0 = time.perf_counter()
        batch = make_batch(inputs[first:end], loaded, use_cache).to(loaded.device)
        t1 = time.perf_counter()
        spent["text"] = spent.get("text", 0.0) + t1 - t0
        with torch.inference_mode():
            output = model(batch)
            # what each modality moved the score: the score minus the score without it
            without = {m: model.prediction_without(output, m) for m in loaded.modalities}
        scores = output.prediction.float().clamp(-3.0, 3.0).cpu().numpy()  # (B,)
        gates = None if output.gate is None else output.gate.float().cpu().numpy()  # (B,)
        present = {m: output.present[m].cpu().numpy() for m in loaded.modalities}  # (B,) bool
        effects = {m: scores - p.float().clamp(-3.0, 3.0).cpu().numpy() for m, p in without.items()}
        t2 = time.perf_counter()
        spent["model"] = spent.get("model", 0.0) + t2 - t1
        for i, u in enumerate(chunk):
            score = float(scores[i])
            read = tuple(m for m in loaded.modalities if present[m][i])
            voice = vocal_emotion(u.audio)
            descriptors = u.descriptors  # completed with the voice emotion of its audio
            if voice is not None:
                descriptors = replace(
                    descriptors, voice_emotion=voice[0], voice_emotion_prob=voice[1]
                )
            predictions.append(
                Prediction(
                    index=first + i,
                    start_s=u.start_s,
                    end_s=u.end_s,
                    text=u.text,
                    score=score,
                    label=seven_class_label(score),
                    shared_weight=None if gates is None else float(gates[i]),
                    descriptors=descriptors,
                    modalities_read=read,
                    contributions={
                        m: float(effects[m][i]) if present[m][i] else None
                        for m in loaded.modalities
                    },
                )
            )
        spent["voice"] = spent.get("voice", 0.0) + time.perf_counter() - t2
    return predictions


def _voices_not_read(
    utterances: Sequence[UtteranceFeatures], predictions: Sequence[Prediction], loaded: LoadedModel
) -> int:
    """How many utterances with audio frames were scored without them."""
    if "audio" not in loaded.modalities:
        return 0
    return sum(
        bool(len(u.audio)) and "audio" not in p.modalities_read
        for u, p in zip(utterances, predictions, strict=True)
    )


def model_info(loaded: LoadedModel) -> ModelInfo:
    return ModelInfo(
        checkpoint=loaded.source,
        feature_profile=loaded.meta.feature_profile,
        modalities=loaded.modalities,
        text_backbone=loaded.model.config.text_backbone,
    )


# ---------------------------------------------------------------------------------------------
# files


@dataclass
class Analyzer:
    """Analyses files one by one with one loaded model and one front end.

    Attributes:
        loaded: the model (see :func:`mercli.checkpoint.load_model`), or a future of it: the
            front end of the first file then runs while the model is still loading.
        config: front-end settings.
        batch_size: utterances per model call.
        use_cache: read and write the feature cache.
        log: progress messages (stderr in the CLI).
        same_speaker: the files are one speaker's: a model that reads the voice relative to
            the speaker reads every file's utterances against all of them (:meth:`analyze`
            scores the files once all are extracted), not each file's against its own.
    """

    loaded: LoadedModel | Future[LoadedModel]
    config: ExtractConfig
    batch_size: int = 32
    use_cache: bool = True
    log: Callable[[str], None] = lambda message: None
    same_speaker: bool = False
    front_end: FrontEnd = field(init=False)
    frames: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.front_end = FrontEnd(self.config)

    @property
    def model(self) -> LoadedModel:
        """The loaded model, waiting for it if it is still loading (its errors surface here)."""
        if isinstance(self.loaded, Future):
            self.loaded = self.loaded.result()
        return self.loaded

    @property
    def info(self) -> ModelInfo:
        return model_info(self.model)

    def analyze_file(self, path: str | os.PathLike[str]) -> FileResult:
        """One file's result; a file that cannot be read or decoded gets a status and reason.

        Raises:
            FfmpegNotFoundError: no ffmpeg at all (nothing could be analysed).
        """
        found = self._features(path)
        if isinstance(found, FileResult):
            return found
        started = time.perf_counter()
        predictions = predict(found[0].utterances, self.model, self.batch_size, self.use_cache)
        return self._result(path, *found, predictions, time.perf_counter() - started)

    def _features(self, path: str | os.PathLike[str]) -> tuple[MediaFeatures, bool] | FileResult:
        """(features, whether from the cache), or the result of a file that cannot be read."""
        from mercli.features.media import FfmpegNotFoundError, MediaError

        try:
            features, cached = load_or_extract(
                path, self.config, self.front_end, self.use_cache, self._prefetch_text_backbone
            )
        except FfmpegNotFoundError:
            raise
        except MediaError as error:
            unreadable = error.reason == "file not found" or error.reason.startswith(
                ("unreadable", "not a regular file")
            )
            return FileResult(str(path), "unreadable" if unreadable else "error", error.reason)
        except OSError as error:
            return FileResult(
                str(path), "unreadable", f"{type(error).__name__}: {error.strerror or error}"
            )
        except (ValueError, RuntimeError) as error:  # reported per file, reason kept
            return FileResult(str(path), "error", f"{type(error).__name__}: {error}")
        self.frames[str(path)] = (features.frame_times_s, features.frame_mask)  # for timelines
        return features, cached

    def _prefetch_text_backbone(self) -> None:
        """Before features are extracted: start loading a text backbone that the model was
        loaded without (the front end's work hides it), once the model is there. A file whose
        features and text states are cached never loads it."""

        def start(loaded: LoadedModel) -> None:
            if loaded.text_states is not None:
                loaded.text_states.prefetch()

        if isinstance(self.loaded, Future):
            self.loaded.add_done_callback(
                lambda done: None if done.exception() else start(done.result())
            )
        else:
            start(self.loaded)

    def _result(
        self,
        path: str | os.PathLike[str],
        features: MediaFeatures,
        cached: bool,
        predictions: list[Prediction],
        model_s: float,
    ) -> FileResult:
        timings = {**features.timings_s, "model": model_s}
        unheard = _voices_not_read(features.utterances, predictions, self.model)
        if unheard:
            self.log(
                f"{path}: the voice of {unheard} utterance(s) not read: this model reads a "
                "voice relative to the same speaker's other utterances, and there were none"
            )
        reasons = {"no_speech": "no speech found in the audio", "no_audio": "no audio stream"}
        return FileResult(
            path=str(path),
            status=features.status,
            reason=reasons.get(features.status) or features.warning,
            predictions=predictions,
            sha256=features.sha256,
            duration_s=features.duration_s,
            has_audio=features.has_audio,
            has_video=features.has_video,
            descriptors=features.descriptors,
            cached=cached,
            timings_s=timings,
        )

    def analyze(self, paths: Sequence[str | os.PathLike[str]]) -> Iterator[FileResult]:
        """Results file by file, each as soon as it is done (with ``same_speaker``, once all
        are extracted)."""
        if self.same_speaker:
            yield from self._analyze_together(paths)
            return
        for i, path in enumerate(paths, start=1):
            self.log(f"[{i}/{len(paths)}] {path}")
            started = time.perf_counter()
            result = self.analyze_file(path)
            self._log_done(f"[{i}/{len(paths)}] {path}", result, time.perf_counter() - started)
            yield result

    def _log_done(self, where: str, result: FileResult, seconds: float) -> None:
        note = " (features from cache)" if result.cached else ""
        self.log(
            f"{where}: {result.status}, {len(result.predictions)} utterances in "
            f"{seconds:.1f} s{note}"
        )
        if result.is_analysed and result.reason:  # partial: decoding stopped early
            self.log(f"{where}: warning: {result.reason}")

    def _analyze_together(self, paths: Sequence[str | os.PathLike[str]]) -> Iterator[FileResult]:
        """Every file's features, then all their utterances scored as one speaker's."""
        found, seconds = [], []
        for i, path in enumerate(paths, start=1):
            self.log(f"[{i}/{len(paths)}] {path}")
            started = time.perf_counter()
            found.append(self._features(path))
            seconds.append(time.perf_counter() - started)
        utterances = [u for f in found if not isinstance(f, FileResult) for u in f[0].utterances]
        started = time.perf_counter()
        scored = predict(
            utterances, self.model, self.batch_size, self.use_cache, speakers=[0] * len(utterances)
        )
        share_s = (time.perf_counter() - started) / max(1, len(utterances))
        for i, (path, f) in enumerate(zip(paths, found, strict=True)):
            if isinstance(f, FileResult):
                result = f
            else:
                mine, scored = scored[: len(f[0].utterances)], scored[len(f[0].utterances) :]
                mine = [replace(p, index=k) for k, p in enumerate(mine)]
                result = self._result(path, *f, mine, share_s * len(mine))
            where = f"[{i + 1}/{len(paths)}] {path}"
            self._log_done(where, result, seconds[i] + result.timings_s.get("model", 0.0))
            yield result


def analyze(
    paths: Sequence[str | os.PathLike[str]],
    checkpoint: str = "default",
    config: ExtractConfig | None = None,
    device: str = "cpu",
    **options: Any,
) -> list[FileResult]:
    """Analyse media files in-process (what ``mer analyze`` does, without rendering).

    ``config`` defaults to the checkpoint's feature profile (its frame rate and hop).

    Raises:
        ProfileError: the checkpoint's features cannot be computed from raw media.
        CheckpointError: the checkpoint cannot be loaded.
    """
    from dataclasses import replace

    from mercli.checkpoint import load_model, open_checkpoint
    from mercli.features.profile import check_profile

    found = open_checkpoint(checkpoint)
    check_profile(found.meta.feature_profile)  # before loading weights
    if config is None:
        config = ExtractConfig.for_profile(found.meta.feature_profile, device=device)
    else:
        config = replace(config, device=device)
    analyzer = Analyzer(load_model(found, device, text_states=True), config, **options)
    return list(analyzer.analyze(expand_inputs(paths)))


# ---------------------------------------------------------------------------------------------
# many files on an engine (``--engine ray``)

Frames = tuple[np.ndarray, np.ndarray]  # (frame times in seconds, face mask) for timelines


class FileAnalyzer:
    """:meth:`Analyzer.analyze_file` with the model and front end loaded once (per process or
    Ray actor): path -> (its result, its frames for timelines or None).

    Args:
        checkpoint: a packaged name or a checkpoint folder (reachable where this runs).
        config: front-end settings.
        batch_size, use_cache: as :class:`Analyzer`'s.
        device: where the model and front end run instead of ``config.device`` (a Ray actor
            passes ``"cuda"`` when it holds a GPU, else ``"cpu"``); None keeps it.
    """

    def __init__(
        self,
        checkpoint: str,
        config: ExtractConfig,
        batch_size: int = 32,
        use_cache: bool = True,
        device: str | None = None,
    ) -> None:
        from dataclasses import replace

        from mercli.checkpoint import load_model
        from mercli.features.extract import load_transcriber

        config = replace(config, device=device or config.device)
        loaded = load_model(checkpoint, config.device)
        self.analyzer = Analyzer(loaded, config, batch_size, use_cache)
        self.analyzer.front_end.transcriber = load_transcriber(config)
        if config.use_faces:
            self.analyzer.front_end.faces()

    def __call__(self, path: Path) -> tuple[FileResult, Frames | None]:
        result = self.analyzer.analyze_file(path)
        return result, self.analyzer.frames.pop(str(path), None)


def analyze_on_engine(
    paths: Sequence[Path], checkpoint: str, analyzer: Analyzer, engine: Any
) -> Iterator[FileResult]:
    """What ``analyzer.analyze(paths)`` yields, with the files run on ``engine`` (an
    :class:`~mercli.engine.EngineConfig`), in the order of ``paths``; frames for timelines go
    to ``analyzer.frames``.

    Raises:
        EngineError: Ray is missing or unreachable, or a worker died.
        FfmpegNotFoundError: no ffmpeg where the files run.
    """
    from functools import partial

    from mercli.engine import run_clips

    if Path(checkpoint).exists():  # a folder: the workers may not share our working directory
        checkpoint = str(Path(checkpoint).absolute())
    factory = partial(
        FileAnalyzer, checkpoint, analyzer.config, analyzer.batch_size, analyzer.use_cache
    )
    from mercli.features.extract import decode_ahead

    decoder = partial(decode_ahead, config=analyzer.config, use_cache=analyzer.use_cache)
    for done, (i, (result, frames)) in enumerate(
        run_clips(paths, factory, engine, ordered=True, decoder=decoder), start=1
    ):
        result.path = str(paths[i])  # as given (the workers saw it absolute)
        if frames is not None:
            analyzer.frames[result.path] = frames
        note = " (features from cache)" if result.cached else ""
        analyzer.log(
            f"[{done}/{len(paths)}] {result.path}: {result.status}, "
            f"{len(result.predictions)} utterances{note}"
        )
        yield result
