"""How well does the model read transcripts? Text backbones compared on CMU-MOSI test.

Each variant is one ``mer train`` run over several seeds (run as a subprocess, so the figures are
those of the command a user types), with a frozen backbone whose token states are computed once
and cached:

- ``default``: train on the CMU-MOSI + CMU-MOSEI transcript train splits, select on MOSI valid,
  6 epochs, patience 2, batch 64, lr 1e-4 (the default model's recipe);
- ``paper``: the paper's protocol: MOSI train only, select on MOSI valid; batch 32, lr 1e-4, up
  to 12 epochs, patience 3;
- ``paper-aux`` and ``default-aux``: the same, with SST-2 and MELD (``--data-dir``'s ``sst2/``
  and ``meld/``) as auxiliary text on ordinal heads (``mer train --aux-text``); their held-out
  accuracies are reported too;
- ``paper-top1`` and ``paper-top2``: the paper's protocol with the backbone's top 1 or 2 layers
  tuned (``mer train --tune-top-layers K``, at the backbone's learning rate ``text_lr``): the
  lower layers' states are computed once and cached, the top layers run in every step;
- ``paper-finetune``: the paper's protocol with the whole backbone fine-tuned (no cache).

Each variant is compared with its base protocol (paired t-test over the seeds); the table also
gives the mean seconds per epoch and the epochs run.

The table gives mean ± std over seeds of the MOSI test metrics, and each backbone's encoding
speed measured in the same process (texts per second, one thread, MOSI test texts).

    python benchmarks/text_reading.py --data-dir ../shared/data --out runs/text_reading \\
        [--backbones all-MiniLM-L6-v2 all-mpnet-base-v2] [--protocols default paper] \\
        [--seeds 42 1 11] [--report-only] [--skip-speed]

Seeds already finished in ``--out`` are reused (``mer train --resume``); ``--report-only`` trains
nothing and reports the seeds finished so far.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# protocol -> (extra train CSVs under --data-dir, `mer train` options)
PROTOCOLS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "default": (
        ("cmu-mosei/label.csv",),
        ("--epochs", "6", "--patience", "2", "--batch-size", "64", "--lr", "1e-4"),
    ),
    # the MOSI preset's batch 32; a frozen backbone trains at lr 1e-4, and 12 epochs with
    # patience 3 fit this CPU budget (paper Table 2: lr 6e-5 with BERT fine-tuned, 40 epochs)
    "paper": ((), ("--epochs", "12", "--patience", "3", "--batch-size", "32", "--lr", "1e-4")),
}
# 3,000 training rows per auxiliary set (a fixed draw): all-mpnet-base-v2 encodes about 3 of
# them per second at nice 10 on the shared 2-core CPU, and each is encoded once
_AUX_OPTIONS = ("--aux-max-rows", "3000")
PROTOCOLS["paper-aux"] = (PROTOCOLS["paper"][0], (*PROTOCOLS["paper"][1], *_AUX_OPTIONS))
PROTOCOLS["default-aux"] = (PROTOCOLS["default"][0], (*PROTOCOLS["default"][1], *_AUX_OPTIONS))
for _k in (1, 2):
    PROTOCOLS[f"paper-top{_k}"] = ((), (*PROTOCOLS["paper"][1], "--tune-top-layers", str(_k)))
PROTOCOLS["paper-finetune"] = ((), (*PROTOCOLS["paper"][1], "--finetune-text"))
# variant -> the protocol it is compared with
BASES = {
    "paper-aux": "paper",
    "default-aux": "default",
    "paper-top1": "paper",
    "paper-top2": "paper",
    "paper-finetune": "paper",
}
# protocol -> auxiliary text sets (folders under --data-dir of the same names)
AUX_SETS: dict[str, tuple[str, ...]] = {
    "paper-aux": ("sst2", "meld"),
    "default-aux": ("sst2", "meld"),
}
AUX_COLUMNS = ("sst2_acc", "sst2_sign_acc", "meld_acc", "meld_sign_acc")
COLUMNS = [
    ("mae", "MAE", 1, "{:.3f}"),
    ("corr", "Corr", 1, "{:.3f}"),
    ("acc2_has0", "Acc-2 has0", 100, "{:.1f}"),
    ("acc2_non0", "Acc-2 non0", 100, "{:.1f}"),
    ("f1_has0", "F1 has0", 100, "{:.1f}"),
    ("f1_non0", "F1 non0", 100, "{:.1f}"),
    ("acc7", "Acc-7", 100, "{:.1f}"),
]


def train_command(
    data_dir: Path, protocol: str, backbone: str, seeds: list[int], out: Path
) -> list[str]:
    extra, options = PROTOCOLS[protocol]
    command = ["mer", "train", "--dataset", "mosi", "--data", str(data_dir / "cmu-mosi/label.csv")]
    for csv in extra:
        command += ["--extra-train", str(data_dir / csv)]
    for name in AUX_SETS.get(protocol, ()):
        command += ["--aux-text", f"{name}={data_dir / name}"]
    frozen = () if "--finetune-text" in options else ("--freeze-text",)
    command += ["--text-backbone", backbone, *frozen, *options]
    for seed in seeds:
        command += ["--seed", str(seed)]
    return [*command, "--out", str(out), "--resume"]


def encoding_speed(backbone: str, texts: list[str]) -> float:
    """Texts per second through ``backbone`` (one thread, batches of 64)."""
    import torch

    from mercli.data.text_states import encode_texts
    from mercli.model.text_backbone import load_backbone, load_tokenizer

    torch.set_num_threads(1)
    model, tokenizer = load_backbone(backbone), load_tokenizer(backbone)
    encode_texts(texts[:64], model, tokenizer)  # warm-up
    start = time.perf_counter()
    encode_texts(texts, model, tokenizer)
    return len(texts) / (time.perf_counter() - start)


def mosi_test_texts(data_dir: Path, n: int) -> list[str]:
    import csv

    with open(data_dir / "cmu-mosi/label.csv", newline="", encoding="utf-8") as f:
        rows = [r["text"] for r in csv.DictReader(f) if r["mode"] == "test"]
    return rows[:n]


def summary_row(results: dict, seeds: list[int]) -> tuple[list[str], int]:
    done = [results["seeds"][str(s)]["test"] for s in seeds if str(s) in results.get("seeds", {})]
    cells = []
    for key, _, scale, fmt in COLUMNS:
        values = np.array([m[key] for m in done], dtype=float) * scale
        std = values.std(ddof=1) if len(values) > 1 else float("nan")
        cells.append(f"{fmt.format(values.mean())} ± {fmt.format(std)}" if done else "-")
    return cells, len(done)


def aux_row(results: dict, seeds: list[int]) -> list[str]:
    """Mean ± std over seeds of the held-out auxiliary accuracies (percent)."""
    done = [
        results["seeds"][str(s)].get("aux_held_out", {})
        for s in seeds
        if str(s) in results.get("seeds", {})
    ]
    cells = []
    for key in AUX_COLUMNS:
        values = np.array([d[key] for d in done if key in d], dtype=float) * 100
        if not len(values):
            cells.append("-")
            continue
        std = values.std(ddof=1) if len(values) > 1 else float("nan")
        cells.append(f"{values.mean():.1f} ± {std:.1f}")
    return cells


def epoch_cost(results: dict, seeds: list[int]) -> str:
    """Mean seconds per epoch over the seeds' epochs, and the epochs each seed ran."""
    done = [results["seeds"][str(s)] for s in seeds if str(s) in results.get("seeds", {})]
    seconds = [h["seconds"] for r in done for h in r.get("history", [])]
    if not seconds:
        return "-"
    epochs = "/".join(str(r.get("epochs", len(r.get("history", [])))) for r in done)
    return f"{np.mean(seconds):.0f} s x {epochs}"


