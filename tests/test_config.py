"""Configs round-trip and refuse unknown keys; presets hold the paper's Table 2."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from mercli.config import DatasetInfo, ModelConfig, TrainConfig, apply_ablation, from_name


def test_model_config_round_trips_through_json() -> None:
    config = replace(ModelConfig(), modalities=("text", "vision"), use_mic=False)
    again = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


def test_train_config_round_trips_through_json() -> None:
    config = from_name("mosei").train
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(ValueError, match=r"[Uu]nknown"):
        ModelConfig.from_dict({"d_modle": 3})
    with pytest.raises(ValueError, match="unknown preset"):
        from_name("sims2")
    with pytest.raises(ValueError, match="unknown ablation"):
        apply_ablation(from_name("mosi"), "no-everything")


def test_presets_follow_table_2() -> None:
    mosi, mosei, funny = from_name("mosi"), from_name("mosei"), from_name("urfunny")
    assert (mosi.train.lr, mosi.train.text_lr, mosi.train.batch_size) == (6e-5, 2e-5, 32)
    assert (funny.train.lr, funny.train.text_lr) == (4.5e-5, 5e-5)
    assert mosi.train.loss_weights.independence == 0.3
    assert mosei.train.loss_weights.invertibility == 0.05
    assert funny.model.task == "classification"
    assert (mosi.model.text.n_layers, mosi.model.audio.n_layers, mosi.model.vision.n_layers) == (
        3,
        2,
        2,
    )
    assert (mosi.model.text.n_heads, mosi.model.audio.n_heads, mosi.model.vision.n_heads) == (
        4,
        2,
        2,
    )
    assert mosi.train.seeds == (42, 1, 11, 111, 1111)


def test_for_dataset_reads_widths_without_mutating() -> None:
    base = ModelConfig()
    config = base.for_dataset(DatasetInfo("mosei", {"text": 768, "audio": 74, "vision": 35}))
    assert (config.audio.d_in, config.vision.d_in) == (74, 35)
    assert base.audio.d_in == 5


def test_invalid_configs_are_refused() -> None:
    with pytest.raises(ValueError):
        ModelConfig(modalities=())
    with pytest.raises(ValueError):
        ModelConfig(modalities=("text", "smell"))
