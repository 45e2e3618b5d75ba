"""Where per-clip work runs: a local process pool or a Ray cluster (``--engine local|ray``).

The work itself is a library function, the same for both engines: a *worker factory* builds, once
per process or Ray actor, a callable that loads its models in ``__init__`` and maps one clip's path
to its outcome (a :class:`~mercli.prepare.ClipOutcome`, a :class:`~mercli.prediction.FileResult`,
...). Per-clip failures are part of the outcome; an exception that escapes the callable stops the
whole run, on either engine, with its own type.

- ``local``: in this process (``workers=1``) or a ``spawn`` process pool, one worker per process.
- ``ray``: Ray Data, one row per clip, in two stages: a *decoder* (``path -> DecodedMedia``: the
  clip's audio samples and sampled frames, :func:`mercli.features.extract.decode_ahead`) runs as
  CPU tasks (``ds.map(..., num_cpus=DECODE_CPUS)``), and its rows feed the inference actors
  (``ds.map_batches(RayClipWorker, compute=ActorPoolStrategy(size=n), num_gpus=g)``, the Ray Data
  batch-inference pattern), which run the callable with the decoded media preloaded
  (:func:`mercli.features.media.preloaded`): an actor holding a GPU does not wait on ffmpeg, and
  the results are those of the same callable reading the file. Decoded clips wait in Ray's
  object store (at most ``MAX_DECODED_BYTES`` each, :mod:`mercli.features.media`). Actors hold
  a GPU share when the cluster has GPUs (several may share one: ``gpus_per_worker=0.5``). Ray is
  an optional extra: ``pip install 'mercli[ray]'``.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

ENGINES = ("local", "ray")
# What one actor holds with its models loaded (MTCNN + expression net: ~1.1 GB measured; Whisper
# tiny.en and the emotion model add a few hundred MB); Ray places actors by it, node by node.
ACTOR_MEMORY_BYTES = 2 * 1024**3
RAY_INSTALL_HINT = "pip install 'mercli[ray]'"
# CPUs one decoding task holds (ffmpeg runs in a process of its own; the task mostly waits on
# it); the plan keeps this much of a CPU-only cluster free of inference actors.
DECODE_CPUS = 0.5


class EngineError(RuntimeError):
    """The engine cannot run (Ray missing, no cluster at the address, a worker died)."""


class WorkerFactory(Protocol):
    """Builds the per-clip callable once per process or actor (picklable: it travels there).

    ``device`` is None in local processes (the configured device is kept); in a Ray actor it is
    ``"cuda"`` when the actor holds a GPU share and ``"cpu"`` otherwise.
    """

    def __call__(self, device: str | None) -> Callable[[Path], Any]: ...


Decoder = Callable[..., Any]  # (path, device=...) -> DecodedMedia or None (picklable: Ray tasks)


@dataclass(frozen=True)
class EngineConfig:
    """Which engine runs the clips, and with how many workers."""

    name: Literal["local", "ray"] = "local"
    workers: int | None = None  # local: processes (None = 1); ray: actors (None = what fits)
    address: str | None = None  # ray: an existing cluster ("auto", "ray://head:10001"); None
    # starts a Ray instance on this machine
    gpus_per_worker: float | None = None  # ray: GPUs per actor; None = 1 when the cluster has GPUs
    cpus_per_worker: float = 1.0  # ray: CPUs per actor (its torch threads)

    def __post_init__(self) -> None:
        if self.name not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {self.name!r}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise ValueError(f"gpus_per_worker must be >= 0, got {self.gpus_per_worker}")
        if self.cpus_per_worker <= 0:
            raise ValueError(f"cpus_per_worker must be positive, got {self.cpus_per_worker}")
        if self.name == "local" and (self.address or self.gpus_per_worker):
            raise ValueError("address and gpus_per_worker are options of the ray engine")


def import_ray() -> Any:
    """The ``ray`` module with Ray Data loaded.

    Raises:
        EngineError: Ray is not installed (the message says how to install it).
    """
    try:
        import ray
        import ray.data
    except ImportError as error:
        raise EngineError(
            f"--engine ray needs Ray Data, which is not installed: {RAY_INSTALL_HINT}"
        ) from error
    return ray


def check_engine(engine: EngineConfig) -> None:
    """Fail before any work when the engine cannot run here (Ray missing)."""
    if engine.name == "ray":
        import_ray()


def run_clips(
    paths: Sequence[Path],
    factory: WorkerFactory,
    engine: EngineConfig,
    ordered: bool = False,
    decoder: Decoder | None = None,
) -> Iterator[tuple[int, Any]]:
    """(index into ``paths``, outcome) per clip, as each is done.

    Args:
        paths: the clips.
        factory: builds the per-clip callable (see :class:`WorkerFactory`).
        engine: where it runs.
        ordered: yield in the order of ``paths`` (always so with one local worker).
        decoder: on Ray, a stage of CPU tasks before the callable: ``path ->``
            :class:`~mercli.features.media.DecodedMedia` (or None: the callable reads the file
            itself), preloaded while the callable runs. The local engine decodes in the callable.

    Raises:
        EngineError: Ray missing or unreachable, or a worker process died.
        Exception: whatever the per-clip callable raised (it stops the run).
    """
    if not paths:
        return
    if engine.name == "ray":
        yield from _ray_outcomes(paths, factory, engine, ordered, decoder)
    else:
        yield from _local_outcomes(paths, factory, engine.workers or 1, ordered)


# ---------------------------------------------------------------------------------------------
# local

_local_worker: dict[str, Callable[[Path], Any]] = {}


def _init_local_worker(factory: WorkerFactory, n_threads: int) -> None:
    import torch

    torch.set_num_threads(n_threads)
    _local_worker["work"] = factory(None)


def _work_in_local_worker(path: Path) -> Any:
    return _local_worker["work"](path)


def _local_outcomes(
    paths: Sequence[Path], factory: WorkerFactory, workers: int, ordered: bool
) -> Iterator[tuple[int, Any]]:
    if workers == 1 or len(paths) == 1:
        work = factory(None)
        for i, path in enumerate(paths):
            yield i, work(path)
        return
    from concurrent.futures import as_completed
    from concurrent.futures.process import BrokenProcessPool

    n_workers = min(workers, len(paths))
    n_threads = max(1, (os.cpu_count() or 1) // n_workers)
    pool = worker_pool(n_workers, _init_local_worker, (factory, n_threads))
    finished = False
    try:
        futures = [pool.submit(_work_in_local_worker, path) for path in paths]
        if ordered:
            for i, future in enumerate(futures):
                yield i, future.result()
        else:
            index = {future: i for i, future in enumerate(futures)}
            for future in as_completed(futures):
                yield index[future], future.result()
        finished = True
    except BrokenProcessPool as error:
        raise EngineError(
            f"a worker process died ({error}); clips finished so far are cached: run the "
            "same command again to resume"
        ) from error
    finally:  # interrupted: drop the clips not started, stop the ones running
        stop_pool(pool, finished)


def worker_pool(n_workers: int, initializer: Callable[..., Any], initargs: tuple) -> Any:
    """A process pool whose workers exit as soon as this process dies, even by ``kill -9``
    (a clip in progress would otherwise hold ~1.4 GB for minutes, for nobody).

    Spawn, not fork: torch (MTCNN, the expression net) is not fork-safe once it has threads.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(
        n_workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(initializer, initargs),
    )


