"""Raw media -> per-utterance features, in stages that can be called on their own.

1. :func:`decode_audio`: 16 kHz mono waveform, or None when the file has no audio stream.
2. :func:`transcribe_audio`: Whisper segments -> utterances (:mod:`mercli.features.asr`).
3. :func:`utterance_audio`: acoustic features (or Whisper's encoder states, when
   ``ExtractConfig.audio_extractor`` asks for them: :mod:`mercli.features.whisper_states`) +
   pitch/energy descriptors per utterance.
4. :func:`utterance_vision`: frames streamed once from ffmpeg, each assigned to the utterance
   window it falls in as it arrives (:func:`assign_frames`); faces and expressions per window.

:func:`extract` runs them all and returns a :class:`MediaFeatures`. No stage holds every frame:
memory holds the frames of one utterance window (at most ``max_utterance_s * fps``).

Whole-clip mode (``ExtractConfig.clip_s``, what ``mer prepare`` uses on labelled clips): no ASR;
one utterance over the first ``clip_s`` seconds, its frames described in windows of
``DESCRIPTOR_WINDOW_S`` (bounded memory) and concatenated.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from mercli.descriptors import Descriptors
from mercli.features.acoustic import D_AUDIO
from mercli.features.asr import Utterance
from mercli.features.media import SAMPLE_RATE_HZ, DecodedMedia, Frame, MediaError, MediaInfo
from mercli.features.profile import (
    AUDIO_EXTRACTOR,
    AUDIO_EXTRACTORS,
    D_VISION,
    DEFAULT_FPS,
    DEFAULT_HOP_S,
    FeatureProfile,
    profile_audio_extractor,
)

if TYPE_CHECKING:
    from mercli.features.faces import VisualFeatures
    from mercli.features.frame_faces import FaceWorker

log = logging.getLogger(__name__)

FEATURES_VERSION = 1  # bump when extracted features change: cached features are then redone
Status = Literal["ok", "no_speech", "no_audio"]
Transcriber = Callable[[np.ndarray], list[Utterance]]
DESCRIPTOR_WINDOW_S = 10.0  # without speech, faces are described over chunks this long
MAX_UNKNOWN_DURATION_S = 4 * 3600.0  # chunks cover this much when the container has no duration
CLIP_SCOPE = "prepare-clip-v1"  # cache scope of whole-clip features (see ExtractConfig.clip_s)


@dataclass(frozen=True)
class ExtractConfig:
    """Front-end settings; together with the versions they key the feature cache."""

    fps: float = DEFAULT_FPS  # video frames sampled per second for faces
    max_side: int = 640  # longer side of decoded frames, pixels
    hop_s: float = DEFAULT_HOP_S  # acoustic frame step, seconds
    whisper: str = "tiny.en"  # Whisper model name or checkpoint path
    asr: str = "auto"  # Whisper backend: ct2, ct2-int8 (faster-whisper), torch, or auto
    language: str | None = "en"  # spoken language for multilingual Whisper (None: detect it)
    use_faces: bool = True  # False: no face detection (vision features empty)
    max_utterance_s: float = 15.0  # longer Whisper segments are cut at word boundaries
    device: str = "cpu"  # where Whisper, MTCNN and the expression net run
    use_speakers: bool = False  # diarize: a speaker per utterance, cut at changes of speaker
    n_speakers: int | None = None  # with use_speakers: how many voices (None: decide)
    clip_s: float | None = None  # whole-clip mode: one utterance over the first clip_s seconds
    # Faces searched in a background thread while Whisper transcribes, then grouped by
    # utterance (:mod:`mercli.features.frame_faces`), instead of window by window after it:
    # on, off, or auto = on when torch has 2 or more threads (with one, the overlap would take
    # a second core that was not given). Not with speakers or in whole-clip mode. Keyframes then
    # lie on the file's grid, not each window's: features differ within the reference test's
    # tolerances, so the cache does not tell the two apart.
    overlap_faces: Literal["auto", "on", "off"] = "auto"
    # The audio branch's input: mer's acoustic features (librosa) or Whisper tiny.en's encoder
    # states (mercli.features.whisper_states); a checkpoint's profile says which it reads.
    audio_extractor: str = AUDIO_EXTRACTOR

    def __post_init__(self) -> None:
        if self.n_speakers is not None and self.n_speakers < 1:
            raise ValueError(f"n_speakers must be >= 1, got {self.n_speakers}")
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.hop_s <= 0:
            raise ValueError(f"hop_s must be positive, got {self.hop_s}")
        if self.clip_s is not None and self.clip_s <= 0:
            raise ValueError(f"clip_s must be positive, got {self.clip_s}")
        if self.overlap_faces not in ("auto", "on", "off"):
            raise ValueError(f"overlap_faces must be auto, on or off, got {self.overlap_faces!r}")
        if self.audio_extractor not in AUDIO_EXTRACTORS:
            raise ValueError(
                f"audio_extractor must be one of {list(AUDIO_EXTRACTORS)}, "
                f"got {self.audio_extractor!r}"
            )
        from mercli.features.asr_ct2 import resolve_backend

        resolve_backend(self.asr, self.device, self.whisper)  # raises on an unknown name
        if self.language is not None:
            from mercli.features.asr import language_code

            object.__setattr__(self, "language", language_code(self.language))

    @property
    def asr_backend(self) -> str:
        """``asr`` with ``auto`` resolved for this device and model (ct2, ct2-int8, torch)."""
        from mercli.features.asr_ct2 import resolve_backend

        return resolve_backend(self.asr, self.device, self.whisper)

    @property
    def use_face_overlap(self) -> bool:
        """Whether faces are searched alongside Whisper (``overlap_faces``, ``auto`` resolved
        now: torch's thread count may change between files)."""
        if self.clip_s is not None or self.use_speakers or not self.use_faces:
            return False
        if self.overlap_faces == "auto":
            import torch

            return torch.get_num_threads() >= 2
        return self.overlap_faces == "on"

    @property
    def cache_scope(self) -> str:
        """The kind of extraction, part of the cache key: whole-clip features are not
        per-utterance ones (empty for per-utterance extraction)."""
        return "" if self.clip_s is None else f"{CLIP_SCOPE}:max_clip_s={self.clip_s:g}"

    @classmethod
    def for_profile(
        cls, profile: FeatureProfile | None, fps: float | None = None, **fields: Any
    ) -> ExtractConfig:
        """The settings that make a checkpoint's features: the profile's frame rate, hop and
        audio extractor (``fps`` overrides the frame rate when given), the rest from ``fields``
        or defaults."""
        vision = None if profile is None else profile.vision
        audio = None if profile is None else profile.audio
        return cls(
            fps=fps or (vision and vision.fps) or DEFAULT_FPS,
            hop_s=(audio and audio.hop_s) or DEFAULT_HOP_S,
            audio_extractor=profile_audio_extractor(profile),
            **fields,
        )

    def cache_fields(self) -> dict[str, Any]:
        """What changes the features (the device does not)."""
        fields = asdict(self)
        fields.pop("device")
        fields.pop("overlap_faces")  # the same features within tolerances (see the field)
        if self.audio_extractor == AUDIO_EXTRACTOR:  # keys made before the field stay valid
            fields.pop("audio_extractor")
        else:  # Whisper's states changed with their encoder window
            from mercli.features.whisper_states import STATES_VERSION

            fields["states_version"] = STATES_VERSION
        if not self.use_speakers:  # keys of files analysed without speakers stay as they were
            fields.pop("use_speakers")
            fields.pop("n_speakers")
        else:  # the voice encoder's weights come with its package
            fields["voice_encoder"] = package_version("resemblyzer")
        fields.pop("clip_s")  # in cache_scope
        fields["asr"] = self.asr_backend  # the backends' transcripts differ slightly
        if self.whisper.endswith(".en"):  # English-only models ignore the language
            fields.pop("language")
        if os.path.isfile(self.whisper):  # a checkpoint path: its identity is its size and age
            stat = os.stat(self.whisper)
            fields["whisper"] = f"{os.path.abspath(self.whisper)}:{stat.st_size}:{stat.st_mtime_ns}"
        return fields


def package_version(name: str) -> str:
    """The installed version of a distribution, or ``absent``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "absent"


@dataclass
class UtteranceFeatures:
    """One utterance's model inputs and descriptors.

    Attributes:
        start_s, end_s, text: the Whisper utterance.
        audio: float32 ``(n_audio_frames, 35)`` acoustic features (hop ``hop_s``), or Whisper's
            encoder states ``(n_steps, 384)`` (hop 0.02 s) with its ``audio_extractor``.
        vision: float32 ``(n_video_frames, 154)`` face features; rows where ``vision_mask`` is
            False are zeros. ``(0, 154)`` without video or with faces off.
        vision_mask: bool ``(n_video_frames,)``, True where the speaker's face was found.
        descriptors: face coverage and expression of the window's frames, pitch and energy of
            its audio, the speaker with speakers on (``ExtractConfig.use_speakers``).
    """

    start_s: float
    end_s: float
    text: str
    audio: np.ndarray
    vision: np.ndarray
    vision_mask: np.ndarray
    descriptors: Descriptors = field(default_factory=Descriptors)


@dataclass
class MediaFeatures:
    """Everything the front end found in one file.

    Attributes:
        path: the media file.
        sha256: hex digest of its content.
        status: ``ok`` (utterances found), ``no_speech`` or ``no_audio``.
        duration_s: container duration, seconds (None when unknown).
        has_audio, has_video: streams present.
        utterances: per utterance features, time order.
        frame_times_s: float64 ``(n_frames,)`` times of the frames faces were looked for in.
        frame_mask: bool ``(n_frames,)``: a face was found there.
        descriptors: face coverage and dominant expression over those frames (None without
            video, with faces off, or when no frame was sampled; the rest is per utterance).
        timings_s: seconds per stage (decode, asr, audio, faces, and speakers when on) when
            extracted, {} when cached. With faces searched alongside Whisper
            (``ExtractConfig.overlap_faces``) ``faces`` is the time that search took while the
            other stages ran, so the stages add up to more than the whole, and ``faces_wait``
            how long the rest then waited for it.
        warning: what makes the result partial (decoding stopped early), else None.
    """

    path: str
    sha256: str
    status: Status
    duration_s: float | None
    has_audio: bool
    has_video: bool
    utterances: list[UtteranceFeatures] = field(default_factory=list)
    frame_times_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    frame_mask: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    descriptors: Descriptors = field(default_factory=Descriptors)
    timings_s: dict[str, float] = field(default_factory=dict)
    warning: str | None = None


@dataclass
class FrontEnd:
    """Loaded front-end models; each is loaded on first use.

    Attributes:
        config: the settings.
        transcriber: audio ``(n_samples,)`` -> utterances; default Whisper ``config.whisper``.
        face_models: (MTCNN, expression net); default the packaged weights on ``config.device``.
        states_model: the Whisper whose encoder states are the audio input with
            ``config.audio_extractor`` Whisper's (default the transcriber's own when it is
            tiny.en on ct2, else tiny.en loaded apart).
    """

    config: ExtractConfig
    transcriber: Transcriber | None = None
    face_models: tuple[Any, Any] | None = None
    states_model: Any = None

    def transcribe(self, audio: np.ndarray) -> list[Utterance]:
        if self.transcriber is None:
            self.transcriber = load_transcriber(self.config)
        return self.transcriber(audio)

    def transcribe_draft(self, audio: np.ndarray) -> list[Utterance]:
        """A cheaper transcript, for drafts that are compared and redone (live early emission):
        the transcriber's ``draft`` when it has one (the ct2 backend's shorter encoder window,
        :class:`~mercli.features.asr_ct2.Ct2Transcriber`), else :meth:`transcribe`."""
        if self.transcriber is None:
            self.transcriber = load_transcriber(self.config)
        draft = getattr(self.transcriber, "draft", None)
        return draft(audio) if draft is not None else self.transcriber(audio)

    def faces(self) -> tuple[Any, Any]:
        if self.face_models is None:
            self.face_models = load_face_models(self.config.device)
        return self.face_models

    def audio_states(self, audio: np.ndarray, start_s: float, end_s: float) -> np.ndarray:
        """Whisper tiny.en's encoder states over one window (see :mod:`.whisper_states`)."""
        from mercli.features.whisper_states import WHISPER, encoder_states, load_states_model

        if self.states_model is None:
            shared = self.config.asr_backend == "ct2" and self.config.whisper == WHISPER
            if shared and self.transcriber is None and self.config.clip_s is None:
                self.transcriber = load_transcriber(self.config)
            model = getattr(self.transcriber, "model", None) if shared else None
            self.states_model = model or load_states_model(self.config.device)
        return encoder_states(audio, self.states_model, start_s, end_s)


