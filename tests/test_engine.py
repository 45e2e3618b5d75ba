"""Engines (``--engine local|ray``): the plan, errors, Ray's absence (fast); the same dataset from
a local Ray of 2 CPUs as from the local engine, and resume after a partial run (slow: Ray)."""

from __future__ import annotations

import csv
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mercli.cli import cli
from mercli.engine import EngineConfig, RayClipWorker, _decode_row, _ray_plan, run_clips
from mercli.features import extract as front
from mercli.features import media
from mercli.features.asr import Utterance
from tests.fakes import make_media, tiny_backbone, tiny_models
from tests.test_prepare import make_raw_dir, run_prepare

ROOT = Path(__file__).resolve().parents[1]


class Doubler:
    """A worker factory's product: doubles the number in a file name; ``boom`` stops the run."""

    def __init__(self, device: str | None) -> None:
        self.device = device

    def __call__(self, path: Path) -> tuple[int, str | None]:
        if path.stem == "boom":
            raise FileNotFoundError("no ffmpeg here")
        return 2 * int(path.stem), self.device


def test_engine_config_checks() -> None:
    with pytest.raises(ValueError, match="engine must be one of"):
        EngineConfig("spark")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="workers"):
        EngineConfig(workers=0)
    with pytest.raises(ValueError, match="options of the ray engine"):
        EngineConfig("local", address="auto")
    with pytest.raises(ValueError, match="gpus_per_worker"):
        EngineConfig("ray", gpus_per_worker=-1)


def test_ray_plan_uses_gpus_when_the_cluster_has_them() -> None:
    cpus_only = {"CPU": 16.0}
    gpus = {"CPU": 64.0, "GPU": 4.0}
    assert _ray_plan(cpus_only, EngineConfig("ray"), 100) == (16, 0.0, 1.0)
    assert _ray_plan(gpus, EngineConfig("ray"), 100) == (4, 1.0, 1.0)
    assert _ray_plan(gpus, EngineConfig("ray", gpus_per_worker=0.25), 100) == (16, 0.25, 1.0)
    assert _ray_plan(gpus, EngineConfig("ray", gpus_per_worker=0.0), 100) == (64, 0.0, 1.0)
    assert _ray_plan(gpus, EngineConfig("ray", workers=3), 100)[0] == 3
    assert _ray_plan(cpus_only, EngineConfig("ray"), 5)[0] == 5  # no idle actors
    gib = 1024**3
    assert _ray_plan({"CPU": 16.0, "memory": 9.0 * gib}, EngineConfig("ray"), 100)[0] == 4
    assert _ray_plan({**gpus, "memory": 3.0 * gib}, EngineConfig("ray"), 100)[0] == 1


def test_ray_plan_leaves_cpus_to_the_decoding_tasks() -> None:
    """The decoding stage's tasks need CPUs that the inference actors do not hold, or Ray
    Data waits forever for them."""
    assert _ray_plan({"CPU": 16.0}, EngineConfig("ray"), 100, decode_cpus=0.5) == (15, 0.0, 1.0)
    assert _ray_plan({"CPU": 64.0, "GPU": 4.0}, EngineConfig("ray"), 100, 0.5) == (4, 1.0, 1.0)
    two_asked = _ray_plan({"CPU": 2.0}, EngineConfig("ray", workers=2), 100, decode_cpus=0.5)
    assert two_asked == (2, 0.0, 0.75)  # 2 x 0.75 + 0.5 = the 2 CPUs
    assert _ray_plan({"CPU": 1.0}, EngineConfig("ray"), 100, decode_cpus=0.5) == (1, 0.0, 0.5)


def test_local_engine_in_process_keeps_order_and_raises_run_stopping_errors() -> None:
    paths = [Path(f"{n}.mp4") for n in (3, 1, 2)]
    assert list(run_clips(paths, Doubler, EngineConfig())) == [(0, (6, None)), (1, (2, None)),
                                                                (2, (4, None))]  # fmt: skip
    with pytest.raises(FileNotFoundError, match="no ffmpeg"):
        list(run_clips([Path("1.mp4"), Path("boom.mp4")], Doubler, EngineConfig()))


