"""RAVDESS speech -> a ``mer prepare`` dataset (text + mer's own acoustic features, no faces).

RAVDESS is CC BY-NC-SA 4.0 and is never stored in this repository. To get it (566 MB), clone
``github.com/Rahul5430/Speech-Emotion-Recognition-System`` (or use any extracted copy of the
corpus' ``Audio_Speech_Actors_01-24.zip``) and take the speech folder out of commit b6a1dd81::

    git --git-dir=REPO/.git archive b6a1dd81cfb09db95d71b9ff3a5692bb68110fae \\
        speech-emotion-recognition-ravdess-data/audio_speech_actors_01-24 | tar -x -C DEST

(git prints "invalid object" for a few unrelated large files; the wav files come through. Do
not use that repository's other copy, ``speech-emotion-recognition-ravdess-data/Actor_*``: some
of its files were resampled and one is mislabelled.) Then::

    python benchmarks/ravdess_prepare.py \\
        DEST/speech-emotion-recognition-ravdess-data/audio_speech_actors_01-24 \\
        --out /data/ravdess_prepared

writes ``OUT/raw/label.csv`` + ``OUT/raw/Raw/Actor_XX/*.wav`` (symbolic links) and runs
``mer prepare OUT/raw --no-faces -o OUT/ravdess.pkl``: 1,439 clips (one of Actor_07's files is a
byte copy of another and is left out), split by actor (:mod:`mercli.data.ravdess`: train 1-16,
valid 17-20, test 21-24), labels from the declared valence mapping. ``mer train --extra-train
OUT/ravdess.pkl`` adds its train split. Prints the extraction time.

``--trim`` keeps only each clip's speech span, as ``mer analyze`` reads Whisper's utterance
windows rather than whole files: a RAVDESS clip holds about 1 s of silence on each side of its
2 s of speech, and the acoustic features are standardised over the window, so the share of
silence changes every frame's values. The span is voice activity over 20 ms frames
(:func:`mercli.data.ravdess.trim_wav`: the live endpointer with its gate 30 dB under the clip's
loudest frame, and 0.15 s of margin); the trimmed wav files are written into ``OUT/raw/Raw``
(16-bit, the source's rate and channels) and what was kept of each clip into
``OUT/raw/trim.csv``. On 44 clips the span's edges lay 0.09 s (start) and 0.13 s (end) from
Whisper tiny.en's windows on average, leaving out for the start the 10 clips where Whisper's
window starts at 0.0 s and so holds the leading silence. Off by default: models trained on
trimmed clips did not read the held-out actors or CREMA-D clearly better (README, "The voice in
the model").

``--vtlp 0.9 1.1`` adds, for each factor, a copy of every train actor's clip with its pitch and
formants scaled by it and its duration kept (:func:`mercli.data.ravdess.vtlp_wav`: ffmpeg's
``asetrate=RATE*F,aresample=RATE,atempo=1/F``), labelled as a train clip of video
``Actor_XX-vtlpF``: 16 actors' emotions in 48 voices (README, "Speaker augmentation, tried and
not shipped"). Valid and test clips are never scaled.

``--voice-relative`` standardises each actor's audio frames over all of that actor's clips
(``mer prepare --voice-relative``: the video, here the actor, is the speaker), and the dataset's
profile records it, so that a model trained on it reads ``analyze``'s files the same way, each
file's (or diarised speaker's) utterances together (:mod:`mercli.features.speaker_norm`).
The ``default`` checkpoint's voice is trained on ``--trim --audio-features whisper
--voice-relative``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="the extracted audio_speech_actors_01-24")
    parser.add_argument("--out", type=Path, required=True, help="output folder (outside the repo)")
    parser.add_argument(
        "--text-backbone", default="all-MiniLM-L6-v2", help="tokenizer of the recorded token ids"
    )
    parser.add_argument(
        "--trim",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="keep each clip's speech span only, as analyze's windows (see above)",
    )
    parser.add_argument(
        "--vtlp",
        type=float,
        nargs="*",
        default=[],
        metavar="FACTOR",
        help="also write the train actors' clips with pitch and formants scaled by each FACTOR "
        "(e.g. 0.9 1.1; see above)",
    )
    parser.add_argument(
        "--audio-features",
        choices=["acoustic", "whisper"],
        default="acoustic",
        help="mer's acoustic features, or Whisper tiny.en's encoder states (mer prepare's option)",
    )
    parser.add_argument(
        "--voice-relative",
        action="store_true",
        help="each actor's audio frames standardised over all their clips (mer prepare's "
        "option; see above)",
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="first N clips only (a dry run)")
    args = parser.parse_args(argv)

    from mercli.data.ravdess import find_clips, write_layout
    from mercli.features.extract import ExtractConfig
    from mercli.features.profile import AUDIO_FEATURES
    from mercli.prepare import PrepareConfig, prepare

    found = find_clips(args.source)
    for left, same in found.duplicates:
        print(f"left out {left}: same bytes as {same}", file=sys.stderr)
    clips = found.clips[: args.limit] if args.limit else found.clips
    raw = args.out / "raw"
    labels = write_layout(clips, raw, use_trim=args.trim, vtlp=args.vtlp)
    n_scaled = len(args.vtlp) * sum(c.split == "train" for c in clips)
    print(
        f"{len(clips)} clips (+{n_scaled} with scaled voices); layout and labels in {raw}",
        file=sys.stderr,
    )
    if args.trim:
        print(trim_summary(raw / "trim.csv"), file=sys.stderr)
    config = PrepareConfig(
        extract=ExtractConfig(use_faces=False, audio_extractor=AUDIO_FEATURES[args.audio_features]),
        text_backbone=args.text_backbone,
        workers=args.workers,
        voice_relative=args.voice_relative,
    )
    started = time.perf_counter()
    cpu_started = os.times()
    report = prepare(
        raw,
        labels,
        args.out / "ravdess.pkl",
        config,
        log=lambda message: print(message, file=sys.stderr),
    )
    wall = time.perf_counter() - started
    cpu = sum(os.times()[:4]) - sum(cpu_started[:4])
    load = os.getloadavg()
    print(
        f"prepared {report.n_prepared}/{len(clips) + n_scaled} clips ({report.prepared}), "
        f"{len(report.failed)} failed, {report.from_cache} from cache; "
        f"wall {wall:.1f} s ({wall / max(1, len(clips) + n_scaled):.3f} s/clip), CPU {cpu:.1f} s, "
        f"load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; dataset {args.out / 'ravdess.pkl'}"
    )
    return 0 if report.n_prepared else 1


def trim_summary(trim_csv: Path) -> str:
    """One line on what trimming kept (from ``write_layout``'s ``trim.csv``)."""
    import csv

    with trim_csv.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    kept = sum(float(r["end_s"]) - float(r["start_s"]) for r in rows)
    total = sum(float(r["duration_s"]) for r in rows)
    whole = [r["clip_id"] for r in rows if r["speech_found"] != "1"]
    return (
        f"trimmed to the speech: {kept / max(1, len(rows)):.2f} s kept of "
        f"{total / max(1, len(rows)):.2f} s per clip on average; {len(whole)} clips without "
        f"speech found, kept whole{': ' + ', '.join(whole) if whole else ''}"
    )


if __name__ == "__main__":
    sys.exit(main())
