"""Tests of physode.data.simulate with an executor: a process pool, a Dask cluster, the CLI's
--workers and --scheduler. The data must be those of a serial run, to the bit."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
import warnings
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from unittest import mock

import h5py
import numpy as np
import pytest

import physode
import physode.data._parallel as parallel
import physode.data.simulation as simulation
import physode.systems
from physode import System
from physode.cli import main
from physode.data import load, simulate

SMALL = {"t_end": 3.0, "points": 7, "rtol": 1e-8, "atol": 1e-8, "quiet": True}
# 40 trajectories in 5 chunks: more chunks than the 2 workers hold in flight (2 each).
SAMPLED = {"trajectories": 40, "chunk_size": 8, "seed": 2, "params": "sample", "noise": 0.1}
# An initial state drawn from N(0, 1e308) overflows to inf in about 7 % of the rows: a solve
# refuses such a start, in a worker as in this process.
OVERFLOWING = """name = "overflowing"
form = "equations"
[equations]
x = "-x"
[initial_state_distribution]
kind = "normal"
x = [0.0, 1e308]
"""


def _contents(path) -> tuple[dict[str, np.ndarray], dict]:
    """Every dataset of a file by name, and its root attributes but the command line."""
    found = {}
    with h5py.File(path) as f:
        f.visititems(
            lambda name, obj: (
                found.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
            )
        )
        attrs = {k: v for k, v in f.attrs.items() if k != "command_line"}
    return found, attrs


def _assert_same_data(a, b, attrs: bool = True) -> None:
    """The same datasets in files ``a`` and ``b``, and with ``attrs`` the same root attributes
    (all but the command line)."""
    (first, first_attrs), (second, second_attrs) = _contents(a), _contents(b)
    assert sorted(first) == sorted(second)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    if not attrs:
        return
    assert first_attrs.keys() == second_attrs.keys()
    for name, value in first_attrs.items():
        np.testing.assert_array_equal(value, second_attrs[name], err_msg=name)


@pytest.fixture(scope="module")
def pool():
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(2, mp_context=context) as executor:
        yield executor


@pytest.fixture(scope="module")
def cluster():
    import distributed  # the test extra installs Dask: these tests always run
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as local:
        with distributed.Client(local) as client:
            yield local, client


@pytest.fixture(scope="module")
def serial_pendulum(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "pendulum.h5"
    simulate("pendulum", out=out, **SAMPLED, **SMALL)
    return out


class _Watched:
    """A future of :class:`_Counting`: records ``cancel()``, and hands itself to callbacks."""

    def __init__(self, inner):
        self.inner = inner
        self.cancel_called = False

    def result(self):
        return self.inner.result()

    def done(self):
        return self.inner.done()

    def cancel(self):
        self.cancel_called = True
        return self.inner.cancel()

    def add_done_callback(self, fn):
        self.inner.add_done_callback(lambda _: fn(self))


class _Counting:
    """An executor that is no concurrent.futures one: it passes tasks to ``inner`` and records
    every future and, at each submit, how many of those before it were not yet done."""

    def __init__(self, inner, workers=2):
        self.inner = inner
        self._max_workers = workers
        self.futures: list[_Watched] = []
        self.outstanding: list[int] = []

    def submit(self, fn, *args):
        self.outstanding.append(sum(not f.done() for f in self.futures))
        self.futures.append(_Watched(self.inner.submit(fn, *args)))
        return self.futures[-1]


def test_a_process_pool_gives_the_serial_run_s_data_to_the_bit(pool, serial_pendulum, tmp_path):
    out = tmp_path / "pendulum.h5"
    result = simulate("pendulum", out=out, executor=pool, **SAMPLED, **SMALL)
    assert result.n_trajectories == 40 and result.n_resumed_chunks == 0
    assert not (tmp_path / "pendulum.h5.parts").exists()
    _assert_same_data(serial_pendulum, out)


def test_a_thread_pool_leaves_the_warning_filters_as_they_were_and_gives_the_serial_data(
    serial_pendulum, tmp_path, monkeypatch
):
    # catch_warnings is not thread-safe: tasks overlapping inside it in threads of one process
    # could leave "ignore" in the filters for good. Tasks in this process's threads now use the
    # system simulate built, so they neither rebuild it nor touch the filters.
    build, sources = physode.systems._from_text, []

    def building(text, source):
        sources.append(source)
        return build(text, source)

    monkeypatch.setattr(physode.systems, "_from_text", building)
    before = list(warnings.filters)
    out = tmp_path / "threads.h5"
    with ThreadPoolExecutor(2) as threads:
        simulate("pendulum", out=out, executor=threads, **SAMPLED, **SMALL)
    assert warnings.filters == before
    assert "the specification of system 'pendulum'" not in sources  # what a task builds
    _assert_same_data(serial_pendulum, out)


def test_tasks_in_threads_of_another_process_build_its_system_one_at_a_time(monkeypatch):
    # A Dask worker's threads: nothing kept yet, so the first task builds the system (warnings
    # ignored) while the others wait for it, never two inside catch_warnings at once.
    spec = physode.systems.load("pendulum").spec_text
    monkeypatch.setattr(parallel, "_systems", {})
    build = physode.systems._from_text
    both_inside = threading.Barrier(2, timeout=0.3)
    calls = []

    def building(*args):
        calls.append(args)
        try:
            both_inside.wait()  # passes only where two tasks build at once
        except threading.BrokenBarrierError:
            pass
        return build(*args)

    monkeypatch.setattr(physode.systems, "_from_text", building)
    before = list(warnings.filters)
    with ThreadPoolExecutor(2) as threads:
        systems = list(threads.map(lambda _: parallel._system_of(spec, "pendulum"), range(2)))
    assert len(calls) == 1 and systems[0] is systems[1]
    assert warnings.filters == before


def test_a_system_built_in_python_simulated_in_a_pool_is_the_serial_one(pool, tmp_path):
    system = System.from_equations(
        {"x": "v", "v": "-k*x - c*v"},
        parameters={"k": 2.0, "c": 0.1},
        name="damped",
        parameter_ranges={"k": (1.0, 3.0), "c": (0.0, 0.2)},
        initial_state_distribution={"kind": "uniform", "x": [-1, 1], "v": [-1, 1]},
    )
    assert system.spec_text is None  # the workers rebuild it from its to_spec() text
    settings = {"trajectories": 21, "chunk_size": 4, "params": ["k"], **SMALL}
    simulate(system, out=tmp_path / "serial.h5", **settings)
    simulate(system, out=tmp_path / "pool.h5", executor=pool, **settings)
    _assert_same_data(tmp_path / "serial.h5", tmp_path / "pool.h5")


def test_a_dask_cluster_gives_the_serial_run_s_data_to_the_bit(
    cluster, serial_pendulum, tmp_path
):
    _, client = cluster
    simulate("pendulum", out=tmp_path / "client.h5", executor=client, **SAMPLED, **SMALL)
    _assert_same_data(serial_pendulum, tmp_path / "client.h5")
    executor = client.get_executor()  # concurrent.futures' interface over the same workers
    simulate("pendulum", out=tmp_path / "executor.h5", executor=executor, **SAMPLED, **SMALL)
    _assert_same_data(serial_pendulum, tmp_path / "executor.h5")


def test_tasks_in_flight_stay_within_two_per_worker(pool, serial_pendulum, tmp_path):
    counting = _Counting(pool, workers=1)
    simulate("pendulum", out=tmp_path / "few.h5", executor=counting, **SAMPLED, **SMALL)
    assert len(counting.futures) == 5  # each chunk once
    assert max(counting.outstanding) <= 2 and counting.outstanding[:2] == [0, 1]
    _assert_same_data(serial_pendulum, tmp_path / "few.h5")


@pytest.mark.parametrize("resume_with", ["pool", "serial"])
def test_an_interrupted_executor_run_resumes_to_the_same_data(
    pool, serial_pendulum, tmp_path, monkeypatch, resume_with
):
    out = tmp_path / "pendulum.h5"
    settings = {**SAMPLED, "chunk_size": 4, **SMALL}  # 10 chunks
    written = []
    write_chunk = simulation.write_chunk

    def interrupted(path, chunk, run_id):
        if len(written) == 3:
            raise KeyboardInterrupt  # Ctrl-C while the main process writes the 4th result
        written.append(path.name)
        write_chunk(path, chunk, run_id)

    counting = _Counting(pool)
    with monkeypatch.context() as patch:
        patch.setattr(simulation, "write_chunk", interrupted)
        with pytest.raises(KeyboardInterrupt):
            simulate("pendulum", out=out, executor=counting, **settings)
    assert not out.exists()
    kept = sorted(p.name for p in (tmp_path / "pendulum.h5.parts").glob("chunk-*.h5"))
    assert kept == sorted(written) and len(kept) == 3  # in the order the tasks finished
    assert len(counting.futures) < 10  # nothing submitted after the interrupt
    unconsumed = counting.futures[3:]  # submitted, their results never written
    assert unconsumed and all(f.cancel_called for f in unconsumed if not f.done())

    executor = pool if resume_with == "pool" else None
    result = simulate("pendulum", out=out, executor=executor, resume=True, **settings)
    assert result.n_resumed_chunks == 3
    _assert_same_data(serial_pendulum, out, attrs=False)  # another chunk size, the same data


def test_a_serial_run_interrupted_resumes_in_a_pool(pool, serial_pendulum, tmp_path, monkeypatch):
    out = tmp_path / "pendulum.h5"
    original, calls = simulation._simulate_chunk, []

    def interrupted(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return original(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(simulation, "_simulate_chunk", interrupted)
        with pytest.raises(KeyboardInterrupt):
            simulate("pendulum", out=out, **SAMPLED, **SMALL)
    result = simulate("pendulum", out=out, executor=pool, resume=True, **SAMPLED, **SMALL)
    assert result.n_resumed_chunks == 2
    _assert_same_data(serial_pendulum, out)


def _killed(*args):
    os.kill(os.getpid(), signal.SIGKILL)


class _KillingThird(_Counting):
    """Hands its third task to a function that kills the worker running it."""

    def submit(self, fn, *args):
        return super().submit(_killed if len(self.futures) == 2 else fn, *args)


def test_a_killed_worker_stops_the_run_with_the_way_to_resume_it(serial_pendulum, tmp_path):
    out = tmp_path / "pendulum.h5"
    settings = {**SAMPLED, "chunk_size": 4, **SMALL}  # 10 chunks
    # A pool of its own: a killed worker breaks the pool for good.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("forkserver")) as pool:
        killing = _KillingThird(pool, workers=1)
        with pytest.raises(physode.PhysodeError, match=r"a worker of the executor stopped") as e:
            simulate("pendulum", out=out, executor=killing, **settings)
    assert "resume=True (--resume)" in str(e.value) and not out.exists()
    kept = list((tmp_path / "pendulum.h5.parts").glob("chunk-*.h5"))
    assert 1 <= len(kept) <= 2  # the first result was written before the third task went out
    result = simulate("pendulum", out=out, resume=True, **settings)  # in this process
    assert result.n_resumed_chunks == len(kept)
    _assert_same_data(serial_pendulum, out, attrs=False)


@pytest.mark.parametrize("where", ["pool", "dask"])
def test_a_worker_s_error_reaches_the_caller_as_the_serial_run_raises_it(
    where, pool, cluster, tmp_path
):
    spec = tmp_path / "overflowing.toml"
    spec.write_text(OVERFLOWING)
    settings = {"trajectories": 64, "chunk_size": 8, **SMALL}
    with pytest.raises(physode.PhysodeError) as serial:
        simulate(spec, out=tmp_path / "serial.h5", **settings)
    executor = pool if where == "pool" else cluster[1]
    counting = _Counting(executor)
    with pytest.raises(physode.PhysodeError) as parallel:
        simulate(spec, out=tmp_path / "parallel.h5", executor=counting, **settings)
    assert type(parallel.value) is type(serial.value) is physode.InvalidArgumentError
    assert str(parallel.value) == str(serial.value)
    assert "y0 contains NaN or inf" in str(serial.value)
    assert not (tmp_path / "parallel.h5").exists()
    assert all(f.cancel_called for f in counting.futures if not f.done())
    # The pool still works after a task failed.
    simulate("harmonic_oscillator", out=tmp_path / "after.h5", executor=executor, **settings)


def _raise(error: BaseException):
    raise error


def test_solver_and_training_errors_cross_processes_with_their_attributes(pool):
    # Pickled in a worker that has not imported Dask (whose tblib pickles every exception).
    error = physode.SolverError(
        "stopped", status=physode.Status(2), t=0.5, step_size=1e-12, solution=None
    )
    with pytest.raises(physode.SolverError) as copy:
        pool.submit(_raise, error).result()
    assert (str(copy.value), copy.value.status, copy.value.t, copy.value.step_size) == (
        "stopped", physode.Status(2), 0.5, 1e-12
    )
    error = physode.TrainingError("diverged", epoch=3, batch=7, checkpoint=None)
    with pytest.raises(physode.TrainingError) as copy:
        pool.submit(_raise, error).result()
    assert (str(copy.value), copy.value.epoch, copy.value.batch) == ("diverged", 3, 7)


def test_fewer_chunks_than_workers_are_warned_of_naming_a_chunk_size_that_uses_them(
    pool, tmp_path
):
    # 12 trajectories in one chunk of the default size: one of the pool's 2 workers would idle.
    with pytest.warns(physode.PhysodeWarning, match=r"make 1 chunk for the executor's 2 "
                      r"workers, so 1 of them stay idle; chunk_size=6 \(--chunk-size\)") as seen:
        simulate("pendulum", out=tmp_path / "a.h5", trajectories=12, executor=pool, **SMALL)
    assert seen[0].filename == __file__  # points at the call of simulate
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as many chunks as workers: no warning
        simulate("pendulum", out=tmp_path / "b.h5", trajectories=12, chunk_size=6,
                 executor=pool, **SMALL)  # fmt: skip


def test_a_pool_s_chunks_in_memory_at_once_count_together_against_the_memory_share(
    tmp_path, monkeypatch
):
    # 4 threads simulate 4 chunks of 16 trajectories at once: 64 trajectories' arrays, where
    # the memory share holds 40. One chunk of 16 fits, and was all the check counted.
    system = physode.systems.load("pendulum")
    run = {"params": "default", "noise": 0.0, "points": SMALL["points"]}
    per_trajectory = simulation._chunk_bytes(system, run, 1)
    memory = 40 * per_trajectory / simulation._MEMORY_SHARE
    monkeypatch.setattr(simulation, "_physical_memory", lambda: int(memory))
    settings = {"trajectories": 64, "chunk_size": 16, **SMALL}
    out = tmp_path / "big.h5"
    with ThreadPoolExecutor(4) as threads:
        found = (r"the executor's 4 workers on this machine simulate 4 chunks at once, each of "
                 r"16 trajectories.*chunk_size=10 \(--chunk-size 10\) fits")  # fmt: skip
        with pytest.raises(physode.InvalidArgumentError, match=found):
            simulate("pendulum", out=out, executor=threads, **settings)
        assert list(tmp_path.iterdir()) == []
        # An executor whose workers may be on other machines (a Dask cluster) is not counted.
        elsewhere = _Counting(threads, workers=4)
        assert simulate("pendulum", out=out, executor=elsewhere, **settings).written
    assert simulation._too_much_memory(system, {**run, **settings}) is None  # in this process


class _OtherTorch:
    """An executor whose worker runs another torch than this process: it runs each task here,
    with the versions a worker would give."""

    _max_workers = 1

    def submit(self, fn, *args):
        from concurrent.futures import Future

        future: Future = Future()
        versions = {**simulation._software_versions(), "torch": "1.0.0"}
        with mock.patch.object(simulation, "_software_versions", lambda: versions):
            future.set_result(fn(*args))
        return future


def test_a_worker_with_other_software_is_refused_naming_the_versions(
    serial_pendulum, tmp_path
):
    # Its chunks may differ in the last bits, and the file's software attribute would name
    # only this process's versions.
    out = tmp_path / "pendulum.h5"
    settings = {**SAMPLED, **SMALL}
    here = re.escape(simulation._software_versions()["torch"])
    found = rf"other software than this process \(torch: '1.0.0' in the worker, '{here}' here\)"
    with pytest.raises(physode.InvalidArgumentError, match=found):
        simulate("pendulum", out=out, executor=_OtherTorch(), **settings)
    assert not out.exists()
    assert not list((tmp_path / "pendulum.h5.parts").glob("chunk-*.h5"))
    simulate("pendulum", out=out, resume=True, **settings)  # in this process
    _assert_same_data(serial_pendulum, out, attrs=False)


def test_a_bad_executor_is_named_with_the_choices(tmp_path):
    with pytest.raises(physode.InvalidArgumentError, match=r"executor=4 has no submit method"):
        simulate("pendulum", out=tmp_path / "a.h5", trajectories=2, executor=4, **SMALL)


def test_cli_workers_and_scheduler_write_the_serial_data(cluster, tmp_path, capsys):
    local, _ = cluster
    base = ["simulate", "pendulum", "-n", "24", "--t-end", "3", "--points", "7", "--rtol", "1e-8",
            "--atol", "1e-8", "--params", "sample", "--chunk-size", "8", "--quiet"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "serial.h5")]) == 0
    assert main([*base, "--out", str(tmp_path / "workers.h5"), "--workers", "2"]) == 0
    dask = ["--out", str(tmp_path / "dask.h5"), "--scheduler", local.scheduler_address]
    assert main([*base, *dask]) == 0
    _assert_same_data(tmp_path / "serial.h5", tmp_path / "workers.h5")
    _assert_same_data(tmp_path / "serial.h5", tmp_path / "dask.h5")
    with load(tmp_path / "workers.h5") as data:
        assert "--workers 2" in data.attrs["command_line"]
    assert capsys.readouterr().err == ""


def test_cli_refuses_bad_parallel_options(tmp_path, capsys):
    argv = ["simulate", "pendulum", "-n", "4", "--t-end", "1", "--points", "3",
            "--out", str(tmp_path / "a.h5")]  # fmt: skip
    assert main([*argv, "--workers", "0"]) == 2
    assert "error: --workers 0 must be an integer >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:  # argparse's usage error
        main([*argv, "--workers", "2", "--scheduler", "tcp://h:8786"])
    assert usage.value.code == 2
    assert "--scheduler: not allowed with argument --workers" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_scheduler_without_dask_names_the_extra_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed fails
    argv = ["simulate", "pendulum", "-n", "4", "--t-end", "1", "--points", "3",
            "--out", str(tmp_path / "a.h5"), "--scheduler", "tcp://h:8786"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("physode simulate: error: --scheduler tcp://h:8786 needs Dask")
    assert 'pip install "physode[dask]"' in err and not (tmp_path / "a.h5").exists()


def test_cli_scheduler_address_that_is_none_is_refused_naming_it(tmp_path, capsys):
    argv = ["simulate", "pendulum", "-n", "4", "--t-end", "1", "--points", "3",
            "--out", str(tmp_path / "a.h5")]  # fmt: skip
    for address, reason in [("foo", "missing port number"), ("http://h:8786", "unknown address")]:
        assert main([*argv, "--scheduler", address]) == 2  # not 3, an internal error
        err = capsys.readouterr().err
        assert err.startswith(f"physode simulate: error: --scheduler {address} is not the address")
        assert reason in err and "e.g. tcp://" in err
    assert list(tmp_path.iterdir()) == []


_WORKERS_PHYSODE = """
import sys
sys.path.insert(0, {root!r})  # physode from this source tree, not from the default path
import physode
from physode.data._parallel import local_pool
if __name__ == "__main__":
    with local_pool(1) as pool:
        print(physode.__file__)
        print(pool.submit(eval, "__import__('physode').__file__").result())
"""


def test_local_pool_workers_run_the_physode_of_the_calling_process(tmp_path):
    # Another physode first on the default path: the forkserver, which starts from that path,
    # must not preload it for the workers of a process that imported this one.
    shadow = tmp_path / "shadow" / "physode"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("__version__ = 'shadow'\n")
    script = tmp_path / "script.py"
    root = str(Path(physode.__file__).resolve().parents[1])
    script.write_text(_WORKERS_PHYSODE.format(root=root))
    env = {**os.environ, "PYTHONPATH": str(shadow.parent)}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    main_file, worker_file = (Path(name).resolve() for name in done.stdout.split())
    assert worker_file == main_file == Path(physode.__file__).resolve()


def test_local_pool_without_forkserver_spawns_workers_that_write_the_serial_data(
    serial_pendulum, tmp_path, monkeypatch
):
    from physode.data._parallel import local_pool

    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["fork", "spawn"])
    with local_pool(2) as pool:
        assert pool._mp_context.get_start_method() == "spawn"
        simulate("pendulum", out=tmp_path / "spawned.h5", executor=pool, **SAMPLED, **SMALL)
    _assert_same_data(serial_pendulum, tmp_path / "spawned.h5")