# ---------------------------------------------------------------------------------------------
# decoding apart from the models


def pixel_window(frames, front_end):
    """Stands in for the face models with features made of the pixels (so frames that differ
    give features that differ): a face where the frame is brighter than mid-grey."""
    from mercli.features.faces import VisualFeatures

    means = np.array([f.rgb.mean() for f in frames], np.float32)
    features = np.zeros((len(frames), 154), np.float32)
    features[:, 0] = means
    features[:, 1] = [f.rgb[0, 0, 0] for f in frames]
    mask = means > 100
    return VisualFeatures(features, mask, np.array([f.time_s for f in frames]))


def two_utterances(audio: np.ndarray) -> list[Utterance]:
    return [Utterance(0.1, 0.9, "one"), Utterance(1.0, 1.9, f"two {len(audio)}")]


def refuse_ffmpeg(patched: pytest.MonkeyPatch) -> None:
    """ffmpeg commands fail the test; other programs (ldconfig for ctypes) run."""
    for name in ("run", "Popen"):
        original = getattr(subprocess, name)

        def refused(command, *args, original=original, **kwargs):
            if "ffmpeg" in str(command[0]):
                raise AssertionError("ffmpeg ran although the media was decoded ahead")
            return original(command, *args, **kwargs)

        patched.setattr(media.subprocess, name, refused)


def assert_same_features(one: front.MediaFeatures, two: front.MediaFeatures) -> None:
    assert one.status == two.status and one.warning == two.warning
    assert one.duration_s == two.duration_s
    assert one.descriptors == two.descriptors
    np.testing.assert_array_equal(one.frame_times_s, two.frame_times_s)
    np.testing.assert_array_equal(one.frame_mask, two.frame_mask)
    assert len(one.utterances) == len(two.utterances) >= 1
    for u, v in zip(one.utterances, two.utterances, strict=True):
        assert (u.start_s, u.end_s, u.text, u.descriptors) == (
            v.start_s, v.end_s, v.text, v.descriptors
        )  # fmt: skip
        for name in ("audio", "vision", "vision_mask"):
            np.testing.assert_array_equal(getattr(u, name), getattr(v, name), err_msg=name)


