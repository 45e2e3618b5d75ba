"""Diarization error rate of ``mer analyze --speakers`` and its share of analyze time.

    python benchmarks/diarization.py [--media DIR] [--out FILE.json]

DER (collar 0.25 s, overlap not scored separately; ``mercli.features.speakers``'s
``diarization_error_rate``) of the speaker spans that ``--speakers auto`` finds, on:

- composites of ``../shared/media`` clips (``tests/composites.py``): a man and a woman, two
  women, two men, each taking four turns. Their reference is the turns intersected with the
  clips' own speech (an energy detector: frames within 35 dB of the loudest, gaps under 0.3 s
  closed), so a speaker's pause is not counted as their speech;
- ``audio_speech/pyannote_sample_2speakers.wav``, a real two-person call, against its RTTM
  (not used to choose any setting).

Speech regions come from Whisper tiny.en's words, as in ``mer analyze``: missed speech and
false alarms are Whisper's, confusion is the diarization's. Also reported: the number of
speakers found and the largest distance of a found change point from the true one.

Time: the full pipeline (``mercli.pipeline.Analyzer``, cache off, packaged or random model) on
the side-by-side face composite and on the man/woman composite as audio, after one warm-up
file; the share is ``timings_s["speakers"]`` over the sum of all stages. And the face chosen for
each utterance of the face composite: left or right, against the reference.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import composites  # noqa: E402


def speech_mask_regions(audio: np.ndarray, floor_db: float = 35.0) -> list[tuple[float, float]]:
    hop = 160  # 10 ms
    n = len(audio) // hop
    rms = np.sqrt(np.mean(audio[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)
    db = 20 * np.log10(rms)
    on = db > max(-50.0, db.max() - floor_db)
    regions: list[tuple[float, float]] = []
    for i in np.flatnonzero(on):
        a = i * 0.01
        if regions and a - regions[-1][1] < 0.3:
            regions[-1] = (regions[-1][0], a + 0.01)
        else:
            regions.append((a, a + 0.01))
    return [(a, b) for a, b in regions if b - a >= 0.1]


def reference_speech(audio: np.ndarray, turns: list) -> list[tuple[float, float, str]]:
    regions = speech_mask_regions(audio)
    out = []
    for r in turns:
        for a, b in regions:
            lo, hi = max(a, r.start_s), min(b, r.end_s)
            if hi > lo:
                out.append((lo, hi, r.speaker))
    return out


def read_rttm(path: Path) -> list[tuple[float, float, str]]:
    out = []
    for line in path.read_text().splitlines():
        f = line.split()
        if f and f[0] == "SPEAKER":
            out.append((float(f[3]), float(f[3]) + float(f[4]), f[7]))
    return out


def change_errors(reference: list, hypothesis: list) -> list[float]:
    """For every reference change of speaker, the distance from the nearest hypothesis change
    to it; a change that falls in the pause between the two speakers' speech counts as 0."""
    ref = sorted(reference)
    hyp = sorted(hypothesis)
    pauses = [(a[1], b[0]) for a, b in itertools.pairwise(ref) if a[2] != b[2]]
    found = [a[1] for a, b in itertools.pairwise(hyp) if a[2] != b[2]]
    if not found:
        return [float("inf")] * len(pauses)
    return [min(max(lo - f, f - hi, 0.0) for f in found) for lo, hi in pauses]


def der_case(name: str, audio: np.ndarray, reference: list, front_end) -> dict:
    from mercli.features.speakers import diarization_error_rate, diarize_utterances

    utterances = front_end.transcribe(audio)
    started, cpu_started = time.perf_counter(), time.process_time()
    found = diarize_utterances(audio, utterances)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    hyp = [(s.start_s, s.end_s, s.speaker) for s in found.spans]
    der = diarization_error_rate(reference, hyp, collar_s=0.25)
    errors = change_errors(reference, hyp)
    row = {
        "case": name,
        "audio_s": round(len(audio) / 16000, 2),
        "speakers_true": len({s for _, _, s in reference}),
        "speakers_found": len({s for _, _, s in hyp}),
        **{k: round(v, 4) for k, v in der.items()},
        "max_change_error_s": round(max(errors), 3) if errors else None,
        "diarize_s": round(seconds, 3),
        "diarize_cpu_s": round(cpu_seconds, 3),
        "changes": [round(e, 3) for e in errors],
    }
    print(json.dumps(row), flush=True)
    return row


