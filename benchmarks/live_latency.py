"""Latency and memory of ``mer analyze --live`` on a stream played at real-time speed.

    python benchmarks/live_latency.py [--clip PATH] [--minutes 30] [--faces] [--asr ct2]
        [--max-lag S] [--early-step S] [--confirm S] [--no-pause-split] [--threads N]
        [--out FILE]

A local ffmpeg process plays ``--clip`` in a loop at its own pace (``-re -stream_loop -1``) for
``--minutes`` and pipes it (matroska, streams copied, in clusters of 0.1 s) into the same reader
and session that ``mer analyze --live -`` uses, in this process, with the packaged default model
and Whisper tiny.en on the backend ``--asr`` (as ``mer analyze --asr``; default auto: ct2 on the
CPU). Per
utterance it records the latency from the arrival of the utterance's last sample to its result
(which includes the endpointer's ``min_silence_s`` wait) and the part of it spent scoring
(Whisper + features + model; wall, and CPU of the whole process, since CTranslate2 computes in
its own threads), and whether it was emitted early (by local agreement, before its stretch of
speech ended) or when its stretch ended; every 10 s the process's resident memory. Each
latency is split into stages (:class:`mercli.live.Stages`): ``decision`` (waiting for the
endpoint's silence, or for the check whose transcript agreed), ``queue`` (the session busy with
earlier work), ``transcribe``, ``acoustic``, ``vision``, ``text`` (text states), ``model``,
``voice`` (voice emotion), ``other`` (the rest of the call) and ``output`` (to the printed line).
Prints a summary, overall and for the two kinds of utterance, with the per-stage p50, and writes
everything as JSON to ``--out``.

Targets: <= 2 s from the end of an utterance to its output on a 2-core CPU with tiny.en; memory
flat over 30 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_CLIP = ROOT.parent / "shared" / "media" / "audio_speech" / "musetalk_eng_60s.wav"


def rss_mb() -> float:
    """Current resident set size of this process, MiB (Linux /proc)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def sender(clip: Path, seconds: float) -> subprocess.Popen[bytes]:
    from mercli.features.media import ffmpeg_exe

    command = [
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin",
        "-re", "-stream_loop", "-1", "-i", str(clip), "-t", f"{seconds:g}",
        "-map", "0:a:0", "-map", "0:v:0?", "-c", "copy",
        # matroska's clusters last about 1 s by default, so the audio would arrive in 1 s
        # bursts; a live source (a microphone, a stream) delivers it every few tens of ms
        "-cluster_time_limit", "100", "-f", "matroska", "pipe:1",
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE)


def percentile(values: list[float], q: float) -> float | None:
    import numpy as np

    return None if not values else float(np.percentile(values, q))


def spread(values: list[float]) -> dict[str, float | None]:
    return {
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "max": max(values, default=None),
    }


def describe(name: str, figures: dict) -> str:
    if not figures.get("p50"):
        return f"{name}: none"
    n = f"{figures['n']} " if "n" in figures else ""
    return (
        f"{name}: {n}p50 {figures['p50']:.2f} s, p90 {figures['p90']:.2f} s, "
        f"max {figures['max']:.2f} s"
    )


STAGES = (
    "decision", "queue", "transcribe", "acoustic", "vision", "text", "model", "voice", "other",
    "output",
)  # fmt: skip


def stage_parts(u, printed_s: float) -> dict[str, float]:
    """The latency of a :class:`mercli.live.LiveUtterance` split into :data:`STAGES` (they add up
    to its latency plus ``output``)."""
    st = u.stages
    parts = {
        "decision": st.decided_s - u.wall_end_s,
        "queue": st.started_s - st.decided_s,
        "transcribe": st.transcribe_s,
        "acoustic": st.acoustic_s,
        "vision": st.vision_s,
        "text": st.text_s,
        "model": st.model_s,
        "voice": st.voice_s,
    }
    parts["other"] = u.emitted_s - st.started_s - sum(list(parts.values())[2:])
    parts["output"] = printed_s - u.emitted_s
    return parts


def stage_medians(rows: list[dict]) -> dict[str, float | None]:
    return {k: percentile([r["stages"][k] for r in rows], 50) for k in STAGES}


