"""Does the model hear the voice? RAVDESS held-out actors, CMU-MOSI without audio, CREMA-D.

For each checkpoint given (a run folder's ``seed_N/best`` or a packaged name such as
``default``), prints:

1. **RAVDESS** (a dataset from ``benchmarks/ravdess_prepare.py``; the test actors 21-24 by
   default): valence sign accuracy on the non-neutral clips, Pearson r of the score with the
   mapped valence (:mod:`mercli.data.ravdess`) over all clips, the mean score per emotion and the
   mean absolute audio contribution. The clips go through the same inference path as ``mer
   analyze`` (:func:`mercli.pipeline.predict`) with their known sentence as the transcript. A
   text-only model reads only the (neutral) sentence.
   With ``--ravdess-media DIR`` (the extracted corpus), the same clips also go through ``mer
   analyze`` whole (Whisper's windows and transcripts), as a user's file would, each actor's
   files as one speaker's (``--same-speaker``); the features then do not come from the
   prepared dataset.
2. **CMU-MOSI test** from its ``label.csv`` (transcripts, no audio): MAE, Corr, Acc-2, Acc-7.
3. **CREMA-D** (``--crema DIR``, e.g. the shared six video clips and six mp3): ``mer analyze
   --same-speaker`` on each actor's files (Whisper tiny.en transcripts), the score per clip
   beside its acted emotion (mapped with the RAVDESS valence mapping at normal intensity), and
   the mean audio contribution over the files (how far the voice moves the score, signed).

Usage::

    python benchmarks/voice_eval.py runs/voice/seed_42/best runs/text/seed_42/best \\
        --ravdess /data/ravdess_prepared/ravdess.pkl --mosi cmu-mosi/label.csv \\
        --crema ../shared/data/crema-d/clips [--split valid] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

CREMA_EMOTIONS = {
    "ANG": "angry",
    "DIS": "disgust",
    "FEA": "fearful",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}


def ravdess_utterances(path: Path, split: str) -> tuple[list[Any], list[Any]]:
    """(UtteranceFeatures, RavdessClip) per clip of ``split`` of a prepared RAVDESS dataset."""
    from mercli.data.mmsa import load_mmsa
    from mercli.data.ravdess import parse_id
    from mercli.features.extract import UtteranceFeatures

    data = load_mmsa(path).split(split)
    utterances, clips = [], []
    for i in range(len(data)):
        s = data[i]
        audio = s.features["audio"].numpy()
        utterances.append(
            UtteranceFeatures(
                0.0,
                len(audio) * 0.02,
                s.text or "",
                audio,
                np.zeros((0, 154), np.float32),
                np.zeros(0, bool),
            )
        )
        clips.append(parse_id(s.id))
    return utterances, clips


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if np.std(x) == 0 or np.std(y) == 0:
        return float("nan")  # a constant score (the same sentence read by a text-only model)
    return float(np.corrcoef(x, y)[0, 1])


def _sign_accuracy(scores: np.ndarray, valence: np.ndarray) -> float:
    return float(np.mean((scores > 0) == (valence > 0)))


def ravdess_figures(loaded: Any, utterances: list[Any], clips: list[Any]) -> dict[str, Any]:
    from mercli.pipeline import predict

    # the prepared frames are what the model reads (a dataset of ``--voice-relative`` is
    # already read relative to each actor, as its profile records)
    predictions = predict(utterances, loaded, audio=[u.audio for u in utterances])
    scores = [p.score for p in predictions]
    return valence_figures(scores, [p.contributions.get("audio") for p in predictions], clips)


def valence_figures(
    scores: list[float], audio: list[float | None], clips: list[Any]
) -> dict[str, Any]:
    """The figures of scored RAVDESS clips (one score and audio contribution per clip)."""
    from mercli.data.ravdess import EMOTIONS

    score = np.array(scores)
    valence = np.array([c.valence for c in clips])
    emotional = valence != 0
    audio_effect = [a for a in audio if a is not None]
    per_emotion = {
        e: float(np.mean([s for s, c in zip(score, clips, strict=True) if c.emotion == e]))
        for e in EMOTIONS.values()
        if any(c.emotion == e for c in clips)
    }
    clear = np.array([c.emotion not in ("neutral", "calm", "surprised") for c in clips])
    return {
        "n_clips": len(clips),
        "sign_accuracy_non_neutral": _sign_accuracy(score[emotional], valence[emotional]),
        "sign_accuracy_clear": _sign_accuracy(score[clear], valence[clear]),
        "pearson_r": _pearson(score, valence),
        "mean_score_per_emotion": per_emotion,
        "mean_abs_audio_contribution": float(np.mean(np.abs(audio_effect)))
        if audio_effect
        else None,
        "mean_audio_contribution": float(np.mean(audio_effect)) if audio_effect else None,
    }


def ravdess_media_figures(checkpoint: str, source: Path, split: str) -> dict[str, Any]:
    """The split's RAVDESS wav files through ``analyze`` itself (Whisper's windows and
    transcripts), each actor's files as one speaker's (``--same-speaker``); a clip's score is
    the mean over its utterances."""
    from mercli.data.ravdess import find_clips

    clips = [c for c in find_clips(source).clips if c.split == split]
    clips.sort(key=lambda c: c.actor)
    scored, scores, audio, windows = [], [], [], []
    results = analyze_per_speaker(checkpoint, [c.path for c in clips], [c.actor for c in clips])
    for clip, result in zip(clips, results, strict=True):
        if not result.predictions:
            continue
        scored.append(clip)
        scores.append(float(np.mean([p.score for p in result.predictions])))
        contributions = [p.contributions.get("audio") for p in result.predictions]
        known = [a for a in contributions if a is not None]
        audio.append(float(np.mean(known)) if known else None)
        windows.append(sum(p.end_s - p.start_s for p in result.predictions))
    figures = valence_figures(scores, audio, scored)
    figures["n_without_speech"] = len(clips) - len(scored)
    figures["mean_window_s"] = float(np.mean(windows)) if windows else None
    return figures


def analyze_per_speaker(checkpoint: str, paths: list[Path], speakers: list[Any]) -> list[Any]:
    """``mer analyze --same-speaker`` on each speaker's files (``paths`` grouped by speaker,
    in order); their results in the order of ``paths``."""
    from itertools import groupby

    from mercli.checkpoint import load_model, open_checkpoint
    from mercli.features.extract import ExtractConfig
    from mercli.pipeline import Analyzer

    found = open_checkpoint(checkpoint)
    config = ExtractConfig.for_profile(found.meta.feature_profile, device="cpu")
    analyzer = Analyzer(load_model(found, "cpu", text_states=True), config, same_speaker=True)
    results = []
    pairs = list(zip(paths, speakers, strict=True))
    for _, group in groupby(pairs, key=lambda pair: pair[1]):
        results += list(analyzer.analyze([p for p, _ in group]))
    return results


def mosi_figures(checkpoint: str, loaded: Any, label_csv: Path) -> dict[str, float]:
    from mercli.experiment import DataSpec, load_data
    from mercli.metrics import regression_metrics
    from mercli.train import make_loader, predict

    spec = DataSpec("mosi", label_csv, (), loaded.model.config.text_backbone, finetune_text=True)
    data = load_data(spec, log=lambda message: None)
    loader = make_loader(data.test, data.collate, 64, shuffle=False, seed=0)
    p = predict(loaded.model, loader, loaded.device)
    return regression_metrics(p.predicted, p.labels)


def crema_figures(checkpoint: str, folder: Path) -> list[dict[str, Any]]:
    from mercli.data.ravdess import valence

    paths = sorted(
        p for p in folder.iterdir() if p.suffix.lower() in (".flv", ".mp3", ".mp4", ".wav")
    )
    rows = []
    actors = [p.name.split("_")[0] for p in paths]  # each actor's files as one speaker's
    for result in analyze_per_speaker(checkpoint, paths, actors):
        name = Path(result.path).name
        emotion = CREMA_EMOTIONS.get(name.split("_")[2], "?")
        scores = [p.score for p in result.predictions]
        audio = [p.contributions.get("audio") for p in result.predictions]
        rows.append(
            {
                "file": name,
                "emotion": emotion,
                "valence": valence(emotion) if emotion != "?" else None,
                "text": " / ".join(p.text for p in result.predictions),
                "score": float(np.mean(scores)) if scores else None,
                "audio_contribution": float(np.mean([a for a in audio if a is not None]))
                if any(a is not None for a in audio)
                else None,
                "voice_emotion": [p.descriptors.voice_emotion for p in result.predictions],
                "status": result.status,
            }
        )
    return rows


def crema_summary(scores: list[float], valences: list[float]) -> str:
    """How many non-neutral clips' scores have their mapped valence's sign, and Pearson r over
    all of them."""
    score, valence = np.array(scores), np.array(valences)
    emotional = valence != 0
    correct = int(np.sum((score[emotional] > 0) == (valence[emotional] > 0)))
    return (
        f"sign right on {correct}/{int(emotional.sum())} non-neutral clips, "
        f"Pearson r {_pearson(score, valence):.3f} over {len(score)}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="run folders (seed_N/best) or names")
    parser.add_argument("--ravdess", type=Path, help="prepared RAVDESS dataset (ravdess.pkl)")
    parser.add_argument(
        "--ravdess-media",
        type=Path,
        help="the extracted audio_speech_actors_01-24: the split's wav files through analyze",
    )
    parser.add_argument("--split", default="test", choices=["valid", "test"])
    parser.add_argument("--mosi", type=Path, help="CMU-MOSI label.csv")
    parser.add_argument("--crema", type=Path, help="folder of CREMA-D clips")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args(argv)

    from mercli.checkpoint import load_model

    load = os.getloadavg()
    print(f"load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}", file=sys.stderr)
    figures: dict[str, Any] = {}
    utterances, clips = ravdess_utterances(args.ravdess, args.split) if args.ravdess else ([], [])
    for checkpoint in args.checkpoints:
        loaded = load_model(checkpoint)
        entry: dict[str, Any] = {"modalities": list(loaded.modalities)}
        print(f"\n== {checkpoint}  (reads {', '.join(loaded.modalities)})")
        if args.ravdess:
            r = ravdess_figures(loaded, utterances, clips)
            entry["ravdess"] = r
            print(
                f"RAVDESS {args.split} actors, {r['n_clips']} clips: sign accuracy non-neutral "
                f"{r['sign_accuracy_non_neutral']:.3f} (happy/sad/angry/fearful/disgust "
                f"{r['sign_accuracy_clear']:.3f}), Pearson r {r['pearson_r']:.3f}, "
                f"mean |audio contribution| {r['mean_abs_audio_contribution']}"
            )
            print(
                "  mean score per emotion: "
                + ", ".join(f"{e} {s:+.2f}" for e, s in r["mean_score_per_emotion"].items())
            )
        if args.ravdess_media:
            r = ravdess_media_figures(checkpoint, args.ravdess_media, args.split)
            entry["ravdess_analyze"] = r
            print(
                f"RAVDESS {args.split} actors through analyze, {r['n_clips']} clips with speech "
                f"(windows {r['mean_window_s']:.2f} s): sign accuracy non-neutral "
                f"{r['sign_accuracy_non_neutral']:.3f}, Pearson r {r['pearson_r']:.3f}, "
                f"mean audio contribution {r['mean_audio_contribution']}"
            )
        if args.mosi:
            m = mosi_figures(checkpoint, loaded, args.mosi)
            entry["mosi_test"] = m
            print(
                f"CMU-MOSI test (no audio): MAE {m['mae']:.3f}  Corr {m['corr']:.3f}  "
                f"Acc-2 {100 * m['acc2_has0']:.1f}/{100 * m['acc2_non0']:.1f}  "
                f"Acc-7 {100 * m['acc7']:.1f}"
            )
        if args.crema:
            rows = crema_figures(checkpoint, args.crema)
            entry["crema_d"] = rows
            for row in rows:
                score = "-" if row["score"] is None else f"{row['score']:+.2f}"
                voice = ",".join(str(v) for v in row["voice_emotion"])
                print(
                    f"  CREMA-D {row['file']:22s} {row['emotion']:8s} {score}  "
                    f"voice {voice:10s} {row['text']!r}"
                )
            scored = [r for r in rows if r["score"] is not None and r["valence"] is not None]
            if any(r["valence"] != 0 for r in scored):
                audio = [
                    r["audio_contribution"] for r in scored if r["audio_contribution"] is not None
                ]
                moved = f", mean audio contribution {np.mean(audio):+.2f}" if audio else ""
                summary = crema_summary(
                    [r["score"] for r in scored], [r["valence"] for r in scored]
                )
                print(f"  CREMA-D: {summary}{moved}")
        figures[checkpoint] = entry
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