def stop_pool(pool: Any, finished: bool) -> None:
    """Shut a :func:`worker_pool` down; unless its work ``finished`` (interrupted, or an error),
    end the workers now instead of letting them finish clips nobody will collect."""
    processes = list(getattr(pool, "_processes", {}).values())  # before shutdown forgets them
    pool.shutdown(wait=finished, cancel_futures=True)
    if not finished:
        for process in processes:
            if process.is_alive():
                process.terminate()


def _start_worker(initializer: Callable[..., Any], initargs: tuple) -> None:
    _exit_with_parent()
    initializer(*initargs)


def _exit_with_parent() -> None:
    """In a worker: a thread that ends the process when its parent is gone."""
    import multiprocessing
    import threading

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()  # returns when the parent's sentinel closes: it died
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


# ---------------------------------------------------------------------------------------------
# ray


class RayClipWorker:
    """A Ray Data actor: builds the per-clip callable once, then maps batches of clip rows.

    Rows in: ``index`` (int), ``path`` (str) and, after a decoding stage, ``decoded`` (a pickled
    :class:`~mercli.features.media.DecodedMedia`, or empty), preloaded while the callable runs.
    Rows out: ``index``, ``outcome`` (the callable's result) and ``error`` (None, or the pickled
    exception that escaped the callable, raised again on the driver with its own type: Ray would
    otherwise wrap it beyond recognition).
    """

    def __init__(self, factory: WorkerFactory, n_threads: int) -> None:
        import ray
        import torch

        torch.set_num_threads(n_threads)
        self.work = factory("cuda" if ray.get_gpu_ids() else "cpu")  # the reservation decides

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from mercli.features.media import preloaded

        n = len(batch["index"])
        outcomes = np.empty(n, dtype=object)
        errors = np.empty(n, dtype=object)
        blobs = batch.get("decoded", [b""] * n)
        for k, (path, blob) in enumerate(zip(batch["path"], blobs, strict=True)):
            decoded = pickle.loads(blob) if blob else None
            try:
                with preloaded(decoded):
                    outcomes[k] = self.work(Path(str(path)))
            except Exception as error:  # not swallowed: the driver raises it (see run_clips)
                errors[k] = _portable_error(error)
            del decoded
        return {"index": batch["index"], "outcome": outcomes, "error": errors}


