"""Simulating a data set's chunks as tasks of an existing executor (processes, Dask).

:func:`physode.data.simulate` with ``executor=`` hands each chunk that is not yet on disk to
``executor.submit`` as one task: the task rebuilds the system from its specification text (once
per process, kept for its later tasks, and none in the calling process, whose system is kept
for tasks in its threads; the on-disk cache keeps the generated code), simulates the chunk
with the run's settings and returns the :class:`~physode.data._store.Chunk` with the versions
of the software that computed it, which must be this process's. The main process writes each
chunk file as its result comes back, in whatever order, so a run interrupted anywhere resumes
like a serial one; it keeps a few tasks per worker in flight, never the whole run's results.

The scheduling is the executor's own: a ``concurrent.futures.ProcessPoolExecutor``, a Dask
``distributed.Client`` (or its ``get_executor()``), anything whose ``submit(fn, *args)`` returns a
future with ``result()``, ``cancel()`` and ``add_done_callback()``.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import queue
import signal
import subprocess
import sys
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import BrokenExecutor
from typing import Any

from physode._errors import InvalidArgumentError, PhysodeError, PhysodeWarning, first_line

# Tasks in flight per worker: one running and one waiting, so that a worker never idles while the
# main process writes a result, and memory holds about two chunks per worker.
TASKS_PER_WORKER = 2

DASK_HINT = 'install Dask\'s scheduler with pip install "physode[dask]"'


def executor_problem(executor: Any) -> str | None:
    """What is wrong with the ``executor`` argument of ``simulate``, or ``None``."""
    if executor is None or callable(getattr(executor, "submit", None)):
        return None
    return (
        f"executor={executor!r} has no submit method; give a concurrent.futures executor "
        "(such as ProcessPoolExecutor(4)), a Dask distributed.Client, or None to simulate in "
        "this process"
    )


def stated_workers(executor: Any) -> int | None:
    """How many tasks ``executor`` says it runs at once, or ``None`` where it does not say."""
    count = getattr(executor, "_max_workers", None)  # concurrent.futures executors
    client = getattr(executor, "_client", executor)  # a Dask Client, or its get_executor()
    if count is None and callable(getattr(client, "nthreads", None)):
        try:
            count = sum(client.nthreads().values())
        except Exception:  # a client that cannot say (closed, not connected)
            count = None
    return count if isinstance(count, int) and count >= 1 else None


def workers_on_this_machine(executor: Any) -> int | None:
    """How many chunks ``executor`` simulates at once on this machine, where physode knows it:
    the workers of a ``concurrent.futures`` process or thread pool (``--workers`` makes one);
    ``None`` for a Dask client or any other executor, whose workers may be on other machines."""
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    if not isinstance(executor, ProcessPoolExecutor | ThreadPoolExecutor):
        return None
    return stated_workers(executor)


def worker_count(executor: Any) -> int:
    """How many tasks ``executor`` runs at once, as far as it says (else this machine's CPUs)."""
    return stated_workers(executor) or os.cpu_count() or 1


def warn_of_idle_workers(executor: Any, n: int, chunk_size: int) -> None:
    """Warn where the run has fewer chunks than ``executor`` has workers: the others idle."""
    workers = stated_workers(executor)
    chunks = math.ceil(n / chunk_size)
    if workers is None or chunks >= workers:
        return
    warnings.warn(
        f"trajectories={n} in chunks of chunk_size={chunk_size} make {chunks} "
        f"chunk{'s' if chunks > 1 else ''} for the executor's {workers} workers, so "
        f"{workers - chunks} of them stay idle; chunk_size={math.ceil(n / workers)} "
        "(--chunk-size) gives each one a chunk",
        PhysodeWarning,
        stacklevel=3,
    )


# The systems the tasks of this process simulate, by specification text: the one the main
# process simulates (put here by remember(), so that tasks in its threads build nothing), and
# those a worker built. A lock makes one thread build a system while the others wait for it.
_systems: dict[str, Any] = {}
_systems_lock = threading.Lock()
_SYSTEMS_KEPT = 8


def _keep(spec_text: str, system: Any) -> None:
    """Keep ``system`` for ``spec_text`` (the caller holds ``_systems_lock``)."""
    _systems.pop(spec_text, None)
    _systems[spec_text] = system
    while len(_systems) > _SYSTEMS_KEPT:
        del _systems[next(iter(_systems))]  # the oldest


def remember(system: Any) -> None:
    """Give the tasks that run in this process (threads of a thread pool, or of Dask in this
    process) the system it simulates, built already."""
    with _systems_lock:
        _keep(system.spec_text, system)


def _system_of(spec_text: str, name: str) -> Any:
    """The system of ``spec_text`` for a task: the one kept in this process, else built once.

    The main process built the same system and gave its warnings (an undeclared E) once, so
    a worker builds it with warnings ignored. The warning filters are global to the process
    and ``catch_warnings`` is not thread-safe: two tasks that overlapped inside it, in the
    threads of one process, could leave ``ignore`` in place for good. Here only the first
    task of a process enters it, holding the lock; the others find the system kept.
    """
    import physode.systems

    with _systems_lock:
        system = _systems.get(spec_text)
        if system is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                system = physode.systems._from_text(
                    spec_text, f"the specification of system {name!r}"
                )
            _keep(spec_text, system)
    return system


def chunk_task(spec_text: str, name: str, start: int, stop: int, run: dict, threads) -> Any:
    """One task: trajectories ``start`` to ``stop - 1`` of the run ``run``, simulated in the
    worker with ``threads`` torch threads (``None`` keeps the worker's setting); returns the
    worker's software (``simulation._running_software()``) and the chunk."""
    import torch

    from physode._threads import torch_threads
    from physode.data import simulation

    system = _system_of(spec_text, name)
    with torch_threads(threads):
        t = torch.linspace(0.0, run["t_end"], run["points"], dtype=torch.float64)
        chunk = simulation._simulate_chunk(system, start, stop, t, run, _ignore_rows)
    return simulation._running_software(), chunk


def _other_software(theirs: dict, mine: dict) -> InvalidArgumentError:
    """The error for a worker that runs other software (``theirs``) than this process."""
    names = sorted(name for name in {*theirs, *mine} if theirs.get(name) != mine.get(name))
    found = "; ".join(
        f"{name}: {theirs.get(name)!r} in the worker, {mine.get(name)!r} here" for name in names
    )
    return InvalidArgumentError(
        f"a worker of the executor runs other software than this process ({found}), which may "
        "change the last bits of its chunks: the data set would not be what one run gives, and "
        "its software attribute names this process's versions; install the same versions on "
        "the workers, or simulate without an executor (the chunks finished so far are kept for "
        "resume=True, --resume)"
    )


def _ignore_rows(rows: int) -> None:
    """A worker's progress: the main process counts finished chunks instead."""


def run_tasks(
    executor: Any,
    tasks: list[tuple[int, tuple]],
    on_result: Callable[[int, Any], None],
) -> None:
    """Submit ``chunk_task(*args)`` for each ``(key, args)`` of ``tasks``, at most
    ``TASKS_PER_WORKER`` per worker at a time, and call ``on_result(key, chunk)`` in the
    calling thread as each finishes, in the order they finish.

    The first task that raises (or a ``KeyboardInterrupt`` while waiting) cancels every task
    not yet finished and re-raises that error here, as the worker raised it. So does a task
    computed under other software than this process's, with an
    ``InvalidArgumentError`` naming the versions, before its chunk is stored.
    """
    if not tasks:
        return
    from physode.data import simulation

    mine = simulation._running_software()
    limit = TASKS_PER_WORKER * worker_count(executor)
    waiting = deque(tasks)
    running: dict[Any, int] = {}
    finished: queue.SimpleQueue = queue.SimpleQueue()
    try:
        while waiting or running:
            while waiting and len(running) < limit:
                key, args = waiting.popleft()
                future = executor.submit(chunk_task, *args)
                running[future] = key
                future.add_done_callback(finished.put)
            future = finished.get()
            key = running.pop(future)
            software, result = future.result()  # the worker's exception, raised here
            del future
            if software != mine:
                raise _other_software(software, mine)
            on_result(key, result)
            del result
    except BaseException as exc:
        for future in running:
            future.cancel()
        if _worker_lost(exc):
            raise PhysodeError(
                f"a worker of the executor stopped while simulating ({first_line(exc)}): killed, "
                "out of memory, or its process crashed; the chunks finished so far are kept, "
                "and resume=True (--resume) continues from them, with or without an executor "
                "(a smaller chunk_size, --chunk-size, needs less memory per worker)"
            ) from exc
        raise


def _worker_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says that the executor lost a worker process, rather than that a task
    raised: a broken process pool, or Dask's ``KilledWorker`` (a task whose workers died)."""
    return isinstance(exc, BrokenExecutor) or type(exc).__name__ == "KilledWorker"


def _ignore_interrupts() -> None:
    """A pool worker's start: Ctrl-C goes to the main process, which cancels the work."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def local_pool(workers: int) -> Iterator[Any]:
    """A ``ProcessPoolExecutor`` of ``workers`` processes for ``physode simulate --workers``.

    The workers start from a fresh interpreter (``forkserver`` where there is one, its server
    importing torch and physode once for all of them where it finds the same physode as this
    process; else ``spawn``), not as forks of a process that already runs threads, and ignore
    Ctrl-C: the main
    process cancels what is pending and stops the workers, keeping the chunks written so far.
    """
    from concurrent.futures import ProcessPoolExecutor

    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        if _fresh_interpreter_imports_this_physode():
            # Imported once in the server the workers fork from, not once per worker.
            context.set_forkserver_preload(["physode.data.simulation", "physode.systems"])
    else:
        context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_ignore_interrupts)
    finished = False
    try:
        yield pool
        finished = True
    finally:
        if not finished:
            # Stop the chunks still running: their results would be thrown away anyway.
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                with contextlib.suppress(Exception):
                    process.terminate()
        pool.shutdown(wait=finished, cancel_futures=True)


def _fresh_interpreter_imports_this_physode() -> bool:
    """Whether a fresh interpreter, started as the forkserver is, finds the physode running here.

    The forkserver starts from the default ``sys.path`` (Python 3.11's ignores the one it is
    handed), so where this process found physode elsewhere (a source tree put on ``sys.path`` by
    a script, another copy installed), a preloaded physode would be that other copy in every
    worker. Without the preload, each worker imports physode itself from this process's path.
    """
    import physode

    code = "import importlib.util as u; s = u.find_spec('physode'); print(s and s.origin or '')"
    flags = getattr(subprocess, "_args_from_interpreter_flags", list)()  # -I, -E, -s as here
    try:
        found = subprocess.run(
            [sys.executable, *flags, "-c", code],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout.strip()  # fmt: skip
        return bool(found) and os.path.samefile(found, physode.__file__)
    except (OSError, subprocess.SubprocessError):
        return False


@contextlib.contextmanager
def scheduler_client(address: str) -> Iterator[Any]:
    """A Dask ``distributed.Client`` connected to the scheduler at ``address``, closed after."""
    try:
        from distributed import Client
    except ImportError:
        raise InvalidArgumentError(
            f"scheduler={address!r} needs Dask's distributed package, which is not installed; "
            f"{DASK_HINT}, or use workers=N for processes on this machine"
        ) from None
    try:
        client = Client(address, timeout="10s")
    except (ValueError, TypeError) as exc:  # not an address: no port, an unknown scheme
        raise InvalidArgumentError(
            f"scheduler={address!r} is not the address of a Dask scheduler ({first_line(exc)}); "
            "give its address as `dask scheduler` prints it, e.g. tcp://192.168.1.10:8786"
        ) from None
    except OSError as exc:
        raise InvalidArgumentError(
            f"scheduler={address!r}: cannot connect to a Dask scheduler there ({exc}); start one "
            "with `dask scheduler` and workers with `dask worker ADDRESS`"
        ) from None
    try:
        yield client
    finally:
        client.close()
