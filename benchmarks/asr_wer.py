"""Word error rate and time of Whisper tiny.en against base, per ASR backend, as ``mer analyze``
transcribes.

    python benchmarks/asr_wer.py [--models tiny.en base] [--backends torch ct2 ct2-int8]
                                 [--repeats 3] [--threads 1] [--media DIR] [--out FILE.json]

Clips: the files of ``../shared/media/audio_speech`` that come with a reference transcript:

- ``whisper_jfk.flac`` (11 s): the well-known sentence of the clip that openai-whisper's own
  tests transcribe (``JFK_TEXT`` in ``tests/test_asr.py``);
- ``pocketsphinx_librivox_austen_0870.wav`` (7 s) against its ``.txt``;
- ``pyannote_sample_2speakers.wav`` (30 s, a phone call) against its ``.stm``: the segments'
  text joined in time order.

Every model runs on every backend (``--asr``: torch = openai-whisper through
:func:`mercli.features.asr.transcribe`; ct2 / ct2-int8 = faster-whisper in float32 / int8 through
:func:`mercli.features.asr_ct2.transcribe_ct2`; English, word timestamps, each 30 s window
decoded on its own) on the same decoded arrays, with the same thread count; the hypothesis is
the utterances' text joined. WER is word edits / reference words, summed over
the clips (pooled), after one of two normalisations:

- ``basic``: lower case, punctuation removed, hyphens split words
  (:func:`mercli.features.asr.normalize_text`), so "Mr." against "mister" is an error;
- ``whisper``: openai-whisper's ``EnglishTextNormalizer`` (the Whisper paper's: also spelled-out
  numbers, "mr" -> "mister", contractions, British spellings, filler words dropped).

Time: per model, the load (conversion on a first run, then the cached checkpoint) and the
transcription of each clip, best of ``--repeats`` after one warm-up pass; wall and CPU seconds
(the CPU time is steadier on a shared machine). The load average is printed before and after.

Agreement: for tiny.en, each backend's transcript of every file recorded in
``tests/reference/front_end_shared_media.json`` (openai-whisper's output when it was recorded)
against the recorded one: WER (basic normalisation), utterance counts, and the largest shift of
an utterance's start or end, per file.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.test_asr import JFK_TEXT  # noqa: E402


def stm_text(path: Path) -> str:
    """The transcript of an STM file: each segment's text (after 5 fields), in time order."""
    segments = []
    for line in path.read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and not line.startswith(";;"):
            segments.append((float(fields[3]), fields[5]))
    return " ".join(text for _, text in sorted(segments))


def clips(media: Path) -> list[tuple[str, Path, str]]:
    """(name, audio file, reference text) for each clip that has a reference."""
    speech = media / "audio_speech"
    austen = speech / "pocketsphinx_librivox_austen_0870"
    call = speech / "pyannote_sample_2speakers"
    return [
        ("jfk", speech / "whisper_jfk.flac", JFK_TEXT),
        ("librivox_austen", austen.with_suffix(".wav"), austen.with_suffix(".txt").read_text()),
        ("pyannote_call", call.with_suffix(".wav"), stm_text(call.with_suffix(".stm"))),
    ]


def normalizers() -> dict[str, Callable[[str], list[str]]]:
    from whisper.normalizers import EnglishTextNormalizer

    from mercli.features.asr import normalize_text

    english = EnglishTextNormalizer()
    return {"basic": normalize_text, "whisper": lambda text: english(text).split()}


def _load_avg() -> float:
    return os.getloadavg()[0]


def timed(function: Callable[[], object]) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def load_transcriber(model_name: str, backend: str) -> tuple[Callable[[object], list], bool]:
    """``audio -> utterances`` for one model on one backend, and whether loading converted (torch)
    or joined (ct2 base) the packaged files first."""
    from mercli.features.extract import ExtractConfig
    from mercli.features.extract import load_transcriber as load
    from mercli.features.whisper_offline import cache_dir

    marker = cache_dir() / (f"{model_name}.pt" if backend == "torch" else f"ct2-{model_name}")
    was_cached = (model_name != "base" and backend != "torch") or marker.exists()
    return load(ExtractConfig(whisper=model_name, asr=backend)), not was_cached


