"""Transcripts (a label CSV, no audio) mixed with clips (a `mer prepare` dataset, text + audio)."""

from __future__ import annotations

import csv
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mercli.cli import cli
from mercli.config import TrainConfig, from_name
from mercli.data import DatasetError
from mercli.experiment import DataSpec, feature_profile, load_data, model_config_for
from mercli.features.profile import check_profile
from tests.conftest import tiny_model_config
from tests.fakes import tiny_backbone

TEXTS = ["i love this camera", "the screen is terrible", "so happy", "this is terrible"]


def _write_csv(path: Path, n_per_split: int = 8) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video_id", "clip_id", "text", "label", "mode"])
        for split in ("train", "valid", "test"):
            for i in range(n_per_split):
                label = 2.0 if "terrible" not in TEXTS[i % 4] else -2.0
                writer.writerow([f"v{split}", i, TEXTS[i % 4], label, split])
    return path


def _write_clips(path: Path, backbone: Path, n_train: int = 32, seed: int = 0) -> Path:
    """A `mer prepare` dataset without faces: one sentence, the label in the audio's sign."""
    from mercli.data.clips import Clip
    from mercli.data.mmsa import build_dataset, write_mmsa
    from mercli.features.extract import ExtractConfig, UtteranceFeatures
    from mercli.model.text_backbone import load_tokenizer
    from mercli.prepare import PrepareConfig

    rng = np.random.default_rng(seed)
    rows = []
    for split, n in (("train", n_train), ("valid", 4), ("test", 4)):
        for i in range(n):
            sign = 1.0 if i % 2 else -1.0
            steps = int(rng.integers(6, 12))
            audio = (rng.normal(size=(steps, 35)) + 1.5 * sign).astype(np.float32)
            features = UtteranceFeatures(
                0.0,
                steps * 0.02,
                "the screen",
                audio,
                np.zeros((0, 154), np.float32),
                np.zeros(0, bool),
            )
            clip = Clip(f"actor$_${split}{i}", "the screen", 2.0 * sign, split, None)
            rows.append((clip, features))
    config = PrepareConfig(extract=ExtractConfig(use_faces=False), text_backbone=str(backbone))
    data = build_dataset(rows, config.feature_profile(), load_tokenizer(str(backbone)), 50)
    return write_mmsa(path, data)


@pytest.fixture
def mixed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # frozen text states
    backbone = tiny_backbone(tmp_path / "backbone")
    return {
        "backbone": backbone,
        "csv": _write_csv(tmp_path / "label.csv"),
        "clips": _write_clips(tmp_path / "clips.pkl", backbone),
    }


def _spec(mixed: dict[str, Path], **changes) -> DataSpec:
    fields = {
        "extra_train": (mixed["clips"],),
        "text_backbone": str(mixed["backbone"]),
        "finetune_text": False,
        **changes,
    }
    return DataSpec("mosi", mixed["csv"], **fields)


def test_clips_join_the_train_split_with_their_audio(mixed: dict[str, Path]) -> None:
    spec = _spec(mixed, extra_repeat=3)
    data = load_data(spec, log=lambda message: None)
    assert len(data.train) == 8 + 3 * 32 and len(data.valid) == 8 and len(data.test) == 8
    assert data.info.d_in == {"text": 16, "audio": 35}
    transcript, clip = data.train[0], data.train[8]
    assert "audio" not in transcript.features and clip.features["audio"].shape[1] == 35
    assert clip.features["text"].shape == (len(clip.features["text"]), 16)  # frozen states
    assert clip.text == "the screen"  # raw text, re-read through the run's backbone
    batch = data.collate([transcript, clip])
    assert batch.presence("audio").tolist() == [False, True]
    assert batch.presence("text").tolist() == [True, True]

    preset = from_name("mosi")
    config = model_config_for(preset, spec, data.info, data.feature_profile)
    assert config.modalities == ("text", "audio") and config.audio.d_in == 35
    assert config.text_backbone == str(mixed["backbone"]) and not config.finetune_text_backbone
    profile = feature_profile(spec, config, data.feature_profile)
    assert profile.name == "mer-raw-v1" and profile.modalities == ("text", "audio")
    assert profile.text is not None and profile.text.extractor == str(mixed["backbone"])
    check_profile(profile)  # analyze can compute these inputs

    text_only = DataSpec("mosi", mixed["csv"], text_backbone=str(mixed["backbone"]))
    plain = load_data(replace_finetune(text_only), log=lambda message: None)
    assert plain.feature_profile is None
    assert model_config_for(preset, text_only, plain.info).modalities == ("text",)


def replace_finetune(spec: DataSpec) -> DataSpec:
    from dataclasses import replace

    return replace(spec, finetune_text=False)


def test_finetuned_text_mixes_too(mixed: dict[str, Path]) -> None:
    data = load_data(_spec(mixed, finetune_text=True), log=lambda message: None)
    batch = data.collate([data.train[0], data.train[8], data.train[9]])
    assert batch.inputs["text"].dtype == torch.long  # token ids for the backbone
    assert batch.presence("audio").tolist() == [False, True, True]


