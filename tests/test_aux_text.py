"""Auxiliary text supervision: the SST-2 hold-out, MELD reading, ordinal heads, training."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from mercli.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from mercli.cli import cli
from mercli.config import AuxTextConfig, LossWeights, ModelConfig, TrainConfig
from mercli.data import DatasetError
from mercli.data.aux_text import (
    AuxCollator,
    AuxSplit,
    LabelledText,
    aux_text_data,
    is_part,
    read_meld,
    read_sst2,
    sst2_split,
)
from mercli.data.samples import Collator
from mercli.model import EmotionModel
from mercli.model.ordinal import OrdinalHead, ordinal_loss
from mercli.train import TrainingStep
from tests.conftest import make_batch, tiny_model_config
from tests.fakes import tiny_backbone

WORDS = ["good", "bad", "film", "the", "a", "plot", "is", "not", "very", "fun"]


def _phrases_of(sentences: list[list[str]]) -> dict[str, int]:
    """Every sentence and every contiguous span of it, as a treebank lists its phrases."""
    phrases: dict[str, int] = {}
    for k, words in enumerate(sentences):
        for i in range(len(words)):
            for j in range(i + 1, len(words) + 1):
                phrases[" ".join(words[i:j])] = k % 2
    return phrases


@settings(max_examples=40, deadline=None)
@given(
    sentences=st.lists(
        st.lists(st.sampled_from(WORDS), min_size=2, max_size=9), min_size=2, max_size=25
    ),
    n_held_out=st.integers(1, 6),
    seed=st.integers(0, 1000),
)
def test_no_sst2_training_phrase_is_part_of_a_held_out_one_or_holds_one(
    sentences: list[list[str]], n_held_out: int, seed: int
) -> None:
    split = sst2_split(_phrases_of(sentences), n_held_out=n_held_out, min_words=2, seed=seed)
    held = [r.text for r in split.held_out]
    assert held, "some sentence is held out"
    for row in split.train:
        for h in held:
            assert not is_part(row.text, h) and not is_part(h, row.text), (row.text, h)


def _write_sst2(folder: Path, sentences: list[str], pad: str = "") -> dict[str, int]:
    """An SST-2 folder holding every phrase of ``sentences`` in train.tsv (each phrase then
    ``pad``, as GLUE's rows end in a space), dev.tsv empty; returns the phrases written."""
    phrases = _phrases_of([s.split() for s in sentences])
    (folder / "train.tsv").write_text(
        "sentence\tlabel\n" + "".join(f"{p}{pad}\t{y}\n" for p, y in phrases.items())
    )
    (folder / "dev.tsv").write_text("sentence\tlabel\n")
    return phrases


def test_sst2_split_holds_out_whole_sentences_and_trains_on_the_others(tmp_path: Path) -> None:
    sentences = [
        "the film is good fun",
        "the plot is very bad",
        "a very good film",
        "not fun at all",
    ]
    phrases = _write_sst2(tmp_path, sentences, pad=" ")
    read = read_sst2(tmp_path)
    assert read == phrases  # trailing spaces trimmed
    split = sst2_split(read, n_held_out=1, min_words=4, seed=3)
    assert len(split.held_out) == 1 and split.held_out[0].text in sentences
    # whole sentences only: the other three (none is part of another)
    assert sorted(r.text for r in split.train) == sorted(
        s for s in sentences if s != split.held_out[0].text
    )


def test_a_malformed_sst2_row_is_named(tmp_path: Path) -> None:
    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\tmaybe\n")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\n")
    with pytest.raises(DatasetError, match=r"train.tsv, line 3"):
        read_sst2(tmp_path)