@pytest.mark.parametrize("clip_s", [None, 1.2])
def test_features_from_media_decoded_ahead_are_the_features_from_the_file(
    clip_s: float | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per-utterance (all frames decoded ahead) and whole-clip mode (frames up to the clip's
    end); the decoded media crosses a pickle as between a Ray task and an actor; no ffmpeg runs
    while features are computed from it."""
    clip = make_media(tmp_path / "clip.mp4", duration_s=2.0)
    monkeypatch.setattr(front, "window_vision", pixel_window)
    config = front.ExtractConfig(fps=5.0, clip_s=clip_s)
    end = front.FrontEnd(config, transcriber=two_utterances)
    from_file = front.extract(clip, config, end)

    decoded = front.decode_ahead(clip, config, use_cache=False)
    assert decoded is not None and decoded.audio is not None and decoded.frames is not None
    assert decoded.frames.shape[0] == (7 if clip_s else 10)  # 0.0, 0.2, ...; 1.2 ends the clip
    assert decoded.frames_complete == (clip_s is None)
    decoded = pickle.loads(pickle.dumps(decoded, protocol=5))
    with monkeypatch.context() as patched, media.preloaded(decoded):
        refuse_ffmpeg(patched)
        from_memory = front.extract(clip, config, end)
    assert_same_features(from_file, from_memory)


def test_frames_past_those_decoded_ahead_come_from_the_file(tmp_path: Path) -> None:
    clip = make_media(tmp_path / "clip.mp4", duration_s=2.0)
    decoded = media.decode_media(clip, fps=5.0, max_side=64, until_s=0.5)
    assert decoded.frames is not None and len(decoded.frames) == 4 and not decoded.frames_complete
    from_file = list(media.iter_frames(clip, fps=5.0, max_side=64))
    with media.preloaded(decoded):
        replayed = list(media.iter_frames(clip, fps=5.0, max_side=64))
        assert len(list(media.iter_frames(clip, fps=4.0, max_side=64))) == 8  # not as decoded
    assert [f.index for f in replayed] == [f.index for f in from_file] == list(range(10))
    for one, two in zip(from_file, replayed, strict=True):
        assert one.time_s == two.time_s
        np.testing.assert_array_equal(one.rgb, two.rgb)


def test_decode_ahead_skips_cached_and_undecodable_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing to decode ahead when the cache holds the features (resume) or the file fails
    (the worker meets the failure itself and reports it, so no clip vanishes)."""
    from mercli.pipeline import load_or_extract

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(front, "window_vision", pixel_window)
    clip = make_media(tmp_path / "clip.mp4", duration_s=1.0)
    config = front.ExtractConfig(clip_s=1.0)
    assert front.decode_ahead(clip, config) is not None
    load_or_extract(clip, config)
    assert front.decode_ahead(clip, config) is None
    assert front.decode_ahead(clip, config, use_cache=False) is not None
    assert front.decode_ahead(clip, config, device="cpu") is None
    if config.asr_backend != replace(config, device="cuda").asr_backend:  # faster-whisper here
        # actors on a GPU read openai-whisper's entry, which the cache does not hold
        assert front.decode_ahead(clip, config, device="cuda") is not None
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"junk" * 100)
    assert front.decode_ahead(broken, config) is None
    assert front.decode_ahead(tmp_path / "missing.mp4", config) is None


def test_decoding_is_left_to_the_reader_beyond_the_byte_bound(tmp_path: Path) -> None:
    clip = make_media(tmp_path / "clip.mp4", duration_s=2.0)  # 96x64 frames: 18,432 bytes
    decoded = media.decode_media(clip, fps=5.0, max_bytes=200_000)
    assert decoded.audio is not None and decoded.frames is None  # 128,000 B of audio fit
    assert media.decode_media(clip, fps=5.0, max_bytes=1_000).audio is None


def test_ray_rows_carry_the_decoded_media_to_the_worker(tmp_path: Path) -> None:
    """The two stages' row functions, without Ray: the actor's callable reads the decoded
    media (no ffmpeg), a run-stopping error travels pickled."""
    clip = make_media(tmp_path / "clip.mp4", duration_s=1.0)

    def decoder(path: Path, device: str):
        assert device == "cpu"
        return None if path.stem == "boom" else media.decode_media(path)

    def work(path: Path):
        if path.stem == "boom":
            raise FileNotFoundError("no ffmpeg here")
        info = media.probe(path)  # preloaded: would fail without ffmpeg
        return info.has_video, len(media.load_audio(path))

    rows = [_decode_row({"index": i, "path": str(p)}, decoder) for i, p in
            enumerate([clip, tmp_path / "boom.mp4"])]  # fmt: skip
    assert rows[0]["decoded"] and rows[1]["decoded"] == b""
    worker = object.__new__(RayClipWorker)
    worker.work = work
    batch = {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}
    with pytest.MonkeyPatch.context() as patched:
        refuse_ffmpeg(patched)
        out = worker(batch)
    assert out["outcome"][0] == (True, 16000) and out["error"][0] is None
    assert isinstance(pickle.loads(out["error"][1]), FileNotFoundError)


