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
logged once and the pure-PyTorch steps are used.
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

_lock = threading.Lock()
_state: dict[str, object] = {}


def gru_steps():
    """The ``torch.ops.conceptalpha_gru`` namespace, or None (disabled, or the build failed)."""
    if "ops" not in _state:
        with _lock:
            if "ops" not in _state:
                _state["ops"] = _load()
    return _state["ops"]


def enabled() -> bool:
    return os.environ.get("CONCEPTALPHA_NATIVE", "1").strip().lower() not in {"0", "false", "no", "off"}


def _load():
    if not enabled():
        return None
    try:
        from torch.utils import cpp_extension

        key = _build_key()
        directory = _cache_root() / key
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
    except Exception as error:  # no compiler, no ninja, read-only cache, ...: fall back, say why once
        log.warning(
            "GRU step kernels unavailable (%s: %s); using the pure-PyTorch steps (slower on CPU). "
            "Set CONCEPTALPHA_NATIVE=0 to skip the build.",
            type(error).__name__,
            str(error).strip().splitlines()[-1] if str(error).strip() else "",
        )
        return None


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
