"""BERT / MPNet forward passes and tokenizers without transformers equal transformers' own."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from mercli.model.plain_encoder import load_plain_encoder
from mercli.model.text_backbone import load_backbone, load_tokenizer, tokenize
from tests.conftest import SHARED
from tests.fakes import tiny_backbone

TEXTS = ["i love this camera", "but the screen is terrible so", "", "camera camera happy"]


def _assert_same(folder: str, texts: list[str], max_tokens: int, atol: float) -> None:
    loaded = load_plain_encoder(folder)
    assert loaded is not None
    encoder, tokenizer = loaded
    reference, reference_tokenizer = load_backbone(folder).eval(), load_tokenizer(folder)
    ids, mask = tokenize(texts, reference_tokenizer, max_tokens)
    got_ids, got_mask = tokenize(texts, tokenizer, max_tokens)
    assert torch.equal(ids, got_ids) and torch.equal(mask, got_mask)
    with torch.no_grad():
        want = reference(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        got = encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    valid = mask[..., None]
    torch.testing.assert_close(got * valid, want * valid, atol=atol, rtol=0)


def test_tiny_bert_equals_transformers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    folder = tiny_backbone(tmp_path / "bert")
    _assert_same(str(folder), TEXTS, 6, atol=1e-5)  # 6: truncation and padding both happen
    _assert_same(str(folder), TEXTS, 64, atol=1e-5)


def test_other_folders_are_left_to_transformers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    folder = tiny_backbone(tmp_path / "bert")
    assert load_plain_encoder(tmp_path / "missing") is None
    config = (folder / "config.json").read_text()
    (folder / "config.json").write_text(config.replace('"bert"', '"roberta"'))
    assert load_plain_encoder(folder) is None


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is absent")
@pytest.mark.parametrize("name", ["all-MiniLM-L6-v2", "all-mpnet-base-v2"])
def test_shipped_backbones_equal_transformers_on_mosi_transcripts(name: str) -> None:
    from mercli.model.text_backbone import resolve_backbone

    with open(SHARED / "data" / "cmu-mosi" / "label.csv") as stream:
        texts = [row["text"] for row in csv.DictReader(stream)]
    folder = resolve_backbone(name)
    loaded = load_plain_encoder(folder)
    assert loaded is not None
    for max_tokens in (50, 512):  # every transcript's ids, truncated and not
        ids, _ = tokenize(texts, load_tokenizer(name), max_tokens)
        assert torch.equal(ids, tokenize(texts, loaded[1], max_tokens)[0])
    _assert_same(folder, texts[:64], 50, atol=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is absent")
def test_all_mpnet_base_v2_split_for_tuning_equals_the_whole() -> None:
    from mercli.model.plain_encoder import load_split_encoder
    from mercli.model.text_backbone import resolve_backbone

    with open(SHARED / "data" / "cmu-mosi" / "label.csv") as stream:
        texts = [row["text"] for row in csv.DictReader(stream)][:32]
    folder = resolve_backbone("all-mpnet-base-v2")
    whole, split = load_plain_encoder(folder), load_split_encoder(folder, 2)
    assert whole is not None and split is not None
    ids, mask = tokenize(texts, whole[1], 50)
    with torch.no_grad():
        want = whole[0](input_ids=ids, attention_mask=mask.long()).last_hidden_state
        lower = split[0](input_ids=ids, attention_mask=mask.long()).last_hidden_state
        got = split[2](lower, mask)
    valid = mask[..., None]
    torch.testing.assert_close(got * valid, want * valid, atol=1e-5, rtol=0)
