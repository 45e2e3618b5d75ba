"""RAVDESS speech (Livingstone & Russo 2018): file names -> emotion, valence score and split.

RAVDESS's audio-only speech part holds 1,440 wav files, 24 actors x 60 (8 emotions, neutral at
normal intensity only, the others at normal and strong intensity; two sentences; two repetitions),
at ``Actor_XX/03-01-EE-II-SS-RR-AA.wav``. The label is the file name: modality 03 (audio only),
vocal channel 01 (speech), EE emotion, II intensity, SS sentence, RR repetition, AA actor (odd
actors are male). The corpus is CC BY-NC-SA 4.0: it never enters this repository;
``benchmarks/ravdess_prepare.py`` turns an extracted copy into a ``mer prepare`` dataset.

**Valence mapping** (an acted emotion -> a sentiment score on the CMU-MOSI scale [-3, 3]).
Each emotion word's mean valence rating in the norms of Warriner, Kuperman & Brysbaert (2013),
"Norms of valence, arousal, and dominance for 13,915 English lemmas", Behavior Research Methods
45(4):1191-1207 (1-9 scale, 5 = neither), is mapped linearly onto [-3, 3]: ``0.75 * (V - 5)``.
That is the score of the *strong* intensity; the *normal* intensity gets
:data:`NORMAL_INTENSITY_SCALE` (0.75) of it (the 0.75 is mer's choice, not the norms').
Neutral is 0 by definition (its clips express no emotion; the word "neutral" itself rates 5.5).
RAVDESS's "disgust" clips are rated with the adjective "disgusted" (2.68; the noun rates 3.32),
like the other adjectives (fearful, surprised). Calm and surprised come out mildly positive,
as in the norms and in Russell's (1980) circumplex, where both lie right of the valence midline.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Split = Literal["train", "valid", "test"]

EMOTIONS: dict[int, str] = {
    1: "neutral",
    2: "calm",
    3: "happy",
    4: "sad",
    5: "angry",
    6: "fearful",
    7: "disgust",
    8: "surprised",
}
INTENSITIES: dict[int, str] = {1: "normal", 2: "strong"}
SENTENCES: dict[int, str] = {1: "Kids are talking by the door", 2: "Dogs are sitting by the door"}

# Mean valence (1-9) of each emotion word in Warriner, Kuperman & Brysbaert (2013) (column
# V.Mean.Sum of Ratings_Warriner_et_al.csv). Neutral is not looked up: it is 0 by definition.
WARRINER_VALENCE: dict[str, float] = {
    "calm": 6.89,
    "happy": 8.47,
    "sad": 2.10,
    "angry": 2.53,
    "fearful": 2.66,
    "disgust": 2.68,  # rated as "disgusted"
    "surprised": 6.57,
}
NORMAL_INTENSITY_SCALE = 0.75  # normal intensity's share of the strong intensity's score

# Speaker-independent split by actor, 12 male (odd) and 12 female (even) actors in all:
# train 1-16 (8 + 8), valid 17-20 (2 + 2), test 21-24 (2 + 2).
SPLIT_ACTORS: dict[Split, tuple[int, ...]] = {
    "train": tuple(range(1, 17)),
    "valid": tuple(range(17, 21)),
    "test": tuple(range(21, 25)),
}

_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


def valence(emotion: str, intensity: str = "normal") -> float:
    """The sentiment score in [-3, 3] of an acted emotion (see the module docstring).

    Raises:
        ValueError: an unknown emotion or intensity.
    """
    if intensity not in INTENSITIES.values():
        raise ValueError(f"unknown intensity {intensity!r}; expected normal or strong")
    if emotion == "neutral":
        return 0.0
    if emotion not in WARRINER_VALENCE:
        raise ValueError(f"unknown emotion {emotion!r}; expected one of {list(EMOTIONS.values())}")
    strong = 0.75 * (WARRINER_VALENCE[emotion] - 5.0)  # 1..9 -> -3..3
    return strong if intensity == "strong" else NORMAL_INTENSITY_SCALE * strong


def actor_split(actor: int) -> Split:
    """The split an actor's clips belong to (:data:`SPLIT_ACTORS`)."""
    for split, actors in SPLIT_ACTORS.items():
        if actor in actors:
            return split
    raise ValueError(f"RAVDESS has actors 1-24, not {actor}")


