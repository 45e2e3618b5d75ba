"""Small stand-ins for analyze tests: a tiny random checkpoint, fake utterances and features."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from mercli.descriptors import Descriptors
from mercli.features.asr import Utterance, Word
from mercli.features.extract import ExtractConfig, MediaFeatures, UtteranceFeatures

VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "i",
    "love",
    "this",
    "camera",
    "but",
    "the",
    "screen",
    "is",
    "terrible",
    "so",
    "happy",
    ".",
    "!",
    ",",
]


def tiny_backbone(directory: Path) -> Path:
    """A 1-layer 16-wide BertModel and its WordPiece tokenizer, saved with save_pretrained."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True).save_pretrained(directory)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(directory)
    return directory


def tiny_mpnet(directory: Path, n_layers: int = 3) -> Path:
    """An ``n_layers``-layer 16-wide MPNetModel (relative position bias) and its tokenizer."""
    from transformers import MPNetConfig, MPNetModel, MPNetTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab = directory / "vocab.txt"
    specials = ["<s>", "<pad>", "</s>", "[UNK]", "<mask>"]  # MPNetTokenizerFast's
    tokens = specials + VOCAB[5:]
    vocab.write_text("\n".join(tokens) + "\n")
    words = {t: i for i, t in enumerate(tokens)}
    MPNetTokenizerFast(vocab=words, do_lower_case=True).save_pretrained(directory)
    config = MPNetConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_hidden_layers=n_layers,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    MPNetModel(config, add_pooling_layer=False).save_pretrained(directory)
    return directory


def tiny_checkpoint(
    directory: Path,
    backbone: Path,
    modalities: tuple[str, ...] = ("text",),
    profile: Any = None,  # a FeatureProfile, its dict, or None (text-only or raw)
    seed: int = 0,
) -> Path:
    """A random EmotionModel checkpoint reading ``modalities``, with a feature profile."""
    import torch

    from mercli.checkpoint import CheckpointMeta, save_checkpoint
    from mercli.config import EncoderConfig
    from mercli.features.profile import FeatureProfile, raw_profile, text_only_profile
    from mercli.model import EmotionModel
    from tests.conftest import tiny_model_config

    torch.manual_seed(seed)
    config = tiny_model_config(
        text=EncoderConfig(d_in=16, n_layers=1, n_heads=2),
        audio=EncoderConfig(d_in=35, n_layers=1, n_heads=2),
        vision=EncoderConfig(d_in=154, n_layers=1, n_heads=2),
        modalities=modalities,
        text_backbone=str(backbone),
        finetune_text_backbone=False,
    )
    if profile is None:
        stored = (
            text_only_profile(str(backbone))
            if modalities == ("text",)
            else raw_profile(str(backbone))
        )
    elif isinstance(profile, FeatureProfile):
        stored = profile
    else:
        stored = FeatureProfile.from_dict(profile)
    model = EmotionModel(config)
    return save_checkpoint(
        model, directory, CheckpointMeta(model_config={}, feature_profile=stored)
    )


def utterance(text: str, start_s: float, end_s: float) -> Utterance:
    words = text.split()
    step = (end_s - start_s) / len(words)
    return Utterance(
        start_s,
        end_s,
        text,
        [Word(w, start_s + i * step, start_s + (i + 1) * step) for i, w in enumerate(words)],
    )


FAKE_UTTERANCES = [
    utterance("I love this camera so happy", 0.1, 1.0),
    utterance("but the screen is terrible", 1.1, 1.9),
]


class CountingTranscriber:
    """Returns :data:`FAKE_UTTERANCES` for any audio and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, audio: np.ndarray) -> list[Utterance]:
        self.calls += 1
        return list(FAKE_UTTERANCES)


def fake_features(path: str, sha256: str = "0" * 64, n_frames: int = 5) -> MediaFeatures:
    """Fixed features for any path: two utterances with audio, faces in most frames."""
    rng = np.random.default_rng(0)
    utterances = []
    for u in FAKE_UTTERANCES:
        mask = np.arange(n_frames) != 0
        vision = rng.standard_normal((n_frames, 154)).astype(np.float32) * mask[:, None]
        utterances.append(
            UtteranceFeatures(
                u.start_s,
                u.end_s,
                u.text,
                rng.standard_normal((40, 35)).astype(np.float32),
                vision,
                mask,
                Descriptors(
                    face_coverage=float(mask.mean()),
                    expression="happy",
                    expression_prob=0.7,
                    pitch_hz=180.0,
                    energy_db=-22.0,
                ),
            )
        )
    return MediaFeatures(
        path=path,
        sha256=sha256,
        status="ok",
        duration_s=2.0,
        has_audio=True,
        has_video=True,
        utterances=utterances,
        frame_times_s=np.arange(10) / 5,
        frame_mask=np.arange(10) != 0,
        descriptors=Descriptors(face_coverage=0.9, expression="happy", expression_prob=0.7),
        timings_s={"decode": 0.01, "asr": 0.01, "audio": 0.01, "faces": 0.01},
    )


class FakeExtractor:
    """Stands in for ``mercli.features.extract.extract``: fake features, counted; a file whose
    content starts with ``junk`` is unreadable, as ffmpeg would find it."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(
        self, path, config: ExtractConfig, front_end=None, sha256: str = ""
    ) -> MediaFeatures:
        from mercli.features.media import MediaError

        self.calls += 1
        if Path(path).read_bytes().startswith(b"junk"):
            raise MediaError(path, "unreadable media (Invalid data found when processing input)")
        return fake_features(str(path), sha256)


