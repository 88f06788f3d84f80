"""Executors: one interface that trains a list of jobs serially, in local processes or on Ray.

Every executor trains each job with :func:`~conceptalpha.experiments.runner.train_job`
into its job directory (a finished job is skipped) and returns the jobs that
failed. ``keep_going=False`` (a run) raises the first failure; ``True`` (a grid)
records it and trains the rest. Predictions do not depend on the executor: each
job seeds itself before building its model.

Stopping: SIGINT and SIGTERM raise :class:`KeyboardInterrupt` in the parent
(:func:`signals_interrupt`); the process executor then terminates its workers
(SIGTERM, SIGKILL after a grace period). Workers ignore SIGINT (the parent decides)
and exit on their own within a second of their parent's death.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import signal
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from conceptalpha.errors import UserError
from conceptalpha.experiments.config import ExperimentConfig
from conceptalpha.experiments.jobs import Job
from conceptalpha.experiments.layout import RunFiles

log = logging.getLogger("conceptalpha")

EXECUTORS = ("serial", "local", "ray")
WORKER_GRACE_SECONDS = 5.0
PARENT_POLL_SECONDS = 0.5
FINALISER_RETRY_SECONDS = 0.05  # a stop signal that landed in a finaliser is sent again after this


@dataclass(frozen=True)
class Failure:
    job: Job
    message: str
    traceback: str
    user_error: bool = False

    def raise_(self) -> None:
        if self.user_error:
            raise UserError(self.message)
        raise RuntimeError(f"job {self.job.id} failed: {self.message}\n{self.traceback}")


class Executor(Protocol):
    def run(self, config: ExperimentConfig, run_dir: Path, jobs: Sequence[Job], keep_going: bool) -> list[Failure]: ...


def make_executor(name: str, workers: int = 1, progress: bool = True, context=None, ray_address: str | None = None) -> Executor:
    """``serial`` (in this process), ``local`` (``workers`` spawned processes) or ``ray``.

    ``context``: the parent's :class:`~conceptalpha.experiments.runner.JobContext`, whose
    loaded data the serial executor trains with and the process executor fills the cache from.
    """
    if name == "serial" or (name == "local" and workers < 2):
        return SerialExecutor(progress, context)
    if name == "local":
        return ProcessExecutor(workers, context)
    if name == "ray":
        return RayExecutor(ray_address, workers)
    raise UserError(f"executor {name!r}: expected one of {', '.join(EXECUTORS)}")


def unfinished(run_dir: Path, jobs: Sequence[Job]) -> list[Job]:
    files = RunFiles(run_dir)
    return [job for job in jobs if not files.job(job.dir_parts).finished()]


def _failure(job: Job, err: BaseException) -> Failure:
    return Failure(job, str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}",
                   "".join(traceback.format_exception(err)), isinstance(err, UserError))


# ---------------------------------------------------------------- serial


class SerialExecutor:
    """Jobs one after another in this process, sharing its loaded data; tqdm bars when ``progress``."""

    def __init__(self, progress: bool = True, context=None):
        self.progress, self.context = progress, context

    def run(self, config: ExperimentConfig, run_dir: Path, jobs: Sequence[Job], keep_going: bool) -> list[Failure]:
        from conceptalpha.experiments.runner import JobContext, train_job

        context, files, failures = self.context or JobContext(config), RunFiles(run_dir), []
        for job in jobs:
            try:
                train_job(context, job, files.job(job.dir_parts), self.progress)
            except Exception as err:
                if not keep_going:
                    raise
                failures.append(_failure(job, err))
        return failures


# ---------------------------------------------------------------- local processes


class ProcessExecutor:
    """Up to ``workers`` spawned processes, one per job; their log records (one per epoch) come back here.

    Spawn, not fork: fork would copy torch's thread pools. Each process rebuilds
    the inputs; the parent first builds each window's dataset once, so the
    workers read it from the run's cache instead of building it side by side.
    """

    def __init__(self, workers: int, context=None):
        self.workers, self.context = workers, context

    def run(self, config: ExperimentConfig, run_dir: Path, jobs: Sequence[Job], keep_going: bool) -> list[Failure]:
        import multiprocessing

        from conceptalpha.experiments.runner import JobContext, is_neural

        pending = unfinished(run_dir, jobs)
        if not pending:
            return []
        context = self.context or JobContext(config)
        for job in {(j.universe, j.segments): j for j in pending}.values():
            context.dataset(job)  # fills the cache the workers read
        log.info("training %d jobs in %d worker processes (one line per epoch below and in run.log)", len(pending), self.workers)
        spawn = multiprocessing.get_context("spawn")
        payload = config.model_dump_json()
        running: dict[object, tuple[Job, object]] = {}  # the parent's end of each worker's pipe → (job, process)
        failures: list[Failure] = []
        todo, done = sorted(pending, key=lambda job: not is_neural(job.model)), 0  # longest first
        try:
            while todo or running:
                while todo and len(running) < self.workers:
                    job = todo.pop(0)
                    reader, writer = spawn.Pipe(duplex=False)
                    process = spawn.Process(target=_worker, args=(payload, str(run_dir), job, writer, os.getpid()), daemon=True)
                    process.start()
                    writer.close()  # the worker holds the only writer: its death ends the pipe
                    running[reader] = (job, process)
                for reader, failure in _ended_jobs(running):
                    job, process = running.pop(reader)
                    process.join()
                    reader.close()
                    done += 1
                    if failure is not None:
                        if not keep_going:
                            failure.raise_()
                        failures.append(failure)
                    log.info("%s %s (%d/%d)", "FAILED" if failure else "finished", job.describe(), done, len(pending))
        finally:
            _stop([process for _, process in running.values()])
        return failures


def _ended_jobs(running: dict) -> Iterator[tuple[object, Failure | None]]:
    """Handle the workers' messages of the next half second; yield (pipe, failure or None) of the jobs that ended.

    Pipes, not a multiprocessing queue: a worker terminated mid-write cannot leave a
    shared lock held, and no semaphore outlives the run.
    """
    from multiprocessing.connection import wait

    for reader in wait(list(running), timeout=PARENT_POLL_SECONDS):
        job, process = running[reader]
        try:
            message = reader.recv()
        except EOFError:  # died without reporting (OOM killer, kill -9)
            process.join()
            yield reader, Failure(job, f"worker process died (exit code {process.exitcode})", "")
            continue
        if isinstance(message, logging.LogRecord):
            logging.getLogger(message.name).handle(message)
        else:
            yield reader, message


class _PipeHandler(logging.handlers.QueueHandler):
    """Sends each (prepared, picklable) log record through a pipe to the parent."""

    def enqueue(self, record: logging.LogRecord) -> None:
        self.queue.send(record)


def _stop(processes: list) -> None:
    """Terminate workers (SIGTERM); kill those still alive after the grace period."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + WORKER_GRACE_SECONDS
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()


