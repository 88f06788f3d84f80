"""The compiled GRU step kernels (``gru_steps.cpp``), built on first use, or None.

The GRU's time steps are sequential: per step and layer, eager PyTorch runs
one small matrix product and four or five elementwise operations on a few
thousand floats each, and such small operations run on one thread and cost
more in dispatch than in arithmetic. ``gru_steps.cpp`` runs all steps of a
layer in C++, the row blocks side by side on the torch threads, with one
fused elementwise pass per step and the matrix products in cache. It is compiled once per machine (10–20 s, with
``torch.utils.cpp_extension``; it needs a C++ compiler and ninja) into
``$CONCEPTALPHA_NATIVE_DIR`` (default ``~/.cache/conceptalpha/native``).
Processes starting at the same time share one build (torch's lock file).

Set ``CONCEPTALPHA_NATIVE=0`` to use the pure-PyTorch steps instead (same
function; the tests check they agree). If the build fails, the reason is
logged and the pure-PyTorch steps are used; the failure is remembered in
``build_failed.txt`` (the reason) in that build's cache directory, so later
processes (every worker of a run) fall back at once instead of compiling
again. To retry, delete that file or set ``CONCEPTALPHA_NATIVE_REBUILD=1``.
``conceptalpha doctor`` shows which steps are in use and why (:func:`status`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sys
import threading
import time
from pathlib import Path

import torch

from conceptalpha.io import write_text

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("gru_steps.cpp")
#: Compile flags: -march=native because the build is per machine (its CPU flags are in the cache key);
#: -ffast-math only at compile time (not linked: that would flush denormals process-wide) so that
#: the elementwise loops and their sums vectorise, but -fno-finite-math-only so that a NaN input
#: still gives NaN (as nn.GRU does); -fopenmp because ATen's parallel_for is an inline OpenMP
#: region (the library then shares torch's libgomp.so.1, already loaded).
CFLAGS = ["-O3", "-march=native", "-ffast-math", "-fno-finite-math-only", "-fopenmp"]
LDFLAGS = ["-fopenmp"]
#: A build lock older than this is left over from a killed build (a build takes ~20 s).
STALE_LOCK_SECONDS = 600
#: In a build's directory: why its build failed (then no process builds it again until it is removed).
FAILURE_MARKER = "build_failed.txt"

_lock = threading.Lock()
_state: dict[str, object] = {}


def gru_steps():
    """The ``torch.ops.conceptalpha_gru`` namespace, or None (disabled, or the build failed)."""
    if "ops" not in _state:
        with _lock:
            if "ops" not in _state:
                _state["ops"] = _load()
    return _state["ops"]


def _flag(name: str, default: str) -> bool:
    return os.environ.get(name, default).strip().lower() not in {"", "0", "false", "no", "off"}


def enabled() -> bool:
    return _flag("CONCEPTALPHA_NATIVE", "1")


def build_directory() -> Path:
    """Where this source, these flags, this torch/Python and this CPU's build lives."""
    return _cache_root() / _build_key()


def status() -> tuple[str, str]:
    """(state, detail) of the GRU steps in this process, building the kernels if not done yet:
    ("built", library directory), ("off", why) or ("fallback", why: the build's failure)."""
    if not enabled():
        return "off", "CONCEPTALPHA_NATIVE=0: the pure-PyTorch steps"
    if gru_steps() is not None:
        return "built", str(build_directory())
    return "fallback", str(_state.get("why", "unknown"))


def _load():
    if not enabled():
        return None
    directory = build_directory()
    marker = directory / FAILURE_MARKER
    if marker.exists() and _flag("CONCEPTALPHA_NATIVE_REBUILD", "0"):
        marker.unlink(missing_ok=True)
    if marker.exists():
        reason = marker.read_text(encoding="utf-8").strip().splitlines()[0]
        _state["why"] = f"an earlier build failed ({reason}); retry: delete {marker} or set CONCEPTALPHA_NATIVE_REBUILD=1"
        log.info("GRU step kernels: %s; using the pure-PyTorch steps", _state["why"])
        return None
    try:
        from torch.utils import cpp_extension

        key = directory.name
        directory.mkdir(parents=True, exist_ok=True)
        _remove_stale_lock(directory)
        if not (directory / f"conceptalpha_gru_{key}.so").exists():
            log.info("building the GRU step kernels in %s, once per machine (10–20 s; other processes wait for it)",
                     directory)
        cpp_extension.load(
            name=f"conceptalpha_gru_{key}",
            sources=[str(SOURCE)],
            extra_cflags=CFLAGS,
            extra_ldflags=LDFLAGS,
            build_directory=str(directory),
            is_python_module=False,
            verbose=False,
        )
        return torch.ops.conceptalpha_gru
    except Exception as error:  # no compiler, no ninja, read-only cache, ...: fall back, say why, remember it
        lines = str(error).strip().splitlines()
        reason = f"{type(error).__name__}: {lines[-1] if lines else ''}"
        _state["why"] = f"the build failed ({reason}); retry: delete {marker} or set CONCEPTALPHA_NATIVE_REBUILD=1"
        _remember_failure(marker, reason, str(error))
        log.warning(
            "GRU step kernels unavailable (%s); using the pure-PyTorch steps (slower on CPU). Later runs skip "
            "the build until %s is deleted (or CONCEPTALPHA_NATIVE_REBUILD=1). Set CONCEPTALPHA_NATIVE=0 to skip it.",
            reason,
            marker,
        )
        return None


def _remember_failure(marker: Path, reason: str, details: str) -> None:
    """``marker``: the one-line reason, then the build's whole message. Unwritable (e.g. a read-only
    cache): each process tries again, as it would have anyway."""
    try:
        write_text(marker, f"{reason}\n\n{details}\n")
    except OSError as error:
        log.warning("could not record the failed build in %s (%s)", marker, error)


def _remove_stale_lock(directory: Path) -> None:
    """torch's build lock (``lock``) makes every other process wait for the build; one
    left behind by a killed build would make them wait forever."""
    lock = directory / "lock"
    try:
        if time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS:
            log.warning("removing the stale build lock %s (left by an interrupted build)", lock)
            lock.unlink(missing_ok=True)
    except FileNotFoundError:
        pass


def _cache_root() -> Path:
    configured = os.environ.get("CONCEPTALPHA_NATIVE_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "conceptalpha" / "native"


def _build_key() -> str:
    """Changes with the source, the flags, torch, Python and the CPU (the build uses -march=native)."""
    parts = [SOURCE.read_bytes(), " ".join(CFLAGS + LDFLAGS).encode(), torch.__version__.encode(),
             sys.version.encode(), platform.machine().encode(), _cpu_flags().encode()]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()