def test_bad_extras_are_refused_with_the_file_named(mixed: dict[str, Path], tmp_path: Path) -> None:
    from mercli.data.synthetic import write_mmsa_pickle

    benchmark = write_mmsa_pickle(tmp_path / "cmu.pkl", "mosi", n_train=4, n_valid=2, n_test=2)
    with pytest.raises(DatasetError, match="not a `mer prepare` dataset") as error:
        load_data(_spec(mixed, extra_train=(benchmark,)), log=lambda message: None)
    assert str(benchmark) in str(error.value)
    with pytest.raises(DatasetError, match="--data is not a CSV"):
        load_data(DataSpec("mosi", mixed["clips"], extra_train=(mixed["csv"],)), log=print)


def test_cli_trains_on_the_mix_and_the_model_reads_audio(mixed: dict[str, Path], tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        cli,
        [
            *("train", "--dataset", "mosi", "--data", str(mixed["csv"])),
            *("--extra-train", str(mixed["clips"]), "--extra-repeat", "2"),
            *("--text-backbone", str(mixed["backbone"]), "--freeze-text"),
            *("--epochs", "1", "--seed", "1", "--batch-size", "8", "--out", str(out), "--json"),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "seed_1" / "best" / "checkpoint.json").read_text())
    assert meta["feature_profile"]["modalities"] == ["text", "audio"]
    results = json.loads((out / "results.json").read_text())
    assert results["model_config"]["modalities"] == ["text", "audio"]
    assert results["extra_train"] == [str(mixed["clips"])]


def test_the_audio_branch_learns_from_the_clips(mixed: dict[str, Path], tmp_path: Path) -> None:
    """Every clip has the same text; only its audio tells the sign of its label."""
    from mercli.config import LossWeights
    from mercli.train import fit, make_loader, predict

    data = load_data(_spec(mixed, extra_repeat=2), log=lambda message: None)
    config = model_config_for(from_name("mosi"), _spec(mixed), data.info, data.feature_profile)
    config = tiny_model_config(
        modalities=config.modalities, text_backbone=config.text_backbone, dropout=0.0
    ).for_dataset(data.info)
    cfg = TrainConfig(
        batch_size=8,
        lr=3e-3,
        max_epochs=8,
        patience=20,
        loss_weights=LossWeights(0.0, 0.0, 0.0, 0.0, 0.0, gate_decorrelation=0.0),
    )
    result = fit(config, data, cfg, tmp_path / "fit", seed=3, log=lambda message: None)
    from mercli.checkpoint import load_checkpoint
    from mercli.data.mixing import load_media_training

    model, _ = load_checkpoint(result.checkpoint)
    clips = load_media_training(mixed["clips"]).samples
    with_states = load_data(_spec(mixed), log=lambda message: None).train
    samples = [with_states[8 + i] for i in range(len(clips))]
    loader = make_loader(samples, data.collate, 16, shuffle=False, seed=0)
    predicted = predict(model, loader, "cpu").predicted
    labels = np.array([s.label for s in samples])
    assert np.mean(np.sign(predicted) == np.sign(labels)) >= 0.9


# ---------------------------------------------------------------------------------------------
# DDP: a rank whose half-batch holds no clip leaves the audio parameters without gradient


def test_lacks_modality() -> None:
    from mercli.data.samples import Sample
    from mercli.train import lacks_modality

    audio = {"audio": torch.zeros(3, 35)}
    both = Sample(features={"text": torch.zeros(2, 4), **audio}, label=0.0, id="a")
    text_only = Sample(features={"text": torch.zeros(2, 4)}, label=0.0, id="b")
    raw_text = Sample(features=audio, label=0.0, id="c", text="hello")
    no_face = Sample(
        features={**both.features, "vision": torch.zeros(2, 5)},
        label=0.0,
        id="d",
        masks={"vision": torch.zeros(2, dtype=torch.bool)},
    )
    assert not lacks_modality([both, raw_text], ("text", "audio"))
    assert lacks_modality([both, text_only], ("text", "audio"))
    assert not lacks_modality([text_only], ("text",))
    assert lacks_modality([no_face], ("text", "audio", "vision"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, port: int, data, out_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE="2",
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        from mercli.train import fit

        # frozen text states in the samples: no backbone to load
        config = tiny_model_config(modalities=("text", "audio")).for_dataset(data.info)
        cfg = TrainConfig(batch_size=4, lr=1e-3, max_epochs=1, patience=10)  # all loss terms
        fit(config, data, cfg, out_dir, seed=7, shuffle=False, log=lambda message: None)
    finally:
        torch.distributed.destroy_process_group()


def test_two_process_ddp_with_ranks_that_see_no_audio(mixed: dict[str, Path], tmp_path) -> None:
    """Without looking for unused parameters, DDP fails on the second step: rank 0's
    half-batches hold transcripts only, so its audio encoder and audio loss terms never ran."""
    from dataclasses import replace

    import torch.multiprocessing as mp

    from mercli.data.samples import ListDataset

    data = load_data(_spec(mixed), log=lambda message: None)
    # even indices (rank 0's share of each batch) transcripts only, odd ones (rank 1's) clips
    pairs = [(data.train[i], data.train[8 + i]) for i in range(8)]
    data = replace(data, train=ListDataset([s for pair in pairs for s in pair]))
    mp.spawn(_ddp_worker, args=(_free_port(), data, str(tmp_path / "ddp")), nprocs=2)
    assert (tmp_path / "ddp" / "best").is_dir()