@pytest.mark.parametrize("command", ["prepare", "analyze"])
def test_engine_ray_without_ray_says_how_to_install_it(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    (tmp_path / "a.mp4").write_bytes(b"not read: the engine is checked first")
    result = CliRunner().invoke(cli, [command, str(tmp_path), "--engine", "ray"])
    assert result.exit_code == 1, result.output
    assert "pip install 'mercli[ray]'" in result.output
    assert "Traceback" not in result.output


def test_ray_options_need_the_ray_engine(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["prepare", str(tmp_path), "--address", "auto"])
    assert result.exit_code == 2 and "--address needs --engine ray" in result.output
    result = CliRunner().invoke(cli, ["analyze", str(tmp_path), "--gpus-per-worker", "1"])
    assert result.exit_code == 2 and "--gpus-per-worker needs --engine ray" in result.output


# ---------------------------------------------------------------------------------------------
# a local Ray of 2 CPUs


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'mercli[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_gives_the_local_dataset_and_resumes(
    local_ray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real MTCNN on the test pattern; a run on the first rows (as if killed there), then the
    whole CSV on Ray: finished clips come from the cache, the rest is made; the dataset and the
    failure report equal the local engine's, made on a cache of its own."""
    pytest.importorskip("facenet_pytorch")
    raw, labels = make_raw_dir(tmp_path)
    backbone = tiny_backbone(tmp_path / "bert")
    args = ["--text-backbone", str(backbone), "--max-clip-s", "1.3"]
    with labels.open() as f:
        rows = list(csv.reader(f))
    partial = tmp_path / "partial.csv"
    with partial.open("w", newline="") as f:
        csv.writer(f).writerows(rows[:4])  # header + vidA 1, vidA 2, vidB 1

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "ray-cache"))
    first = run_prepare(raw, partial, tmp_path / "partial.pkl", *args, "--engine", "ray")
    assert first.exit_code == 0, first.output
    resumed = run_prepare(raw, labels, tmp_path / "ray.pkl", *args, "--engine", "ray", "--json")
    assert resumed.exit_code == 0, resumed.output
    report = json.loads(resumed.stdout)
    assert report["from_cache"] == 3 and report["extracted"] == 3

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "local-cache"))
    local = run_prepare(raw, labels, tmp_path / "local.pkl", *args, "--json")
    assert local.exit_code == 0, local.output
    local_report = json.loads(local.stdout)
    assert local_report["extracted"] == 6
    for key in ("clips", "prepared_per_split", "failed", "truncated", "no_video", "no_face"):
        assert report[key] == local_report[key], key
    assert {f["id"] for f in report["failed"]} == {"vidD$_$1", "vidD$_$2"}  # none dropped

    one, two = (pickle.loads((tmp_path / f"{n}.pkl").read_bytes()) for n in ("local", "ray"))
    assert one["feature_profile"] == two["feature_profile"]
    for split in ("train", "valid", "test"):
        assert one[split].keys() == two[split].keys()
        for key, value in one[split].items():
            np.testing.assert_array_equal(value, two[split][key], err_msg=f"{split} {key}")