def timed_analysis(analyzer, path: Path) -> dict:
    """Stage timings of one file, and the diarization's share of wall and of CPU time.

    CPU time (this process, one torch thread) is steadier than wall time on a shared machine;
    ffmpeg's decoding runs in a child process and is not in it, which makes the CPU share of
    diarization an over- rather than an under-estimate.
    """
    from mercli.features import speakers

    spent = {"cpu_s": 0.0}
    real = speakers.diarize_utterances

    def counted(*args, **kwargs):
        started = time.process_time()
        try:
            return real(*args, **kwargs)
        finally:
            spent["cpu_s"] += time.process_time() - started

    speakers.diarize_utterances = counted
    cpu_started = time.process_time()
    try:
        result = analyzer.analyze_file(path)
    finally:
        speakers.diarize_utterances = real
    cpu_total = time.process_time() - cpu_started
    total = sum(result.timings_s.values())
    row = {
        "file": path.name,
        "status": result.status,
        "utterances": len(result.predictions),
        "speakers_found": len({p.descriptors.speaker for p in result.predictions}),
        "stages_s": {k: round(v, 3) for k, v in result.timings_s.items()},
        "total_s": round(total, 3),
        "speakers_share_wall": round(result.timings_s.get("speakers", 0.0) / total, 4),
        "cpu_total_s": round(cpu_total, 3),
        "speakers_cpu_s": round(spent["cpu_s"], 3),
        "speakers_share_cpu": round(spent["cpu_s"] / cpu_total, 4),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--media", type=Path, default=ROOT.parent / "shared" / "media")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--skip-der", action="store_true", help="only the time and face parts")
    args = parser.parse_args()

    import torch

    from mercli.features.extract import ExtractConfig, FrontEnd

    torch.set_num_threads(1)
    config = ExtractConfig(use_speakers=True)
    front_end = FrontEnd(config)
    report: dict = {"der": [], "time": [], "faces": None}
    cases = {
        "man_woman": composites.MAN_WOMAN,
        "woman_woman": composites.WOMAN_WOMAN,
        "man_man": composites.MAN_MAN,
    }
    tmp = Path(tempfile.mkdtemp(prefix="mer-diarization-"))
    for name, turns in cases.items():
        audio, reference = composites.voice_composite(turns, args.media)
        composites.write_wav(tmp / f"{name}.wav", audio)
        if not args.skip_der:
            ref = reference_speech(audio, reference)
            report["der"].append(der_case(name, audio, ref, front_end))
    call = args.media / "audio_speech" / "pyannote_sample_2speakers.wav"
    if call.is_file() and not args.skip_der:
        from mercli.features.media import load_audio

        ref = read_rttm(call.with_suffix(".rttm"))
        report["der"].append(der_case("pyannote_call", load_audio(call), ref, front_end))

    faces = tmp / "left_right.mp4"
    face_reference = composites.face_composite(
        args.media / composites.MAN_1,
        args.media / composites.WOMAN_2,
        composites.LEFT_RIGHT,
        faces,
    )
    if not args.skip_der:
        report["faces"] = face_sides(faces, face_reference, front_end)

    analyzer = _analyzer(args.checkpoint, config)
    analyzer.analyze_file(tmp / "woman_woman.wav")  # warm-up: model loading, JIT
    for path in (faces, tmp / "man_woman.wav"):
        report["time"].append(timed_analysis(analyzer, path))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


def face_sides(path: Path, reference: list, front_end) -> dict:
    """Per utterance of the composite, the side of the face its speaker was given."""
    from mercli.features.extract import extract
    from mercli.features.speaker_faces import speaker_vision

    features = extract(path, front_end.config, front_end)
    windows = [(u.start_s, u.end_s) for u in features.utterances]
    speakers = [u.descriptors.speaker for u in features.utterances]
    visuals = speaker_vision(path, windows, speakers, front_end)
    right = 0
    rows = []
    for u, visual in zip(features.utterances, visuals, strict=True):
        overlap: dict[str, float] = {}
        for r in reference:
            shared = max(0.0, min(u.end_s, r.end_s) - max(u.start_s, r.start_s))
            overlap[r.speaker] = overlap.get(r.speaker, 0.0) + shared
        truth = max(overlap, key=lambda s: overlap[s])
        seen = [o.centre[0] for o in visual.observations if o is not None]
        side = None if not seen else ("left" if np.median(seen) < 240 else "right")
        right += int(side == truth)
        rows.append((round(u.start_s, 2), round(u.end_s, 2), u.descriptors.speaker, truth, side))
    row = {"utterances": len(rows), "right_face": right, "detail": rows}
    print(json.dumps(row), flush=True)
    return row


def _analyzer(checkpoint: str | None, config):
    """The packaged model, else a random one of the full architecture (as analyze_speed.py)."""
    from mercli.checkpoint import load_model
    from mercli.pipeline import Analyzer

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from analyze_speed import checkpoint_path

    return Analyzer(load_model(checkpoint_path(checkpoint), "cpu"), config, use_cache=False)


if __name__ == "__main__":
    main()