def load_transcriber(config: ExtractConfig) -> Transcriber:
    """Whisper ``config.whisper`` (name or path; tiny.en and base work offline) as a transcriber,
    in ``config.language``, on the backend ``config.asr_backend``.

    Raises:
        AsrLoadError: the ct2 backend cannot load (faster-whisper missing, a bad model folder).
    """
    if config.asr_backend.startswith("ct2"):
        from mercli.features.asr_ct2 import Ct2Transcriber, load_ct2_whisper

        ct2_model = load_ct2_whisper(config.whisper, config.device, config.asr_backend)
        return Ct2Transcriber(ct2_model, language=config.language, max_s=config.max_utterance_s)

    from mercli.features.asr import transcribe
    from mercli.features.whisper_offline import load_whisper

    model = load_whisper(config.whisper, device=config.device)

    def run(audio: np.ndarray) -> list[Utterance]:
        return transcribe(audio, model, language=config.language, max_s=config.max_utterance_s)

    return run


def load_face_models(device: str) -> tuple[Any, Any]:
    """facenet-pytorch's MTCNN and the fer mini-Xception expression net, on ``device``."""
    from mercli.features.expression import load_expression_net
    from mercli.features.faces import load_detector

    return load_detector(device), load_expression_net(device)


# ---------------------------------------------------------------------------------------------
# stages


