"""Training throughput and peak memory of one epoch: mer vs MMSA 2.2.1's MISA.

Target: mer trains a MOSI-shaped epoch at least as fast as MMSA's MISA on the same data, the same
machine, in the same run. Every system is measured in a fresh subprocess (so peak memory is its
own) on one MOSI-shaped unaligned synthetic pickle (text 50 tokens, audio 375 x 5, vision 500 x 20;
1284 train samples by default):

* ``mer/states``: mer's model through mer's own loop (``make_loader`` + ``train_epoch``, the
  ``mosi`` preset: batch 32, full loss) with text from the pickle's frozen 768-d BERT states (the
  mer default for pickles: no backbone).
* ``mer/bert-ft``: the same, with a fine-tuned bert-base-shaped, randomly initialised BertModel as
  ``text_backbone``, fed the pickle's ``text_bert`` ids (``text_source="tokens"``):
  like for like with MISA, which fine-tunes its BERT.
* ``mer/bert-ft-stride``: ``mer/bert-ft`` with the sequence-shortening front on audio and
  vision (``EncoderConfig.stride = --stride``, default 8: 375 / 500 steps -> 47 / 63; off by
  default in mer, which keeps the paper's per-step projection).
* ``mer/bert-ft-stride-ckpt``: the same with the backbone's gradient checkpointing
  (``ModelConfig.use_backbone_checkpointing``): less memory, one more backbone forward per step.
* ``mer/bert-ft-stride-b16`` and ``mer/bert-ft-stride-ckpt-b16``: the same at batch 16 (the
  ``b16`` variant sets ``TrainConfig.batch_size``), MISA's own MOSI batch: like for like with
  ``misa/b16`` in memory too, since the backbone's activations grow with the batch.
* ``misa/b16`` and ``misa/b32``: MMSA's MISA built through ``AMIO(config)`` from MMSA's own MOSI
  regression config (``train_mode="regression"``, ``pretrained`` = the same random bert-base-shaped
  BertModel; bert-base-uncased cannot be downloaded offline), fed by MMSA's own ``MMDataset``, and
  trained by a plain loop that does what ``MMSA/trains/singleTask/MISA.py`` does per batch: task MSE
  + diff_weight * diff + sim_weight * CMD + recon_weight * recon (its own loss methods), Adam,
  ``clip_grad_value_``, an optimizer step every ``update_epochs`` (2) batches. Batch 16 is MMSA's
  MOSI setting; batch 32 is the same batch as mer.

Each system runs ``--warmup`` batches first (not timed), then one full epoch over the train split,
timed end to end (data loading and collation included). Peak memory: on CPU the process's peak RSS
(``resource.getrusage().ru_maxrss``; the whole process, and its rise during training over what the
loaded data and model already held); on CUDA ``torch.cuda.max_memory_allocated()``.

MMSA: ``pip install -e .[bench]`` (MMSA 2.2.1 and its deps: pandas, easydict, nvidia-ml-py3), or,
without touching the project's environment,
``pip install --target /tmp/mmsa-pkgs --no-deps MMSA==2.2.1 easydict nvidia-ml-py3`` and
``--mmsa-path /tmp/mmsa-pkgs`` (then MMSA's package ``__init__``, which needs pandas for its
runner, is skipped; only its models, trainers and data loader are imported).

    OMP_NUM_THREADS=1 python benchmarks/train_throughput.py --device cpu --n-train 160
    python benchmarks/train_throughput.py --device cuda            # full 1284-sample epoch
    python benchmarks/train_throughput.py --systems mer/states,misa/b16 --json

On a GPU machine use ``--device cuda`` (``--threads`` only sets CPU threads then); nothing else
changes. MMSA_run itself is not used: it calls ``torch.cuda.set_device`` and trains to early stop.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# mer/bert-ft-<variant>-...: stride (EncoderConfig.stride on audio and vision), ckpt (the
# backbone's gradient checkpointing), b16 (batch 16 instead of the preset's 32)
MER_VARIANTS = ("stride", "ckpt", "b16")
SYSTEMS = (
    "mer/states",
    "mer/bert-ft",
    "mer/bert-ft-stride",
    "mer/bert-ft-stride-ckpt",
    "mer/bert-ft-stride-b16",
    "mer/bert-ft-stride-ckpt-b16",
    "misa/b16",
    "misa/b32",
)
MER_BATCH = 32  # the mosi preset's batch size
MER_SMALL_BATCH = 16  # the b16 variant: MISA's MOSI batch


# --- the parent: data, a random BERT, one subprocess per system, the table ---------------------


def make_bert_dir(directory: Path, seed: int = 0) -> Path:
    """A randomly initialised bert-base-shaped BertModel and a placeholder vocab."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig()  # bert-base: 12 layers, 768 wide, 12 heads, vocab 30522
    BertModel(config).save_pretrained(directory)
    # MMSA's BertTextEncoder also loads a tokenizer from the same folder; it is never used.
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = special + [f"tok{i}" for i in range(config.vocab_size - len(special))]
    (directory / "vocab.txt").write_text("\n".join(words) + "\n")
    return directory