@dataclass(frozen=True)
class RavdessClip:
    """One RAVDESS file and what its name says.

    Attributes:
        path: the wav file.
        emotion, intensity: e.g. ``"happy"``, ``"strong"``.
        sentence: 1 or 2 (:data:`SENTENCES`).
        repetition: 1 or 2.
        actor: 1-24; odd actors are male.
    """

    path: Path
    emotion: str
    intensity: str
    sentence: int
    repetition: int
    actor: int

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def video_id(self) -> str:
        """The ``mer prepare`` video id: the actor's folder, ``Actor_XX``."""
        return f"Actor_{self.actor:02d}"

    @property
    def id(self) -> str:
        """``"Actor_XX$_$<file stem>"``, the id a prepared dataset gives the clip."""
        return f"{self.video_id}$_${self.stem}"

    @property
    def is_male(self) -> bool:
        return self.actor % 2 == 1

    @property
    def text(self) -> str:
        return SENTENCES[self.sentence]

    @property
    def valence(self) -> float:
        return valence(self.emotion, self.intensity)

    @property
    def split(self) -> Split:
        return actor_split(self.actor)


def parse_name(path: str | Path) -> RavdessClip:
    """What a RAVDESS speech file's name (``03-01-EE-II-SS-RR-AA.wav``) says.

    Raises:
        ValueError: naming the file, when the name is not that of an audio-only speech clip.
    """
    path = Path(path)
    found = _NAME.match(path.stem)
    if found is None:
        raise ValueError(f"{path}: not a RAVDESS name (expected 03-01-EE-II-SS-RR-AA.wav)")
    modality, channel, emotion, intensity, sentence, repetition, actor = map(int, found.groups())
    problems = []
    if (modality, channel) != (3, 1):
        problems.append(f"modality {modality:02d} / channel {channel:02d} is not audio-only speech")
    if emotion not in EMOTIONS:
        problems.append(f"emotion {emotion:02d} is not 01-08")
    if intensity not in INTENSITIES:
        problems.append(f"intensity {intensity:02d} is not 01-02")
    elif emotion == 1 and intensity == 2:
        problems.append("neutral has no strong intensity")
    if sentence not in SENTENCES:
        problems.append(f"sentence {sentence:02d} is not 01-02")
    if repetition not in (1, 2):
        problems.append(f"repetition {repetition:02d} is not 01-02")
    if not 1 <= actor <= 24:
        problems.append(f"actor {actor:02d} is not 01-24")
    if problems:
        raise ValueError(f"{path}: {'; '.join(problems)}")
    return RavdessClip(path, EMOTIONS[emotion], INTENSITIES[intensity], sentence, repetition, actor)


def parse_id(clip_id: str) -> RavdessClip:
    """The clip an id of a prepared dataset (``"Actor_XX$_$03-01-..."``) names."""
    return parse_name(clip_id.rsplit("$_$", 1)[-1])


@dataclass(frozen=True)
class FoundClips:
    """The clips of an extracted RAVDESS folder.

    Attributes:
        clips: one per distinct file, in name order.
        duplicates: (file left out, the earlier file with the same bytes).
    """

    clips: list[RavdessClip]
    duplicates: list[tuple[Path, Path]]