def measure(
    model_name: str, backend: str, audio: dict[str, object], repeats: int
) -> dict[str, object]:
    (transcribe, converted), load_s, load_cpu_s = timed(
        lambda: load_transcriber(model_name, backend)
    )
    hypotheses: dict[str, str] = {}
    best: dict[str, tuple[float, float]] = {}
    for run in range(repeats + 1):  # run 0 warms up
        for name, samples in audio.items():
            utterances, wall, cpu = timed(lambda s=samples: transcribe(s))
            hypotheses[name] = " ".join(u.text for u in utterances)  # type: ignore[attr-defined]
            if run > 0 and (name not in best or wall < best[name][0]):
                best[name] = (wall, cpu)
    return {
        "model": model_name,
        "backend": backend,
        "load_s": load_s,
        "load_cpu_s": load_cpu_s,
        "load_converted": converted,
        "hypotheses": hypotheses,
        "transcribe_s": {name: wall for name, (wall, _) in best.items()},
        "transcribe_cpu_s": {name: cpu for name, (_, cpu) in best.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny.en", "base"])
    parser.add_argument("--backends", nargs="+", default=["torch", "ct2", "ct2-int8"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every model")
    parser.add_argument("--media", type=Path, default=ROOT.parent / "shared" / "media")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args()

    import torch

    from mercli.features.asr import edit_distance
    from mercli.features.media import load_audio

    torch.set_num_threads(args.threads)
    load_before = _load_avg()
    found = clips(args.media)
    audio: dict[str, object] = {name: load_audio(path) for name, path, _ in found}
    durations = {name: len(a) / 16000 for name, a in audio.items()}  # type: ignore[arg-type]
    references = {name: text for name, _, text in found}
    norms = normalizers()

    rows = []
    for model_name, backend in itertools.product(args.models, args.backends):
        row = measure(model_name, backend, audio, args.repeats)
        for norm_name, norm in norms.items():
            edits = words = 0
            per_clip = {}
            for name, reference in references.items():
                ref = norm(reference)
                hyp = norm(row["hypotheses"][name])  # type: ignore[index]
                e = edit_distance(ref, hyp)
                per_clip[name] = e / len(ref)
                edits, words = edits + e, words + len(ref)
            row[f"wer_{norm_name}"] = edits / words
            row[f"wer_{norm_name}_per_clip"] = per_clip
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)

    total_s = sum(durations.values())
    print(
        f"threads {args.threads}; load average {load_before:.2f} before, {_load_avg():.2f} "
        f"after; {len(found)} clips, {total_s:.1f} s of audio; best of {args.repeats}"
    )
    print(
        "| model | backend | WER basic | WER whisper-norm | transcribe s (CPU s) "
        "| x real time | load s |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        wall = sum(row["transcribe_s"].values())  # type: ignore[attr-defined]
        cpu = sum(row["transcribe_cpu_s"].values())  # type: ignore[attr-defined]
        converted = " (converted)" if row["load_converted"] else ""
        print(
            f"| {row['model']} | {row['backend']} "
            f"| {row['wer_basic']:.3f} | {row['wer_whisper']:.3f} | {wall:.1f} ({cpu:.1f}) "
            f"| {wall / total_s:.2f} | {row['load_s']:.1f}{converted} |"
        )
    for row in rows:
        print(f"{row['model']} {row['backend']} per clip (basic / whisper-norm):")
        for name in references:
            print(
                f"  {name}: {row['wer_basic_per_clip'][name]:.3f} / "  # type: ignore[index]
                f"{row['wer_whisper_per_clip'][name]:.3f}: "  # type: ignore[index]
                f"{row['hypotheses'][name]!r}"  # type: ignore[index]
            )
    agreement = []
    if "tiny.en" in args.models:
        agreement = agreement_with_reference(args.media, args.backends)
    if args.out:
        args.out.write_text(
            json.dumps({"durations_s": durations, "rows": rows, "agreement": agreement}, indent=2)
        )


def agreement_with_reference(media: Path, backends: list[str]) -> list[dict[str, object]]:
    """Each backend's tiny.en transcripts against the recorded openai-whisper ones, per file."""
    from mercli.features.asr import word_error_rate
    from mercli.features.extract import transcribe_audio
    from mercli.features.media import load_audio
    from tests.test_front_end_reference import RECORDED

    loaded = {b: load_transcriber("tiny.en", b)[0] for b in backends}
    rows = []
    print(
        "\nagreement with tests/reference (recorded openai-whisper tiny.en); "
        f"load {_load_avg():.2f}"
    )
    print(
        "| file | "
        + " | ".join(f"{b}: WER, n utt (recorded), max shift s" for b in backends)
        + " |"
    )
    print("|---|" + "---|" * len(backends))
    for name, then in RECORDED.items():
        if then["status"] == "no_audio":
            continue
        audio = load_audio(media / name)
        text_then = " ".join(u["text"] for u in then["utterances"])
        row: dict[str, object] = {"file": name, "n_recorded": len(then["utterances"])}
        cells = []
        for backend, transcribe in loaded.items():
            front_end = SimpleNamespace(transcribe=transcribe)
            utterances = transcribe_audio(audio, front_end)  # type: ignore[arg-type]
            shift = max(
                (
                    max(abs(u.start_s - t["start_s"]), abs(u.end_s - t["end_s"]))
                    for u, t in zip(utterances, then["utterances"], strict=False)
                ),
                default=0.0,
            )
            wer = word_error_rate(text_then, " ".join(u.text for u in utterances))
            row[backend] = {"wer": wer, "n": len(utterances), "max_shift_s": shift}
            cells.append(f"{wer:.3f}, {len(utterances)} ({len(then['utterances'])}), {shift:.2f}")
        rows.append(row)
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    return rows


if __name__ == "__main__":
    main()