def run_worker(spec: dict[str, Any], threads: int) -> dict[str, Any]:
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        TOKENIZERS_PARALLELISM="false",
    )
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if spec.get("profile"):
        print(proc.stderr, file=sys.stderr)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(
            f"{spec['system']} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--n-train", type=int, default=1284, help="train samples (MOSI: 1284)")
    parser.add_argument("--data", help="an existing MOSI-shaped unaligned pickle (else synthetic)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma list of {SYSTEMS}")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches before the epoch")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--mmsa-path", help="a folder holding MMSA (pip install --target ...)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every system this many times, round-robin, and keep each "
        "system's fastest epoch (a busy machine disturbs single runs)",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        help="mer only: after the epoch, profile this many batches (torch.profiler) and print "
        "the time per part (backbone, encoders, shared encoder, MI estimators, ...) to stderr",
    )
    parser.add_argument(
        "--stride", type=int, default=8, help="mer/bert-ft-stride: audio and vision stride"
    )
    parser.add_argument(
        "--model",
        default="",
        help="mer only: ModelConfig changes as key=value,... (e.g. dropout=0,audio.stride=4)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = {s for s in systems if s not in SYSTEMS and not mer_variants(s)}
    if unknown:
        parser.error(f"unknown system(s) {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")

    with tempfile.TemporaryDirectory(prefix="mer-train-bench-") as tmp:
        tmp_path = Path(tmp)
        if args.data:
            data = str(Path(args.data).resolve())
        else:
            from mercli.data.synthetic import write_mmsa_pickle

            data = str(
                write_mmsa_pickle(
                    tmp_path / "unaligned_50.pkl",
                    "mosi",
                    n_train=args.n_train,
                    n_valid=2,
                    n_test=2,
                    seed=args.seed,
                )
            )
        bert = ""
        if any(s != "mer/states" for s in systems):
            bert = str(make_bert_dir(tmp_path / "bert-base-random", seed=args.seed))
        runs: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
        for round_ in range(args.rounds):
            for system in systems:
                spec = {
                    "system": system,
                    "data": data,
                    "bert": bert,
                    "device": args.device,
                    "warmup": args.warmup,
                    "threads": args.threads,
                    "seed": args.seed,
                    "mmsa_path": args.mmsa_path and str(Path(args.mmsa_path).resolve()),
                    "profile": args.profile,
                    "stride": args.stride,
                    "model": args.model,
                }
                print(
                    f"round {round_ + 1}/{args.rounds}: {system} ...", file=sys.stderr, flush=True
                )
                runs[system].append(run_worker(spec, args.threads))
    results = []
    for rs in runs.values():
        best = dict(max(rs, key=lambda r: r["samples_per_s"]))
        best["all_samples_per_s"] = [r["samples_per_s"] for r in rs]
        results.append(best)
    report(results, args)


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """A table (or JSON): samples/s, peak memory, and mer / MISA throughput ratios."""
    by_name = {r["system"]: r for r in results}
    ratios = {}
    for mer in [r["system"] for r in results if r["system"].startswith("mer/")]:
        for misa in ("misa/b16", "misa/b32"):
            if mer in by_name and misa in by_name:
                ratios[f"{mer} / {misa}"] = (
                    by_name[mer]["samples_per_s"] / by_name[misa]["samples_per_s"]
                )
    device = results[0]["device_name"] if results else args.device
    if args.json:
        print(
            json.dumps(
                {
                    "device": device,
                    "n_train": args.n_train,
                    "threads": args.threads,
                    "rounds": args.rounds,
                    "results": results,
                    "throughput_ratios": ratios,
                },
                indent=1,
            )
        )
        return
    mem_label = "peak GPU alloc MiB" if args.device == "cuda" else "peak RSS MiB (+train)"
    print(
        f"\ndevice: {device}, torch threads {args.threads}, one epoch of {args.n_train} "
        f"MOSI-shaped unaligned train samples, warm-up {args.warmup} batches, "
        f"best of {args.rounds} round(s)"
    )
    print(
        f"{'system':27s} {'batch':>5s} {'samples':>7s} {'seconds':>8s} {'samples/s':>10s} "
        f"{mem_label:>22s} {'params M':>9s}  load avg (1 min) before/after"
    )
    for r in results:
        if args.device == "cuda":
            mem = f"{r['peak_gpu_mib']:.0f}"
        else:
            mem = f"{r['peak_rss_mib']:.0f} (+{r['train_rss_rise_mib']:.0f})"
        print(
            f"{r['system']:27s} {r['batch_size']:5d} {r['samples']:7d} {r['seconds']:8.1f} "
            f"{r['samples_per_s']:10.2f} {mem:>22s} {r['params_m']:9.1f}  "
            f"{r['load_before'][0]:.2f} / {r['load_after'][0]:.2f}"
        )
    for name, ratio in ratios.items():
        print(f"throughput {name}: {ratio:.2f}x")


# --- a worker: one system, one epoch, in its own process -----------------------------------


def worker(spec: dict[str, Any]) -> None:
    import torch

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    device = spec["device"]
    load_before = os.getloadavg()
    if spec["system"].startswith("mer/"):
        epoch, batches, n_params = setup_mer(spec)
    else:
        epoch, batches, n_params = setup_misa(spec)
    if spec["system"].startswith("mer/"):
        small = "b16" in mer_variants(spec["system"])
        batch_size = MER_SMALL_BATCH if small else MER_BATCH
    else:
        batch_size = int(spec["system"][-2:])

    rss_setup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
    epoch(itertools.islice(batches(spec["seed"] + 1000), spec["warmup"]))  # untimed warm-up
    sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    samples = epoch(batches(spec["seed"]))
    sync(device)
    seconds = time.perf_counter() - start
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "system": spec["system"],
        "batch_size": batch_size,
        "samples": samples,
        "seconds": seconds,
        "samples_per_s": samples / seconds,
        "peak_rss_mib": peak_rss,
        "train_rss_rise_mib": peak_rss - rss_setup,  # over data + model + optimizer, pre-training
        "params_m": n_params / 1e6,
        "device_name": (
            torch.cuda.get_device_name() if device == "cuda" else f"cpu ({os.cpu_count()} cores)"
        ),
        "torch": torch.__version__,
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }
    if device == "cuda":
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    if spec.get("model"):
        result["system"] += f" [{spec['model']}]"
    print("RESULT " + json.dumps(result), flush=True)
    if spec.get("profile") and spec["system"].startswith("mer/"):
        profile_mer(epoch, itertools.islice(batches(spec["seed"] + 2000), spec["profile"]))


