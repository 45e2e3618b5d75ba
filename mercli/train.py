"""The one training loop: fit a model on a dataset's train split, select on valid, test.

Works the same on one process and under ``torchrun`` (DistributedDataParallel): each process
takes its share of every batch, gradients are averaged, and rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from mercli.atomic import recover_folder
from mercli.checkpoint import CheckpointError, CheckpointMeta, load_checkpoint, save_checkpoint
from mercli.config import LossWeights, ModelConfig, TrainConfig
from mercli.losses import total_loss
from mercli.metrics import compute_metrics
from mercli.model import EmotionModel
from mercli.schema import Batch
from mercli.weight_average import WeightAverage

if TYPE_CHECKING:
    from mercli.data.aux_text import AuxBatch, AuxTextData

RESUME_FILE = "trainer_state.pt"


@dataclass
class EpochLog:
    """One finished epoch (an entry of ``history`` in ``results.json``)."""

    epoch: int
    train_loss: float
    valid_loss: float
    valid_metrics: dict[str, float]
    seconds: float
    terms: dict[str, float] = field(default_factory=dict)  # mean of each loss term on train


@dataclass
class FitResult:
    """One seed's run: the selected epoch, its test metrics, the history, the checkpoint.

    :meth:`to_dict` is its entry under ``seeds`` in ``results.json``; :meth:`from_dict` reads
    one back (``mer train --resume`` keeps the seeds already done).
    """

    best_epoch: int  # 1-based, the epoch of lowest validation loss
    best_valid_loss: float
    test_metrics: dict[str, float]  # of the best epoch's checkpoint on the test split
    history: list[EpochLog]
    checkpoint: Path  # the ``best/`` folder
    # with auxiliary text sets: the best checkpoint on their held-out rows (held_out_metrics)
    aux_held_out: dict[str, float] = field(default_factory=dict)

    @property
    def valid_metrics(self) -> dict[str, float]:
        """The validation metrics of the selected epoch."""
        return self.history[self.best_epoch - 1].valid_metrics

    def to_dict(self) -> dict[str, Any]:
        return {
            "test": self.test_metrics,
            "valid": self.valid_metrics,
            "best_epoch": self.best_epoch,
            "epochs": len(self.history),
            "checkpoint": str(self.checkpoint),
            "history": [asdict(h) for h in self.history],
            **({"aux_held_out": self.aux_held_out} if self.aux_held_out else {}),
        }

    @classmethod
    def from_dict(cls, data: Any) -> FitResult:
        """Read :meth:`to_dict`'s output.

        Raises:
            ValueError: a key is missing or of the wrong type.
        """
        try:
            history = [EpochLog(**h) for h in data["history"]]
            best_epoch = int(data["best_epoch"])
            if not 1 <= best_epoch <= len(history):
                raise ValueError(f"best_epoch {best_epoch} is not one of {len(history)} epochs")
            return cls(
                best_epoch=best_epoch,
                best_valid_loss=history[best_epoch - 1].valid_loss,
                test_metrics=dict(data["test"]),
                history=history,
                checkpoint=Path(data["checkpoint"]),
                aux_held_out=dict(data.get("aux_held_out", {})),
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"not a seed's result ({type(error).__name__}: {error})") from error


@dataclass
class Predictions:
    """Model outputs over a split, in dataset order. Arrays of shape (N,) unless noted."""

    predicted: np.ndarray  # scores (N,) or logits (N, C)
    labels: np.ndarray
    gates: np.ndarray | None  # weight of the shared branch
    shared: dict[str, np.ndarray]  # per modality (N, d_half)
    specific: dict[str, np.ndarray]
    ids: list[str]
    shared_branch: np.ndarray | None = None  # g(s) alone, like ``predicted``; None without SGAFF
    specific_branch: np.ndarray | None = None  # g(p) alone


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_optimizer(model: EmotionModel, training: TrainConfig) -> torch.optim.AdamW:
    """AdamW with the text backbone (fine-tuned, or its tuned top layers) on its own learning
    rate; matrices decay, vectors do not."""
    backbone = {
        id(p)
        for part in (model.text_backbone, model.text_top)
        if part is not None
        for p in part.parameters()
    }
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        lr = training.text_lr if id(p) in backbone else training.lr
        decay = training.weight_decay if p.dim() >= 2 else 0.0
        groups.setdefault((lr, decay), []).append(p)
    return torch.optim.AdamW(
        [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]
    )


def scale_lr(optimizer: torch.optim.Optimizer, scale: float) -> None:
    """Set each group's learning rate to ``scale`` times the one it was built with (kept in the
    group as ``base_lr``, so that it travels with the optimizer's state to a resumed run)."""
    for group in optimizer.param_groups:
        group.setdefault("base_lr", group["lr"])
        group["lr"] = group["base_lr"] * scale


