"""A checkpoint from ``mer train`` -> a folder to ship under ``mercli/weights/NAME``.

The tuned top layers of a frozen text backbone (``ModelConfig.tune_top_layers``, the
``text_top.`` weights: 14.2 M values for two all-mpnet-base-v2 layers) are stored as float16,
which halves the folder; loading casts them back to the model's float32. The weights only
training reads (MIC estimators, reconstructors, auxiliary heads) are left out, as
``save_checkpoint(..., inference_only=True)`` does; everything else is copied as it is, so the
folder loads for ``mer evaluate`` and ``mer analyze`` (not for training). The
checkpoint's recorded metrics are the training run's: evaluate the packaged folder
(``mer evaluate --checkpoint OUT``) for the figures of what ships::

    python benchmarks/package_checkpoint.py runs/text-mpnet-top2/seed_42 mercli/weights/text-mpnet

``--base NAME`` (a checkpoint trained with ``mer train --init NAME``): the tensors equal to the
base's are left out and read from it when the folder loads, which checks that the base's
weights are still the ones packaged against (``extra.weights_base`` in ``checkpoint.json``;
weights that have since moved to another packaged name, as the text-only ``default`` did to
``text-mpnet``, are found there by their sha256)::

    python benchmarks/package_checkpoint.py runs/voice-graft/seed_42/best \
        mercli/weights/default --base text-mpnet
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HALF_PREFIXES = ("text_top.",)


def package(source: Path, out: Path, base: str | None = None) -> tuple[int, int]:
    """Write ``source``'s weights and metadata to ``out``; returns (bytes before, after).

    ``base``: a packaged name or checkpoint folder whose equal tensors are left out.
    """
    import torch
    from safetensors.torch import load_file, save_file

    from mercli.checkpoint import (
        META_FILE,
        WEIGHTS_FILE,
        read_meta,
        read_weights,
        resolve_checkpoint,
        training_only,
        weights_sha256,
    )
    from mercli.jsontext import dumps

    read_meta(source)  # refuses a folder that is not a checkpoint
    state = load_file(str(source / WEIGHTS_FILE))
    state = {
        k: v.to(torch.float16) if k.startswith(HALF_PREFIXES) and v.is_floating_point() else v
        for k, v in state.items()
        if not training_only(k)
    }
    meta = json.loads((source / META_FILE).read_text(encoding="utf-8"))
    if base is not None:
        folder = resolve_checkpoint(base)
        given = read_weights(folder, read_meta(folder))
        state = {k: v for k, v in state.items() if not _same(v, given.get(k))}
        meta.setdefault("extra", {})["weights_base"] = {
            "checkpoint": base,
            "sha256": weights_sha256(folder / WEIGHTS_FILE),
        }
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / WEIGHTS_FILE))
    (out / META_FILE).write_text(dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
    return (source / WEIGHTS_FILE).stat().st_size, (out / WEIGHTS_FILE).stat().st_size


def _same(value: Any, other: Any) -> bool:
    return (
        other is not None
        and value.dtype == other.dtype
        and value.shape == other.shape
        and bool((value == other).all())
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a checkpoint folder from mer train")
    parser.add_argument("out", type=Path, help="the folder to write (its model card is kept)")
    parser.add_argument("--base", help="leave out the tensors equal to this checkpoint's")
    args = parser.parse_args(argv)
    before, after = package(args.source, args.out, args.base)
    print(f"{args.out}: weights {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
