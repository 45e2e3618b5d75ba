"""Checkpoint metadata that is malformed or hostile gets one-line errors, never a big allocation;
names and paths resolve once for analyze, evaluate and the library alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mercli.checkpoint import CheckpointError, load_checkpoint, open_checkpoint, save_checkpoint


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    from mercli.checkpoint import CheckpointMeta
    from mercli.features.profile import text_only_profile
    from mercli.model import EmotionModel
    from tests.conftest import tiny_model_config

    meta = CheckpointMeta(model_config={}, feature_profile=text_only_profile("x"))
    return save_checkpoint(EmotionModel(tiny_model_config()), tmp_path / "ckpt", meta)


def _edit(directory: Path, change) -> None:
    path = directory / "checkpoint.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["model_config"].update(d_mic=1e7), "model_config.d_mic must be an integer"),
        (lambda d: d["model_config"].update(d_mic=10**7), "d_mic = 10000000 is outside"),
        (lambda d: d["model_config"].update(d_mic=60000), "describes"),  # in bounds, too big
        (lambda d: d["model_config"].update(text="foo"), "model_config.text must be an object"),
        (lambda d: d["model_config"].update(d_model="abc"), "d_model must be an integer"),
        (lambda d: d["model_config"]["audio"].update(n_layers=-1), "n_layers = -1 is outside"),
        (lambda d: d["model_config"].update(dropout=float("nan")), "dropout"),
        (lambda d: d["model_config"].update(task="poetry"), "task must be one of"),
        (lambda d: d["model_config"].update(modalities="text"), "list of names"),
        (lambda d: d.update(model_config=[1, 2]), "'model_config' must be a JSON object"),
        (lambda d: d.update(feature_profile=[1]), "'feature_profile' must be a JSON object"),
        (
            lambda d: d.update(feature_profile={"name": "mer-raw-v1", "vision": {"d": "wide"}}),
            "feature_profile.vision.d must be of type int",
        ),
    ],
)
def test_bad_model_configs_are_one_line_errors(checkpoint: Path, change, message: str) -> None:
    _edit(checkpoint, change)
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint(checkpoint)
    assert "checkpoint.json" in str(error.value) and "\n" not in str(error.value)


def test_a_null_feature_profile_reads_as_none_recorded(checkpoint: Path) -> None:
    _edit(checkpoint, lambda d: d.update(feature_profile=None))
    assert open_checkpoint(checkpoint).meta.feature_profile is None
    _edit(checkpoint, lambda d: d.update(feature_profile={}))
    assert open_checkpoint(checkpoint).meta.feature_profile is None


def test_open_checkpoint_reads_the_metadata_once(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mercli.checkpoint as room

    reads = []
    real = room.read_meta
    monkeypatch.setattr(room, "read_meta", lambda d: reads.append(d) or real(d))
    found = open_checkpoint(str(checkpoint))
    room.load_checkpoint(found.directory, "cpu", found.meta)
    assert len(reads) == 1


def test_evaluate_accepts_a_packaged_name(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from mercli.cli import cli

    weights = tmp_path / "weights"
    weights.mkdir()
    checkpoint.rename(weights / "mine")
    monkeypatch.setattr("mercli.checkpoint.WEIGHTS_DIR", weights)
    data = tmp_path / "label.csv"
    data.write_text("id,text,label,mode\na_1,x,1.0,train\n")
    result = CliRunner().invoke(
        cli, ["evaluate", "mine", "--dataset", "mosi", "--data", str(data), "--device", "cpu"]
    )
    # resolved as a packaged name: the error is about the data, not "no such checkpoint"
    assert "no checkpoint" not in result.output and "does not exist" not in result.output
    result = CliRunner().invoke(
        cli, ["evaluate", "nope", "--dataset", "mosi", "--data", str(data), "--device", "cpu"]
    )
    assert result.exit_code == 1 and "available: mine" in result.output


def test_library_analyze_honours_the_profile_frame_rate(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mercli import pipeline

    _edit(
        checkpoint,
        lambda d: d.update(feature_profile={"name": "text-only", "vision": {"fps": 2.5}}),
    )
    seen = []

    class Recording:
        def __init__(self, loaded, config, **options) -> None:
            seen.append(config)

        def analyze(self, paths):
            return iter(())

    monkeypatch.setattr(pipeline, "Analyzer", Recording)
    monkeypatch.setattr("mercli.checkpoint.load_model", lambda found, device, **_: None)
    monkeypatch.setattr("mercli.features.profile.check_profile", lambda profile: None)
    pipeline.analyze([], checkpoint=str(checkpoint))
    assert seen[0].fps == 2.5
