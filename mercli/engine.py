"""Where per-clip work runs: a local process pool or a Ray cluster (``--engine local|ray``).

The work itself is a library function, the same for both engines: a *worker factory* builds, once
per process or Ray actor, a callable that loads its models in ``__init__`` and maps one clip's path
to its outcome (a :class:`~mercli.prepare.ClipOutcome`, a :class:`~mercli.prediction.FileResult`,
...). Per-clip failures are part of the outcome; an exception that escapes the callable stops the
whole run, on either engine, with its own type.

- ``local``: in this process (``workers=1``) or a ``spawn`` process pool, one worker per process.
- ``ray``: Ray Data, one row per clip: ``ds.map_batches(RayClipWorker, compute=ActorPoolStrategy
  (size=n), num_gpus=g)`` (the Ray Data batch-inference pattern). Actors hold a GPU share when the
  cluster has GPUs, and several actors may share one GPU (``gpus_per_worker=0.25``), so that one
  actor's decoding (ffmpeg, a CPU process of its own) overlaps the others' inference. Ray is an
  optional extra: ``pip install 'mercli[ray]'``.
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


class EngineError(RuntimeError):
    """The engine cannot run (Ray missing, no cluster at the address, a worker died)."""


class WorkerFactory(Protocol):
    """Builds the per-clip callable once per process or actor (picklable: it travels there).

    ``device`` is None in local processes (the configured device is kept); in a Ray actor it is
    ``"cuda"`` when the actor holds a GPU share and ``"cpu"`` otherwise.
    """

    def __call__(self, device: str | None) -> Callable[[Path], Any]: ...


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
) -> Iterator[tuple[int, Any]]:
    """(index into ``paths``, outcome) per clip, as each is done.

    Args:
        paths: the clips.
        factory: builds the per-clip callable (see :class:`WorkerFactory`).
        engine: where it runs.
        ordered: yield in the order of ``paths`` (always so with one local worker).

    Raises:
        EngineError: Ray missing or unreachable, or a worker process died.
        Exception: whatever the per-clip callable raised (it stops the run).
    """
    if not paths:
        return
    if engine.name == "ray":
        yield from _ray_outcomes(paths, factory, engine, ordered)
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

    Rows in: ``index`` (int) and ``path`` (str). Rows out: ``index``, ``outcome`` (the callable's
    result) and ``error`` (None, or the pickled exception that escaped the callable, raised
    again on the driver with its own type: Ray would otherwise wrap it beyond recognition).
    """

    def __init__(self, factory: WorkerFactory, n_threads: int) -> None:
        import ray
        import torch

        torch.set_num_threads(n_threads)
        self.work = factory("cuda" if ray.get_gpu_ids() else "cpu")  # the reservation decides

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["index"])
        outcomes = np.empty(n, dtype=object)
        errors = np.empty(n, dtype=object)
        for k, path in enumerate(batch["path"]):
            try:
                outcomes[k] = self.work(Path(str(path)))
            except Exception as error:  # not swallowed: the driver raises it (see run_clips)
                errors[k] = _portable_error(error)
        return {"index": batch["index"], "outcome": outcomes, "error": errors}


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
    resources: dict[str, float], engine: EngineConfig, n_clips: int
) -> tuple[int, float, float]:
    """(actors, GPUs per actor, CPUs per actor) for a cluster with ``resources``; by default as
    many actors as the GPUs (or CPUs) hold and the memory holds :data:`ACTOR_MEMORY_BYTES` each."""
    n_gpus = float(resources.get("GPU", 0.0))
    gpus = engine.gpus_per_worker
    if gpus is None:
        gpus = 1.0 if n_gpus >= 1 else 0.0
    cpus = engine.cpus_per_worker
    if engine.workers is not None:
        n_workers = engine.workers
    else:
        n_workers = int(n_gpus // gpus) if gpus > 0 else int(resources.get("CPU", 1.0) // cpus)
        if "memory" in resources:
            n_workers = min(n_workers, int(resources["memory"] // ACTOR_MEMORY_BYTES))
    return max(1, min(n_workers, n_clips)), gpus, cpus


def _ray_outcomes(
    paths: Sequence[Path], factory: WorkerFactory, engine: EngineConfig, ordered: bool
) -> Iterator[tuple[int, Any]]:
    ray = connect_ray(engine.address)
    n_workers, gpus, cpus = _ray_plan(ray.cluster_resources(), engine, len(paths))
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # progress is ours, on stderr
    context.execution_options.preserve_order = ordered
    # absolute paths: the actors' working directory is not ours (on other nodes, the same
    # folder must be mounted at the same place)
    rows = [{"index": i, "path": str(Path(p).absolute())} for i, p in enumerate(paths)]
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows))  # one clip per task
    options: dict[str, Any] = {}
    if engine.address is None and os.environ.get("XDG_CACHE_HOME"):  # this machine: our cache
        options["runtime_env"] = {"env_vars": {"XDG_CACHE_HOME": os.environ["XDG_CACHE_HOME"]}}
    dataset = dataset.map_batches(
        RayClipWorker,
        fn_constructor_args=(factory, max(1, int(cpus))),
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
    "ENGINES",
    "RAY_INSTALL_HINT",
    "EngineConfig",
    "EngineError",
    "RayClipWorker",
    "WorkerFactory",
    "check_engine",
    "connect_ray",
    "import_ray",
    "run_clips",
]
