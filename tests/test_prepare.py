"""`mer prepare`: raw labelled clips -> an MMSA-layout dataset that `mer train` reads (fast, on
synthetic lavfi clips); the 6 real CREMA-D clips with the real models (slow)."""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mercli.cli import cli
from tests.fakes import make_media, tiny_backbone, tiny_models

# (video_id, clip_id, text, label, mode, how the clip is made)
ROWS = [
    ("vidA", "1", "i love this camera", 2.0, "train", "raw"),
    ("vidA", "2", "the screen is terrible", -1.6, "train", "raw"),
    ("vidB", "1", "so happy", 1.0, "train", "flat"),  # RAW_DIR/<video>/<clip>.mp4
    ("vidB", "2", "but this is terrible", -2.4, "train", "audio-only"),  # .m4a, no video
    ("vidC", "1", "this is", 0.0, "valid", "raw"),
    ("vidC", "2", "i love the screen", 1.4, "test", "raw"),
    ("vidD", "1", "junk", 0.5, "train", "corrupt"),
    ("vidD", "2", "missing", -0.5, "valid", "missing"),
]
GOOD = [r for r in ROWS if r[5] not in ("corrupt", "missing")]


def make_raw_dir(root: Path) -> tuple[Path, Path]:
    """RAW_DIR with clips of 1-1.5 s (96x64 test pattern + sine) and its label.csv; each clip's
    length differs, so no two share content (the cache would rightly share their features)."""
    raw = root / "raw"
    for k, (video, clip, _, _, _, kind) in enumerate(ROWS):
        folder = raw / video if kind == "flat" else raw / "Raw" / video
        folder.mkdir(parents=True, exist_ok=True)
        if kind == "corrupt":
            (folder / f"{clip}.mp4").write_bytes(b"junk, not a video" * 64)
        elif kind == "audio-only":
            make_media(folder / f"{clip}.m4a", duration_s=1.0, video=False)
        elif kind != "missing":
            make_media(folder / f"{clip}.mp4", duration_s=1.0 + 0.1 * k)
    labels = raw / "label.csv"
    with labels.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video_id", "clip_id", "text", "label", "mode"])
        writer.writerows(r[:5] for r in ROWS)
    return raw, labels


def fake_window(frames, front_end):
    """Stands in for the face models: a face on every other frame, 'happy'."""
    from mercli.features.faces import VisualFeatures

    mask = np.array([i % 2 == 0 for i in range(len(frames))], bool)
    features = np.zeros((len(frames), 154), np.float32)
    features[mask, 0] = 1.0
    features[mask, 128 + 3] = 1.0
    return VisualFeatures(features, mask, np.array([f.time_s for f in frames]))


def run_prepare(raw: Path, labels: Path, out: Path, *args: str):
    return CliRunner().invoke(
        cli,
        ["prepare", str(raw), "--labels", str(labels), "-o", str(out), "--device", "cpu", *args],
        catch_exceptions=False,
    )