def find_clips(root: str | Path) -> FoundClips:
    """Every ``Actor_XX/*.wav`` under ``root`` (``audio_speech_actors_01-24``), parsed.

    Files with the same bytes are kept once (RAVDESS has one such pair, in Actor_07).

    Raises:
        ValueError: ``root`` holds no actor folders, a wav name that is not RAVDESS's, or a file
            in the wrong actor's folder.
    """
    root = Path(root)
    folders = sorted(p for p in root.glob("Actor_*") if p.is_dir())
    if not folders:
        raise ValueError(f"{root}: no Actor_XX folders (expected audio_speech_actors_01-24)")
    clips: list[RavdessClip] = []
    duplicates: list[tuple[Path, Path]] = []
    seen: dict[str, Path] = {}
    for folder in folders:
        for path in sorted(folder.glob("*.wav")):
            clip = parse_name(path)
            if clip.video_id != folder.name:
                raise ValueError(f"{path}: actor {clip.actor:02d} in the folder {folder.name}")
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest in seen:
                duplicates.append((path, seen[digest]))
                continue
            seen[digest] = path
            clips.append(clip)
    return FoundClips(clips, duplicates)


# Trimming (``write_layout(..., use_trim=True)``): a clip holds about 1 s of silence on each side
# of its speech, while ``mer analyze`` reads Whisper's utterance windows, which hold little; the
# acoustic features are standardised over the window, so the share of silence changes what the
# model sees. The gate and margin were chosen to match Whisper tiny.en's windows on RAVDESS
# clips (benchmarks/ravdess_prepare.py gives the figures).
TRIM_PAD_S = 0.15  # margin kept on each side of the speech, seconds
TRIM_BELOW_PEAK_DB = 30.0  # voiced: at most this far under the clip's loudest 20 ms frame


@dataclass(frozen=True)
class TrimmedClip:
    """What :func:`trim_wav` kept of a clip, in seconds (``is_speech_found`` False: all of it)."""

    start_s: float
    end_s: float
    duration_s: float
    is_speech_found: bool


