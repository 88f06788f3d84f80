"""A run stops cleanly: real signals to a real `conceptalpha run` with worker processes, resume, parent death, locks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conceptalpha.errors import UserError
from conceptalpha.experiments.config import validate_config
from conceptalpha.experiments.layout import RunFiles
from conceptalpha.experiments.orchestrate import hold_run_dir, run_experiment
from test_experiments import TINY

EPOCHS = 8
CONFIG = {
    **TINY,
    "name": "stops",
    "trainer": {"max_epochs": EPOCHS, "patience": EPOCHS, "lr": 0.001, "show_progress": False},
    "seeds": [0, 1],
    "workers": 2,
}


def start_run(tmp_path: Path, out: Path, workers: int = 2) -> subprocess.Popen:
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({**CONFIG, "workers": workers}))  # JSON is YAML
    return subprocess.Popen(
        [sys.executable, "-m", "conceptalpha.experiments.cli", "run", str(config), "--out", str(out), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for_epoch_lines(run: subprocess.Popen, log: Path, jobs: int = 2, timeout: float = 180) -> None:
    """Until every worker has logged an epoch (the run is then training in its workers)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        if all(f"GRU seed {seed} epoch 1/{EPOCHS}" in text for seed in range(jobs)):
            return
        assert run.poll() is None, run.communicate()
        time.sleep(0.2)
    raise AssertionError(f"no epoch lines in {log} after {timeout} s")


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper has exited)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("straight")
    run_experiment(validate_config({**CONFIG, "workers": 1}), out_dir=out, progress=False)
    return pd.read_parquet(out / "predictions.parquet")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_workers_and_resume_gives_the_uninterrupted_predictions(tmp_path, signum, uninterrupted):
    out = tmp_path / "run"
    run = start_run(tmp_path, out)
    wait_for_epoch_lines(run, out / "run.log")
    workers = children(run.pid)
    assert len(workers) >= 2
    sent = time.monotonic()
    run.send_signal(signum)
    _, stderr = run.communicate(timeout=10)
    assert time.monotonic() - sent < 10
    assert wait_until_gone(workers, 10 - (time.monotonic() - sent)) == []
    assert run.returncode == 128 + signum
    lines = stderr.strip().splitlines()
    assert [line for line in lines if "resume" in line] == [lines[-1]]
    assert lines[-1].endswith(f"resume with: conceptalpha run {out / 'config.yaml'} --resume")
    assert "Traceback" not in stderr
    assert "epoch 1/" in stderr  # the workers' epochs reached the console while they trained
    job = RunFiles(out).job(("GRU", "seed0"))
    assert (job.root / "checkpoint.pt").exists() and not job.finished()  # stopped mid-training, resumable
    assert not list(out.rglob(".*.tmp"))  # the workers exited through Python: no half-written file
    resumed = subprocess.run(
        [sys.executable, "-m", "conceptalpha.experiments.cli", "run", str(out / "config.yaml"), "--resume", "--quiet"],
        capture_output=True, text=True, timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in (out / "run.log").read_text()
    pd.testing.assert_frame_equal(pd.read_parquet(out / "predictions.parquet"), uninterrupted)


def test_sigint_stops_a_serial_run_between_two_epochs(tmp_path):
    out = tmp_path / "run"
    run = start_run(tmp_path, out, workers=1)
    wait_for_epoch_lines(run, out / "run.log", jobs=1)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=10)
    assert run.returncode == 130
    assert stderr.strip().splitlines()[-1].startswith("interrupted by SIGINT") and "Traceback" not in stderr
    assert (out / "models" / "GRU" / "seed0" / "checkpoint.pt").exists()
    assert not list(out.rglob(".*.tmp"))  # no half-written file left behind


@pytest.mark.slow
def test_workers_exit_on_their_own_when_the_parent_is_killed(tmp_path):
    out = tmp_path / "run"
    run = start_run(tmp_path, out)
    wait_for_epoch_lines(run, out / "run.log")
    workers = children(run.pid)
    assert len(workers) >= 2
    run.kill()
    run.wait()
    assert wait_until_gone(workers, 10) == []
    # Its lock died with it: a resume takes the directory over at once.
    with hold_run_dir(RunFiles(out).lock):
        assert RunFiles(out).lock.read_text().strip() == str(os.getpid())


HOLDER = "import sys, time; from pathlib import Path; from conceptalpha.experiments.orchestrate import hold_run_dir\n" \
         "with hold_run_dir(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)"


def test_a_directory_held_by_a_live_run_is_refused_at_once_and_a_dead_runs_lock_taken_over(tmp_path):
    lock = RunFiles(tmp_path).lock
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(UserError, match=f"in use by a running conceptalpha process \\(PID {holder.pid}"):
            run_experiment(validate_config({**CONFIG, "workers": 1}), out_dir=tmp_path, progress=False)
        assert time.monotonic() - started < 2
        config = tmp_path / "c.yaml"
        config.write_text(json.dumps(CONFIG))
        cli = subprocess.run(
            [sys.executable, "-m", "conceptalpha.experiments.cli", "run", str(config), "--out", str(tmp_path), "--resume"],
            capture_output=True, text=True,
        )
        assert cli.returncode == 2
        assert cli.stderr.strip().count("\n") == 0 and f"PID {holder.pid}" in cli.stderr
    finally:
        holder.kill()
        holder.wait()
    assert lock.read_text().strip() == str(holder.pid)  # the stale lock names the dead holder
    with hold_run_dir(lock):
        assert lock.read_text().strip() == str(os.getpid())


def test_a_stop_signal_landing_in_a_finaliser_still_stops_the_code_that_runs():
    """The GRU's buffer pool returns arrays in weakref finalisers; an exception raised there is only printed."""
    script = (
        "import os, signal, sys, time, weakref\n"
        "from conceptalpha.experiments.executors import signals_interrupt\n"
        "class Held: pass\n"
        "with signals_interrupt() as received:\n"
        "    try:\n"
        "        held = Held()\n"
        "        weakref.finalize(held, lambda: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(0.01)))\n"
        "        del held\n"
        "        time.sleep(5)\n"
        "        print('not stopped')\n"
        "    except KeyboardInterrupt:\n"
        "        print('stopped by', received)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == f"stopped by [{int(signal.SIGTERM)}]"
    assert "Traceback" not in done.stderr and "ignored" not in done.stderr