@pytest.mark.slow
def test_ray_analyze_gives_the_local_results(
    local_ray, shared_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real Whisper tiny.en and faces on the demo clip, plus a file that cannot be read: in this
    process, in a pool of 2 processes and on 2 Ray actors."""
    demo = Path(__file__).resolve().parents[1] / "samples" / "demo.mp4"
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "demo.mp4").symlink_to(demo)
    (folder / "broken.mp4").write_bytes(b"junk" * 100)
    checkpoint = str(tiny_models()["all"])
    documents = []
    for engine, workers in (("local", "1"), ("local", "2"), ("ray", "2")):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / f"cache-{engine}-{workers}"))
        args = ["--checkpoint", checkpoint, "--json", "--engine", engine, "--workers", workers]
        result = CliRunner().invoke(cli, ["analyze", str(folder), *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        documents.append(json.loads(result.stdout))
    local, pool, ray = documents
    assert [f["status"] for f in ray["files"]] == ["unreadable", "ok"]  # broken first (sorted)
    assert ray["files"][1]["utterances"]  # the demo's speech
    assert ray == local and pool == local


@pytest.mark.slow
def test_ray_engine_raises_run_stopping_errors_with_their_type(local_ray) -> None:
    paths = [Path(f"{n}.mp4") for n in (1, 2)]
    out = dict(run_clips(paths, Doubler, EngineConfig("ray", workers=1), ordered=True))
    assert out == {0: (2, "cpu"), 1: (4, "cpu")}  # the actor holds no GPU
    with pytest.raises(FileNotFoundError, match="no ffmpeg"):
        list(run_clips([Path("1.mp4"), Path("boom.mp4")], Doubler, EngineConfig("ray", workers=1)))


class ExtractWithoutFfmpeg:
    """A worker factory's product for a Ray actor: features with stand-in models, ffmpeg
    refused (the decoding stage ran it)."""

    config = front.ExtractConfig(fps=5.0)

    def __init__(self, device: str | None) -> None:
        self.front_end = front.FrontEnd(self.config, transcriber=two_utterances)

    def __call__(self, path: Path) -> front.MediaFeatures | str:
        with pytest.MonkeyPatch.context() as patched:
            patched.setattr(front, "window_vision", pixel_window)
            refuse_ffmpeg(patched)
            try:
                return front.extract(path, self.config, self.front_end)
            except AssertionError as error:  # from refuse_ffmpeg
                return str(error)


@pytest.mark.slow
def test_ray_actors_compute_from_the_decoding_stage(local_ray, tmp_path: Path) -> None:
    from functools import partial

    clips = [make_media(tmp_path / f"{n}.mp4", duration_s=1.0 + 0.3 * n) for n in range(3)]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"junk" * 100)
    decoder = partial(front.decode_ahead, config=ExtractWithoutFfmpeg.config, use_cache=False)
    engine = EngineConfig("ray", workers=2)
    out = dict(run_clips([*clips, broken], ExtractWithoutFfmpeg, engine, decoder=decoder))
    assert len(out) == 4
    assert "ffmpeg ran" in out[3]  # nothing decoded ahead: the actor reads the file itself
    work = ExtractWithoutFfmpeg(None)
    for i, clip in enumerate(clips):
        with pytest.MonkeyPatch.context() as patched:
            patched.setattr(front, "window_vision", pixel_window)
            assert not isinstance(out[i], str), out[i]
            assert_same_features(front.extract(clip, work.config, work.front_end), out[i])


@pytest.mark.slow
def test_killed_ray_run_resumes_without_redoing_finished_clips(tmp_path: Path) -> None:
    """``mer prepare --engine ray`` killed (SIGKILL, its whole process group) once some clips
    are cached; the next run takes those from the cache and makes only the others."""
    pytest.importorskip("ray")
    pytest.importorskip("facenet_pytorch")
    raw, labels = make_raw_dir(tmp_path)
    backbone = tiny_backbone(tmp_path / "bert")
    cache = tmp_path / "cache"
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "PYTHONPATH": str(ROOT)}
    args = [*("--labels", str(labels), "--text-backbone", str(backbone), "--device", "cpu")]
    command = [sys.executable, "-m", "mercli", "prepare", str(raw), *args, "--max-clip-s", "1.3"]
    killed = subprocess.Popen(
        [*command, "-o", str(tmp_path / "killed.pkl"), "--engine", "ray", "--workers", "1"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while len(list(cache.rglob("*.npz"))) < 2 and killed.poll() is None:
        assert time.monotonic() < deadline, "no clip was cached in 300 s"
        time.sleep(0.2)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    n_cached = len(list(cache.rglob("*.npz")))
    assert killed.returncode == -signal.SIGKILL and 2 <= n_cached < 6, n_cached
    assert not (tmp_path / "killed.pkl").exists()

    again = subprocess.run(
        [*command, "-o", str(tmp_path / "again.pkl"), "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    # the actor (a process group of its own) may finish the clip it held after the kill
    assert n_cached <= report["from_cache"] <= n_cached + 1, (report, n_cached)
    assert report["prepared"] == 6 and report["failed"][0]["id"] == "vidD$_$1"