def train_one_epoch(data: Path, out: Path) -> Path:
    """`mer train` for one epoch (seed 1, batch 2) on a prepared dataset; its best checkpoint."""
    result = CliRunner().invoke(
        cli,
        [
            *("train", "--dataset", "mosi", "--data", str(data), "--epochs", "1"),
            *("--seed", "1", "--batch-size", "2", "--out", str(out), "--json"),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return out / "seed_1" / "best"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory):
    """One prepare run (fake faces, tiny backbone) and a second, counted, on the same cache."""
    import mercli.features.extract

    root = tmp_path_factory.mktemp("prepare")
    raw, labels = make_raw_dir(root)
    backbone = tiny_backbone(root / "bert")
    out = root / "dataset.pkl"
    calls: list[str] = []
    original = mercli.features.extract.extract

    def counted(path, *args, **kwargs):
        calls.append(Path(path).name)
        return original(path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(root / "cache"))
        mp.setattr("mercli.features.extract.window_vision", fake_window)
        mp.setattr(mercli.features.extract, "extract", counted)
        first = run_prepare(raw, labels, out, "--text-backbone", str(backbone))
        first_calls = list(calls)
        calls.clear()
        second = run_prepare(
            raw, labels, root / "again.pkl", "--text-backbone", str(backbone), "--json"
        )
    return {
        "root": root,
        "raw": raw,
        "labels": labels,
        "backbone": backbone,
        "out": out,
        "first": first,
        "first_calls": first_calls,
        "second": second,
        "second_calls": list(calls),
    }


def test_report_lists_exactly_the_bad_clips(prepared) -> None:
    first = prepared["first"]
    assert first.exit_code == 0, first.output
    report = json.loads((prepared["root"] / "dataset.report.json").read_text())
    failed = {f["id"]: f for f in report["failed"]}
    assert set(failed) == {"vidD$_$1", "vidD$_$2"}
    assert "unreadable" in failed["vidD$_$1"]["reason"]
    assert failed["vidD$_$1"]["path"].endswith("Raw/vidD/1.mp4")
    assert "file not found" in failed["vidD$_$2"]["reason"] and failed["vidD$_$2"]["path"] is None
    assert report["prepared"] == 6 and report["clips"] == 8
    assert report["prepared_per_split"] == {"train": 4, "valid": 1, "test": 1}
    assert report["extracted"] == 6 and report["from_cache"] == 0
    assert report["no_video"] == ["vidB$_$2"]
    assert report["feature_profile"]["name"] == "mer-raw-v1"
    # the failures are on stderr too, with their reasons, and progress per clip
    assert "vidD$_$2: file not found" in first.stderr
    assert "failed: vidD$_$1: unreadable" in first.stderr.replace("\n", " ")
    assert "[6/7]" in first.stderr  # 7 clips found on disk (6 good, 1 corrupt)


def test_dataset_has_the_mmsa_layout(prepared) -> None:
    from mercli.data import load_dataset
    from mercli.data.safe_pickle import load_pickle

    raw = load_pickle(prepared["out"])
    profile = raw["feature_profile"]
    assert profile["name"] == "mer-raw-v1" and profile["text"]["extractor"] == str(
        prepared["backbone"]
    )
    assert profile["vision"]["fps"] == 5.0 and profile["modalities"] == ["text", "audio", "vision"]
    train = raw["train"]
    assert list(train["id"]) == ["vidA$_$1", "vidA$_$2", "vidB$_$1", "vidB$_$2"]
    assert train["text_bert"].shape == (4, 3, 50) and train["text_bert"].dtype == np.float32
    assert train["audio"].shape[0] == 4 and train["audio"].shape[2] == 35
    assert train["vision"].shape[2] == 154 and train["vision_mask"].dtype == bool
    np.testing.assert_allclose(train["regression_labels"], [2.0, -1.6, 1.0, -2.4])
    assert list(train["annotations"]) == ["Positive", "Negative", "Positive", "Negative"]
    assert list(train["raw_text"])[1] == "the screen is terrible"
    lengths = train["audio_lengths"]
    assert 45 <= lengths[3] <= 55 and lengths[0] < lengths[1]  # 1.0 s vs 1.1 s at 20 ms
    assert train["vision_lengths"].tolist()[3] == 0  # audio only
    assert 5 <= train["vision_lengths"][0] <= 6  # 1.0 s at 5 fps
    for i, n in enumerate(train["audio_lengths"]):
        assert not train["audio"][i, n:].any()  # zeros past the length
    for i, n in enumerate(train["vision_lengths"]):
        assert not train["vision"][i, n:].any() and not train["vision_mask"][i, n:].any()
        assert train["vision_mask"][i, :n].tolist() == [k % 2 == 0 for k in range(n)]

    data = load_dataset("mosi", prepared["out"])
    assert data.feature_profile is not None and data.feature_profile.to_dict() == profile
    assert len(data.train) == 4 and len(data.valid) == 1 and len(data.test) == 1
    assert data.info.d_in == {"text": 768, "audio": 35, "vision": 154}  # text: token ids
    sample = data.train[0]
    assert sample.features["text"].dtype.is_floating_point is False
    assert sample.text == "i love this camera"
    batch = data.collate([data.train[i] for i in range(4)])
    n_vision = int(train["vision_lengths"].max())
    assert batch.inputs["vision"].shape == (4, n_vision, 154)
    first_n = int(train["vision_lengths"][0])
    expected = [k % 2 == 0 and k < first_n for k in range(n_vision)]
    assert batch.masks["vision"][0].tolist() == expected  # within length and face present
    assert not batch.masks["vision"][3].any()  # no video
    assert batch.masks["audio"][3].sum() == int(train["audio_lengths"][3])


def test_second_run_extracts_nothing(prepared) -> None:
    assert sorted(prepared["first_calls"]) == [*["1.mp4"] * 4, "2.m4a", *["2.mp4"] * 2]
    second = prepared["second"]
    assert second.exit_code == 0, second.output
    report = json.loads(second.stdout)
    assert report["from_cache"] == 6 and report["extracted"] == 0
    assert prepared["second_calls"] == ["1.mp4"]  # only the corrupt clip is tried again
    a, b = (pickle.loads(p.read_bytes()) for p in (prepared["out"], prepared["root"] / "again.pkl"))
    for key in ("audio", "vision", "vision_mask", "text_bert", "id"):
        np.testing.assert_array_equal(a["test"][key], b["test"][key])


def test_workers_give_the_same_dataset(prepared, tmp_path: Path, monkeypatch) -> None:
    """Real MTCNN on the test pattern (no face), one process vs two, separate caches."""
    pytest.importorskip("facenet_pytorch")
    raw, labels, backbone = prepared["raw"], prepared["labels"], prepared["backbone"]
    outs = []
    for workers in ("1", "2"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / f"cache{workers}"))
        out = tmp_path / f"w{workers}.pkl"
        args = ["--text-backbone", str(backbone), "--workers", workers, "--max-clip-s", "1.3"]
        result = run_prepare(raw, labels, out, *args)
        assert result.exit_code == 0, result.output
        outs.append(pickle.loads(out.read_bytes()))
    one, two = outs
    for split in ("train", "valid", "test"):
        assert one[split].keys() == two[split].keys()
        for key, value in one[split].items():
            np.testing.assert_array_equal(value, two[split][key], err_msg=f"{split} {key}")
    assert one["train"]["audio"].shape[1] <= 66 and one["train"]["vision"].shape[1] <= 7  # 1.3 s
    assert not one["train"]["vision_mask"].any()  # a test pattern has no face
    assert one["feature_profile"]["max_clip_s"] == 1.3
    report = json.loads((tmp_path / "w2.report.json").read_text())
    assert report["truncated"] == ["vidC$_$1", "vidC$_$2"]  # 1.4 s and 1.5 s
    assert {f["id"] for f in report["failed"]} == {"vidD$_$1", "vidD$_$2"}


