"""A checkpoint from ``mer train`` -> a folder to ship under ``mercli/weights/NAME``.

The tuned top layers of a frozen text backbone (``ModelConfig.tune_top_layers``, the
``text_top.`` weights: 14.2 M values for two all-mpnet-base-v2 layers) are stored as float16,
which halves the folder; loading casts them back to the model's float32. The weights only
training reads (MIC estimators, reconstructors, auxiliary heads) are left out, as
``save_checkpoint(..., inference_only=True)`` does; everything else is copied as it is, so the
folder loads for ``mer evaluate`` and ``mer analyze`` (not for training). The
checkpoint's recorded metrics are the training run's: evaluate the packaged folder
(``mer evaluate --checkpoint OUT``) for the figures of what ships::

    python benchmarks/package_checkpoint.py runs/text-mpnet-top2/seed_42 mercli/weights/default
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

HALF_PREFIXES = ("text_top.",)


def package(source: Path, out: Path) -> tuple[int, int]:
    """Write ``source``'s weights and metadata to ``out``; returns (bytes before, after)."""
    import torch
    from safetensors.torch import load_file, save_file

    from mercli.checkpoint import META_FILE, WEIGHTS_FILE, read_meta, training_only

    read_meta(source)  # refuses a folder that is not a checkpoint
    state = load_file(str(source / WEIGHTS_FILE))
    state = {
        k: v.to(torch.float16) if k.startswith(HALF_PREFIXES) and v.is_floating_point() else v
        for k, v in state.items()
        if not training_only(k)
    }
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / WEIGHTS_FILE))
    shutil.copyfile(source / META_FILE, out / META_FILE)
    return (source / WEIGHTS_FILE).stat().st_size, (out / WEIGHTS_FILE).stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a checkpoint folder from mer train")
    parser.add_argument("out", type=Path, help="the folder to write (its model card is kept)")
    args = parser.parse_args(argv)
    before, after = package(args.source, args.out)
    print(f"{args.out}: weights {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