def schedule_scales(training: TrainConfig, epoch: int, steps: int) -> Callable[[int], float] | None:
    """The learning-rate scale of epoch ``epoch``'s step ``i`` (of ``steps``) under
    ``training.lr_schedule``: None when constant; linear: 1 at the first step of the run, falling
    by the same amount each step to ``1 / total`` at the last step of ``max_epochs``."""
    if training.lr_schedule == "constant":
        return None
    total = training.max_epochs * steps
    done = (epoch - 1) * steps
    return lambda i: 1.0 - (done + i) / total


def start_from(model: EmotionModel, training: TrainConfig) -> Any:
    """Copy ``training.init``'s values into ``model`` (:mod:`mercli.model.graft`); with
    ``training.freeze_init``, the :class:`~mercli.model.graft.Pins` that keep them."""
    if training.init is None:
        return None
    from mercli.checkpoint import read_meta, read_weights
    from mercli.model.graft import Pins, graft, source_config

    config, directory = source_config(training.init)
    state = read_weights(directory, read_meta(directory))
    masks = graft(model, config, state, str(directory), training.freeze_init)
    return Pins(model, masks) if training.freeze_init else None


# --- distribution -------------------------------------------------------------------------


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torchrun."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_distributed(device: str) -> None:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        torch.distributed.init_process_group(backend)
        if device.startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def sample_length(sample: Any) -> int:
    """The longest sequence of a sample (characters of its text when it has no features)."""
    lengths = [len(x) for x in sample.features.values()]
    return max(lengths) if lengths else len(sample.text or "")