def _write_meld(path: Path, rows: list[tuple[str, str]]) -> Path:
    lines = ["Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID"]
    lines += [f'{i},"{t}",Joey,joy,{s},{i}' for i, (t, s) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_meld_sentiments_become_ordered_classes(tmp_path: Path) -> None:
    path = _write_meld(
        tmp_path / "x.csv", [("I love it!", "positive"), ("Okay.", "neutral"), ("No", "negative")]
    )
    assert read_meld(path) == [
        LabelledText("I love it!", 2),
        LabelledText("Okay.", 1),
        LabelledText("No", 0),
    ]
    bad = _write_meld(tmp_path / "bad.csv", [("Hm", "mixed")])
    with pytest.raises(DatasetError, match=r"bad.csv, line 2.*'mixed'"):
        read_meld(bad)


def test_max_train_rows_draws_the_same_rows_every_time(tmp_path: Path) -> None:
    from mercli.data.aux_text import load_aux

    rows = [(f"line {i}", ("negative", "neutral", "positive")[i % 3]) for i in range(20)]
    for name in ("train", "test"):
        _write_meld(tmp_path / f"{name}_sent_emo.csv", rows)
    first, again = load_aux("meld", tmp_path, 5), load_aux("meld", tmp_path, 5)
    assert len(first.train) == 5 and first.train == again.train
    assert len(first.held_out) == 20  # the held-out part is never cut
    assert len(load_aux("meld", tmp_path).train) == 20


def test_ordinal_head_gives_ordered_probabilities() -> None:
    head = OrdinalHead(3)
    thresholds = head.thresholds()
    assert thresholds[0] < thresholds[1]
    probs = head.log_probs(torch.tensor([-3.0, 0.0, 3.0])).exp()
    torch.testing.assert_close(probs.sum(1), torch.ones(3))
    assert head.predict(torch.tensor([-3.0, 0.0, 3.0])).tolist() == [0, 1, 2]


def test_ordinal_loss_is_masked_to_the_rows_of_each_set() -> None:
    heads = torch.nn.ModuleDict({"sst2": OrdinalHead(2), "meld": OrdinalHead(3)})
    names = ("sst2", "meld")
    score = torch.tensor([0.5, -1.0, 2.0, 0.3], requires_grad=True)
    sets = torch.tensor([0, 1, -1, -1])
    labels = torch.tensor([1, 0, 2, 1])
    loss = ordinal_loss(heads, names, score, sets, labels)
    loss.backward()
    assert score.grad is not None
    assert score.grad[2] == 0 and score.grad[3] == 0  # no auxiliary label: no gradient
    assert score.grad[0] != 0 and score.grad[1] != 0
    # the unlabelled rows' labels do not matter; the loss is the mean over labelled rows
    other = ordinal_loss(heads, names, score.detach(), sets, torch.tensor([1, 0, 0, 0]))
    torch.testing.assert_close(other, loss.detach())
    expected = (
        -(
            heads["sst2"].log_probs(score[:1].detach())[0, 1]
            + heads["meld"].log_probs(score[1:2].detach())[0, 0]
        )
        / 2
    )
    torch.testing.assert_close(loss.detach(), expected.detach())
    none = ordinal_loss(heads, names, score, torch.full((4,), -1), labels)
    assert float(none.detach()) == 0.0


def test_every_new_parameter_gets_a_gradient() -> None:
    config = tiny_model_config(modalities=("text",), aux_heads=("sst2", "meld"))
    model = EmotionModel(config)
    step = TrainingStep(model, LossWeights(), aux_weight=0.5)
    batch = make_batch(config, batch_size=6)
    aux_rows = []
    for k in range(6):
        x = torch.randn(3 + k, config.text.d_in)
        from mercli.data.samples import Sample

        aux_rows.append((Sample({"text": x}, k % (2 + k % 2), f"a{k}"), k % 2))
    aux = AuxCollator(Collator())(aux_rows)
    assert aux.batch.labels is not None and aux.batch.labels.dtype == torch.long
    loss, terms = step(batch, aux)
    loss.backward()
    assert "aux_text" in terms
    assert model.aux_heads is not None
    for name, p in model.aux_heads.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


def test_checkpoints_with_and_without_aux_heads_load(tmp_path: Path) -> None:
    plain = tiny_model_config(modalities=("text",))
    stored = plain.to_dict()
    stored.pop("aux_heads")  # a checkpoint from before the field
    assert ModelConfig.from_dict(stored).aux_heads == ()
    train = TrainConfig().to_dict()
    train.pop("aux_text")
    assert TrainConfig.from_dict(train).aux_text == AuxTextConfig()
    with_heads = replace(plain, aux_heads=("meld",))
    assert TrainConfig.from_dict(
        replace(TrainConfig(), aux_text=AuxTextConfig(sets=("meld",))).to_dict()
    ).aux_text.sets == ("meld",)
    for name, config in (("old", plain), ("new", with_heads)):
        model = EmotionModel(config)
        folder = save_checkpoint(
            model, tmp_path / name, CheckpointMeta(model_config=config.to_dict())
        )
        loaded, _ = load_checkpoint(folder)
        assert loaded.config.aux_heads == config.aux_heads
        for (k, a), (_, b) in zip(
            model.state_dict().items(), loaded.state_dict().items(), strict=True
        ):
            torch.testing.assert_close(a, b, msg=k)


def test_unknown_aux_sets_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown auxiliary"):
        AuxTextConfig(sets=("imdb",))
    with pytest.raises(ValueError, match="unknown auxiliary"):
        tiny_model_config(aux_heads=("imdb",))


def test_aux_rows_carry_states_or_raw_text() -> None:
    split = AuxSplit("meld", [LabelledText("so happy", 2)], [LabelledText("no", 0)], "test")
    states = aux_text_data([split], Collator(), lambda texts: [torch.ones(2, 4).numpy()] * 2)
    ((sample, index),) = states.train
    assert index == 0 and sample.features["text"].shape == (2, 4) and sample.label == 2
    raw = aux_text_data([split], Collator(), None)
    assert raw.train[0][0].features == {} and raw.held_out["meld"][0][0].text == "no"


def test_cli_trains_with_aux_text_and_reports_held_out_accuracy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    backbone = tiny_backbone(tmp_path / "backbone")
    csv_path = tmp_path / "label.csv"
    rows = ["video_id,clip_id,text,label,mode"]
    for split in ("train", "valid", "test"):
        for i in range(8):
            text, label = ("i love this camera", 2.0) if i % 2 else ("this is terrible", -2.0)
            rows.append(f"v{split},{i},{text},{label},{split}")
    csv_path.write_text("\n".join(rows) + "\n")
    sst2 = tmp_path / "sst2"
    sst2.mkdir()
    sentences = [
        "i love this camera so so so much !",
        "the screen is terrible , so terrible !",
        "so happy , i love this , i love this camera",
        "but this is terrible , the screen is terrible",
    ]
    _write_sst2(sst2, sentences)
    meld = tmp_path / "meld"
    meld.mkdir()
    for name in ("train", "test"):
        _write_meld(
            meld / f"{name}_sent_emo.csv",
            [("so happy!", "positive"), ("the screen.", "neutral"), ("terrible!", "negative")],
        )
    out = tmp_path / "run"
    result = CliRunner().invoke(
        cli,
        [
            *("train", "--dataset", "mosi", "--data", str(csv_path)),
            *("--text-backbone", str(backbone), "--freeze-text"),
            *("--aux-text", f"sst2={sst2}", "--aux-text", f"meld={meld}"),
            *("--aux-weight", "0.3", "--aux-batch-size", "4", "--aux-max-rows", "2"),
            *("--epochs", "1", "--seed", "1", "--batch-size", "8", "--out", str(out), "--json"),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["model_config"]["aux_heads"] == ["sst2", "meld"]
    assert results["train_config"]["aux_text"] == {
        "sets": ["sst2", "meld"],
        "weight": 0.3,
        "batch_size": 4,
        "max_train_rows": 2,
    }
    held = results["seeds"]["1"]["aux_held_out"]
    assert held["meld_n"] == 3 and held["sst2_n"] == 1
    assert 0.0 <= held["sst2_acc"] <= 1.0 and 0.0 <= held["meld_acc"] <= 1.0
    assert "aux_text" in results["seeds"]["1"]["history"][0]["terms"]
    meta = json.loads((out / "seed_1" / "best" / "checkpoint.json").read_text())
    assert meta["metrics"]["aux_held_out"] == held
    loaded, _ = load_checkpoint(out / "seed_1" / "best")
    assert loaded.aux_heads is not None and set(loaded.aux_heads) == {"sst2", "meld"}

    bad = CliRunner().invoke(
        cli,
        [
            *("train", "--dataset", "mosi", "--data", str(csv_path)),
            *("--aux-text", "imdb=" + str(sst2), "--out", str(tmp_path / "bad")),
        ],
    )
    assert bad.exit_code != 0 and "NAME=DIR" in bad.output
