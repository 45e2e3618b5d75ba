"""Voice states read relative to the speaker (:mod:`mercli.features.speaker_norm`): the trial
that led to ``mer prepare --voice-relative`` (which ``ravdess_prepare.py --voice-relative``
runs, writing the same frames to 3e-5 and recording the normalisation) and the ``default``
checkpoint's voice (first shipped as ``voice-preview``).

Two steps, each normalising by hand, so that a checkpoint trained on frames as extracted can be
read both ways::

    python benchmarks/speaker_norm_trial.py dataset RAVDESS_PKL OUT_PKL
    python benchmarks/speaker_norm_trial.py media CHECKPOINT [--normalise] [--crema DIR]

``dataset`` copies a prepared RAVDESS dataset (``benchmarks/ravdess_prepare.py --audio-features
whisper``) with each clip's audio frames standardised over all the frames of its actor in its
split (a VTLP copy counts as its actor); train on it as the ``default`` card says, and
``benchmarks/voice_eval.py --ravdess OUT_PKL`` reads the held-out actors the same way.

``media`` prints one JSON line per utterance (score, audio contribution, text) of the shared
CREMA-D clips, the talking heads, ``samples/demo.mp4`` and ``whisper_jfk.flac``, and then the
CREMA-D sign accuracy (non-neutral clips) and Pearson r against the RAVDESS valence mapping.
With ``--normalise``, the audio frames of each CREMA-D actor's files are standardised together
and those of every other file over that file alone, as ``dataset`` does per actor.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"


def actor(clip_id: str) -> str:
    """``Actor_07$_$03-01-...`` and its VTLP copy ``Actor_07-vtlp0.9$_$...`` -> ``Actor_07``."""
    return clip_id.split("$_$")[0].split("-vtlp")[0]


def normalise_dataset(source: Path, target: Path) -> None:
    from mercli.data.mmsa import write_mmsa
    from mercli.data.safe_pickle import load_pickle
    from mercli.features.speaker_norm import normalise

    data = load_pickle(source)
    for split in ("train", "valid", "test"):
        arrays = data[split]
        lengths = arrays["audio_lengths"]
        frames = [arrays["audio"][i, :n] for i, n in enumerate(lengths)]
        audio = np.zeros_like(arrays["audio"], dtype=np.float32)
        for i, a in enumerate(normalise(frames, [actor(c) for c in arrays["id"]])):
            audio[i, : len(a)] = a
        arrays["audio"] = audio
        print(f"{split}: {len(set(map(actor, arrays['id'])))} actors, {len(lengths)} clips")
    write_mmsa(target, data)


def media_groups(crema: Path) -> dict[str, list[Path]]:
    clips = sorted(p for p in crema.iterdir() if p.suffix.lower() in (".flv", ".mp3", ".wav"))
    groups: dict[str, list[Path]] = {}
    for p in clips:
        groups.setdefault(f"crema-{p.name.split('_')[0]}", []).append(p)
    others = [
        *sorted((SHARED / "media" / "talking_head").glob("*.mp4")),
        ROOT / "samples" / "demo.mp4",
        SHARED / "media" / "audio_speech" / "whisper_jfk.flac",
    ]
    for p in others:
        if p.is_file():
            groups[p.name] = [p]
    return groups


def media_rows(checkpoint: str, crema: Path, use_norm: bool) -> list[dict[str, Any]]:
    from mercli.checkpoint import load_model
    from mercli.features.extract import ExtractConfig
    from mercli.features.speaker_norm import normalise
    from mercli.pipeline import Analyzer, load_or_extract, predict

    loaded = load_model(checkpoint, "cpu")
    analyzer = Analyzer(loaded, ExtractConfig.for_profile(loaded.meta.feature_profile))
    rows = []
    for group, paths in media_groups(crema).items():
        files = [load_or_extract(p, analyzer.config, analyzer.front_end, True, lambda: None)[0]
                 for p in paths]  # fmt: skip
        utterances = [(p, u) for p, f in zip(paths, files, strict=True) for u in f.utterances]
        if use_norm and utterances:
            audio = normalise([u.audio for _, u in utterances], [group] * len(utterances))
            utterances = [
                (p, replace(u, audio=a)) for (p, u), a in zip(utterances, audio, strict=True)
            ]
        inputs = [u for _, u in utterances]  # the frames as this script made them
        predictions = predict(inputs, loaded, audio=[u.audio for u in inputs])
        for (p, _), pr in zip(utterances, predictions, strict=True):
            rows.append({"group": group, "file": p.name, "score": round(pr.score, 2),
                         "audio": round(pr.contributions.get("audio", float("nan")), 2),
                         "text": pr.text})  # fmt: skip
    return rows


def crema_figures(rows: list[dict[str, Any]]) -> str:
    """``voice_eval.py``'s CREMA-D summary over the CREMA-D rows."""
    from voice_eval import CREMA_EMOTIONS, crema_summary  # beside this script

    from mercli.data.ravdess import valence

    crema = [r for r in rows if r["group"].startswith("crema-")]
    if not crema:
        return "no CREMA-D clips"
    valences = [valence(CREMA_EMOTIONS[r["file"].split("_")[2]]) for r in crema]
    return "CREMA-D: " + crema_summary([r["score"] for r in crema], valences)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    steps = parser.add_subparsers(dest="step", required=True)
    dataset = steps.add_parser("dataset", help="normalise a prepared RAVDESS dataset per actor")
    dataset.add_argument("source", type=Path)
    dataset.add_argument("target", type=Path)
    media = steps.add_parser("media", help="a checkpoint on the shared media")
    media.add_argument("checkpoint")
    media.add_argument("--normalise", action="store_true")
    media.add_argument("--crema", type=Path, default=SHARED / "data" / "crema-d" / "clips")
    args = parser.parse_args(argv)
    if args.step == "dataset":
        normalise_dataset(args.source, args.target)
        return 0
    rows = media_rows(args.checkpoint, args.crema, args.normalise)
    for row in rows:
        print(json.dumps(row))
    print(crema_figures(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