def profile_mer(epoch, loader) -> None:
    """Time and memory per part of mer's model over a few batches (torch.profiler), to stderr.

    Forward time is attributed by scopes around the parts; backward ops are listed by input
    shape (attention over 375 / 500 steps shows as its sequence length).
    """
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from mercli import losses
    from mercli import train as train_module

    model = None
    handles = []

    def scoped(name: str, module: torch.nn.Module) -> None:
        state: dict[str, Any] = {}

        def enter(*_: Any) -> None:
            state["scope"] = record_function(name)
            state["scope"].__enter__()

        def leave(*_: Any) -> None:
            state["scope"].__exit__(None, None, None)

        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave))

    original_total_loss = losses.total_loss

    def total_loss(m, *args: Any, **kwargs: Any):
        nonlocal model
        if model is None:
            model = m
        with record_function("losses (MI estimators included)"):
            return original_total_loss(m, *args, **kwargs)

    train_module.total_loss = total_loss
    import gc

    for obj in gc.get_objects():
        if type(obj).__name__ == "EmotionModel":
            model = obj
            break
    assert model is not None
    if model.text_backbone is not None:
        scoped("text backbone", model.text_backbone)
    for m, encoder in model.encoders.items():
        scoped(f"encoder {m}", encoder)
    scoped("shared encoder", model.shared_encoder)
    for m, part in model.disentanglers.items():
        scoped(f"disentangler {m}", part)
    scoped("fusion", model.fusion)
    batches = list(loader)
    activities = [ProfilerActivity.CPU]
    with (
        profile(activities=activities, profile_memory=True, record_shapes=True) as prof,
        record_function("whole"),
    ):
        epoch(iter(batches))
    for h in handles:
        h.remove()
    train_module.total_loss = original_total_loss
    events = prof.key_averages()
    scopes = [
        e
        for e in events
        if e.key.startswith(
            ("text backbone", "encoder ", "shared enc", "disentangler", "fusion", "losses", "whole")
        )
    ]
    print(
        f"\n{len(batches)} batches profiled; forward by part (CPU total ms, per batch):",
        file=sys.stderr,
    )
    for e in sorted(scopes, key=lambda e: -e.cpu_time_total):
        print(
            f"  {e.key:36s} {e.cpu_time_total / 1e3 / len(batches):9.1f} ms "
            f"(x{e.count // len(batches)})",
            file=sys.stderr,
        )
    print("\nops by self CPU time and input shape (forward and backward):", file=sys.stderr)
    table = prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_cpu_time_total",
        row_limit=30,
        max_name_column_width=60,
        max_shapes_column_width=70,
    )
    print(table, file=sys.stderr)
    print(prof.key_averages().table(sort_by="self_cpu_memory_usage", row_limit=15), file=sys.stderr)


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def setup_mer(spec: dict[str, Any]):
    """mer's model, optimizer and loader exactly as ``mercli.train.fit`` builds them."""
    from dataclasses import replace

    from mercli import train as train_module
    from mercli.config import PRESETS
    from mercli.data import load_dataset
    from mercli.model import EmotionModel
    from mercli.train import configure_optimizer, make_loader, train_epoch

    device = spec["device"]
    with_bert = spec["system"].startswith("mer/bert-ft")
    data = load_dataset("mosi", spec["data"], text_source="tokens" if with_bert else "states")
    preset = PRESETS["mosi"]
    config = preset.model.for_dataset(data.info)
    if with_bert:
        config = replace(config, text_backbone=spec["bert"], finetune_text_backbone=True)
    variants = mer_variants(spec["system"])
    if "stride" in variants:
        stride = spec["stride"]
        config = replace(
            config,
            audio=replace(config.audio, stride=stride),
            vision=replace(config.vision, stride=stride),
        )
    if "ckpt" in variants:
        config = replace(config, use_backbone_checkpointing=True)
    for item in filter(None, spec.get("model", "").split(",")):
        # key=value (audio.stride=4 for a modality's encoder); values read as JSON, else strings
        key, text = item.split("=", 1)
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        if "." in key:
            modality, key = key.split(".", 1)
            config = replace(
                config, **{modality: replace(config.encoder(modality), **{key: value})}
            )
        else:
            config = replace(config, **{key: value})
    cfg = preset.train
    if "b16" in variants:
        cfg = replace(cfg, batch_size=MER_SMALL_BATCH)
    model = EmotionModel(config).to(device)
    optimizer = configure_optimizer(model, cfg)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # As fit() drives it: the model and its loss as one TrainingStep module, where there is one.
    step = (
        train_module.TrainingStep(model, cfg.loss_weights)
        if hasattr(train_module, "TrainingStep")
        else None
    )

    def batches(seed: int):
        return make_loader(
            data.train,
            data.collate,
            cfg.batch_size,
            shuffle=True,
            seed=seed,
            drop_last=len(data.train) > cfg.batch_size,
            group_by_length=cfg.group_by_length,
        )

    def epoch(loader) -> int:
        samples = 0

        def counted():
            nonlocal samples
            for b in loader:
                samples += len(b.labels)
                yield b

        if step is not None:  # train_epoch(step, loader, optimizer, device, grad_clip)
            train_epoch(step, counted(), optimizer, device, cfg.grad_clip)
        else:  # the older train_epoch(model, loader, optimizer, weights, device, grad_clip)
            train_epoch(model, counted(), optimizer, cfg.loss_weights, device, cfg.grad_clip)
        return samples

    return epoch, batches, n_params