def decode_audio(
    path: str | os.PathLike[str], info: MediaInfo, errors: list[str] | None = None
) -> np.ndarray | None:
    """16 kHz mono float32 samples ``(n_samples,)``, or None when there is no audio stream.

    ``errors`` receives what ffmpeg reported while decoding all the same (see ``load_audio``).
    """
    from mercli.features.media import load_audio

    if not info.has_audio:
        return None
    return load_audio(path, SAMPLE_RATE_HZ, errors)


def transcribe_audio(
    audio: np.ndarray, front_end: FrontEnd, transcribe: Transcriber | None = None
) -> list[Utterance]:
    """Utterances of the waveform, time order; empty for silence (no model call then).
    ``transcribe``: instead of ``front_end.transcribe`` (e.g. ``front_end.transcribe_draft``)."""
    if audio.size == 0 or not np.any(audio):
        return []
    return sorted((transcribe or front_end.transcribe)(audio), key=lambda u: u.start_s)


def utterance_audio(
    audio: np.ndarray, utterance: Utterance, front_end: FrontEnd
) -> tuple[np.ndarray, float | None, float]:
    """The audio branch's input for one utterance window, and its pitch and energy.

    Returns:
        ``features``: mer's acoustic features float32 ``(n_frames, 35)`` (hop
        ``config.hop_s``), or with Whisper's ``config.audio_extractor`` its encoder states
        float32 ``(n_steps, 384)``; mean pitch in Hz (None if unvoiced); mean energy in dBFS.
    """
    from mercli.features.acoustic import features_from_measures, measure_frames, summarise

    start_s, end_s = utterance.start_s, utterance.end_s
    measures = measure_frames(audio, SAMPLE_RATE_HZ, start_s, end_s, front_end.config.hop_s)
    summary = summarise(measures)  # the descriptors, whichever features the model reads
    if front_end.config.audio_extractor == AUDIO_EXTRACTOR:
        features = features_from_measures(measures)
    else:
        features = front_end.audio_states(audio, start_s, end_s)
    return features, summary.mean_pitch_hz, summary.mean_energy_db


