"""Atomic writes, stray temporary files, checkpoint sets and writability checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mercli.atomic import (
    check_writable,
    commit_folder,
    recover_folder,
    staging_folder,
    write_atomically,
)

DEAD_PID = 2**22 + 12345  # above Linux's pid_max: never a live process


def test_write_failure_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")

    def half_then_full_disk(f) -> None:
        f.write(b'{"half')
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_atomically(target, half_then_full_disk)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_a_dead_writers_temporaries_are_removed_by_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "weights.bin"
    dead = tmp_path / f".weights.bin.{DEAD_PID}.abcd.tmp"
    dead.write_bytes(b"x" * 1000)  # what a kill -9 mid-write leaves
    alive = tmp_path / f".weights.bin.{os.getpid()}.efgh.tmp"  # a write in progress
    alive.write_bytes(b"y")
    other = tmp_path / f".other.bin.{DEAD_PID}.ijkl.tmp"  # another target's: not ours to judge
    other.write_bytes(b"z")
    write_atomically(target, lambda f: f.write(b"new"))
    assert target.read_bytes() == b"new"
    assert not dead.exists() and alive.exists() and other.exists()


def _set(folder: Path, epoch: int) -> None:
    (folder / "weights.safetensors").write_text(f"weights {epoch}")
    (folder / "trainer_state.pt").write_text(f"optimizer {epoch}")


def _read(folder: Path) -> tuple[str, str]:
    return (
        (folder / "weights.safetensors").read_text(),
        (folder / "trainer_state.pt").read_text(),
    )


def test_commit_folder_replaces_a_set_as_a_whole(tmp_path: Path) -> None:
    target = tmp_path / "last"
    for epoch in (1, 2):
        staged = staging_folder(target)
        _set(staged, epoch)
        commit_folder(staged, target)
    assert _read(target) == ("weights 2", "optimizer 2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_a_kill_between_the_renames_recovers_a_whole_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "last"
    staged = staging_folder(target)
    _set(staged, 1)
    commit_folder(staged, target)
    staged = staging_folder(target)
    _set(staged, 2)
    real_replace = os.replace
    calls = []

    def killed_at_second_rename(src, dst) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process dies between the two renames
        real_replace(src, dst)

    monkeypatch.setattr("mercli.atomic.os.replace", killed_at_second_rename)
    with pytest.raises(KeyboardInterrupt):
        commit_folder(staged, target)
    monkeypatch.undo()
    assert not target.exists()  # the state a kill leaves
    recover_folder(target)
    assert _read(target) == ("weights 1", "optimizer 1")  # epoch 1's weights with its optimizer


def test_save_state_commits_weights_and_trainer_state_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from mercli.checkpoint import load_checkpoint
    from mercli.config import TrainConfig
    from mercli.model import EmotionModel
    from mercli.train import RESUME_FILE, FitState, _restore, _save_state, configure_optimizer
    from tests.conftest import tiny_model_config

    config = tiny_model_config()
    model = EmotionModel(config)
    cfg = TrainConfig()
    optimizer = configure_optimizer(model, cfg)
    last = tmp_path / "last"
    _save_state(model, optimizer, FitState(epoch=1), last, None, config, cfg)
    epoch1 = (last / "weights.safetensors").read_bytes()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    monkeypatch.setattr(
        "mercli.checkpoint.commit_folder",
        lambda staged, target: (_ for _ in ()).throw(KeyboardInterrupt()),
    )
    with pytest.raises(KeyboardInterrupt):  # killed while saving epoch 2
        _save_state(model, optimizer, FitState(epoch=2), last, None, config, cfg)
    monkeypatch.undo()
    assert (last / "weights.safetensors").read_bytes() == epoch1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]  # no staging folder left
    state = _restore(EmotionModel(config), configure_optimizer(model, cfg), last, "cpu")
    assert state.epoch == 1
    assert (last / RESUME_FILE).is_file()
    load_checkpoint(last)


def test_a_damaged_trainer_state_is_a_checkpoint_error(tmp_path: Path) -> None:
    from mercli.checkpoint import CheckpointError
    from mercli.config import TrainConfig
    from mercli.model import EmotionModel
    from mercli.train import RESUME_FILE, FitState, _restore, _save_state, configure_optimizer
    from tests.conftest import tiny_model_config

    config = tiny_model_config()
    model = EmotionModel(config)
    optimizer = configure_optimizer(model, TrainConfig())
    last = tmp_path / "last"
    _save_state(model, optimizer, FitState(epoch=1), last, None, config, TrainConfig())
    state_file = last / RESUME_FILE
    state_file.write_bytes(state_file.read_bytes()[:100])  # truncated
    with pytest.raises(CheckpointError, match=RESUME_FILE):
        _restore(model, optimizer, last, "cpu")


@pytest.mark.parametrize("case", ["folder", "under_a_file", "proc"])
def test_check_writable_refuses_what_cannot_be_written(tmp_path: Path, case: str) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    path = {
        "folder": tmp_path,
        "under_a_file": blocker / "out.json",
        "proc": Path("/proc/mer-test/out.json"),
    }[case]
    if case == "proc" and not Path("/proc").is_dir():
        pytest.skip("no /proc")
    with pytest.raises(ValueError, match="cannot write the results"):
        check_writable(path, "results")


def test_check_writable_leaves_nothing_behind(tmp_path: Path) -> None:
    (tmp_path / "kept").mkdir()
    check_writable(tmp_path / "kept" / "out.json")
    check_writable(tmp_path / "new" / "deeper" / "out.json")
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]
    assert list((tmp_path / "kept").iterdir()) == []


def test_folders_made_by_the_check_are_made_again_by_the_write(tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper" / "out.json"
    check_writable(target)
    write_atomically(target, lambda f: f.write(b"{}"))
    assert target.read_text() == "{}"