def test_nothing_prepared_exits_non_zero(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "raw").mkdir()
    labels = tmp_path / "label.csv"
    labels.write_text("id,text,label,mode\nabc_1,hello,1.0,dev\n")
    backbone = tiny_backbone(tmp_path / "bert")
    out = tmp_path / "d.pkl"
    result = CliRunner().invoke(
        cli,
        [
            *("prepare", str(tmp_path / "raw"), "--labels", str(labels), "-o", str(out)),
            *("--text-backbone", str(backbone), "--no-faces"),
        ],
    )
    assert result.exit_code == 1
    assert "no clip could be prepared" in result.output and not out.exists()
    report = json.loads((tmp_path / "d.report.json").read_text())
    assert report["failed"][0]["id"] == "abc_1" and report["failed"][0]["split"] == "valid"
    assert "raw/Raw/abc/1.*" in report["failed"][0]["reason"]


def test_mosi_style_ids_find_clips(tmp_path: Path) -> None:
    from mercli.data.clips import ClipFinder

    raw = tmp_path / "raw"
    (raw / "Raw" / "03bSnISJMiM").mkdir(parents=True)
    (raw / "Raw" / "03bSnISJMiM" / "1.mp4").write_bytes(b"x")
    (raw / "Raw" / "noclip.webm").write_bytes(b"x")
    finder = ClipFinder(raw)
    assert finder.find("03bSnISJMiM_1") == raw / "Raw" / "03bSnISJMiM" / "1.mp4"
    assert finder.find("03bSnISJMiM$_$1") == raw / "Raw" / "03bSnISJMiM" / "1.mp4"
    assert finder.find("noclip") == raw / "Raw" / "noclip.webm"
    assert finder.find("03bSnISJMiM_2") is None