def assign_frames(
    frames: Iterable[Frame], windows: Sequence[tuple[float, float]]
) -> Iterator[tuple[int, list[Frame]]]:
    """Group a time-ordered frame stream by window, yielding each window as soon as it closes.

    A frame belongs to window ``k`` when ``start_k <= time_s < end_k`` (windows may overlap; a
    frame can then belong to both). Frames outside every window are dropped at once; the stream
    is not read past the last window's end. Every window is yielded, in order of its end, with
    possibly no frames.

    Args:
        frames: frames with ascending ``time_s``.
        windows: (start_s, end_s) per window.

    Yields:
        (window index, its frames).
    """
    order = sorted(range(len(windows)), key=lambda k: (windows[k][1], windows[k][0]))
    open_frames: dict[int, list[Frame]] = {k: [] for k in order}
    pending = list(order)  # windows not yet yielded, by end time
    for frame in frames:
        while pending and windows[pending[0]][1] <= frame.time_s:
            k = pending.pop(0)
            yield k, open_frames.pop(k)
        if not pending:
            break  # past the last window: stop decoding
        for k in pending:
            start_s, end_s = windows[k]
            if start_s <= frame.time_s < end_s:
                open_frames[k].append(frame)
    for k in pending:
        yield k, open_frames.pop(k)


