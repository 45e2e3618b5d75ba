"""Early-emission policies of ``mer analyze --live`` compared offline on the shared speech clips.

    python benchmarks/early_policy.py [--confirm S] [--no-pause-split]
        [--base-confirm S] [--base-pause-split] [--clips A,B,...] [--out FILE]

Each clip is fed to a :class:`mercli.live.LiveSession` 0.1 s at a time as fast as it is scored
(every check made, none skipped late), once with the policy given (default: mercli.live's) and
once with the base policy (default: confirm_s 1.5, no cut at pauses). Whisper tiny.en on ct2 and
the packaged default model, as ``benchmarks/live_latency.py``. Per policy it prints the
utterances, how many were printed early, the checks, the CPU time, and the *stream delay* of
each utterance: stream seconds from its end to the point in the stream where it was printed
(the endpoint or the check that agreed; the wall-clock latency of live_latency.py adds the
transcription and the scoring to it). It then lists the policy's utterances whose words (case
and punctuation aside) or end (0.3 s) differ from every utterance of the base.

It also judges the rule "an utterance is final when a transcript made at a pause ends a
sentence there" over the base's pause checks: how many such utterances the base printed with
the same words and end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MEDIA = ROOT.parent / "shared" / "media"
CLIPS = (
    "audio_speech/musetalk_eng_60s.wav",
    "audio_speech/whisper_jfk.flac",
    "audio_speech/pocketsphinx_librivox_austen_0870.wav",
    "audio_speech/pyannote_sample_2speakers.wav",
    "audio_speech/fasterwhisper_stereo_diarization.wav",
    "talking_head/latentsync_demo3_video_portrait_hevc.mp4",
    "talking_head/sadtalker_WDA_KatieHill_000.mp4",
    "talking_head/retalking_face1_interview_man.mp4",
)


def run(path: Path, early, loaded, front_end) -> dict:
    """One clip through a session; its utterances and the transcripts made at pauses."""
    import mercli.live as live
    from mercli.features.agreement import LocalAgreement
    from mercli.features.media import load_audio

    pause_transcripts: list[list[tuple[float, float, str]]] = []

    class Recording(LocalAgreement):
        def update(self, hypothesis, paused=False, **kwargs):
            if paused:
                pause_transcripts.append([(u.start_s, u.end_s, u.text) for u in hypothesis])
            return super().update(hypothesis, paused, **kwargs)

    audio = load_audio(path)
    session = live.LiveSession(loaded, front_end, max_lag_s=None, early=early)
    rows = []

    def record(utterances, at_s: float) -> None:
        for u in utterances:
            p = u.prediction
            rows.append({"start_s": p.start_s, "end_s": p.end_s, "text": p.text,
                         "early": u.is_early, "at_s": at_s})  # fmt: skip

    agreement, live.LocalAgreement = live.LocalAgreement, Recording
    cpu_s = time.process_time()
    try:
        for i in range(0, len(audio), 1600):
            session.insert_audio_chunk(audio[i : i + 1600])
            record(session.process_iter(), session.stream_s)
        record(session.finish(), session.stream_s)
    finally:
        live.LocalAgreement = agreement
    return {
        "clip": path.name,
        "utterances": rows,
        "n_checks": session.n_checks,
        "cpu_s": time.process_time() - cpu_s,
        "pause_transcripts": pause_transcripts,
    }


def words(text: str) -> list[str]:
    from mercli.features.agreement import word_key

    return [word_key(w) for w in text.split()]


def matches(u: dict | tuple, printed: list[dict]) -> bool:
    """An utterance of ``printed`` has the same words and ends within 0.3 s."""
    text, end_s = (u["text"], u["end_s"]) if isinstance(u, dict) else (u[2], u[1])
    return any(words(v["text"]) == words(text) and abs(v["end_s"] - end_s) < 0.3 for v in printed)


def spread(values: list[float]) -> str:
    import numpy as np

    if not values:
        return "none"
    p50, p90 = np.percentile(values, [50, 90])
    return f"p50 {p50:.2f} s, p90 {p90:.2f} s, max {max(values):.2f} s"


def describe(name: str, early, runs: list[dict]) -> None:
    rows = [u for r in runs for u in r["utterances"]]
    delays = [u["at_s"] - u["end_s"] for u in rows]
    early_delays = [u["at_s"] - u["end_s"] for u in rows if u["early"]]
    print(
        f"{name} (confirm_s {early.confirm_s}, use_pause_split {early.use_pause_split}): "
        f"{len(rows)} utterances, {len(early_delays)} early, "
        f"{sum(r['n_checks'] for r in runs)} checks, "
        f"{sum(r['cpu_s'] for r in runs):.0f} s CPU; stream delay {spread(delays)}; "
        f"early {spread(early_delays)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--confirm", type=float, default=None)
    parser.add_argument("--no-pause-split", action="store_true")
    parser.add_argument("--base-confirm", type=float, default=1.5)
    parser.add_argument("--base-pause-split", action="store_true")
    parser.add_argument("--clips", default=",".join(CLIPS), help="Paths under shared/media.")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "early_policy.json")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from mercli.checkpoint import load_model
    from mercli.features.asr import SENTENCE_END
    from mercli.features.extract import ExtractConfig, FrontEnd
    from mercli.live import EarlyEmission

    policy = EarlyEmission(use_pause_split=not args.no_pause_split)
    if args.confirm is not None:
        policy = replace(policy, confirm_s=args.confirm)
    base = EarlyEmission(confirm_s=args.base_confirm, use_pause_split=args.base_pause_split)
    loaded = load_model("default", "cpu")
    front_end = FrontEnd(ExtractConfig(asr="ct2", use_faces=False))
    paths = [MEDIA / c for c in args.clips.split(",")]
    results = {
        name: [run(p, early, loaded, front_end) for p in paths]
        for name, early in (("base", base), ("policy", policy))
    }
    describe("base", base, results["base"])
    describe("policy", policy, results["policy"])
    differ = [
        (r["clip"], u)
        for r, b in zip(results["policy"], results["base"], strict=True)
        for u in r["utterances"]
        if not matches(u, b["utterances"])
    ]
    n = sum(len(r["utterances"]) for r in results["policy"])
    print(f"policy utterances that differ from the base's: {len(differ)} of {n}")
    for clip, u in differ:
        print(f"  {clip} {u['start_s']:.2f}-{u['end_s']:.2f} s: {u['text']}")
    # the rejected rule: the last utterance of a pause transcript, final when it ends a sentence
    judged = [
        (r["clip"], t[-1], matches(t[-1], r["utterances"]))
        for r in results["base"]
        for t in r["pause_transcripts"]
        if t and t[-1][2].rstrip().endswith(SENTENCE_END)
    ]
    print(
        "sentence ends at a pause, judged on that transcript alone: "
        f"{sum(ok for *_, ok in judged)} of {len(judged)} printed so by the base"
    )
    for clip, (start_s, end_s, text), ok in judged:
        if not ok:
            print(f"  {clip} {start_s:.2f}-{end_s:.2f} s: {text}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"policy": asdict(policy), "base": asdict(base), "runs": results}
    args.out.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