def _decode_row(row: dict[str, Any], decoder: Decoder, device: str = "cpu") -> dict[str, Any]:
    """The decoding stage (a Ray task): the row with its clip decoded, pickled (empty bytes
    when nothing was decoded: a block of None alone would reach the actor as a float NaN).
    ``device`` is where the actors run: what they would find in the cache depends on it."""
    decoded = decoder(Path(row["path"]), device=device)
    blob = b"" if decoded is None else pickle.dumps(decoded, protocol=5)
    return {**row, "decoded": blob}


def _portable_error(error: Exception) -> bytes:
    try:
        data = pickle.dumps(error)
        pickle.loads(data)  # exceptions with their own __init__ may not load again
    except Exception:
        data = pickle.dumps(EngineError(f"{type(error).__name__}: {error}"))
    return data


def connect_ray(address: str | None) -> Any:
    """Ray, connected to ``address`` (or to a Ray started on this machine when None).

    Raises:
        EngineError: Ray is missing or no cluster answers at ``address``.
    """
    ray = import_ray()
    if ray.is_initialized():
        return ray
    try:
        ray.init(address=address, log_to_driver=False, include_dashboard=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise EngineError(f"cannot connect to a Ray cluster at {address}: {error}") from error
    return ray


def _ray_plan(
    resources: dict[str, float], engine: EngineConfig, n_clips: int, decode_cpus: float = 0.0
) -> tuple[int, float, float]:
    """(actors, GPUs per actor, CPUs per actor) for a cluster with ``resources``; by default as
    many actors as the GPUs (or CPUs) hold and the memory holds :data:`ACTOR_MEMORY_BYTES` each.

    ``decode_cpus`` of the cluster's CPUs stay free of actors for the decoding tasks: fewer
    actors by default, or, when ``engine.workers`` asks for more, smaller CPU reservations
    (a Ray scheduling figure; each actor's torch threads stay ``cpus_per_worker``).
    """
    n_gpus = float(resources.get("GPU", 0.0))
    n_cpus = float(resources.get("CPU", 1.0))
    gpus = engine.gpus_per_worker
    if gpus is None:
        gpus = 1.0 if n_gpus >= 1 else 0.0
    cpus = engine.cpus_per_worker
    free_cpus = max(n_cpus - decode_cpus, 0.0)
    if engine.workers is not None:
        n_workers = engine.workers
    else:
        n_workers = int(n_gpus // gpus) if gpus > 0 else int(free_cpus // cpus)
        if "memory" in resources:
            n_workers = min(n_workers, int(resources["memory"] // ACTOR_MEMORY_BYTES))
    n_workers = max(1, min(n_workers, n_clips))
    if decode_cpus and n_workers * cpus > free_cpus:
        cpus = max(free_cpus, decode_cpus) / n_workers
    return n_workers, gpus, cpus


def _ray_outcomes(
    paths: Sequence[Path],
    factory: WorkerFactory,
    engine: EngineConfig,
    ordered: bool,
    decoder: Decoder | None,
) -> Iterator[tuple[int, Any]]:
    ray = connect_ray(engine.address)
    decode_cpus = DECODE_CPUS if decoder is not None else 0.0
    n_workers, gpus, cpus = _ray_plan(ray.cluster_resources(), engine, len(paths), decode_cpus)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # progress is ours, on stderr
    context.execution_options.preserve_order = ordered
    # absolute paths: the workers' working directory is not ours (on other nodes, the same
    # folder must be mounted at the same place)
    rows = [{"index": i, "path": str(Path(p).absolute())} for i, p in enumerate(paths)]
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows))  # one clip per task
    options: dict[str, Any] = {}
    if engine.address is None and os.environ.get("XDG_CACHE_HOME"):  # this machine: our cache
        options["runtime_env"] = {"env_vars": {"XDG_CACHE_HOME": os.environ["XDG_CACHE_HOME"]}}
    if decoder is not None:
        dataset = dataset.map(
            _decode_row,
            fn_kwargs={"decoder": decoder, "device": "cuda" if gpus > 0 else "cpu"},
            num_cpus=decode_cpus,
            **options,
        )
    dataset = dataset.map_batches(
        RayClipWorker,
        fn_constructor_args=(factory, max(1, int(engine.cpus_per_worker))),
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=n_workers),
        num_cpus=cpus,
        num_gpus=gpus,
        memory=ACTOR_MEMORY_BYTES,
        **options,
    )
    for row in dataset.iter_rows():
        if row["error"] is not None:
            raise pickle.loads(row["error"])
        yield int(row["index"]), row["outcome"]


__all__ = [
    "DECODE_CPUS",
    "ENGINES",
    "RAY_INSTALL_HINT",
    "Decoder",
    "EngineConfig",
    "EngineError",
    "RayClipWorker",
    "WorkerFactory",
    "check_engine",
    "connect_ray",
    "import_ray",
    "run_clips",
]