def window_vision(frames: Sequence[Frame], front_end: FrontEnd) -> VisualFeatures:
    """Face features of one window's frames (see :func:`mercli.features.faces.visual_features`)."""
    from mercli.features.faces import visual_features

    detector, expression_net = front_end.faces()
    return visual_features(frames, detector, expression_net)


def utterance_vision(
    path: str | os.PathLike[str],
    windows: Sequence[tuple[float, float]],
    front_end: FrontEnd,
    window_features: Callable[[Sequence[Frame], FrontEnd], VisualFeatures] | None = None,
) -> list[VisualFeatures]:
    """Face features per window from one pass over the video.

    Args:
        path: the video file.
        windows: (start_s, end_s) per window.
        front_end: models and settings (``fps``, ``max_side``).
        window_features: frames of one window -> :class:`VisualFeatures` (default
            :func:`window_vision`).

    Returns:
        one :class:`VisualFeatures` per window, in the order of ``windows``.
    """
    from mercli.features.heap import release_free_memory
    from mercli.features.media import iter_frames

    config = front_end.config
    window_features = window_features or window_vision
    results: list[VisualFeatures | None] = [None] * len(windows)
    stream = iter_frames(path, fps=config.fps, max_side=config.max_side)
    for k, frames in assign_frames(stream, windows):
        results[k] = window_features(frames, front_end)
        del frames
        release_free_memory()  # else the heap grows with the number of frames (see heap.py)
    return [r for r in results if r is not None]


def decode_ahead(
    path: str | os.PathLike[str],
    config: ExtractConfig,
    use_cache: bool = True,
    device: str | None = None,
) -> DecodedMedia | None:
    """What :func:`extract` of ``path`` reads from the file (audio, and frames when faces are
    on; in whole-clip mode the frames of the clip), decoded now: the CPU stage that runs apart
    from the models (``--engine ray``). Computing from it is :func:`extract` (or the cache's
    ``load_or_extract``) inside :func:`mercli.features.media.preloaded`: the same results.

    ``device``, when given, is where the features will be made (it decides what ``asr="auto"``
    stands for, so which cache entry would be read).

    Returns:
        the decoded media, or None when there is nothing to decode ahead: the cache holds the
        file's features, or decoding fails (the failure is met again, and reported, where the
        features are made).
    """
    from mercli.features import cache
    from mercli.features.media import decode_media

    if device is not None:
        config = replace(config, device=device)
    try:
        if use_cache and cache.cache_path(cache.file_sha256(path), config).exists():
            return None
        return decode_media(path, config.fps, config.max_side, config.use_faces, config.clip_s)
    except (MediaError, OSError, ValueError, RuntimeError):
        return None


# ---------------------------------------------------------------------------------------------
# all stages


def _empty_vision() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, D_VISION), np.float32), np.zeros(0, bool)