@pytest.mark.parametrize(
    "id_", ["../../secret$_$x", "../../secret_x", "/abs/secret$_$x", "..$_$secret", "v$_$../x"]
)
def test_ids_that_leave_raw_dir_are_refused(tmp_path: Path, id_: str) -> None:
    from mercli.data.clips import ClipFinder

    raw = tmp_path / "data" / "raw"
    (raw / "Raw" / "v").mkdir(parents=True)
    (raw / "Raw" / "v" / "1.mp4").write_bytes(b"x")
    for secret in (tmp_path / "secret", raw / "secret", raw / "Raw" / "secret", raw / "Raw"):
        secret.mkdir(parents=True, exist_ok=True)
        (secret / "x.mp4").write_bytes(b"secret")
    finder = ClipFinder(raw)
    assert finder.find(id_) is None
    assert "names a path outside" in (finder.unsafe(id_) or "")
    assert finder.unsafe("v$_$1") is None and finder.find("v$_$1") == raw / "Raw" / "v" / "1.mp4"


# ---------------------------------------------------------------------------------------------
# train on it, then analyze with the checkpoint


def test_train_on_prepared_data_and_analyze_with_it(
    prepared, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mercli.features.profile import FeatureProfile, ProfileError, check_profile
    from tests.fakes import CountingTranscriber

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    runner = CliRunner()
    checkpoint = train_one_epoch(prepared["out"], tmp_path / "run")
    meta = json.loads((checkpoint / "checkpoint.json").read_text())
    profile = meta["feature_profile"]
    assert profile["name"] == "mer-raw-v1" and profile["vision"]["fps"] == 5.0
    assert profile["modalities"] == ["text", "audio", "vision"]
    check_profile(FeatureProfile.from_dict(profile))  # analyze accepts it
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    config = results["model_config"]
    assert config["text_backbone"] == str(prepared["backbone"])
    assert config["finetune_text_backbone"] is False  # frozen unless --finetune-text
    assert config["audio"]["d_in"] == 35 and config["vision"]["d_in"] == 154

    cmu = json.loads((tiny_models()["cmu"] / "checkpoint.json").read_text())["feature_profile"]
    with pytest.raises(ProfileError, match="CMU-MOSI"):
        check_profile(FeatureProfile.from_dict(cmu))

    transcriber = CountingTranscriber()
    monkeypatch.setattr("mercli.features.extract.load_transcriber", lambda config: transcriber)
    monkeypatch.setattr("mercli.features.extract.window_vision", fake_window)
    clip = prepared["raw"] / "Raw" / "vidA" / "1.mp4"
    result = runner.invoke(
        cli,
        ["analyze", str(clip), "--checkpoint", str(checkpoint), "--json", "--device", "cpu"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["model"]["feature_profile"]["name"] == "mer-raw-v1"
    assert len(doc["files"][0]["utterances"]) == 2 and transcriber.calls == 1
    refused = runner.invoke(cli, ["analyze", str(clip), "--checkpoint", str(tiny_models()["cmu"])])
    assert refused.exit_code == 1 and "CMU-MOSI benchmark features" in refused.output


def test_finetune_text_flag_and_backbone_mismatch(
    prepared, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from mercli.config import from_name
    from mercli.data import DatasetError
    from mercli.experiment import DataSpec, load_data, model_config_for

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # frozen text states
    preset = from_name("mosi")
    spec = DataSpec("mosi", prepared["out"], finetune_text=None)
    data = load_data(spec, log=lambda message: None)
    assert data.train[0].features["text"].dim() == 2  # frozen: states computed once
    assert data.train[0].masks["vision"].dtype == torch.bool
    config = model_config_for(preset, spec, data.info, data.feature_profile)
    assert config.finetune_text_backbone is False
    tuned = DataSpec("mosi", prepared["out"], finetune_text=True)
    data = load_data(tuned, log=lambda message: None)
    assert data.train[0].features["text"].dim() == 1  # token ids for the backbone
    assert model_config_for(preset, tuned, data.info, data.feature_profile).finetune_text_backbone
    other = DataSpec("mosi", prepared["out"], text_backbone="bert-base-uncased")
    with pytest.raises(DatasetError, match="tokenizer of"):
        load_data(other, log=lambda message: None)


# ---------------------------------------------------------------------------------------------
# slow: the real CREMA-D clips with the real face models and MiniLM's tokenizer

CREMA_SCORES = {"HAP": 2.0, "NEU": 0.0, "SAD": -2.0, "ANG": -2.0, "DIS": -1.5, "FEA": -1.0}
CREMA_MODES = {"HAP": "train", "ANG": "train", "SAD": "train", "DIS": "train"}


@pytest.mark.slow
def test_prepare_crema_d_clips(shared_dir: Path, tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("facenet_pytorch")
    import torch

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    clips = sorted((shared_dir / "data" / "crema-d" / "clips").glob("*.flv"))
    assert len(clips) == 6
    raw = tmp_path / "raw"
    rows = []
    for path in clips:
        actor, _, emotion, _ = path.stem.split("_")
        folder = raw / "Raw" / actor
        folder.mkdir(parents=True, exist_ok=True)
        (folder / path.name).symlink_to(path)
        mode = CREMA_MODES.get(emotion, "valid" if emotion == "NEU" else "test")
        rows.append((actor, path.stem, "Don't forget a jacket.", CREMA_SCORES[emotion], mode))
    labels = raw / "label.csv"
    with labels.open("w", newline="") as f:
        csv.writer(f).writerows([("video_id", "clip_id", "text", "label", "mode"), *rows])
    out = tmp_path / "crema.pkl"
    result = run_prepare(raw, labels, out, "--workers", "2")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "crema.report.json").read_text())
    assert report["failed"] == [] and report["prepared"] == 6 and report["no_face"] == []

    from mercli.data import load_dataset

    data = load_dataset("mosi", out)
    assert data.feature_profile is not None
    from mercli.features.profile import TextProfile

    assert data.feature_profile.text == TextProfile("all-MiniLM-L6-v2", 50)
    assert (len(data.train), len(data.valid), len(data.test)) == (4, 1, 1)
    batch = data.collate([data.train[i] for i in range(4)])
    assert batch.inputs["vision"].shape[-1] == 154 and batch.inputs["audio"].shape[-1] == 35
    n_frames = [len(data.train[i].features["vision"]) for i in range(4)]
    assert all(9 <= n <= 12 for n in n_frames), n_frames  # about 2 s at 5 fps
    coverage = batch.masks["vision"].float().sum(1) / torch.tensor(n_frames)
    assert (coverage > 0.8).all()  # one frontal face throughout each clip
    assert 90 <= batch.inputs["audio"].shape[1] <= 120  # about 2 s at 20 ms
    # a second run (one worker) takes every clip from the cache and gives the same arrays
    again = tmp_path / "again.pkl"
    result = run_prepare(raw, labels, again, "--json")
    assert json.loads(result.stdout)["from_cache"] == 6
    a, b = pickle.loads(out.read_bytes()), pickle.loads(again.read_bytes())
    np.testing.assert_array_equal(a["train"]["vision"], b["train"]["vision"])


WORKER_SCRIPT = """
import os, signal, sys, time
from mercli.engine import worker_pool

if __name__ == "__main__":
    pool = worker_pool(2, os.getpid, ())
    futures = [pool.submit(time.sleep, 300) for _ in range(2)]
    while len(pool._processes) < 2:
        time.sleep(0.1)
    with open(sys.argv[2], "w") as f:
        f.write(" ".join(str(pid) for pid in pool._processes))
    time.sleep(float(sys.argv[1]))  # the workers are started and in their task
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status  # a zombie has exited


def test_killed_prepare_leaves_no_worker_alive(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    if not Path("/proc/self/status").is_file():
        pytest.skip("needs /proc to watch the workers")
    script = tmp_path / "pool.py"
    script.write_text(WORKER_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    pid_file = tmp_path / "pids"
    subprocess.run(  # the workers inherit no pipe of ours: nothing waits for them
        [sys.executable, str(script), "8", str(pid_file)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        timeout=120,
    )
    pids = [int(p) for p in pid_file.read_text().split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 20
    while any(_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    alive = [p for p in pids if _running(p)]
    for p in alive:  # do not leave them behind whatever the outcome
        os.kill(p, 9)
    assert not alive, "workers outlived the killed parent"