def mer_variants(system: str) -> set[str]:
    """``mer/bert-ft-stride-ckpt-b16`` -> {"stride", "ckpt", "b16"}; empty for other names."""
    prefix = "mer/bert-ft-"
    if not system.startswith(prefix):
        return set()
    variants = set(system[len(prefix) :].split("-"))
    return variants if variants <= set(MER_VARIANTS) else set()


def import_mmsa(mmsa_path: str | None) -> None:
    """Make ``MMSA.models`` importable; skip MMSA's ``__init__`` (its runner) without pandas."""
    import importlib.util
    import types

    if mmsa_path:
        sys.path.insert(0, mmsa_path)
    spec = importlib.util.find_spec("MMSA")
    if spec is None:
        raise SystemExit("MMSA is not installed: pip install -e .[bench], or pass --mmsa-path")
    if importlib.util.find_spec("pandas") is None and "MMSA" not in sys.modules:
        package = types.ModuleType("MMSA")
        package.__path__ = list(spec.submodule_search_locations or [])
        sys.modules["MMSA"] = package


def setup_misa(spec: dict[str, Any]):
    """MMSA's MISA through AMIO, MMSA's dataset, and the per-batch work of MMSA's MISA trainer."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    import_mmsa(spec["mmsa_path"])
    from MMSA.config import get_config_regression
    from MMSA.data_loader import MMDataset
    from MMSA.models import AMIO
    from MMSA.trains import ATIO

    device = torch.device(spec["device"])
    batch_size = int(spec["system"][-2:])
    args = get_config_regression("misa", "mosi")
    args.update(
        {
            "train_mode": "regression",
            "device": device,
            "custom_feature": spec["data"],
            "feature_T": "",
            "feature_A": "",
            "feature_V": "",
            "pretrained": spec["bert"],
            "batch_size": batch_size,
            "cur_seed": 1,
        }
    )
    dataset = MMDataset(args, mode="train")  # sets args.feature_dims from the data
    # MMSA zeroes -inf in audio only; real MOSI FACET has none, the synthetic file does.
    dataset.vision[~np.isfinite(dataset.vision)] = 0
    args["seq_lens"] = dataset.get_seq_len()
    model = AMIO(args).to(device)
    trainer = ATIO().getTrain(args)
    trainer.model = model
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=args.learning_rate
    )
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model.train()

    def batches(seed: int):
        # MMDataLoader's loader (shuffle, no drop_last); workers 0 like mer's loader.
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(
            dataset, batch_size=batch_size, shuffle=True, num_workers=0, generator=generator
        )

    def epoch(loader) -> int:
        return sum(step(b, i) for i, b in enumerate(loader))

    def step(batch_data: dict, i: int) -> int:
        # The body of MMSA.trains.singleTask.MISA.do_train's batch loop.
        if i % args.update_epochs == 0:
            optimizer.zero_grad()
        text = batch_data["text"].to(device)
        audio = batch_data["audio"].to(device)
        vision = batch_data["vision"].to(device)
        labels = batch_data["labels"]["M"].to(device).view(-1, 1)
        outputs = model(text, audio, vision)["M"]
        cls_loss = trainer.criterion(outputs, labels)
        diff_loss = trainer.get_diff_loss()
        recon_loss = trainer.get_recon_loss()
        similarity_loss = trainer.get_cmd_loss() if args.use_cmd_sim else trainer.get_domain_loss()
        loss = (
            cls_loss
            + args.diff_weight * diff_loss
            + args.sim_weight * similarity_loss
            + args.recon_weight * recon_loss
        )
        loss.backward()
        if args.grad_clip != -1.0:
            torch.nn.utils.clip_grad_value_(
                [p for p in model.parameters() if p.requires_grad], args.grad_clip
            )
        loss.item()
        outputs.detach().cpu()
        if (i + 1) % args.update_epochs == 0:
            optimizer.step()
        return len(labels)

    return epoch, batches, n_params


if __name__ == "__main__":
    main()