def extract(
    path: str | os.PathLike[str],
    config: ExtractConfig,
    front_end: FrontEnd | None = None,
    sha256: str = "",
) -> MediaFeatures:
    """Decode, transcribe and describe one media file (no cache: see :mod:`mercli.features.cache`).

    A file whose decoding stops early (truncated) is analysed as far as it decodes, and says so
    in ``warning``.

    Args:
        path: an audio or video file.
        config: front-end settings.
        front_end: loaded models to reuse across files (default: loaded on first use).
        sha256: the content digest, recorded in the result.

    In whole-clip mode (``config.clip_s``) the result holds one utterance, text empty, over
    the first ``clip_s`` seconds, and ``duration_s`` is the clip's full length.

    Raises:
        MediaError: the file is missing or cannot be decoded; in whole-clip mode also a file
            without audio samples.
    """
    from mercli.features.media import early_end, probe

    front_end = front_end or FrontEnd(config)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    info = probe(path)
    if config.clip_s is not None and not info.has_audio:
        raise MediaError(path, "no audio stream" + (" (video only)" if info.has_video else ""))
    if not info.has_audio and not info.has_video:
        raise MediaError(path, "no audio or video stream")
    worker = None  # searches the frames for faces while Whisper runs
    if info.has_video and info.has_audio and config.use_face_overlap:
        from mercli.features.frame_faces import FaceWorker

        worker = FaceWorker(path, front_end)
    with worker or contextlib.nullcontext():
        decode_errors: list[str] = []
        audio = decode_audio(path, info, decode_errors)
        timings["decode"] = time.perf_counter() - started
        duration_s = info.duration_s
        clip_s = config.clip_s
        if clip_s is not None:
            if audio is None or audio.size == 0:
                raise MediaError(path, "the audio stream holds no samples")
            audio_s = len(audio) / SAMPLE_RATE_HZ
            duration_s = max(audio_s, info.duration_s or 0.0)
            utterances = [Utterance(0.0, min(audio_s, clip_s), "")]
        else:
            utterances = _transcribed(audio, front_end, timings)
        speakers: list[str | None] = [None] * len(utterances)
        if config.use_speakers and audio is not None and utterances:
            utterances, speakers = _diarized(audio, utterances, config, timings)
        if audio is None:
            status: Status = "no_audio"
        else:
            status = "ok" if utterances else "no_speech"
        result = MediaFeatures(
            path=str(path),
            sha256=sha256,
            status=status,
            duration_s=duration_s,
            has_audio=info.has_audio,
            has_video=info.has_video,
            timings_s=timings,
        )
        if audio is not None:
            result.warning = early_end(len(audio) / SAMPLE_RATE_HZ, info.duration_s, decode_errors)
        result.utterances = _with_audio(utterances, audio, front_end, timings)
        for u, speaker in zip(result.utterances, speakers, strict=True):
            u.descriptors = replace(u.descriptors, speaker=speaker)
        if clip_s is not None and duration_s is not None:  # the clip's span (audio may end early)
            result.utterances[0].end_s = min(duration_s, clip_s)
        if info.has_video and config.use_faces:
            _add_vision(result, path, front_end, timings, config.clip_s is not None, worker)
    return result


def _transcribed(
    audio: np.ndarray | None, front_end: FrontEnd, timings: dict[str, float]
) -> list[Utterance]:
    started = time.perf_counter()
    utterances = [] if audio is None else transcribe_audio(audio, front_end)
    timings["asr"] = time.perf_counter() - started
    return utterances


def _diarized(
    audio: np.ndarray, utterances: list[Utterance], config: ExtractConfig, timings: dict[str, float]
) -> tuple[list[Utterance], list[str | None]]:
    """Utterances cut at changes of speaker, and their speakers (:mod:`.speakers`)."""
    from mercli.features.speakers import SpeakerConfig, diarize_utterances

    started = time.perf_counter()
    found = diarize_utterances(
        audio, utterances, SpeakerConfig(n_speakers=config.n_speakers), config.device
    )
    timings["speakers"] = time.perf_counter() - started
    return found.utterances, found.speakers


def _with_audio(
    utterances: list[Utterance],
    audio: np.ndarray | None,
    front_end: FrontEnd,
    timings: dict[str, float],
) -> list[UtteranceFeatures]:
    started = time.perf_counter()
    out = []
    for u in utterances:
        assert audio is not None  # utterances come from audio
        features, pitch_hz, energy_db = utterance_audio(audio, u, front_end)
        vision, mask = _empty_vision()
        out.append(
            UtteranceFeatures(
                u.start_s,
                u.end_s,
                u.text,
                features,
                vision,
                mask,
                Descriptors(pitch_hz=pitch_hz, energy_db=energy_db),
            )
        )
    timings["audio"] = time.perf_counter() - started
    return out


