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
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mercli.cli import cli
from mercli.engine import EngineConfig, _ray_plan, run_clips
from tests.fakes import tiny_backbone, tiny_models
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


def test_local_engine_in_process_keeps_order_and_raises_run_stopping_errors() -> None:
    paths = [Path(f"{n}.mp4") for n in (3, 1, 2)]
    assert list(run_clips(paths, Doubler, EngineConfig())) == [(0, (6, None)), (1, (2, None)),
                                                                (2, (4, None))]  # fmt: skip
    with pytest.raises(FileNotFoundError, match="no ffmpeg"):
        list(run_clips([Path("1.mp4"), Path("boom.mp4")], Doubler, EngineConfig()))


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