def describe_stages(medians: dict[str, float | None]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in medians.items() if v is not None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument(
        "--max-wall-minutes",
        type=float,
        default=None,
        help="Stop after this long even when scoring has fallen behind the stream.",
    )
    parser.add_argument("--faces", action="store_true", help="Detect faces (video clips).")
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--asr", default="auto", choices=["auto", "ct2", "ct2-int8", "torch"])
    parser.add_argument(
        "--max-lag",
        type=float,
        default=None,
        help="LiveSession.max_lag_s (seconds a closed segment may wait before the late ones are "
        "joined into one Whisper call) [default: mercli.live.MAX_LAG_S].",
    )
    parser.add_argument(
        "--early-step",
        type=float,
        default=None,
        help="EarlyEmission.step_s; 0 turns early emission off [default: mercli.live's].",
    )
    parser.add_argument(
        "--confirm",
        type=float,
        default=None,
        help="EarlyEmission.confirm_s (the check after a pause) [default: mercli.live's].",
    )
    parser.add_argument(
        "--no-pause-split",
        action="store_true",
        help="EarlyEmission.use_pause_split off (as mer analyze --live --no-pause-split).",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch threads, which CTranslate2 takes too [default: one per core, as mer analyze "
        "gets by default].",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "live_latency.json")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from mercli.checkpoint import load_model
    from mercli.features.extract import ExtractConfig, FrontEnd
    from mercli.features.stream import LiveStream, parse_source
    from mercli.live import EarlyEmission, LiveSession, LiveSummary, reads_ahead

    loaded = load_model(args.checkpoint, "cpu")
    config = ExtractConfig.for_profile(
        loaded.meta.feature_profile, asr=args.asr, use_faces=args.faces
    )
    options: dict = {} if args.max_lag is None else {"max_lag_s": args.max_lag}
    early = EarlyEmission(use_pause_split=not args.no_pause_split)
    if args.early_step:
        early = replace(early, step_s=args.early_step)
    if args.confirm is not None:
        early = replace(early, confirm_s=args.confirm)
    options["early"] = None if args.early_step == 0 else early
    session = LiveSession(loaded, FrontEnd(config), use_video=args.faces, **options)
    session.warm_up()
    seconds = args.minutes * 60
    play = sender(args.clip, seconds)
    stream = LiveStream(parse_source("-"), use_video=args.faces, stdin=play.stdout)
    summary = LiveSummary("-")
    rows: list[dict] = []
    memory: list[tuple[float, float]] = []
    started = time.time()
    next_sample = started
    scoring_s = scoring_cpu_s = 0.0
    loads: list[float] = []
    from mercli.features.stream import AudioChunk

    for item in stream:
        if isinstance(item, AudioChunk):
            session.insert_audio_chunk(item.samples, item.wall_s)
        else:
            session.insert_frame(item)
        if reads_ahead(stream, session):  # as run_live: behind real time, read the queue first
            continue
        t0, cpu0 = time.time(), time.process_time()
        out = session.process_iter()
        if out:
            scoring_s, scoring_cpu_s = time.time() - t0, time.process_time() - cpu0
        for u in out:
            summary.add(u)
            rows.append(
                {
                    "start_s": u.prediction.start_s,
                    "end_s": u.prediction.end_s,
                    "latency_s": u.latency_s,
                    "scoring_s": scoring_s,
                    "scoring_cpu_s": scoring_cpu_s,
                    "backlog_s": (time.time() - started) - session.stream_s,
                    "early": u.is_early,
                    "text": u.prediction.text,
                }
            )
            r = rows[-1]
            r["stages"] = stage_parts(u, time.time())
            print(  # progress, so that a run cut short still says what it measured
                f"{r['end_s']:8.1f} s {'early' if r['early'] else 'end  '} "
                f"latency {r['latency_s']:.2f} s scoring {r['scoring_s']:.2f} "
                f"s cpu {r['scoring_cpu_s']:.2f} s backlog {r['backlog_s']:.1f} s rss "
                f"{rss_mb():.0f} MiB load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
        now = time.time()
        if args.max_wall_minutes and now - started > args.max_wall_minutes * 60:
            stream.close()
            break
        if now >= next_sample:
            memory.append((now - started, rss_mb()))
            loads.append(os.getloadavg()[0])
            next_sample += 10.0
    session.finish()
    play.kill()
    play.wait()
    latencies = [r["latency_s"] for r in rows]
    early = [r["latency_s"] for r in rows if r["early"]]
    at_end = [r["latency_s"] for r in rows if not r["early"]]
    scoring = [r["scoring_s"] for r in rows]
    scoring_cpu = [r["scoring_cpu_s"] for r in rows]
    backlog = [r["backlog_s"] for r in rows]
    result = {
        "clip": str(args.clip),
        "stream_s": session.stream_s,
        "wall_s": time.time() - started,
        "status": stream.status,
        "reason": stream.reason,
        "faces": args.faces,
        "threads": args.threads,
        "asr": config.asr_backend,
        "max_lag_s": session.max_lag_s,
        "n_joined_calls": session.n_joined_calls,
        "early_step_s": session.early.step_s if session.early else None,
        "confirm_s": session.early.confirm_s if session.early else None,
        "use_pause_split": session.early.use_pause_split if session.early else None,
        "n_checks": session.n_checks,
        "n_skipped_checks": session.n_skipped_checks,
        "n_pause_checks": session.n_pause_checks,
        "n_reused": session.n_reused,
        "n_utterances": len(rows),
        "latency_s": spread(latencies),
        "latency_early_s": {"n": len(early), **spread(early)},
        "latency_at_stretch_end_s": {"n": len(at_end), **spread(at_end)},
        "scoring_s": {"p50": percentile(scoring, 50), "max": max(scoring, default=None)},
        "scoring_cpu_s": {
            "p50": percentile(scoring_cpu, 50),
            "max": max(scoring_cpu, default=None),
        },
        "backlog_s": {"p50": percentile(backlog, 50), "max": max(backlog, default=None)},
        "stages_p50_s": {
            "all": stage_medians(rows),
            "early": stage_medians([r for r in rows if r["early"]]),
            "at_stretch_end": stage_medians([r for r in rows if not r["early"]]),
        },
        "load_1min": {"mean": sum(loads) / max(len(loads), 1), "max": max(loads, default=None)},
        "endpoint_wait_s": session.vad.min_silence_s,
        "rss_mb": {
            f"{int(t // 60)} min": round(m, 1)
            for t, m in memory
            if int(t) % 300 < 10 or t == memory[-1][0]
        },
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "load_avg": os.getloadavg(),
        "utterances": rows,
        "memory": memory,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(
        f"{result['stream_s'] / 60:.1f} min of stream ({stream.status}), "
        f"{len(rows)} utterances, ASR {config.asr_backend}, {args.threads} threads, "
        f"max lag {session.max_lag_s} s, "
        f"early step {result['early_step_s']} s ({session.n_checks} checks, "
        f"{session.n_pause_checks} of them at pauses, {session.n_skipped_checks} skipped late; "
        f"{session.n_reused} stretch ends reused a pause's transcript); "
        "latency end of utterance -> output: "
        f"{describe('all', result['latency_s'])}; "
        f"{describe('emitted early', result['latency_early_s'])}; "
        f"{describe('at stretch end', result['latency_at_stretch_end_s'])} "
        f"(scoring p50 {result['scoring_s']['p50']:.2f} s "
        f"wall, {result['scoring_cpu_s']['p50']:.2f} s CPU; endpoint wait "
        f"{session.vad.min_silence_s} s); backlog behind real time max "
        f"{result['backlog_s']['max']:.1f} s; {session.n_joined_calls} Whisper calls joined "
        "late segments"
    )
    for kind, medians in result["stages_p50_s"].items():
        print(f"stages p50 (s), {kind}: {describe_stages(medians)}")
    print(f"RSS by minute (MiB): {result['rss_mb']}; peak {result['peak_rss_mb']:.0f} MiB")
    print(
        f"1-min load average during the run: mean {result['load_1min']['mean']:.1f}, max "
        f"{result['load_1min']['max']:.1f} (2 cores); written to {args.out}"
    )


if __name__ == "__main__":
    main()
