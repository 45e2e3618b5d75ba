"""Real-time factor and peak memory of ``mer analyze`` (DESIGN.md section 8).

    python benchmarks/analyze_speed.py [--media DIR] [--checkpoint PATH] [--skip-memory]

Speed: the in-process pipeline (:class:`mercli.pipeline.Analyzer`, feature cache off) on every
talking-head clip and on the 60 s speech file of ``../shared/media``; per file the real-time
factor (seconds of compute per second of media) broken down by stage (decode = probe + audio
decode; asr = Whisper; audio = acoustic features; faces = frame decoding + MTCNN + expression
net; model = tokenising + the emotion model), and the ratio of the whole to Whisper transcription
alone on the same input, measured in the same run.

Memory: peak RSS of a fresh process analysing a 1-minute and a 10-minute input, both made by
looping one talking-head clip with ffmpeg into /tmp (target: 10 min <= 1.2 x 1 min).

Without ``--checkpoint`` it uses the packaged default checkpoint when installed, else a randomly
initialised model of the full architecture on the offline MiniLM backbone (compute does not
depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
STAGES = ("decode", "asr", "audio", "faces", "model")


def checkpoint_path(given: str | None) -> str:
    from mercli.models import available_models

    if given:
        return given
    if "default" in available_models():
        return "default"
    target = Path(tempfile.gettempdir()) / "mer-bench-random-checkpoint"
    if not (target / "checkpoint.json").is_file():
        from mercli.features.profile import raw_profile

        print(
            "no default checkpoint: timing a random-weight model of the full architecture "
            "(reads text, audio, vision) on MiniLM",
            file=sys.stderr,
        )
        build_full_checkpoint(target, raw_profile("all-MiniLM-L6-v2"))
    return str(target)


def build_full_checkpoint(target: Path, profile: dict) -> None:
    """The paper-sized model (d_model 176, 3/2/2 layers) reading mer's raw features."""
    from dataclasses import replace

    from mercli.checkpoint import CheckpointMeta, save_checkpoint
    from mercli.config import ModelConfig
    from mercli.model import EmotionModel

    base = ModelConfig()
    config = replace(
        base,
        audio=replace(base.audio, d_in=35),
        vision=replace(base.vision, d_in=154),
        text_backbone="all-MiniLM-L6-v2",
        finetune_text_backbone=False,
    )
    save_checkpoint(
        EmotionModel(config), target, CheckpointMeta(model_config={}, feature_profile=profile)
    )


def speed(media: Path, checkpoint: str, fps: float) -> list[dict]:
    import torch

    from mercli.features.asr import transcribe
    from mercli.features.extract import ExtractConfig
    from mercli.features.media import load_audio
    from mercli.models import load_model
    from mercli.pipeline import Analyzer

    torch.set_num_threads(1)
    analyzer = Analyzer(load_model(checkpoint, "cpu"), ExtractConfig(fps=fps), use_cache=False)
    whisper = _whisper_model()  # a second tiny.en, for Whisper alone on the same input
    files = sorted((media / "talking_head").glob("*"))
    files.append(media / "audio_speech/musetalk_eng_60s.wav")
    analyzer.analyze_file(files[0])  # warm-up: model loading and first-call costs
    rows = []
    for path in files:
        started = time.perf_counter()
        result = analyzer.analyze_file(path)
        total = time.perf_counter() - started
        started = time.perf_counter()
        if result.has_audio:
            transcribe(load_audio(path), whisper)
        alone = time.perf_counter() - started
        duration = result.duration_s or 1.0
        rows.append(
            {
                "file": path.name,
                "duration_s": duration,
                "status": result.status,
                "rtf": total / duration,
                "whisper_alone_rtf": alone / duration,
                "ratio_to_whisper_alone": total / alone,
                **{f"rtf_{s}": result.timings_s.get(s, 0.0) / duration for s in STAGES},
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


_WHISPER: dict[str, object] = {}


def _whisper_model() -> object:
    from mercli.features.whisper_offline import load_whisper

    if "model" not in _WHISPER:
        _WHISPER["model"] = load_whisper("tiny.en", "cpu")
    return _WHISPER["model"]


def looped_input(clip: Path, seconds: int, directory: Path) -> Path:
    """``clip`` repeated to ``seconds`` long (stream copy), written under ``directory``."""
    from mercli.features.media import ffmpeg_exe

    out = directory / f"loop_{seconds}s{clip.suffix}"
    if not out.is_file():
        subprocess.run(
            [
                ffmpeg_exe(),
                "-v",
                "error",
                "-y",
                "-stream_loop",
                "-1",
                "-i",
                str(clip),
                "-t",
                str(seconds),
                "-c",
                "copy",
                str(out),
            ],
            check=True,
        )
    return out


def memory_child(path: str, checkpoint: str, fps: float) -> None:
    """Analyse one file in this process and print its peak RSS (MiB) as JSON."""
    import torch

    from mercli.features.extract import ExtractConfig
    from mercli.models import load_model
    from mercli.pipeline import Analyzer

    torch.set_num_threads(1)
    started = time.perf_counter()
    analyzer = Analyzer(load_model(checkpoint, "cpu"), ExtractConfig(fps=fps), use_cache=False)
    result = analyzer.analyze_file(path)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "file": Path(path).name,
                "status": result.status,
                "n_utterances": len(result.predictions),
                "peak_rss_mib": peak_mib,
                "seconds": time.perf_counter() - started,
            }
        )
    )


def memory(clip: Path, checkpoint: str, fps: float) -> list[dict]:
    rows = []
    directory = Path(tempfile.gettempdir()) / "mer-bench-media"
    directory.mkdir(exist_ok=True)
    for seconds in (60, 600):
        path = looped_input(clip, seconds, directory)
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--memory-child",
                str(path),
                "--checkpoint",
                checkpoint,
                "--fps",
                str(fps),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append({"input_s": seconds, **json.loads(out.stdout.strip().splitlines()[-1])})
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", type=Path, default=ROOT.parent / "shared" / "media")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--memory-fps", type=float, default=5.0)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    checkpoint = checkpoint_path(args.checkpoint)
    if args.memory_child:
        memory_child(args.memory_child, checkpoint, args.fps)
        return
    if not args.skip_speed:
        rows = speed(args.media, checkpoint, args.fps)
        print(
            f"\nspeed (CPU, {os.environ['OMP_NUM_THREADS']} thread(s), fps {args.fps}); RTF = "
            "compute s / media s"
        )
        header = ["file", "dur s", "RTF", *STAGES, "whisper alone", "x whisper"]
        print(" | ".join(header))
        for r in rows:
            print(
                " | ".join(
                    [
                        r["file"][:34],
                        f"{r['duration_s']:.1f}",
                        f"{r['rtf']:.3f}",
                        *(f"{r[f'rtf_{s}']:.3f}" for s in STAGES),
                        f"{r['whisper_alone_rtf']:.3f}",
                        f"{r['ratio_to_whisper_alone']:.2f}",
                    ]
                )
            )
    if not args.skip_memory:
        clip = args.media / "talking_head" / "real3dportrait_May_5s.mp4"
        rows = memory(clip, checkpoint, args.memory_fps)
        ratio = rows[1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
        print(
            f"\npeak RSS (fps {args.memory_fps}): 1 min {rows[0]['peak_rss_mib']:.0f} MiB, "
            f"10 min {rows[1]['peak_rss_mib']:.0f} MiB, ratio {ratio:.2f} (target <= 1.2)"
        )


if __name__ == "__main__":
    main()