def _worker(config_json: str, run_dir: str, job: Job, pipe, parent_pid: int) -> None:
    """Worker process: train one job; log records and then the outcome (a Failure or None) go to the parent.

    SIGTERM exits through Python (SystemExit), so half-written temporary files are
    removed and multiprocessing's semaphores (tqdm's lock) are released.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    exit_with_parent(parent_pid)
    root = logging.getLogger("conceptalpha")
    root.handlers[:] = [_PipeHandler(pipe)]
    root.setLevel(logging.INFO)
    try:
        from conceptalpha.experiments.runner import JobContext, train_job

        config = ExperimentConfig.model_validate_json(config_json)
        set_threads(config.threads)
        train_job(JobContext(config), job, RunFiles(Path(run_dir)).job(job.dir_parts), progress=False)
        pipe.send(None)
    except Exception as err:  # reported to the parent, which decides
        pipe.send(_failure(job, err))


def _exit_on_signal(signum: int, frame) -> None:
    if not resend_if_in_finaliser(signum, frame):
        sys.exit(128 + signum)


def resend_if_in_finaliser(signum: int, frame) -> bool:
    """True when the main thread was inside a weakref finaliser (the GRU's buffer pool runs them
    after every training step) as signal ``signum`` arrived: an exception raised there would only
    be printed and the work would go on, so the signal is sent again a moment later instead."""
    finaliser = weakref.finalize.__call__.__code__
    while frame is not None:
        if frame.f_code is finaliser:
            threading.Timer(FINALISER_RETRY_SECONDS, os.kill, (os.getpid(), signum)).start()
            return True
        frame = frame.f_back
    return False


def exit_with_parent(parent_pid: int) -> None:
    """Exit this process within ``PARENT_POLL_SECONDS`` once its parent is gone (even after ``kill -9``)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def set_threads(threads: int) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


# ---------------------------------------------------------------- ray


class RayExecutor:
    """Jobs as Ray tasks (one CPU each) on a local Ray (``max_parallel`` CPUs) or the cluster at ``address``.

    Each task logs to the run's ``run.log`` itself (the run directory must be on a
    shared filesystem for a remote cluster).
    """

    def __init__(self, address: str | None, max_parallel: int):
        self.address, self.max_parallel = address, max_parallel

    def run(self, config: ExperimentConfig, run_dir: Path, jobs: Sequence[Job], keep_going: bool) -> list[Failure]:
        pending = unfinished(run_dir, jobs)
        if not pending:
            return []
        try:
            import ray
        except ImportError:
            raise UserError("the ray executor needs Ray: pip install 'conceptalpha[ray]' (or use --executor local)") from None
        started_here = not ray.is_initialized()
        if started_here:
            kwargs = {"address": self.address} if self.address else {"num_cpus": self.max_parallel, "include_dashboard": False}
            ray.init(log_to_driver=False, **kwargs)
        waiting = {}
        try:
            remote = ray.remote(num_cpus=1, max_retries=0)(_ray_task)
            payload = config.model_dump_json()
            waiting = {remote.remote(payload, str(run_dir), job): job for job in pending}
            failures = []
            for ref, job in list(waiting.items()):
                try:
                    failure = ray.get(ref)
                except Exception as err:  # the worker itself crashed
                    failure = _failure(job, err)
                del waiting[ref]
                if failure is not None:
                    if not keep_going:
                        failure.raise_()
                    failures.append(failure)
                log.info("%s %s", "FAILED" if failure else "finished", job.describe())
            return failures
        finally:
            # only the tasks still running (after a failure or an interrupt) are cancelled
            for ref in waiting:
                ray.cancel(ref, force=True)
            if started_here:
                ray.shutdown()


def _ray_task(config_json: str, run_dir: str, job: Job) -> Failure | None:
    from conceptalpha.experiments.runner import JobContext, setup_run_log, train_job

    config = ExperimentConfig.model_validate_json(config_json)
    setup_run_log(RunFiles(Path(run_dir)).log, console=False)
    set_threads(config.threads)
    try:
        train_job(JobContext(config), job, RunFiles(Path(run_dir)).job(job.dir_parts), progress=False)
    except Exception as err:
        return _failure(job, err)
    return None


# ---------------------------------------------------------------- signals


@contextlib.contextmanager
def signals_interrupt() -> Iterator[list[int]]:
    """Within the block SIGTERM, like SIGINT, raises KeyboardInterrupt; yields the signals received.

    Outside the main thread (where Python cannot set handlers) it changes nothing.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def interrupt(signum, frame):
        if resend_if_in_finaliser(signum, frame):
            return
        received.append(signum)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