def _add_vision(
    result: MediaFeatures,
    path: str | os.PathLike[str],
    front_end: FrontEnd,
    timings: dict[str, float],
    whole_clip: bool = False,
    worker: FaceWorker | None = None,
) -> None:
    """Face features per utterance; without utterances, over the whole file (in chunks of
    ``DESCRIPTOR_WINDOW_S``, so memory stays bounded) for the file's descriptors. In whole-clip
    mode the clip's utterance is described in such chunks too, concatenated. ``worker``: the
    frames' faces, searched while the other stages ran (not in whole-clip or speaker mode)."""
    started = time.perf_counter()
    windows = [(u.start_s, u.end_s) for u in result.utterances]
    if not windows:
        duration_s = result.duration_s or MAX_UNKNOWN_DURATION_S
        n_windows = max(1, int(np.ceil(duration_s / DESCRIPTOR_WINDOW_S)) + 1)
        windows = [
            (k * DESCRIPTOR_WINDOW_S, (k + 1) * DESCRIPTOR_WINDOW_S) for k in range(n_windows)
        ]
    speakers = [u.descriptors.speaker for u in result.utterances]
    if whole_clip:
        (start_s, end_s), *_ = windows
        windows = _chunks(start_s, end_s)
        visuals = utterance_vision(path, windows, front_end)
        u = result.utterances[0]
        u.vision = np.concatenate([v.features for v in visuals]).astype(np.float32)
        u.vision_mask = np.concatenate([v.mask for v in visuals]).astype(bool)
        probs = np.concatenate([v.expression_probs for v in visuals])
        u.descriptors = u.descriptors.with_faces(u.vision_mask, probs)
    else:
        if len({s for s in speakers if s is not None}) > 1:  # each speaker's own face
            from mercli.features.speaker_faces import speaker_vision

            visuals = speaker_vision(path, windows, speakers, front_end)
        elif worker is not None:
            visuals = worker.visuals(windows)
        else:
            visuals = utterance_vision(path, windows, front_end)
        for u, visual in zip(result.utterances, visuals, strict=False):
            u.vision, u.vision_mask = visual.features, visual.mask
            u.descriptors = u.descriptors.with_faces(visual.mask, visual.expression_probs)
    result.frame_times_s = np.concatenate([v.times_s for v in visuals])
    result.frame_mask = np.concatenate([v.mask for v in visuals]).astype(bool)
    probs = np.concatenate([v.expression_probs for v in visuals])
    result.descriptors = result.descriptors.with_faces(result.frame_mask, probs)
    timings["faces"] = time.perf_counter() - started
    if worker is not None:  # the search ran alongside the other stages: its time, not the wait
        timings["faces"] += worker.busy_s - worker.wait_s
        timings["faces_wait"] = worker.wait_s


def _chunks(start_s: float, end_s: float) -> list[tuple[float, float]]:
    """``[start_s, end_s)`` cut into windows of at most ``DESCRIPTOR_WINDOW_S``."""
    n_windows = max(1, int(np.ceil((end_s - start_s) / DESCRIPTOR_WINDOW_S)))
    return [
        (start_s + k * DESCRIPTOR_WINDOW_S, min(start_s + (k + 1) * DESCRIPTOR_WINDOW_S, end_s))
        for k in range(n_windows)
    ]


def dominant_expression(probs: Sequence[np.ndarray]) -> tuple[str | None, float | None]:
    """The expression with the highest mean probability over face frames, and that mean.

    Args:
        probs: float ``(n_face_frames, 7)`` arrays (order of ``EMOTIONS``), possibly empty.

    Returns:
        (name, mean probability in [0, 1]), or (None, None) when no frame has a face.
    """
    from mercli.features.expression import EMOTIONS

    rows = [p for p in probs if len(p)]
    if not rows:
        return None, None
    mean = np.concatenate(rows).mean(axis=0)  # (7,)
    best = int(np.argmax(mean))
    return EMOTIONS[best], float(mean[best])


__all__ = [
    "D_AUDIO",
    "ExtractConfig",
    "FrontEnd",
    "MediaFeatures",
    "UtteranceFeatures",
    "assign_frames",
    "decode_ahead",
    "decode_audio",
    "dominant_expression",
    "extract",
    "transcribe_audio",
    "utterance_audio",
    "utterance_vision",
]
