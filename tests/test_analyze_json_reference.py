"""The analyze JSON of a fake front end, field for field, against a stored reference.

``tests/reference/analyze_fake_front_end.json`` was written by this test (``MER_WRITE_REFERENCE=1``)
before the descriptors became one dataclass shared by the front end, the predictions and the
file results; the documents must stay the same (``docs/analyze-schema.md``, schema_version 2).
The tiny models are built from a fixed seed; their outputs (scores, branch weights,
contributions) are compared to 1e-3 where torch and transformers are the versions the reference
was written with (another version may initialise the random weights otherwise), else only
their types; everything else exactly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mercli.cli import cli
from tests.fakes import FakeExtractor, tiny_backbone, tiny_checkpoint

REFERENCE = Path(__file__).parent / "reference" / "analyze_fake_front_end.json"
MODEL_OUTPUTS = {"score", "shared", "specific", "text", "audio", "vision", "mean_score"}


class SpeakingFakeExtractor(FakeExtractor):
    """The fake features with a speaker per utterance (``--speakers`` output)."""

    def __call__(self, path, config, front_end=None, sha256: str = ""):  # type: ignore[no-untyped-def]
        from dataclasses import fields

        features = super().__call__(path, config, front_end, sha256)
        names = {f.name for f in fields(features.utterances[0])}
        for i, u in enumerate(features.utterances):
            if "speaker" in names:  # before descriptors were one dataclass
                u.speaker = f"S{i + 1}"
            else:
                from dataclasses import replace

                u.descriptors = replace(u.descriptors, speaker=f"S{i + 1}")
        return features


def _documents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    for name in ("a.mp4", "b.mov"):
        Path(name).write_bytes(f"fake video {name}".encode())
    Path("bad.mp4").write_bytes(b"junk")
    import torch

    torch.manual_seed(0)
    backbone = tiny_backbone(tmp_path / "bert")
    models = {
        "text": tiny_checkpoint(tmp_path / "text", backbone),
        "all": tiny_checkpoint(tmp_path / "all", backbone, ("text", "audio", "vision")),
    }
    docs: dict[str, Any] = {}
    runs = {
        "json_all": (
            FakeExtractor(),
            ["a.mp4", "bad.mp4", "--checkpoint", models["all"], "--json"],
        ),
        "json_text": (FakeExtractor(), ["a.mp4", "--checkpoint", models["text"], "--json"]),
        "jsonl_all": (
            FakeExtractor(),
            ["b.mov", "bad.mp4", "--checkpoint", models["all"], "--jsonl"],
        ),
        "json_speakers": (
            SpeakingFakeExtractor(),
            ["a.mp4", "--checkpoint", models["all"], "--json", "--no-cache"],
        ),
    }
    extract_runs = {
        "extract": (FakeExtractor(), ["a.mp4", "-o", "a.npz"]),
        "extract_speakers": (SpeakingFakeExtractor(), ["a.mp4", "-o", "s.npz", "--speakers", "2"]),
    }
    for key, (fake, args) in {**runs, **extract_runs}.items():
        monkeypatch.setattr("mercli.features.extract.extract", fake)
        command = "extract" if key.startswith("extract") else "analyze"
        result = CliRunner().invoke(cli, [command, *map(str, args)], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        if key.startswith("jsonl"):
            docs[key] = [json.loads(line) for line in result.stdout.splitlines()]
        else:
            docs[key] = json.loads(result.stdout)
    return _portable(docs)


def _portable(value: Any, key: str = "") -> Any:
    """Paths of this run's temporary folders and the version replaced by stable stand-ins."""
    if isinstance(value, dict):
        return {k: _portable(v, k) for k, v in value.items() if k != "mer_version"}
    if isinstance(value, list):
        return [_portable(v, key) for v in value]
    if isinstance(value, str) and key in ("checkpoint", "extractor", "text_backbone", "path"):
        return Path(value).name
    return value


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("torch", "transformers")}


def _compare(got: Any, want: Any, numbers: bool, where: str = "$", key: str = "") -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), f"{where}: keys {got} != {want}"
        for k in want:
            _compare(got[k], want[k], numbers, f"{where}.{k}", k)
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got} != {want}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _compare(g, w, numbers, f"{where}[{i}]", key)
    elif key in MODEL_OUTPUTS and isinstance(want, float):
        assert isinstance(got, float), f"{where}: {got!r} is not a number"
        if numbers:
            assert got == pytest.approx(want, abs=1e-3), f"{where}: {got} != {want}"
    elif key in ("polarity", "label", "label_name", "mean_label_name") and not numbers:
        assert type(got) is type(want), f"{where}: {got!r} is not like {want!r}"
    else:
        assert got == want and type(got) is type(want), f"{where}: {got!r} != {want!r}"


def test_analyze_json_matches_the_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = _documents(tmp_path, monkeypatch)
    if os.environ.get("MER_WRITE_REFERENCE"):
        REFERENCE.write_text(json.dumps({"versions": _versions(), **docs}, indent=1) + "\n")
    reference = json.loads(REFERENCE.read_text())
    assert docs["json_speakers"]["files"][0]["speakers"] is not None  # the case is exercised
    _compare(docs, reference, numbers=reference.pop("versions") == _versions())