def print_variant_comparisons(by_protocol: dict[str, dict[str, dict]]) -> None:
    """A paired t-test per metric between each variant protocol and its base, per backbone."""
    from mercli.experiment import compare, test_metrics_by_seed

    for protocol, base in BASES.items():
        for backbone, b in by_protocol.get(protocol, {}).items():
            a = by_protocol.get(base, {}).get(backbone)
            if a is None or len(set(a["seeds"]) & set(b["seeds"])) < 2:
                continue
            print(f"{backbone}: paired t-test, A = {base}, B = {protocol}")
            for row in compare(test_metrics_by_seed(a), test_metrics_by_seed(b)):
                print(
                    f"  {row.metric:10s} A {row.mean_a:.4f}  B {row.mean_b:.4f}  "
                    f"p {row.p_value:.3g}  ({row.n_seeds} seeds)"
                )


def print_paired_tests(by_protocol: dict[str, dict[str, dict]]) -> None:
    """A paired t-test per metric between the first two backbones of each protocol."""
    from mercli.experiment import compare, test_metrics_by_seed

    for protocol, results in by_protocol.items():
        if len(results) < 2:
            continue
        (name_a, a), (name_b, b) = list(results.items())[:2]
        if len(set(a["seeds"]) & set(b["seeds"])) < 2:
            continue
        rows = compare(test_metrics_by_seed(a), test_metrics_by_seed(b))
        print(f"{protocol}: paired t-test over common seeds, A = {name_a}, B = {name_b}")
        for row in rows:
            print(
                f"  {row.metric:10s} A {row.mean_a:.4f}  B {row.mean_b:.4f}  "
                f"p {row.p_value:.3g}  ({row.n_seeds} seeds)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="holds cmu-mosi/, cmu-mosei/")
    parser.add_argument("--out", type=Path, default=Path("runs/text_reading"))
    parser.add_argument("--backbones", nargs="+", default=["all-MiniLM-L6-v2", "all-mpnet-base-v2"])
    parser.add_argument(
        "--protocols",
        nargs="+",
        default=["default", "paper", "paper-aux", "default-aux"],
        choices=list(PROTOCOLS),
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 11])
    parser.add_argument("--n-speed-texts", type=int, default=256)
    parser.add_argument(
        "--report-only", action="store_true", help="train nothing: report the finished seeds"
    )
    parser.add_argument("--skip-speed", action="store_true", help="measure no encoding speed")
    args = parser.parse_args()

    rows = []
    by_protocol: dict[str, dict[str, dict]] = {}
    for protocol in args.protocols:
        for backbone in args.backbones:
            out = args.out / f"{protocol}-{backbone}"
            command = train_command(args.data_dir, protocol, backbone, args.seeds, out)
            if not args.report_only:
                print(" ".join(command), file=sys.stderr, flush=True)
                cli = [sys.executable, "-m", "mercli", *command[1:]]
                subprocess.run(cli, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            path = out / "results.json"
            results = json.loads(path.read_text()) if path.is_file() else {"seeds": {}}
            cells, n_done = summary_row(results, args.seeds)
            cells.append(epoch_cost(results, args.seeds))
            rows.append((protocol, backbone, n_done, cells, aux_row(results, args.seeds)))
            by_protocol.setdefault(protocol, {})[backbone] = results

    texts = mosi_test_texts(args.data_dir, args.n_speed_texts)
    speeds = {} if args.skip_speed else {b: encoding_speed(b, texts) for b in args.backbones}
    print(f"CMU-MOSI test (685 segments), mean ± std over seeds {args.seeds}")
    header = ["protocol", "backbone", "seeds"] + [label for _, label, _, _ in COLUMNS]
    header.append("epoch cost x epochs")
    print(" | ".join(header))
    for protocol, backbone, n_done, cells, _ in rows:
        print(" | ".join([protocol, backbone, str(n_done), *cells]))
    if any(protocol in AUX_SETS for protocol, *_ in rows):
        print("held-out auxiliary text, percent (SST-2: held-out whole sentences; MELD: its test)")
        print(" | ".join(["protocol", "backbone", *AUX_COLUMNS]))
        for protocol, backbone, _, _, aux_cells in rows:
            if protocol in AUX_SETS:
                print(" | ".join([protocol, backbone, *aux_cells]))
    print_paired_tests(by_protocol)
    print_variant_comparisons(by_protocol)
    if speeds:
        print(f"encoding speed, {len(texts)} MOSI test texts, 1 thread:")
    for backbone, speed in speeds.items():
        print(f"  {backbone}: {speed:.1f} texts/s")
    print(f"load average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
