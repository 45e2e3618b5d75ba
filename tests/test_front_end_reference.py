"""The front end's output on the shared media stays what it was before the speed work.

``tests/reference/front_end_shared_media.json`` was recorded with ``tests/front_end_reference.py``
from the code before faces were tracked between keyframes (every frame searched whole by
facenet-pytorch's MTCNN), word timings came from numba's DTW and spectra from librosa: the six
talking heads, JFK, and five edge cases (crowd, multi-face cuts, mouth crop, face appearing
mid-clip, near-silent face; the files it could record in the time there was). Tolerances:

- status equal; transcripts: the same number of utterances, word error rate <= 0.02 against the
  recorded text, spans within 0.1 s;
- face coverage within 0.05 (file) and 0.1 (utterance); frames with a face agree on >= 95 % of
  sampled frames;
- the dominant expression is the same wherever the recorded one was confident (mean probability
  >= 0.6), and its probability moves by at most 0.1;
- pitch within 1 Hz and energy within 0.1 dB (the acoustic path is meant to be identical).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mercli.features.asr import word_error_rate
from tests.conftest import SHARED
from tests.front_end_reference import SHARED_MEDIA, summarise

REFERENCE = Path(__file__).parent / "reference" / "front_end_shared_media.json"
RECORDED = json.loads(REFERENCE.read_text()) if REFERENCE.is_file() else {}
CONFIDENT = 0.6


@pytest.fixture(scope="module")
def front_end():
    from mercli.features.extract import ExtractConfig, FrontEnd

    return FrontEnd(ExtractConfig())


def _close(a: float | None, b: float | None, tolerance: float) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= tolerance


def _same_expression(now: dict, then: dict) -> None:
    if then["expression_prob"] is not None and then["expression_prob"] >= CONFIDENT:
        assert now["expression"] == then["expression"]
    assert _close(now["expression_prob"], then["expression_prob"], 0.1)


def check_unchanged(now: dict, then: dict) -> None:
    """Assert that one file's output ``now`` matches the recorded ``then`` (tolerances above)."""
    assert now["status"] == then["status"]
    assert len(now["utterances"]) == len(then["utterances"])
    text_now = " ".join(u["text"] for u in now["utterances"])
    text_then = " ".join(u["text"] for u in then["utterances"])
    assert word_error_rate(text_then, text_now) <= 0.02
    assert _close(now["face_coverage"], then["face_coverage"], 0.05)
    assert now["n_frames"] == then["n_frames"]
    if then["n_frames"]:
        agree = sum(a == b for a, b in zip(now["frame_mask"], then["frame_mask"], strict=True))
        assert agree >= 0.95 * then["n_frames"]
    _same_expression(now, then)
    for u_now, u_then in zip(now["utterances"], then["utterances"], strict=True):
        assert _close(u_now["start_s"], u_then["start_s"], 0.1)
        assert _close(u_now["end_s"], u_then["end_s"], 0.1)
        assert _close(u_now["face_coverage"], u_then["face_coverage"], 0.1)
        _same_expression(u_now, u_then)
        assert _close(u_now["pitch_hz"], u_then["pitch_hz"], 1.0)
        assert _close(u_now["energy_db"], u_then["energy_db"], 0.1)


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is absent")
@pytest.mark.parametrize("overlap_faces", ["off", "on"])
@pytest.mark.parametrize("name", sorted(RECORDED))
def test_front_end_output_is_unchanged(name: str, overlap_faces: str, front_end) -> None:
    """Faces searched window by window after Whisper, and alongside it (overlap_faces)."""
    from dataclasses import replace

    from mercli.features.extract import extract

    config = replace(front_end.config, overlap_faces=overlap_faces)
    now = summarise(extract(SHARED_MEDIA / name, config, front_end))
    check_unchanged(now, RECORDED[name])


def test_the_check_catches_a_changed_transcript_and_lost_faces() -> None:
    then = {
        "status": "ok",
        "face_coverage": 1.0,
        "expression": "happy",
        "expression_prob": 0.9,
        "n_frames": 20,
        "frame_mask": "1" * 20,
        "utterances": [
            {
                "start_s": 0.0,
                "end_s": 4.0,
                "text": "and so my fellow americans ask not",
                "face_coverage": 1.0,
                "expression": "happy",
                "expression_prob": 0.9,
                "pitch_hz": 120.0,
                "energy_db": -20.0,
            }
        ],
    }
    check_unchanged(json.loads(json.dumps(then)), then)
    words = json.loads(json.dumps(then))
    words["utterances"][0]["text"] = "and so my fellow citizens ask not"
    faces = json.loads(json.dumps(then))
    faces["frame_mask"], faces["face_coverage"] = "1" * 10 + "0" * 10, 0.5
    for changed in (words, faces):
        with pytest.raises(AssertionError):
            check_unchanged(changed, then)
