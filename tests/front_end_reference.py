"""What the front end reports on the shared media, as plain JSON, to compare two versions.

``python tests/front_end_reference.py OUT.json [NAME ...]`` records the output of the ``mercli``
on the path on every file of ``../shared/media`` (or those whose path contains a NAME);
``tests/test_front_end_reference.py`` compares today's code with a recorded file within stated
tolerances (transcripts, utterance spans, face coverage, expressions).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

SHARED_MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"
SUBDIRS = ("talking_head", "edge_cases", "audio_speech")
MEDIA_SUFFIXES = (".mp4", ".mov", ".wav", ".flac")


def media_files(root: Path = SHARED_MEDIA, subdirs: tuple[str, ...] = SUBDIRS) -> list[Path]:
    return sorted(
        p for d in subdirs for p in (root / d).glob("*") if p.suffix.lower() in MEDIA_SUFFIXES
    )


def summarise(features: Any) -> dict[str, Any]:
    """The user-visible front-end output of one :class:`MediaFeatures`."""

    def rounded(x: float | None) -> float | None:
        return None if x is None else round(float(x), 4)

    return {
        "status": features.status,
        "face_coverage": rounded(features.descriptors.face_coverage),
        "expression": features.descriptors.expression,
        "expression_prob": rounded(features.descriptors.expression_prob),
        "n_frames": len(features.frame_mask),
        "frame_mask": "".join("1" if m else "0" for m in features.frame_mask),
        "utterances": [
            {
                "start_s": rounded(u.start_s),
                "end_s": rounded(u.end_s),
                "text": u.text,
                "face_coverage": rounded(u.descriptors.face_coverage),
                "expression": u.descriptors.expression,
                "expression_prob": rounded(u.descriptors.expression_prob),
                "pitch_hz": rounded(u.descriptors.pitch_hz),
                "energy_db": rounded(u.descriptors.energy_db),
            }
            for u in features.utterances
        ],
    }


def record(files: list[Path], out: Path | None = None, **config: Any) -> dict[str, Any]:
    """Summaries of ``files`` by the current code; written to ``out`` after each file."""
    from mercli.features.extract import ExtractConfig, FrontEnd, extract

    front_end = FrontEnd(ExtractConfig(**config))
    result: dict[str, Any] = {}
    for path in files:
        started = time.perf_counter()
        features = extract(path, front_end.config, front_end)
        result[f"{path.parent.name}/{path.name}"] = summarise(features)
        print(f"{path.name}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
        if out is not None:
            out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    names = sys.argv[2:]
    chosen = [p for p in media_files() if not names or any(n in str(p) for n in names)]
    record(chosen, Path(sys.argv[1]))