def make_media(path: Path, duration_s: float = 2.0, video: bool = True, audio: bool = True) -> Path:
    """A lavfi test pattern and/or 440 Hz sine written with the project's ffmpeg."""
    from mercli.features.media import ffmpeg_exe

    command = [ffmpeg_exe(), "-v", "error", "-y"]
    if video:
        command += ["-f", "lavfi", "-i", f"testsrc=size=96x64:rate=10:duration={duration_s}"]
    if audio:
        command += [
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=220:sample_rate=16000:duration={duration_s}",
        ]
    if video:
        command += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if audio:
        command += ["-c:a", "aac"]
    subprocess.run([*command, str(path)], check=True)
    return path


_BUILT: dict[str, Path] = {}


def tiny_models() -> dict[str, Path]:
    """Tiny backbone and checkpoints, built once per test process in a temporary folder.

    Keys: ``text`` (text-only profile), ``all`` (mer-raw-v1, text+audio+vision), ``cmu`` (a
    CMU-MOSI benchmark profile that analyze must refuse), ``relative`` (text+audio, the voice
    read relative to the speaker).
    """
    import tempfile
    from dataclasses import replace

    from mercli.features.profile import SPEAKER_NORM, raw_profile

    if not _BUILT:
        root = Path(tempfile.mkdtemp(prefix="mer-test-models-"))
        backbone = tiny_backbone(root / "bert")
        _BUILT["text"] = tiny_checkpoint(root / "text", backbone)
        _BUILT["all"] = tiny_checkpoint(root / "all", backbone, ("text", "audio", "vision"))
        cmu = {
            "name": "cmu-benchmark-mosi",
            "modalities": ["text", "audio", "vision"],
            "text": {"extractor": "bert-base-uncased states (MMSA pickle)"},
            "audio": {"extractor": "covarep"},
            "vision": {"extractor": "facet"},
        }
        _BUILT["cmu"] = tiny_checkpoint(root / "cmu", backbone, ("text", "audio", "vision"), cmu)
        relative = raw_profile(str(backbone)).with_modalities(("text", "audio"))
        relative = replace(relative, audio=replace(relative.audio, normalise=SPEAKER_NORM))
        _BUILT["relative"] = tiny_checkpoint(
            root / "relative", backbone, ("text", "audio"), relative
        )
    return dict(_BUILT)


# ---------------------------------------------------------------------------------------------
# faces


def face_at(x: float, y: float, side: float, prob: float = 0.999, roll_deg: float = 0.0):
    """A synthetic observation: square box centred on (x, y), plausible landmarks."""
    from mercli.features.faces import FaceObservation

    unit = np.array([[-0.2, -0.15], [0.2, -0.15], [0.0, 0.05], [-0.15, 0.25], [0.15, 0.25]])
    a = math.radians(roll_deg)
    rotation = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    landmarks = (unit @ rotation.T) * side + (x, y)
    box = np.array([x - side / 2, y - side / 2, x + side / 2, y + side / 2])
    return FaceObservation(box, prob, landmarks)


class SquareDetector:
    """Finds white squares as faces wherever they are; records each call's images."""

    min_face_size = 20

    def __init__(self) -> None:
        self.calls: list[tuple[int, ...]] = []

    def detect(self, images: np.ndarray, landmarks: bool = True, min_face_px=None):
        from scipy import ndimage

        self.calls.append(images.shape)
        boxes, probs, points = [], [], []
        for image in images:
            labels, _ = ndimage.label(image[..., 0] > 147)  # midway: edges blur when resized
            found = [
                face_at((sx.start + sx.stop) / 2, (sy.start + sy.stop) / 2, sx.stop - sx.start)
                for sy, sx in ndimage.find_objects(labels)
                if sx.stop - sx.start >= 8
            ]
            boxes.append(np.array([f.box for f in found]) if found else None)
            probs.append(np.array([f.prob for f in found]) if found else [None])
            points.append(np.array([f.landmarks for f in found]) if found else None)
        as_object = lambda x: np.array(x, dtype=object)  # noqa: E731
        return as_object(boxes), as_object(probs), as_object(points)
