"""Speed and peak memory of ``mer analyze`` against the project's targets, on 1 and 2 threads.

    python benchmarks/analyze_speed.py [--media DIR] [--threads 1 2] [--asr ct2 torch]
        [--skip-cold] [--skip-faces] [--skip-speed] [--skip-memory] [--checkpoint PATH]
        [--device cpu|cuda] [--overlap-faces auto on off]

Cold/warm and speed run once per ASR backend of ``--asr`` (``mer analyze --asr``: ct2 and
ct2-int8 = faster-whisper in float32 / int8, torch = openai-whisper; same tiny.en weights).

Cold / warm: ``mer analyze samples/demo.mp4`` end to end in a fresh process (imports, model
loading, everything), with ``--no-cache`` (cold: no feature cache) and then with a feature cache
that holds the file (warm), best of ``--repeats``; and ``mer --help``.

Faces: milliseconds per sampled frame (wall and CPU, best of ``--repeats``) of face detection
(``detect_candidates``: batched MTCNN, tracking between keyframes) on 40 frames of
``samples/demo.mp4`` (512x512) and of the 1080x1920 HEVC portrait decoded at full size, and at
the 640-pixel side the pipeline decodes; also with every frame searched whole
(``detect_every=1``) for comparison.

Speed: the in-process pipeline (:class:`mercli.pipeline.Analyzer`, feature cache off) on every
talking-head clip and on the 60 s speech file of ``../shared/media``, alternating with Whisper
alone, best of ``--repeats`` each (wall and CPU apart; openai-whisper once); per file the real-time
factor (seconds of compute per second of media) broken down by stage (decode = probe + audio
decode; asr = Whisper; audio = acoustic features; faces = frame decoding + MTCNN + expression
net; model = tokenising + the emotion model), and the ratio of the whole to Whisper transcription
alone on the same input, measured in the same run with the same thread count: on the same
backend (what the rest of the pipeline adds) and on openai-whisper (the issue's yardstick).

Memory: peak RSS of a fresh process analysing a 1-minute and a 10-minute input, both made by
looping one talking-head clip with ffmpeg into /tmp (target: 10 min <= 1.2 x 1 min), and the
highest resident memory seen in each stage (load = model loading, decode, asr, audio, faces,
model), which says where the peak is.

Without ``--checkpoint`` it uses the packaged default checkpoint when installed, else a randomly
initialised model of the full architecture on the offline MiniLM backbone (compute does not
depend on the weights). Every section prints the load average (``os.getloadavg``) it ran under:
the machine may be shared. On a GPU (``--device cuda``) the same figures are taken unchanged.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
STAGES = ("decode", "asr", "audio", "faces", "model")

if TYPE_CHECKING:
    from mercli.features.profile import FeatureProfile


def checkpoint_path(given: str | None) -> str:
    from mercli.checkpoint import available_models

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


def build_full_checkpoint(target: Path, profile: FeatureProfile) -> None:
    """The paper-sized model (default widths, 3/2/2 layers) reading mer's raw features."""
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


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def _mer(args: list[str], threads: int) -> float:
    """Wall seconds of ``python -m mercli ARGS`` in a fresh process with ``threads`` threads."""
    return _mer_timed(args, threads)[0]


def _mer_timed(args: list[str], threads: int) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, all its threads) of ``python -m mercli ARGS`` in a
    fresh process with ``threads`` threads; the CPU time is steadier on a shared machine."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "mercli", *args],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu


def cold_and_warm(
    checkpoint: str, threads: int, repeats: int, device: str, asr: str = "auto"
) -> dict:
    """Best-of-``repeats`` wall seconds of cold and warm ``mer analyze samples/demo.mp4``."""
    demo = ROOT / "samples" / "demo.mp4"
    common = [str(demo), "--checkpoint", checkpoint, "--device", device, "--json", "--asr", asr]
    _mer(["analyze", *common], threads)  # fills the feature cache (and the OS file cache)
    cold = [_mer_timed(["analyze", *common, "--no-cache"], threads) for _ in range(repeats)]
    warm = [_mer_timed(["analyze", *common], threads) for _ in range(repeats)]
    return {
        "threads": threads,
        "help_s": min(_mer(["--help"], threads) for _ in range(repeats)),
        "cold_s": min(wall for wall, _ in cold),
        "warm_s": min(wall for wall, _ in warm),
        "cold_cpu_s": min(cpu for _, cpu in cold),
        "warm_cpu_s": min(cpu for _, cpu in warm),
    }


def face_detection(media: Path, threads: int, device: str, repeats: int = 1) -> list[dict]:
    """Milliseconds per frame of face detection on 40 frames, batched, per frame size: wall
    and CPU (this process, all its threads), each the best of ``repeats``."""
    from dataclasses import replace

    import torch

    from mercli.features.faces import FaceConfig, detect_candidates, load_detector
    from mercli.features.media import iter_frames

    torch.set_num_threads(threads)
    detector = load_detector(device)
    inputs = [
        ("demo 512x512", ROOT / "samples" / "demo.mp4", 640),
        (
            "portrait 1080x1920",
            media / "talking_head" / "latentsync_demo3_video_portrait_hevc.mp4",
            1920,
        ),
        (
            "portrait at 640 (pipeline)",
            media / "talking_head" / "latentsync_demo3_video_portrait_hevc.mp4",
            640,
        ),
    ]
    rows = []
    for name, path, max_side in inputs:
        if not path.is_file():
            continue
        frames = [f.rgb for f in iter_frames(path, fps=5.0, max_side=max_side)][:40]
        detect_candidates(frames[:2], detector)  # first-call costs
        for every in (FaceConfig().detect_every, 1):
            config = replace(FaceConfig(), detect_every=every)
            walls, cpus = [], []
            for _ in range(repeats):
                started, cpu = time.perf_counter(), time.process_time()
                found = detect_candidates(frames, detector, config)
                walls.append(1000 * (time.perf_counter() - started) / len(frames))
                cpus.append(1000 * (time.process_time() - cpu) / len(frames))
            ms, cpu_ms = min(walls), min(cpus)
            rows.append(
                {
                    "input": name,
                    "size": f"{frames[0].shape[1]}x{frames[0].shape[0]}",
                    "threads": threads,
                    "detect_every": every,
                    "ms_per_frame": ms,
                    "cpu_ms_per_frame": cpu_ms,
                    "frames_with_face": sum(bool(f) for f in found) / len(found),
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def speed(
    media: Path,
    checkpoint: str,
    fps: float,
    threads: int = 1,
    device: str = "cpu",
    asr: str = "auto",
    overlap_faces: str = "auto",
    repeats: int = 1,
) -> list[dict]:
    import torch

    from mercli.checkpoint import load_model
    from mercli.features.extract import ExtractConfig, load_transcriber
    from mercli.features.media import load_audio, probe
    from mercli.pipeline import Analyzer

    torch.set_num_threads(threads)
    loaded = load_model(checkpoint, device)
    config = ExtractConfig.for_profile(
        loaded.meta.feature_profile, fps=fps, device=device, asr=asr, overlap_faces=overlap_faces
    )
    analyzer = Analyzer(loaded, config, use_cache=False)
    # second tiny.en models, for Whisper alone on the same input: this backend and openai-whisper
    whisper = load_transcriber(ExtractConfig(device=device, asr=asr))
    openai_whisper = load_transcriber(ExtractConfig(device=device, asr="torch"))
    files = sorted((media / "talking_head").glob("*"))
    files.append(media / "audio_speech/musetalk_eng_60s.wav")
    analyzer.analyze_file(files[0])  # warm-up: model loading and first-call costs
    rows = []
    for path in files:
        audio = load_audio(path) if probe(path).has_audio else None
        runs, alone_runs = [], []
        for _ in range(repeats):  # alternated, so both meet the same load
            started, cpu = time.perf_counter(), time.process_time()
            result = analyzer.analyze_file(path)
            runs.append((time.perf_counter() - started, time.process_time() - cpu, result))
            started, cpu = time.perf_counter(), time.process_time()
            if audio is not None:
                whisper(audio)
            alone_runs.append((time.perf_counter() - started, time.process_time() - cpu))
        total, _, result = min(runs, key=lambda run: run[0])
        total_cpu = min(cpu for _, cpu, _ in runs)
        alone, alone_cpu = min(wall for wall, _ in alone_runs), min(cpu for _, cpu in alone_runs)
        started = time.perf_counter()
        if audio is not None:
            openai_whisper(audio)
        openai_alone = time.perf_counter() - started
        duration = result.duration_s or 1.0
        rows.append(
            {
                "file": path.name,
                "asr": config.asr_backend,
                "overlap_faces": config.use_face_overlap,
                "duration_s": duration,
                "status": result.status,
                "rtf": total / duration,
                "whisper_alone_rtf": alone / duration,
                "ratio_to_whisper_alone": total / alone,
                "openai_whisper_alone_rtf": openai_alone / duration,
                "ratio_to_openai_whisper_alone": total / max(openai_alone, 1e-9),
                # CPU seconds: on a shared machine, closer to what an idle one would take
                "cpu_rtf": total_cpu / duration,
                "cpu_ratio_to_whisper_alone": total_cpu / max(alone_cpu, 1e-9),
                **{f"rtf_{s}": result.timings_s.get(s, 0.0) / duration for s in STAGES},
                "rtf_faces_wait": result.timings_s.get("faces_wait", 0.0) / duration,
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


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
    """Analyse one file in this process and print its peak RSS (MiB) as JSON, with the highest
    resident memory seen in each stage (sampled every 10 ms; the stage is whichever front-end
    function, or the model, runs)."""
    import threading

    import torch

    from mercli import pipeline
    from mercli.checkpoint import load_model
    from mercli.features import extract
    from mercli.features.extract import ExtractConfig
    from mercli.pipeline import Analyzer

    stage, stage_max = ["load"], {}

    def sample() -> None:
        while True:
            with open("/proc/self/status") as f:
                rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
            stage_max[stage[0]] = max(stage_max.get(stage[0], 0), rss // 1024)
            time.sleep(0.01)

    def staged(module: object, name: str, label: str) -> None:
        function = getattr(module, name)

        def run(*args: object, **kwargs: object) -> object:
            stage[0] = label
            try:
                return function(*args, **kwargs)
            finally:
                stage[0] = "other"

        setattr(module, name, run)

    for name, label in (("decode_audio", "decode"), ("_transcribed", "asr"),
                        ("_with_audio", "audio"), ("_add_vision", "faces")):  # fmt: skip
        staged(extract, name, label)
    staged(pipeline, "predict", "model")
    threading.Thread(target=sample, daemon=True).start()
    torch.set_num_threads(1)
    started = time.perf_counter()
    loaded = load_model(checkpoint, "cpu")
    config = ExtractConfig.for_profile(loaded.meta.feature_profile, fps=fps)
    analyzer = Analyzer(loaded, config, use_cache=False)
    stage[0] = "other"
    result = analyzer.analyze_file(path)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "file": Path(path).name,
                "status": result.status,
                "n_utterances": len(result.predictions),
                "peak_rss_mib": peak_mib,
                "stage_max_rss_mib": stage_max,
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


def print_speed(rows: list[dict], threads: int, fps: float, repeats: int = 1) -> None:
    asr = rows[0]["asr"] if rows else "?"
    overlap = "alongside Whisper" if rows and rows[0]["overlap_faces"] else "after Whisper"
    print(
        f"\nspeed, ASR {asr}, faces {overlap} ({threads} thread(s), fps {fps}, best of {repeats}; "
        f"{load()}); "
        "RTF = compute s / media s; x whisper: on the same backend; x openai: openai-whisper alone"
    )
    header = [
        "file", "dur s", "RTF", *STAGES, "wait", "whisper alone", "x whisper", "x openai",
        "CPU RTF", "x (CPU)",
    ]  # fmt: skip
    print(" | ".join(header))
    for r in rows:
        print(
            " | ".join(
                [
                    r["file"][:34],
                    f"{r['duration_s']:.1f}",
                    f"{r['rtf']:.3f}",
                    *(f"{r[f'rtf_{s}']:.3f}" for s in STAGES),
                    f"{r['rtf_faces_wait']:.3f}",
                    f"{r['whisper_alone_rtf']:.3f}",
                    f"{r['ratio_to_whisper_alone']:.2f}",
                    f"{r['ratio_to_openai_whisper_alone']:.2f}",
                    f"{r['cpu_rtf']:.3f}",
                    f"{r['cpu_ratio_to_whisper_alone']:.2f}",
                ]
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", type=Path, default=ROOT.parent / "shared" / "media")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--asr", nargs="+", default=["ct2", "torch"], choices=["auto", "ct2", "ct2-int8", "torch"]
    )
    parser.add_argument(
        "--overlap-faces", nargs="+", default=["auto"], choices=["auto", "on", "off"]
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--memory-fps", type=float, default=5.0)
    parser.add_argument("--skip-cold", action="store_true")
    parser.add_argument("--skip-faces", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    checkpoint = checkpoint_path(args.checkpoint)
    if args.memory_child:
        memory_child(args.memory_child, checkpoint, args.fps)
        return
    if not args.skip_cold:
        for asr, threads in itertools.product(args.asr, args.threads):
            r = cold_and_warm(checkpoint, threads, args.repeats, args.device, asr)
            print(
                f"demo.mp4 (7.8 s), ASR {asr}, {threads} thread(s): cold {r['cold_s']:.1f} s "
                f"({r['cold_cpu_s']:.1f} s CPU; target <= 10), warm CPU {r['warm_cpu_s']:.1f} s, "
                f"warm cache {r['warm_s']:.1f} s (target <= 4), mer --help {r['help_s']:.2f} s, "
                f"best of {args.repeats}; {load()}",
                flush=True,
            )
    if not args.skip_faces:
        for threads in args.threads:
            for r in face_detection(args.media, threads, args.device, args.repeats):
                print(
                    f"face detection, {r['input']} ({r['size']}), {threads} thread(s), "
                    f"detect_every {r['detect_every']}: {r['ms_per_frame']:.1f} ms/frame "
                    f"({r['cpu_ms_per_frame']:.1f} ms CPU), best of {args.repeats}, "
                    f"faces in {r['frames_with_face']:.0%} of frames; {load()}",
                    flush=True,
                )
    if not args.skip_speed:
        for asr, threads, overlap in itertools.product(args.asr, args.threads, args.overlap_faces):
            rows = speed(
                args.media, checkpoint, args.fps, threads, args.device, asr, overlap, args.repeats
            )
            print_speed(rows, threads, args.fps, args.repeats)
    if not args.skip_memory:
        clip = args.media / "talking_head" / "real3dportrait_May_5s.mp4"
        rows = memory(clip, checkpoint, args.memory_fps)
        ratio = rows[1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
        print(
            f"\npeak RSS (fps {args.memory_fps}): 1 min {rows[0]['peak_rss_mib']:.0f} MiB, "
            f"10 min {rows[1]['peak_rss_mib']:.0f} MiB, ratio {ratio:.2f} (target <= 1.2); "
            f"{load()}"
        )
        for row in rows:
            stages = ", ".join(f"{k} {v}" for k, v in row["stage_max_rss_mib"].items())
            print(f"  {row['input_s'] // 60} min, highest RSS per stage (MiB): {stages}")


if __name__ == "__main__":
    main()
