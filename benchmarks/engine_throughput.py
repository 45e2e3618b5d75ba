"""Clips per second of ``mer prepare``'s extraction: local engine vs Ray on this machine, one run.

    python benchmarks/engine_throughput.py [--clips DIR] [--repeat N] [--workers N] [--no-faces]

The clips (default: the CREMA-D clips and talking heads of ``../shared``, each listed ``--repeat``
times) go through :func:`mercli.prepare.iter_outcomes` with the feature cache off: whole-clip
acoustic features and, unless ``--no-faces``, MTCNN + the expression net at 5 fps, truncated to
``--max-clip-s``. Engines, in this order, on the same list:

- ``local x1``: one worker in this process;
- ``local xN``: N spawn processes (models loaded once per process);
- ``ray xN``: a Ray started here with N CPUs, N inference actors (models loaded once per actor)
  fed by the decoding stage (CPU tasks: ffmpeg audio + sampled frames), as ``mer prepare
  --engine ray`` runs;
- ``ray xN, decode in actors``: the same without the decoding stage, each actor decoding its
  clips itself (what the engine did before the stage existed).

Per engine: wall seconds from the first call to the last outcome, which includes loading the
models in every worker (and, for Ray, starting the actors; ``ray.init`` is timed apart) and clips
per second. The figures say what Ray costs on one machine; its gain is more machines.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"


def default_clips() -> list[Path]:
    crema = sorted((SHARED / "data" / "crema-d" / "clips").glob("*.flv"))
    heads = sorted((SHARED / "media" / "talking_head").glob("*.mp4"))
    return crema + heads


def timed(name: str, paths: list[Path], config, engine, decode_stage: bool = True) -> dict:
    from functools import partial

    from mercli.engine import run_clips
    from mercli.prepare import ClipPreparer, iter_outcomes

    started = time.perf_counter()
    if decode_stage:
        outcomes = dict(iter_outcomes(paths, config, engine))
    else:
        outcomes = dict(run_clips(paths, partial(ClipPreparer, config), engine))
    seconds = time.perf_counter() - started
    failed = [str(paths[i]) for i, o in outcomes.items() if o.reason is not None]
    return {
        "engine": name,
        "clips": len(outcomes),
        "failed": failed,
        "seconds": round(seconds, 2),
        "clips_per_s": round(len(outcomes) / seconds, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=Path, default=None, help="folder of clips")
    parser.add_argument("--repeat", type=int, default=1, help="list every clip this many times")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--max-clip-s", type=float, default=10.0)
    parser.add_argument("--no-faces", action="store_true")
    args = parser.parse_args()

    from mercli.engine import EngineConfig, import_ray
    from mercli.features.extract import ExtractConfig
    from mercli.pipeline import expand_inputs
    from mercli.prepare import PrepareConfig

    paths = expand_inputs([args.clips]) if args.clips else default_clips()
    paths = [p.resolve() for p in paths] * args.repeat
    if not paths:
        sys.exit("no clips: pass --clips DIR")
    config = PrepareConfig(
        extract=ExtractConfig(use_faces=not args.no_faces),
        max_clip_s=args.max_clip_s,
        use_cache=False,
    )
    n = args.workers
    load_before = os.getloadavg()[0]
    print(f"{len(paths)} clips, {n} workers, load {load_before:.2f}", file=sys.stderr)
    rows = [
        timed("local x1", paths, config, EngineConfig(workers=1)),
        timed(f"local x{n}", paths, config, EngineConfig(workers=n)),
    ]
    ray = import_ray()
    started = time.perf_counter()
    ray.init(num_cpus=n, include_dashboard=False, log_to_driver=False)
    ray_init_s = time.perf_counter() - started
    rows.append(timed(f"ray x{n}", paths, config, EngineConfig("ray", workers=n)))
    rows.append(
        timed(f"ray x{n}, decode in actors", paths, config, EngineConfig("ray", workers=n), False)
    )
    ray.shutdown()
    for row in rows:
        print(
            f"{row['engine']:>26}: {row['clips']} clips in {row['seconds']:7.1f} s = "
            f"{row['clips_per_s']:.3f} clips/s ({len(row['failed'])} failed)",
            file=sys.stderr,
        )
    print(f"ray.init: {ray_init_s:.1f} s (not in the ray row)", file=sys.stderr)
    summary = {
        "clips": len(paths),
        "workers": n,
        "faces": not args.no_faces,
        "max_clip_s": args.max_clip_s,
        "cpu_count": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "ray_init_s": round(ray_init_s, 2),
        "engines": rows,
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
