"""``mer train``, ``mer evaluate`` and ``mer compare``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mercli.atomic import check_writable
from mercli.commands.options import (
    ablation_options,
    build_preset,
    device_option,
    json_option,
    preset_option,
    resolve_device,
)
from mercli.config import LR_SCHEDULES
from mercli.data import BENCHMARKS

if TYPE_CHECKING:
    from mercli.experiment import DataSpec, RunResults

DATASETS = click.Choice(BENCHMARKS)


def _log(message: str) -> None:
    from mercli.train import world

    if world()[0] == 0:
        click.echo(message, err=True)


def data_options(func: Any) -> Any:
    """``--dataset`` and ``--data``, shared by ``train`` and ``evaluate``."""
    func = click.option(
        "--data",
        "data_path",
        required=True,
        type=click.Path(exists=True, path_type=Path),
        help="MMSA pickle (or its folder), UR-FUNNY folder, an MMSA-style label.csv (text only) "
        "or a dataset from `mer prepare`.",
    )(func)
    return click.option(
        "--dataset", required=True, type=DATASETS, help="Benchmark the data follows."
    )(func)


@click.command()
@data_options
@click.option(
    "--extra-train",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Another label.csv (transcripts) or `mer prepare` dataset (clips: text + audio) whose "
    "train split is added to --data's, a label.csv (repeatable). Clips add their modalities to "
    "the model; transcripts lack them.",
)
@click.option(
    "--extra-repeat",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Times per epoch the clips of each `mer prepare` --extra-train are seen.",
)
@click.option(
    "--aux-text",
    "aux_text",
    multiple=True,
    metavar="NAME=DIR",
    help="Auxiliary labelled text, repeatable: sst2=DIR (train.tsv, dev.tsv) or meld=DIR "
    "(*_sent_emo.csv). Each set gets an ordinal head on the score; part of it is held out and "
    "its accuracy reported.",
)
@click.option(
    "--aux-weight",
    type=click.FloatRange(min=0),
    default=None,
    help="Weight of the auxiliary text loss [default: 0.5].",
)
@click.option(
    "--aux-batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Auxiliary rows per training step [default: the batch size].",
)
@click.option(
    "--aux-max-rows",
    type=click.IntRange(min=1),
    default=None,
    help="Training rows per auxiliary set at most (a fixed random draw) [default: all].",
)
@click.option(
    "--seed",
    "seeds",
    multiple=True,
    type=int,
    help="Repeatable; default the paper's 42 1 11 111 1111.",
)
@preset_option
@ablation_options
@click.option(
    "--text-backbone",
    default=None,
    help="BERT-family name or path (offline: all-MiniLM-L6-v2, all-mpnet-base-v2); default: "
    "the pickle's BERT states, or all-MiniLM-L6-v2 for text CSVs.",
)
@click.option(
    "--freeze-text/--finetune-text",
    default=None,
    help="Freeze the text backbone (its states are computed once) or fine-tune it "
    "[default: fine-tune; frozen for `mer prepare` datasets].",
)
@click.option(
    "--tune-top-layers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Train the top K layers of the otherwise frozen text backbone (BERT / MPNet folders; "
    "the lower layers' states are computed once), at the backbone's learning rate.",
)
@click.option(
    "--epochs", type=click.IntRange(min=1), default=None, help="Maximum epochs (preset: 40)."
)
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    default=None,
    help="Early-stopping patience in epochs (preset: 8).",
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=None, help="Batch size (preset: 32)."
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True, max=10.0),
    default=None,
    help="Learning rate of everything but the text backbone.",
)
@click.option(
    "--lr-schedule",
    type=click.Choice(LR_SCHEDULES),
    default=None,
    help="constant, or linear: every learning rate falls step by step to zero at the last "
    "epoch (preset: constant).",
)
@click.option(
    "--weight-average",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=None,
    metavar="DECAY",
    help="Validate, select and save an exponential moving average of the trained weights with "
    "this decay per step, e.g. 0.99 (preset: 0, off).",
)
@click.option(
    "--init",
    "init",
    metavar="NAME|PATH",
    default=None,
    help="Start from a trained checkpoint (a packaged name or a folder) with the same text "
    "path; modalities it lacks start fresh.",
)
@click.option(
    "--freeze-init",
    is_flag=True,
    help="With --init: train only what the checkpoint lacks, so that samples without the added "
    "modalities keep its predictions exactly.",
)
@device_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder (default runs/<dataset>).",
)
@click.option("--resume", is_flag=True, help="Go on from the last finished epoch of a killed run.")
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write t-SNE, branch-weight and learning-curve PNGs here.",
)
@json_option
def train(
    dataset: str,
    data_path: Path,
    extra_train: tuple[Path, ...],
    extra_repeat: int,
    aux_text: tuple[str, ...],
    aux_weight: float | None,
    aux_batch_size: int | None,
    aux_max_rows: int | None,
    seeds: tuple[int, ...],
    preset: str | None,
    modalities: str,
    ablations: tuple[str, ...],
    stride: int,
    backbone_checkpointing: bool,
    text_backbone: str | None,
    freeze_text: bool | None,
    tune_top_layers: int,
    epochs: int | None,
    patience: int | None,
    batch_size: int | None,
    lr: float | None,
    lr_schedule: str | None,
    weight_average: float | None,
    init: str | None,
    freeze_init: bool,
    device: str,
    out_dir: Path | None,
    resume: bool,
    report_dir: Path | None,
    json_: bool,
) -> None:
    """Train and test the model on a benchmark, once per seed; mean +- std of test metrics."""
    from mercli import render
    from mercli.checkpoint import CheckpointError
    from mercli.data import DatasetError
    from mercli.experiment import DataSpec, run
    from mercli.jsontext import dumps
    from mercli.train import init_distributed, world

    device = resolve_device(device)
    init_distributed(device)
    chosen = build_preset(preset or dataset, modalities, ablations, stride, backbone_checkpointing)
    overrides = {
        k: v
        for k, v in {
            "max_epochs": epochs,
            "patience": patience,
            "batch_size": batch_size,
            "lr": lr,
            "lr_schedule": lr_schedule,
            "weight_average": weight_average,
            "init": init,
        }.items()
        if v is not None
    }
    if freeze_init and init is None:
        raise click.BadParameter("freezes what --init gave; add --init", param_hint="--freeze-init")
    overrides["freeze_init"] = freeze_init
    aux_sets = _aux_sets(aux_text)
    aux_config = replace(
        chosen.train.aux_text,
        sets=tuple(name for name, _ in aux_sets),
        **{
            k: v
            for k, v in {
                "weight": aux_weight,
                "batch_size": aux_batch_size,
                "max_train_rows": aux_max_rows,
            }.items()
            if v is not None
        },
    )
    chosen = replace(chosen, train=replace(chosen.train, **overrides, aux_text=aux_config))
    seeds = seeds or chosen.train.seeds
    if tune_top_layers:
        if freeze_text is False:
            raise click.BadParameter(
                "tunes the top layers of a frozen backbone; leave out --finetune-text",
                param_hint="--tune-top-layers",
            )
        freeze_text = True
        model = replace(chosen.model, finetune_text_backbone=False, tune_top_layers=tune_top_layers)
        chosen = replace(chosen, model=model)
    finetune_text = None if freeze_text is None else not freeze_text
    spec = DataSpec(
        dataset,
        data_path,
        extra_train,
        text_backbone,
        finetune_text=finetune_text,
        extra_repeat=extra_repeat,
        aux_text=aux_sets,
    )
    out_dir = out_dir or Path("runs") / dataset
    try:
        check_writable(out_dir / "results.json", "results")
        results = run(chosen, spec, seeds, out_dir, device=device, resume=resume, log=_log)
    except (DatasetError, CheckpointError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    if world()[0] != 0:
        return
    _log(f"results: {out_dir / 'results.json'}")
    if report_dir is not None:
        _report(spec, results, report_dir, device)
    if json_:
        click.echo(dumps(results.to_dict()["summary"]))
    else:
        render.metrics_summary(
            results.test_by_seed, title=f"{dataset} test, {len(results.seeds)} seed(s)"
        )


def _aux_sets(given: tuple[str, ...]) -> tuple[tuple[str, Path], ...]:
    """``NAME=DIR`` options -> (name, folder) pairs, in order, each name once."""
    from mercli.config import AUX_CLASSES

    sets: list[tuple[str, Path]] = []
    for item in given:
        name, sep, folder = item.partition("=")
        if not sep or name not in AUX_CLASSES or not folder:
            raise click.BadParameter(
                f"{item!r}: expected NAME=DIR with NAME one of {', '.join(AUX_CLASSES)}",
                param_hint="--aux-text",
            )
        if not Path(folder).is_dir():
            raise click.BadParameter(f"{folder}: no such folder", param_hint="--aux-text")
        if name in (n for n, _ in sets):
            raise click.BadParameter(f"{name} given twice", param_hint="--aux-text")
        sets.append((name, Path(folder)))
    return tuple(sets)


def _report(spec: DataSpec, results: RunResults, report_dir: Path, device: str) -> None:
    from mercli.experiment import load_data
    from mercli.report import write_report

    first = next(iter(results.seeds.values()))
    data = load_data(spec, _log, int(results.model_config.get("tune_top_layers", 0)))
    paths = write_report(first.checkpoint, data, first.history, report_dir, device)
    for p in paths:
        _log(f"wrote {p}")


@click.command()
@click.argument("checkpoint")
@data_options
@click.option(
    "--split", default="test", show_default=True, type=click.Choice(["train", "valid", "test"])
)
@device_option
@json_option
def evaluate(
    checkpoint: str, dataset: str, data_path: Path, split: str, device: str, json_: bool
) -> None:
    """Metrics of a checkpoint (a folder from `mer train`, or a packaged name as `mer analyze`
    takes) on a split of a benchmark; with SGAFF, also those of its shared and specific
    branches alone (paper Table 8)."""
    from mercli import render
    from mercli.checkpoint import CheckpointError, load_checkpoint, open_checkpoint
    from mercli.data import DatasetError
    from mercli.experiment import DataSpec, load_data
    from mercli.jsontext import dumps
    from mercli.train import branch_metrics, make_loader, predict

    device = resolve_device(device)
    try:
        found = open_checkpoint(checkpoint)
        # the modules only training reads are not built: a packaged (inference-only) folder loads
        model, _ = load_checkpoint(found.directory, device, found.meta, inference_only=True)
        cfg = model.config
        spec = DataSpec(dataset, data_path, (), cfg.text_backbone, finetune_text=True)
        data = load_data(spec, _log)
    except (CheckpointError, DatasetError) as err:
        raise click.ClickException(str(err)) from err
    if len(data.split(split)) == 0:
        raise click.ClickException(f"{data_path}: split {split!r} is empty")
    loader = make_loader(data.split(split), data.collate, 64, shuffle=False, seed=0)
    rows = branch_metrics(predict(model, loader, device), cfg.task)
    if json_:
        # the fused model's metrics at the top level; each SGAFF branch alone beside them
        click.echo(dumps({**rows.pop("fused"), **rows}))
    else:
        render.metrics_rows(rows, title=f"{checkpoint} on {dataset} {split}")


@click.command()
@click.argument("a", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("b", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
def compare(a: Path, b: Path, json_: bool) -> None:
    """Paired t-test per test metric between two results.json files, over matching seeds."""
    from mercli import render
    from mercli.experiment import compare as compare_results
    from mercli.experiment import test_metrics_by_seed
    from mercli.jsontext import dumps

    results = []
    for path in (a, b):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as err:  # not JSON, not UTF-8, unreadable
            raise click.ClickException(f"{path}: not a readable results file ({err})") from err
        try:
            results.append(test_metrics_by_seed(document))
        except ValueError as err:
            raise click.ClickException(f"{path}: {err}") from err
    try:
        rows = compare_results(*results)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise click.ClickException(f"cannot compare {a} and {b}: {err!s}") from err
    if json_:
        click.echo(dumps([r.__dict__ for r in rows]))
    else:
        render.comparison(rows, str(a), str(b))
