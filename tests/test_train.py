"""The training loop learns, resumes, runs distributed, and its results compare."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mercli.cli import cli
from mercli.config import LossWeights, ModelConfig, TrainConfig
from mercli.data import load_dataset
from mercli.data.synthetic import SMALL_LAYOUT, write_mmsa_pickle
from mercli.train import fit, scale_lr, schedule_scales
from mercli.weight_average import WeightAverage
from tests.conftest import tiny_model_config

# per-sample terms only (the batch statistics CMD, HSIC, MI and gate correlation are off)
TASK_ONLY = LossWeights(0.0, 0.0, 0.0, 0.0, 0.0, gate_decorrelation=0.0)


def small_model(info, dropout: float = 0.1) -> ModelConfig:
    """A narrow model of the full architecture, widths read from the data."""
    base = tiny_model_config(d_model=32, d_latent=32, d_key=8, d_mic=32, knn_k=3, dropout=dropout)
    return base.for_dataset(info)


@pytest.mark.parametrize("kind", ["mosi", "mosei"])
def test_the_loop_learns_a_cross_modal_signal(tmp_path: Path, kind: str) -> None:
    # Exact MOSI / MOSEI keys, widths and sequence lengths; few samples.
    path = write_mmsa_pickle(
        tmp_path / f"{kind}.pkl", kind, n_train=128, n_valid=32, n_test=64, seed=3
    )
    data = load_dataset(kind, path)
    assert data.info.d_in["audio"] == (5 if kind == "mosi" else 74)
    cfg = TrainConfig(batch_size=32, lr=3e-3, max_epochs=8, patience=3)
    result = fit(small_model(data.info), data, cfg, tmp_path / "run", seed=0, log=lambda s: None)
    labels = np.array([data.train[i].label for i in range(len(data.train))])
    test_labels = np.array([data.test[i].label for i in range(len(data.test))])
    mean_mae = float(np.mean(np.abs(test_labels - labels.mean())))
    assert result.test_metrics["mae"] < 0.7 * mean_mae, (result.test_metrics, mean_mae)
    assert result.test_metrics["corr"] > 0.5


@pytest.fixture
def small_pickle(tmp_path: Path) -> Path:
    return write_mmsa_pickle(
        tmp_path / "small.pkl", "mosi", n_train=64, n_valid=16, n_test=16, layout=SMALL_LAYOUT
    )


def _predictions(checkpoint: Path, data) -> torch.Tensor:
    from mercli.checkpoint import load_checkpoint
    from mercli.train import make_loader, predict

    model, _ = load_checkpoint(checkpoint)
    return torch.from_numpy(
        predict(
            model, make_loader(data.test, data.collate, 16, shuffle=False, seed=0), "cpu"
        ).predicted
    )


def _killed_after_an_epoch(line: str) -> None:
    if " valid " in line:  # the epoch's line, logged once last/ is written
        raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("schedule", "average"), [("constant", 0.0), ("linear", 0.0), ("constant", 0.9)]
)
def test_resume_continues_where_the_run_stopped(
    small_pickle: Path, tmp_path: Path, schedule: str, average: float
) -> None:
    data = load_dataset("mosi", small_pickle)
    config = small_model(data.info)
    cfg = TrainConfig(
        batch_size=16,
        lr=1e-3,
        max_epochs=3,
        patience=10,
        lr_schedule=schedule,
        weight_average=average,
    )
    whole = fit(config, data, cfg, tmp_path / "whole", seed=5, log=lambda s: None)
    # A run killed after its first epoch left last/ behind; resuming finishes the other two.
    with pytest.raises(KeyboardInterrupt):
        fit(config, data, cfg, tmp_path / "killed", seed=5, log=_killed_after_an_epoch)
    lines: list[str] = []
    resumed = fit(config, data, cfg, tmp_path / "killed", seed=5, resume=True, log=lines.append)
    assert any("resuming" in line for line in lines)
    assert [h.epoch for h in resumed.history] == [1, 2, 3]
    assert resumed.history[0].train_loss == pytest.approx(whole.history[0].train_loss)
    assert resumed.history[-1].valid_loss == pytest.approx(whole.history[-1].valid_loss, rel=1e-5)
    torch.testing.assert_close(
        _predictions(resumed.checkpoint, data),
        _predictions(whole.checkpoint, data),
        atol=1e-5,
        rtol=1e-5,
    )


def test_a_linear_schedule_falls_step_by_step_to_zero_at_the_last_epoch() -> None:
    weights, backbone = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW(
        [{"params": [weights], "lr": 1e-3}, {"params": [backbone], "lr": 2e-5}]
    )
    cfg = TrainConfig(max_epochs=2, lr_schedule="linear")
    seen = []
    for epoch in (1, 2):
        scale = schedule_scales(cfg, epoch, steps=3)
        assert scale is not None
        for i in range(3):
            scale_lr(optimizer, scale(i))
            seen.append([group["lr"] for group in optimizer.param_groups])
    # 6 steps: 1, 5/6, ..., 1/6 of each group's own rate; the rates it was built with are kept
    expected = [[1e-3 * (6 - k) / 6, 2e-5 * (6 - k) / 6] for k in range(6)]
    np.testing.assert_allclose(seen, expected, rtol=1e-12)
    assert [group["base_lr"] for group in optimizer.param_groups] == [1e-3, 2e-5]
    assert schedule_scales(TrainConfig(), 1, steps=3) is None
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="cosine")


def test_the_linear_schedule_changes_training(small_pickle: Path, tmp_path: Path) -> None:
    data = load_dataset("mosi", small_pickle)
    config = small_model(data.info)
    cfg = TrainConfig(batch_size=16, lr=1e-3, max_epochs=2, patience=10)
    losses = {}
    for schedule in ("constant", "linear"):
        run = fit(
            config,
            data,
            replace(cfg, lr_schedule=schedule),
            tmp_path / schedule,
            seed=5,
            log=lambda s: None,
        )
        losses[schedule] = [h.valid_loss for h in run.history]
    assert losses["constant"] != pytest.approx(losses["linear"], rel=1e-6)


def test_the_weight_average_follows_each_step_after_a_warm_up() -> None:
    layer = torch.nn.Linear(2, 1)
    layer.bias.requires_grad_(False)  # not trained: not averaged
    average = WeightAverage(layer, decay=0.5)
    assert set(average.shadow) == {"weight"}
    for value in (1.0, 3.0, -2.0, 4.0):
        with torch.no_grad():
            layer.weight.fill_(value)
        average.update()
    # the mean of the first two steps' weights (the initial ones left out), then halved per step
    expected = torch.full_like(layer.weight, ((1.0 + 3.0) / 2 * 0.5 - 2.0 * 0.5) * 0.5 + 4.0 * 0.5)
    torch.testing.assert_close(average.shadow["weight"], expected)
    with average.applied():  # the model holds the average inside, its own weights after
        torch.testing.assert_close(layer.weight.detach(), expected)
    assert torch.all(layer.weight == 4.0)
    again = WeightAverage(layer, decay=0.5)
    again.load_state_dict(average.state_dict())
    torch.testing.assert_close(again.shadow["weight"], expected)
    assert again.n_steps == 4
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(layer, decay=1.0)
    with pytest.raises(ValueError, match="weight_average"):
        TrainConfig(weight_average=-0.1)


def test_an_averaged_run_selects_and_saves_the_average(small_pickle: Path, tmp_path: Path) -> None:
    from mercli.checkpoint import load_checkpoint
    from mercli.train import evaluate, make_loader

    data = load_dataset("mosi", small_pickle)
    cfg = TrainConfig(batch_size=16, lr=1e-3, max_epochs=2, patience=10, weight_average=0.9)
    run = fit(small_model(data.info), data, cfg, tmp_path / "run", seed=5, log=lambda s: None)
    valid = make_loader(data.valid, data.collate, 16, shuffle=False, seed=0)
    best, _ = load_checkpoint(run.checkpoint)
    last, _ = load_checkpoint(tmp_path / "run" / "last")  # the weights training stepped
    best_loss, _ = evaluate(best, valid, "cpu")
    assert best_loss == pytest.approx(run.history[run.best_epoch - 1].valid_loss, rel=1e-5)
    # the last epoch's validation loss is the average's, not that of the weights it stepped
    assert evaluate(last, valid, "cpu")[0] != pytest.approx(run.history[-1].valid_loss, rel=1e-4)
    plain = fit(
        small_model(data.info),
        data,
        replace(cfg, weight_average=0.0),
        tmp_path / "plain",
        seed=5,
        log=lambda s: None,
    )
    assert [h.valid_loss for h in plain.history] != pytest.approx(
        [h.valid_loss for h in run.history], rel=1e-6
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distributed_worker(
    rank: int, world_size: int, port: int, pickle_path: str, out_dir: str
) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        data = load_dataset("mosi", pickle_path)
        cfg = TrainConfig(batch_size=16, lr=1e-3, max_epochs=2, patience=10, loss_weights=TASK_ONLY)
        fit(
            small_model(data.info, dropout=0.0),
            data,
            cfg,
            out_dir,
            seed=7,
            shuffle=False,
            log=lambda s: None,
        )
    finally:
        torch.distributed.destroy_process_group()


def test_two_process_ddp_matches_one_process(small_pickle: Path, tmp_path: Path) -> None:
    """Same global batches (no shuffling), no dropout and a per-sample loss: DDP averages the two
    half-batch gradients into the full-batch gradient, so both runs agree to float tolerance."""
    import torch.multiprocessing as mp

    mp.spawn(
        _distributed_worker,
        args=(2, _free_port(), str(small_pickle), str(tmp_path / "ddp")),
        nprocs=2,
    )
    data = load_dataset("mosi", small_pickle)
    cfg = TrainConfig(batch_size=16, lr=1e-3, max_epochs=2, patience=10, loss_weights=TASK_ONLY)
    single = fit(
        small_model(data.info, dropout=0.0),
        data,
        cfg,
        tmp_path / "one",
        seed=7,
        shuffle=False,
        log=lambda s: None,
    )
    torch.testing.assert_close(
        _predictions(tmp_path / "ddp" / "best", data),
        _predictions(single.checkpoint, data),
        atol=1e-4,
        rtol=1e-4,
    )


def test_cli_train_evaluate_and_compare(small_pickle: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    common = [
        "train",
        "--dataset",
        "mosi",
        "--data",
        str(small_pickle),
        "--epochs",
        "1",
        "--lr",
        "1e-3",
    ]
    for name in ("a", "b"):
        result = runner.invoke(
            cli,
            [
                *common,
                "--seed",
                "1",
                "--seed",
                "2",
                "--out",
                str(tmp_path / name),
                "--json",
                *(
                    ["--ablation", "no-mic", "--lr-schedule", "linear", "--weight-average", "0.9"]
                    if name == "b"
                    else []
                ),
            ],
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        assert set(summary["mae"]) == {"mean", "std"}
        assert "seed 1 epoch" in result.stderr
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert set(results["seeds"]) == {"1", "2"}
    _check_results_round_trip(results)
    again = runner.invoke(  # the seeds results.json holds are kept, not run again
        cli,
        [*common, "--seed", "2", "--seed", "1", "--out", str(tmp_path / "a"), "--resume"],
        catch_exceptions=False,
    )
    assert again.exit_code == 0 and again.stderr.count("already done; skipping") == 2
    assert json.loads((tmp_path / "a" / "results.json").read_text()) == results
    assert results["model_config"]["audio"]["d_in"] == SMALL_LAYOUT.d_audio
    meta = json.loads((tmp_path / "a" / "seed_1" / "best" / "checkpoint.json").read_text())
    assert meta["feature_profile"]["name"] == "cmu-benchmark-mosi"
    assert set(meta["metrics"]) == {"test", "valid"}
    assert meta["train_config"]["lr_schedule"] == "constant"
    assert meta["train_config"]["weight_average"] == 0.0
    other = json.loads((tmp_path / "b" / "seed_1" / "best" / "checkpoint.json").read_text())
    assert other["train_config"]["lr_schedule"] == "linear"
    assert other["train_config"]["weight_average"] == 0.9

    result = runner.invoke(
        cli,
        [
            "evaluate",
            str(tmp_path / "a" / "seed_1" / "best"),
            "--dataset",
            "mosi",
            "--data",
            str(small_pickle),
            "--json",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0
    evaluated = json.loads(result.stdout)
    assert evaluated["mae"] == pytest.approx(results["seeds"]["1"]["test"]["mae"], rel=1e-5)
    for branch in ("shared_branch", "specific_branch"):  # Table 8, beside the fused metrics
        assert set(evaluated[branch]) == set(results["seeds"]["1"]["test"])
    assert evaluated["shared_branch"]["mae"] != evaluated["specific_branch"]["mae"]

    result = runner.invoke(
        cli,
        [
            "compare",
            str(tmp_path / "a" / "results.json"),
            str(tmp_path / "b" / "results.json"),
            "--json",
        ],
        catch_exceptions=False,
    )
    rows = {r["metric"]: r for r in json.loads(result.stdout)}
    assert rows["mae"]["n_seeds"] == 2 and 0 <= rows["mae"]["p_value"] <= 1


def test_compare_p_values_match_scipy() -> None:
    from scipy.stats import ttest_rel

    from mercli.experiment import compare, test_metrics_by_seed

    def results(values: list[float]) -> dict:
        return {
            "seeds": {
                str(s): {"test": {"mae": v}} for s, v in zip((42, 1, 11), values, strict=True)
            }
        }

    a, b = [0.70, 0.72, 0.71], [0.75, 0.74, 0.78]
    (row,) = compare(test_metrics_by_seed(results(a)), test_metrics_by_seed(results(b)))
    assert row.p_value == pytest.approx(ttest_rel(a, b).pvalue)
    with pytest.raises(ValueError, match="at least 2 common seeds"):
        compare(test_metrics_by_seed(results(a)), {"5": {"mae": 1.0}})
    with pytest.raises(ValueError, match="seed 1 has no 'test'"):
        test_metrics_by_seed({"seeds": {"1": {"valid": {}}}})


def _check_results_round_trip(document: dict) -> None:
    """``results.json`` read as :class:`RunResults` and written again is the same document."""
    from mercli.experiment import RunResults

    results = RunResults.from_dict(document)
    assert results.to_dict() == document
    first = results.seeds["1"]
    assert first.valid_metrics == document["seeds"]["1"]["valid"]
    assert (
        first.best_valid_loss
        == document["seeds"]["1"]["history"][first.best_epoch - 1]["valid_loss"]
    )
    summary = results.summary()["mae"]
    assert summary.mean == pytest.approx(
        np.mean([r.test_metrics["mae"] for r in results.seeds.values()])
    )
    broken = json.loads(json.dumps(document))
    broken["seeds"]["1"]["best_epoch"] = 7
    with pytest.raises(ValueError, match="seed 1: best_epoch 7"):
        RunResults.from_dict(broken)


def test_malformed_dataset_is_a_clear_cli_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"not a pickle")
    monkeypatch.chdir(tmp_path)  # the default --out (runs/mosi) lands here, not in the checkout
    result = CliRunner().invoke(
        cli, ["train", "--dataset", "mosi", "--data", str(bad), "--epochs", "1"]
    )
    assert result.exit_code == 1
    assert "bad.pkl" in result.output
    assert "Traceback" not in result.output


def test_report_writes_pictures(small_pickle: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--dataset",
            "mosi",
            "--data",
            str(small_pickle),
            "--epochs",
            "2",
            "--seed",
            "3",
            "--out",
            str(tmp_path / "run"),
            "--report",
            str(tmp_path / "rep"),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0
    for name in ("tsne_features.png", "branch_weights.png", "learning_curves.png"):
        png = tmp_path / "rep" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 5000


def test_length_grouped_batches_cover_every_sample_once_with_little_padding() -> None:
    from mercli.train import length_grouped_batches

    lengths = [
        int(x) for x in torch.randint(10, 500, (1000,), generator=torch.Generator().manual_seed(0))
    ]
    batches = length_grouped_batches(lengths, 32, torch.Generator().manual_seed(1), drop_last=False)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    again = length_grouped_batches(lengths, 32, torch.Generator().manual_seed(1), drop_last=False)
    assert batches == again

    def padding(bs: list[list[int]]) -> float:
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in bs)

    random_batches = [list(range(k, min(k + 32, 1000))) for k in range(0, 1000, 32)]
    assert padding(batches) < 0.2 * padding(random_batches)
    dropped = length_grouped_batches(lengths, 32, torch.Generator().manual_seed(1), drop_last=True)
    assert all(len(b) == 32 for b in dropped)