def length_grouped_batches(
    lengths: list[int],
    batch_size: int,
    generator: torch.Generator,
    drop_last: bool,
    pool_batches: int = 50,
) -> list[list[int]]:
    """Shuffled batches of similar lengths, so that little of each batch is padding.

    Indices are shuffled, cut into pools of ``pool_batches`` batches, sorted by length inside a
    pool, cut into batches, and the batches are shuffled again.
    """
    order = torch.randperm(len(lengths), generator=generator).tolist()
    pool = pool_batches * batch_size
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: -lengths[i])
        batches += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
    if drop_last:
        batches = [b for b in batches if len(b) == batch_size]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def make_loader(
    dataset: Any,
    collate: Callable,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    drop_last: bool = False,
    group_by_length: bool = False,
) -> torch.utils.data.DataLoader:
    """A loader that, under torchrun, gives each process every world-size-th sample of a batch.

    ``group_by_length`` (one process, shuffled) batches samples of similar lengths together.
    """
    from torch.utils.data import DataLoader, DistributedSampler

    rank, size = world()
    generator = torch.Generator().manual_seed(seed)
    if size == 1 and shuffle and group_by_length:
        lengths = [sample_length(dataset[i]) for i in range(len(dataset))]
        batches = length_grouped_batches(lengths, batch_size, generator, drop_last)
        return DataLoader(dataset, batch_sampler=batches, collate_fn=collate)
    if size == 1:
        return DataLoader(
            dataset,
            batch_size,
            shuffle=shuffle,
            collate_fn=collate,
            generator=generator,
            drop_last=drop_last,
        )
    if batch_size % size:
        raise ValueError(f"batch size {batch_size} does not split over {size} processes")
    sampler: DistributedSampler = DistributedSampler(
        dataset, size, rank, shuffle=shuffle, seed=seed, drop_last=drop_last
    )
    return DataLoader(dataset, batch_size // size, sampler=sampler, collate_fn=collate)


# --- one pass -----------------------------------------------------------------------------


class TrainingStep(nn.Module):
    """The model and its loss as one module, so DistributedDataParallel sees every parameter
    the loss uses (the MI estimators are used by the loss, not by the model's forward)."""

    def __init__(self, model: EmotionModel, weights: LossWeights, aux_weight: float = 0.0):
        super().__init__()
        self.model = model
        self.weights = weights
        self.aux_weight = aux_weight  # of the auxiliary text loss (AuxTextConfig.weight)

    def forward(
        self, batch: Batch, aux: AuxBatch | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if batch.labels is None:
            raise ValueError("a training batch needs labels")
        terms = total_loss(self.model, self.model(batch), batch.labels, self.weights)
        total, floats = terms.total, terms.as_floats()
        if aux is not None and self.model.aux_heads is not None:
            from mercli.model.ordinal import ordinal_loss

            labels = aux.batch.labels
            assert labels is not None  # AuxCollator always sets them
            loss = ordinal_loss(
                self.model.aux_heads,
                self.model.config.aux_heads,
                self.model(aux.batch).prediction,
                aux.sets,
                labels,
            )
            total = total + self.aux_weight * loss
            floats = {**floats, "aux_text": float(loss.detach()), "total": float(total.detach())}
        return total, floats


def train_epoch(
    step: nn.Module,
    loader: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    device: str,
    grad_clip: float,
    progress: Callable[[int, float], None] | None = None,
    aux: Iterator[AuxBatch] | None = None,
    lr_scale: Callable[[int], float] | None = None,
) -> tuple[float, dict[str, float]]:
    """One pass over the train split; the mean total loss and mean of each term.

    ``progress(batches_done, mean_loss_so_far)`` is called after every batch; ``aux`` gives
    one batch of auxiliary text rows per step (their loss joins the step's); ``lr_scale(i)``
    scales every group's learning rate for the epoch's ``i``-th step (:func:`scale_lr`).
    """
    step.train()
    sums: dict[str, float] = {}
    n = 0
    for batch in loader:
        # Dropped before the forward, not after it: the last step's gradients (one float per
        # parameter, 470 MB with a bert-base) would otherwise live through this forward's peak.
        optimizer.zero_grad(set_to_none=True)
        if aux is None:
            loss, terms = step(batch.to(device))
        else:
            loss, terms = step(batch.to(device), next(aux).to(device))
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(step.parameters(), grad_clip)
        if lr_scale is not None:
            scale_lr(optimizer, lr_scale(n))
        optimizer.step()
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + v
        n += 1
        if progress is not None:
            progress(n, sums["total"] / n)
    means = {k: v / max(n, 1) for k, v in sums.items()}
    return means.get("total", math.nan), means


@torch.no_grad()
def predict(model: EmotionModel, loader: Iterable[Batch], device: str) -> Predictions:
    """Eval-mode outputs over every batch of ``loader``."""
    model.eval()
    parts: dict[str, list] = {"p": [], "y": [], "g": [], "s": [], "u": [], "ids": []}
    shared: dict[str, list] = {}
    specific: dict[str, list] = {}
    for batch in loader:
        out = model(batch.to(device))
        parts["p"].append(out.prediction.float().cpu())
        if batch.labels is not None:
            parts["y"].append(batch.labels.cpu())
        if out.gate is not None:
            parts["g"].append(out.gate.float().cpu())
        if out.shared_branch is not None:
            parts["s"].append(out.shared_branch.float().cpu())
        if out.specific_branch is not None:
            parts["u"].append(out.specific_branch.float().cpu())
        parts["ids"].extend(batch.ids)
        for m, f in out.features.items():
            shared.setdefault(m, []).append(f.shared.float().cpu())
            specific.setdefault(m, []).append(f.specific.float().cpu())
    return Predictions(
        predicted=torch.cat(parts["p"]).numpy(),
        labels=torch.cat(parts["y"]).numpy(),
        gates=torch.cat(parts["g"]).numpy() if parts["g"] else None,
        shared={m: torch.cat(v).numpy() for m, v in shared.items()},
        specific={m: torch.cat(v).numpy() for m, v in specific.items()},
        ids=parts["ids"],
        shared_branch=torch.cat(parts["s"]).numpy() if parts["s"] else None,
        specific_branch=torch.cat(parts["u"]).numpy() if parts["u"] else None,
    )


def branch_metrics(p: Predictions, task: str) -> dict[str, dict[str, float]]:
    """Metrics of the fused prediction (``fused``) and, with SGAFF's two branches, of each
    branch's output alone (``shared_branch``, ``specific_branch``), against the same labels."""
    rows = {"fused": compute_metrics(task, p.predicted, p.labels)}
    for name, values in (
        ("shared_branch", p.shared_branch),
        ("specific_branch", p.specific_branch),
    ):
        if values is not None and p.gates is not None:
            rows[name] = compute_metrics(task, values, p.labels)
    return rows


def evaluate(
    model: EmotionModel, loader: Iterable[Batch], device: str
) -> tuple[float, dict[str, float]]:
    """Task loss (the selection criterion) and metrics over a split."""
    from mercli.losses import task_loss

    p = predict(model, loader, device)
    loss = float(
        task_loss(torch.from_numpy(p.predicted), torch.from_numpy(p.labels), model.config.task)
    )
    return loss, compute_metrics(model.config.task, p.predicted, p.labels)


# --- the loop -----------------------------------------------------------------------------


@dataclass
class FitState:
    """What a killed run needs to go on from its last finished epoch."""

    epoch: int = 0
    best_epoch: int = 0
    best_valid_loss: float = math.inf
    bad_epochs: int = 0
    history: list[EpochLog] = field(default_factory=list)


def fit(
    config: ModelConfig,
    data: Any,
    training: TrainConfig,
    out_dir: str | Path,
    *,
    seed: int,
    device: str = "cpu",
    resume: bool = False,
    shuffle: bool = True,
    meta: CheckpointMeta | None = None,
    log: Callable[[str], None] = print,
    aux: AuxTextData | None = None,
) -> FitResult:
    """Train on ``data.train``, keep the epoch with the lowest validation loss, test it.

    Args:
        config: the model to build (widths already read from the data).
        data: a :class:`~mercli.data.SplitDatasets`.
        training: the optimisation settings (epochs, batch size, learning rates, loss weights).
        out_dir: gets ``best/`` (the selected checkpoint) and ``last/`` + ``trainer_state.pt``
            (for ``resume``), written after every epoch.
        resume: continue from ``out_dir/last`` when it exists; at most one epoch is lost.
        shuffle: shuffle the train split each epoch (off only for exact comparisons).
        aux: auxiliary text sets (``config.aux_heads`` names their heads): one batch of their
            rows per step, weighted by ``training.aux_text.weight``; the best checkpoint's
            accuracy on their held-out rows goes into the result.
    """
    if aux is not None and tuple(aux.names) != tuple(config.aux_heads):
        raise ValueError(f"auxiliary sets {aux.names} do not match the heads {config.aux_heads}")
    out_dir = Path(out_dir)
    rank, _ = world()
    seed_everything(seed)
    model = EmotionModel(config).to(device)
    pins = start_from(model, training)
    optimizer = configure_optimizer(model, training)
    if pins is not None:
        optimizer.register_step_post_hook(pins.restore)
    average = None
    if training.weight_average:  # after the pins: it averages the weights they left
        average = WeightAverage(model, training.weight_average)
        optimizer.register_step_post_hook(average.update)
    state = FitState()
    if resume:
        recover_folder(out_dir / "last")  # a kill during the last save: the whole earlier set
    if resume and (out_dir / "last" / RESUME_FILE).is_file():
        state = _restore(model, optimizer, out_dir / "last", device, average)
        log(f"resuming seed {seed} after epoch {state.epoch}")
    step = _distributed(
        TrainingStep(model, training.loss_weights, training.aux_text.weight), device, data.train
    )
    valid_loader = make_loader(
        data.valid, data.collate, training.batch_size * 2, shuffle=False, seed=seed
    )
    for epoch in range(state.epoch + 1, training.max_epochs + 1):
        if state.bad_epochs >= training.patience:
            break
        start = time.perf_counter()
        train_loader = make_loader(
            data.train,
            data.collate,
            training.batch_size,
            shuffle=shuffle,
            seed=seed + epoch,
            drop_last=len(data.train) > training.batch_size,
            group_by_length=training.group_by_length,
        )
        progress = _progress_every(60.0, len(train_loader), f"seed {seed} epoch {epoch:3d}", log)
        aux_rows = None
        if aux is not None:
            from mercli.data.aux_text import aux_batches

            # seeded per epoch, like the main loader, so that a resumed run draws the same rows
            aux_size = training.aux_text.batch_size or training.batch_size
            aux_rows = aux_batches(aux, aux_size, seed + epoch)
        lr_scale = schedule_scales(training, epoch, len(train_loader))
        train_loss, terms = train_epoch(
            step, train_loader, optimizer, device, training.grad_clip, progress, aux_rows, lr_scale
        )
        with average.applied() if average is not None else nullcontext():
            valid_loss, valid_metrics = evaluate(model, valid_loader, device)
            improved = valid_loss < state.best_valid_loss
            if rank == 0 and improved:
                save_checkpoint(
                    model,
                    out_dir / "best",
                    _with_metrics(meta, config, training, valid_metrics, "valid"),
                )
        state.history.append(
            EpochLog(
                epoch, train_loss, valid_loss, valid_metrics, time.perf_counter() - start, terms
            )
        )
        state.epoch = epoch
        if improved:
            state.best_epoch, state.best_valid_loss, state.bad_epochs = epoch, valid_loss, 0
        else:
            state.bad_epochs += 1
        if rank == 0:
            _save_state(model, optimizer, state, out_dir / "last", meta, config, training, average)
        log(_epoch_line(seed, state.history[-1], improved))
        _barrier()
    best, _ = load_checkpoint(out_dir / "best", device)
    test_loader = make_loader(
        data.test, data.collate, training.batch_size * 2, shuffle=False, seed=seed
    )
    _, test_metrics = evaluate(best, test_loader, device)
    aux_held_out: dict[str, float] = {}
    if aux is not None:
        from mercli.data.aux_text import held_out_metrics

        aux_held_out = held_out_metrics(best, aux, device)
        log(f"seed {seed} held-out auxiliary text: {_shown_metrics(aux_held_out)}")
    if rank == 0:
        final = _with_metrics(meta, config, training, test_metrics, "test")
        final.metrics["valid"] = state.history[state.best_epoch - 1].valid_metrics
        if aux_held_out:
            final.metrics["aux_held_out"] = aux_held_out
            final.extra["aux_held_out_how"] = dict(aux.how_held_out) if aux else {}
        final.extra["best_epoch"] = state.best_epoch
        save_checkpoint(best, out_dir / "best", final)
    return FitResult(
        state.best_epoch,
        state.best_valid_loss,
        test_metrics,
        state.history,
        out_dir / "best",
        aux_held_out,
    )


def _shown_metrics(metrics: dict[str, float]) -> str:
    return "  ".join(
        f"{k} {v:.4f}" if k.endswith("acc") else f"{k} {v:.0f}" for k, v in metrics.items()
    )


def _progress_every(
    seconds: float, n_batches: int, prefix: str, log: Callable[[str], None]
) -> Callable[[int, float], None]:
    """A progress callback that logs at most once per ``seconds`` (long epochs on a CPU)."""
    last = time.perf_counter()

    def report(done: int, loss: float) -> None:
        nonlocal last
        if time.perf_counter() - last >= seconds and done < n_batches:
            last = time.perf_counter()
            log(f"{prefix}  batch {done}/{n_batches}  train {loss:.4f}")

    return report


def _distributed(model: nn.Module, device: str, train: Any = None) -> nn.Module:
    _, size = world()
    if size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [torch.device(device).index] if device.startswith("cuda") else None
    # A loss weight of 0 (an ablation) leaves some parameters without gradient, and so does a
    # batch in which no sample has some modality (transcripts mixed with clips: the audio
    # encoder and its loss terms do not run). Looking for them costs a walk over the autograd
    # graph per step, so only then.
    weights = getattr(model, "weights", None)
    unused = weights is None or 0.0 in weights.to_dict().values()
    inner = getattr(model, "model", model)
    modalities = tuple(getattr(getattr(inner, "config", None), "modalities", ()))
    if not unused and train is not None and len(modalities) > 1:
        unused = lacks_modality(train, modalities)
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)


def lacks_modality(dataset: Any, modalities: tuple[str, ...]) -> bool:
    """Whether some sample of ``dataset`` lacks one of ``modalities`` (no valid step of it).

    Text given as raw text (tokenised when batches are made) counts as present.
    """
    for i in range(len(dataset)):
        sample = dataset[i]
        for m in modalities:
            x = sample.features.get(m)
            if x is None:
                if m == "text" and sample.text is not None:
                    continue
                return True
            mask = sample.masks.get(m)
            if len(x) == 0 or (mask is not None and not bool(mask.any())):
                return True
    return False


def _barrier() -> None:
    if world()[1] > 1:
        torch.distributed.barrier()


def _epoch_line(seed: int, e: EpochLog, improved: bool) -> str:
    key = "mae" if "mae" in e.valid_metrics else "acc2"
    mark = " *" if improved else ""
    return (
        f"seed {seed} epoch {e.epoch:3d}  train {e.train_loss:.4f}  valid {e.valid_loss:.4f}  "
        f"valid {key} {e.valid_metrics[key]:.4f}  {e.seconds:.1f}s{mark}"
    )


def _with_metrics(
    meta: CheckpointMeta | None,
    config: ModelConfig,
    training: TrainConfig,
    metrics: dict,
    split: str,
) -> CheckpointMeta:
    base = meta or CheckpointMeta(model_config={})
    return CheckpointMeta(
        model_config=config.to_dict(),
        train_config=training.to_dict(),
        feature_profile=base.feature_profile,
        metrics={split: metrics},
        extra=dict(base.extra),
    )


def _save_state(
    model: EmotionModel,
    optimizer: torch.optim.Optimizer,
    state: FitState,
    directory: Path,
    meta: CheckpointMeta | None,
    config: ModelConfig,
    training: TrainConfig,
    average: WeightAverage | None = None,
) -> None:
    payload = {
        "optimizer": optimizer.state_dict(),
        "state": {**asdict(state), "history": [asdict(h) for h in state.history]},
        "rng": {"torch": torch.get_rng_state()},  # dropout masks; loaders are seeded per epoch
    }
    if average is not None:
        payload["weight_average"] = average.state_dict()
    # weights, metadata and trainer state are committed together: one epoch's, all of them
    save_checkpoint(
        model,
        directory,
        _with_metrics(meta, config, training, {}, "valid"),
        extra_files={RESUME_FILE: lambda f: torch.save(payload, f)},
    )


def _restore(
    model: EmotionModel,
    optimizer: torch.optim.Optimizer,
    directory: Path,
    device: str,
    average: WeightAverage | None = None,
) -> FitState:
    """The model, optimizer, weight average and loop state of ``directory`` (``last/``).

    Raises:
        CheckpointError: the set is damaged (truncated, not written by mer, or of another model),
            naming the file.
    """
    last, _ = load_checkpoint(directory, device)
    model.load_state_dict(last.state_dict())
    path = directory / RESUME_FILE
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
        optimizer.load_state_dict(payload["optimizer"])
        if average is not None:  # a run saved without one has none to give
            average.load_state_dict(payload["weight_average"])
        torch.set_rng_state(payload["rng"]["torch"].cpu())
        raw = dict(payload["state"])
        history = [EpochLog(**h) for h in raw.pop("history")]
        return FitState(**raw, history=history)
    except Exception as error:  # any damage: unpickling refused, keys or shapes wrong
        raise CheckpointError(
            f"{path}: cannot resume from it ({type(error).__name__}: {_first_line(error)}); "
            "delete the run folder's last/ to start over"
        ) from error


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else "no details"