def trim_wav(source: str | Path, dest: str | Path) -> TrimmedClip:
    """Write the speech span of a 16-bit PCM wav file to ``dest``, in the same format.

    The span is :func:`mercli.features.vad.speech_span` over the channels' mean (``TRIM_PAD_S``,
    ``TRIM_BELOW_PEAK_DB``); a clip where it finds no speech is copied whole.

    Raises:
        ValueError: naming the file, when it is not a 16-bit PCM wav file.
    """
    import wave

    import numpy as np

    from mercli.features.vad import VadConfig, speech_span

    source = Path(source)
    try:
        with wave.open(str(source), "rb") as f:
            params = f.getparams()
            frames = f.readframes(params.nframes)
    except (wave.Error, EOFError) as error:
        raise ValueError(f"{source}: not a PCM wav file ({error})") from error
    if params.sampwidth != 2:
        raise ValueError(f"{source}: {8 * params.sampwidth}-bit samples; trimming reads 16-bit")
    n_channels, rate_hz = params.nchannels, params.framerate
    samples = np.frombuffer(frames, "<i2")
    samples = samples[: len(samples) // n_channels * n_channels].reshape(-1, n_channels)
    mono = samples.mean(axis=1, dtype=np.float32) / 32768.0
    span = speech_span(mono, rate_hz, VadConfig(pad_s=TRIM_PAD_S), TRIM_BELOW_PEAK_DB)
    start, end = span or (0, len(mono))
    with wave.open(str(dest), "wb") as f:
        f.setnchannels(n_channels)
        f.setsampwidth(2)
        f.setframerate(rate_hz)
        f.writeframes(samples[start:end].tobytes())
    return TrimmedClip(start / rate_hz, end / rate_hz, len(mono) / rate_hz, span is not None)


def vtlp_wav(source: str | Path, dest: str | Path, factor: float) -> None:
    """Write ``source`` to ``dest`` (16-bit PCM, same rate and channels) with its pitch and
    formants scaled by ``factor`` and its duration kept: ffmpeg plays it as if recorded at
    ``factor`` times its rate, resamples to the rate and stretches the tempo back by
    ``1 / factor``. The voice sounds like another speaker's (vocal tract length perturbation,
    Jaitly and Hinton 2013, done on the waveform).

    Raises:
        ValueError: naming the file, when it is not a wav file or ffmpeg cannot convert it.
    """
    import subprocess
    import wave

    from mercli.features.media import ffmpeg_exe

    source = Path(source)
    if factor <= 0:
        raise ValueError(f"vtlp factor must be positive, got {factor}")
    try:
        with wave.open(str(source), "rb") as f:
            rate_hz = f.getframerate()
    except (wave.Error, EOFError) as error:
        raise ValueError(f"{source}: not a PCM wav file ({error})") from error
    filters = f"asetrate={rate_hz * factor:g},aresample={rate_hz},atempo={1 / factor:.6f}"
    command = [
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(source),
        "-af", filters, "-c:a", "pcm_s16le", str(dest),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise ValueError(f"{source}: ffmpeg could not scale its voice ({done.stderr.strip()})")


def vtlp_video_id(clip: RavdessClip, factor: float) -> str:
    """The folder and video id of ``clip``'s copy at ``factor`` (``Actor_XX-vtlp0.9``)."""
    return f"{clip.video_id}-vtlp{factor:g}"


def write_layout(
    clips: list[RavdessClip],
    out_dir: str | Path,
    use_trim: bool = False,
    vtlp: Sequence[float] = (),
) -> Path:
    """The ``mer prepare`` input for ``clips``: ``out_dir/Raw/Actor_XX/<stem>.wav`` and
    ``out_dir/label.csv`` (text: the sentence; label: :func:`valence`; mode: the actor's split).
    Returns the label CSV's path.

    The wav files are symbolic links to the clips, or with ``use_trim`` their speech spans
    (:func:`trim_wav`), with what was kept of each in ``out_dir/trim.csv`` (``clip_id,start_s,
    end_s,duration_s,speech_found``). For each factor of ``vtlp``, the train actors' clips are
    also written with their voice scaled (:func:`vtlp_wav`, then trimmed with ``use_trim``) into
    ``Raw/Actor_XX-vtlpF/`` and labelled as train clips: more voices for the same actors'
    emotions; valid and test clips are never scaled.
    """
    import csv
    import tempfile

    out_dir = Path(out_dir)
    rows: list[tuple[str, RavdessClip]] = []  # (video id, clip)
    trims: list[tuple[str, TrimmedClip]] = []  # (clip id, what was kept)

    def written(video_id: str, clip: RavdessClip) -> Path:
        path = out_dir / "Raw" / video_id / clip.path.name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        rows.append((video_id, clip))
        return path

    for clip in clips:
        link = written(clip.video_id, clip)
        if use_trim:
            trims.append((clip.id, trim_wav(clip.path, link)))
        else:
            link.symlink_to(clip.path.resolve())
    for factor in vtlp:
        for clip in (c for c in clips if c.split == "train"):
            video_id = vtlp_video_id(clip, factor)
            dest = written(video_id, clip)
            if not use_trim:
                vtlp_wav(clip.path, dest, factor)
                continue
            with tempfile.TemporaryDirectory() as scratch:
                scaled = Path(scratch) / clip.path.name
                vtlp_wav(clip.path, scaled, factor)
                trims.append((f"{video_id}$_${clip.stem}", trim_wav(scaled, dest)))
    labels = out_dir / "label.csv"
    with labels.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["video_id", "clip_id", "text", "label", "mode"])
        for video_id, clip in rows:
            label = f"{clip.valence:.4f}"
            writer.writerow([video_id, clip.stem, clip.text, label, clip.split])
    trim_csv = out_dir / "trim.csv"
    if use_trim:
        with trim_csv.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["clip_id", "start_s", "end_s", "duration_s", "speech_found"])
            for clip_id, kept in trims:
                times = (kept.start_s, kept.end_s, kept.duration_s)
                writer.writerow([clip_id, *(f"{t:.3f}" for t in times), int(kept.is_speech_found)])
    elif trim_csv.exists():  # from an earlier trimmed layout in the same folder
        trim_csv.unlink()
    return labels
