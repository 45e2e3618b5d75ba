"""``mer analyze`` and ``mer extract`` through the CLI, with a fake extractor (fast)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mercli.cli import cli
from tests.fakes import FakeExtractor, make_media, tiny_models

UTTERANCE_KEYS = {
    "index",
    "start_s",
    "end_s",
    "text",
    "speaker",
    "score",
    "polarity",
    "label",
    "label_name",
    "branch_weights",
    "modalities_read",
    "contributions",
    "presence",
    "descriptors",
}
FILE_KEYS = {
    "path",
    "status",
    "reason",
    "sha256",
    "duration_s",
    "streams",
    "cached",
    "summary",
    "speakers",
    "utterances",
}


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def extractor(monkeypatch: pytest.MonkeyPatch) -> FakeExtractor:
    fake = FakeExtractor()
    monkeypatch.setattr("mercli.features.extract.extract", fake)
    return fake


@pytest.fixture(scope="module")
def models() -> dict[str, Path]:
    return tiny_models()


@pytest.fixture
def videos(tmp_path: Path) -> list[Path]:
    paths = []
    for name in ("a.mp4", "b.mov"):
        (tmp_path / name).write_bytes(f"fake video {name}".encode())
        paths.append(tmp_path / name)
    return paths


def run(*args: str, catch: bool = False):
    return CliRunner().invoke(cli, ["analyze", *map(str, args)], catch_exceptions=catch)


def test_json_is_one_document_with_the_exact_keys(extractor, models, videos) -> None:
    result = run(*videos, "--checkpoint", models["all"], "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # nothing else on stdout
    assert set(doc) == {"schema_version", "mer_version", "model", "files"}
    assert doc["schema_version"] == 2
    assert set(doc["model"]) == {
        "checkpoint",
        "feature_profile",
        "modalities",
        "text_only",
        "text_backbone",
    }
    assert doc["model"]["modalities"] == ["text", "audio", "vision"]
    assert [f["status"] for f in doc["files"]] == ["ok", "ok"]
    first = doc["files"][0]
    assert set(first) == FILE_KEYS
    assert set(first["summary"]) == {
        "n_utterances",
        "speech_s",
        "mean_score",
        "mean_label_name",
        "face_coverage",
        "expression",
        "expression_prob",
    }
    u = first["utterances"][0]
    assert set(u) == UTTERANCE_KEYS
    assert set(u["branch_weights"]) == {"shared", "specific"}
    assert u["branch_weights"]["shared"] + u["branch_weights"]["specific"] == pytest.approx(
        1, abs=1e-3
    )
    assert set(u["descriptors"]) == {
        *("expression", "expression_prob", "pitch_hz", "energy_db"),
        *("voice_emotion", "voice_emotion_prob"),
    }
    assert u["presence"] == {"speech": True, "face_coverage": 0.8}
    assert "[1/2]" in result.stderr and "[2/2]" in result.stderr  # progress on stderr


def test_text_only_model_is_visible_in_json_and_table(extractor, models, videos) -> None:
    doc = json.loads(run(videos[0], "--checkpoint", models["text"], "--json").stdout)
    assert doc["model"]["text_only"] is True and doc["model"]["modalities"] == ["text"]
    assert doc["model"]["feature_profile"]["name"] == "text-only"
    table = run(videos[0], "--checkpoint", models["text"])
    assert table.exit_code == 0
    assert "text only" in table.stdout and "summary" in table.stdout


def test_jsonl_streams_one_line_per_utterance(extractor, models, videos, tmp_path) -> None:
    missing = tmp_path / "missing.mp4"
    result = run(videos[0], missing, videos[1], "--checkpoint", models["text"], "--jsonl")
    assert result.exit_code == 0
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(Path(x["file"]).name, x["status"]) for x in lines] == [
        ("a.mp4", "ok"),
        ("a.mp4", "ok"),
        ("missing.mp4", "unreadable"),
        ("b.mov", "ok"),
        ("b.mov", "ok"),
    ]
    assert lines[2]["utterance"] is None and lines[2]["reason"] == "file not found"
    assert set(lines[0]["utterance"]) == UTTERANCE_KEYS
    assert all(x["schema_version"] == 2 and x["modalities"] == ["text"] for x in lines)


def test_mix_of_good_and_bad_files_exits_0_with_statuses(
    extractor, models, videos, tmp_path
) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"junk bytes")
    result = run(videos[0], junk, tmp_path / "nope.mp4", "--checkpoint", models["text"], "--json")
    assert result.exit_code == 0
    files = json.loads(result.stdout)["files"]
    assert [f["status"] for f in files] == ["ok", "unreadable", "unreadable"]
    assert "Invalid data" in files[1]["reason"] and files[2]["reason"] == "file not found"
    assert "nope.mp4: file not found" in result.stderr


def test_bad_path_alone_exits_1_with_a_message(extractor, models, tmp_path) -> None:
    result = run(tmp_path / "nope.mp4", "--checkpoint", models["text"])
    assert result.exit_code == 1
    assert "file not found" in result.stderr and "no file could be analysed" in result.stderr


def test_all_bad_files_exit_non_zero_but_json_still_printed(extractor, models, tmp_path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"junk")
    result = run(junk, tmp_path / "x.wav", "--checkpoint", models["text"], "--json")
    assert result.exit_code == 1
    assert [f["status"] for f in json.loads(result.stdout)["files"]] == ["unreadable", "unreadable"]


def test_cmu_checkpoint_is_refused_before_any_media_work(extractor, models, videos) -> None:
    result = run(*videos, "--checkpoint", models["cmu"])
    assert result.exit_code == 1
    assert "CMU-MOSI benchmark features" in result.stderr and "mer prepare" in result.stderr
    assert extractor.calls == 0


def test_missing_default_checkpoint_says_what_is_missing(
    extractor, videos, monkeypatch, tmp_path
) -> None:
    monkeypatch.setattr("mercli.checkpoint.WEIGHTS_DIR", tmp_path / "weights")
    result = run(videos[0])
    assert result.exit_code == 1
    assert "default checkpoint is not installed" in result.stderr
    assert "weights.safetensors" in result.stderr and "--checkpoint" in result.stderr
    assert extractor.calls == 0


def test_out_file_and_plot(extractor, models, videos, tmp_path) -> None:
    out, plot = tmp_path / "r.json", tmp_path / "timeline.png"
    result = run(*videos, "--checkpoint", models["all"], "--out", out, "--plot", plot)
    assert result.exit_code == 0
    assert result.stdout == ""
    assert len(json.loads(out.read_text())["files"]) == 2
    pngs = sorted(p.name for p in tmp_path.glob("timeline-*.png"))
    assert pngs == ["timeline-a_mp4.png", "timeline-b_mov.png"]
    assert (tmp_path / pngs[0]).read_bytes()[:4] == b"\x89PNG"


def test_directory_input_and_cache_hit(extractor, models, videos, tmp_path) -> None:
    first = run(tmp_path, "--checkpoint", models["text"], "--json")
    second = run(tmp_path, "--checkpoint", models["text"], "--json")
    assert extractor.calls == 2  # two files, extracted once each
    assert [f["cached"] for f in json.loads(second.stdout)["files"]] == [True, True]
    assert [f["cached"] for f in json.loads(first.stdout)["files"]] == [False, False]


def test_json_and_jsonl_together_is_a_usage_error(models, videos) -> None:
    result = run(videos[0], "--checkpoint", models["text"], "--json", "--jsonl")
    assert result.exit_code == 2


def test_extract_writes_npz_and_prints_shapes(tmp_path: Path, monkeypatch) -> None:
    from mercli.features.cache import read_features
    from tests.fakes import CountingTranscriber

    fake = CountingTranscriber()
    monkeypatch.setattr("mercli.features.extract.load_transcriber", lambda config: fake)
    clip = make_media(tmp_path / "clip.mp4")
    out = tmp_path / "clip.npz"
    result = CliRunner().invoke(
        cli, ["extract", str(clip), "-o", str(out), "--no-faces"], catch_exceptions=False
    )
    assert result.exit_code == 0
    summary = json.loads(result.stdout)
    assert summary["status"] == "ok" and summary["utterances"][0]["audio_shape"][1] == 35
    assert read_features(out).utterances[1].text == "but the screen is terrible"


@pytest.mark.parametrize("choice", ["on", "off"])
def test_overlap_faces_option_reaches_the_front_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, choice: str
) -> None:
    from mercli.features.media import MediaError

    seen: list[Any] = []

    def record(path: Path, config: Any, use_cache: bool = True) -> None:
        seen.append(config)
        raise MediaError(path, "stop here")

    monkeypatch.setattr("mercli.pipeline.load_or_extract", record)
    clip = tmp_path / "a.mp4"
    clip.write_bytes(b"fake")
    args = ["extract", str(clip), "-o", str(tmp_path / "a.npz"), "--overlap-faces", choice]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and "stop here" in result.stderr
    assert seen[0].overlap_faces == choice
    assert seen[0].use_face_overlap is (choice == "on")
    bad = CliRunner().invoke(cli, [*args[:-1], "sometimes"])
    assert bad.exit_code == 2 and "--overlap-faces" in bad.stderr


def test_extract_of_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["extract", str(tmp_path / "no.mp4"), "-o", str(tmp_path / "o.npz")]
    )
    assert result.exit_code == 1 and "file not found" in result.stderr


def test_the_model_loads_while_the_first_file_is_extracted(
    monkeypatch: pytest.MonkeyPatch, models, videos
) -> None:
    import threading

    from mercli.checkpoint import load_model

    loading = threading.Event()
    extracted_while_loading: list[bool] = []

    def slow_load(*args):
        loading.set()
        # Loading ends only once the front end has run, which it must do meanwhile.
        assert extracted.wait(timeout=60)
        return load_model(*args)

    extracted = threading.Event()
    fake = FakeExtractor()

    def extract(*args, **kwargs):
        extracted_while_loading.append(loading.wait(timeout=60))
        extracted.set()
        return fake(*args, **kwargs)

    monkeypatch.setattr("mercli.checkpoint.load_model", slow_load)
    monkeypatch.setattr("mercli.features.extract.extract", extract)
    result = run(videos[0], "--checkpoint", models["all"], "--json")
    assert result.exit_code == 0, result.output
    assert extracted_while_loading == [True]
    assert len(json.loads(result.stdout)["files"][0]["utterances"]) == 2


def test_a_checkpoint_that_fails_to_load_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, extractor, models, videos
) -> None:
    from mercli.checkpoint import CheckpointError

    def broken(*args):
        raise CheckpointError("weights.safetensors: truncated")

    monkeypatch.setattr("mercli.checkpoint.load_model", broken)
    result = run(videos[0], "--checkpoint", models["all"])
    assert result.exit_code == 1
    assert "truncated" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize("option", ["--out", "--plot"])
def test_unwritable_output_fails_before_any_media_work(
    extractor, models, videos, tmp_path, option
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = run(*videos, "--checkpoint", models["all"], option, blocker / "r.out")
    assert result.exit_code == 1 and extractor.calls == 0
    assert "cannot write the" in result.stderr and str(blocker / "r.out") in result.stderr
    assert "Traceback" not in result.output


def test_a_disk_full_at_the_end_leaves_no_partial_file(
    extractor, models, videos, tmp_path, monkeypatch
) -> None:
    import os

    out = tmp_path / "r.json"
    real_fsync = os.fsync

    def full(fd: int) -> None:
        if os.fstat(fd).st_size > 0:  # the document: written in part, then the disk is full
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr("mercli.atomic.os.fsync", full)
    result = run(*videos, "--checkpoint", models["all"], "--out", out)
    assert result.exit_code == 1 and "No space left on device" in result.stderr
    assert str(out) in result.stderr and "Traceback" not in result.output
    assert not out.exists() and not list(tmp_path.glob(".r.json*"))


def test_extract_checks_its_output_before_any_work(tmp_path: Path, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr("mercli.features.extract.extract", lambda *a, **k: calls.append(a))
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x")
    result = CliRunner().invoke(cli, ["extract", str(clip), "-o", str(clip / "f.npz")])
    assert result.exit_code == 1 and "cannot write the feature file" in result.stderr
    assert not calls
