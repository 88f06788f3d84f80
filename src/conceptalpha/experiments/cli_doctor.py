"""``conceptalpha doctor``: what to paste when asking for help.

Versions, CPU threads, the device ``trainer.device: auto`` picks, whether the
compiled GRU kernels are in use (or why not) and where caches live.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

import typer

#: Libraries whose versions change results or speed.
LIBRARIES = ("torch", "numpy", "pandas", "scipy", "lightgbm", "pydantic", "pyarrow")
#: Environment variables this package reads.
SETTINGS = ("CONCEPTALPHA_NATIVE", "CONCEPTALPHA_NATIVE_REBUILD", "CONCEPTALPHA_NATIVE_DIR")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(k) for k in range(torch.cuda.device_count()))
        return f"cuda ({names}; CUDA {torch.version.cuda})"
    built_for = f"torch built with CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only torch build"
    return f"cpu (no CUDA device; {built_for})"


def _gru_kernel() -> str:
    from conceptalpha.models import native

    state, detail = native.status()
    return {
        "built": f"compiled kernels in use ({detail})",
        "off": f"off: {detail}",
        "fallback": f"pure-PyTorch fallback: {detail}",
    }[state]


def doctor_lines() -> list[tuple[str, str]]:
    """(label, value) pairs, one per line of ``conceptalpha doctor``."""
    import torch

    from conceptalpha import __version__
    from conceptalpha.models import native

    return [
        ("conceptalpha", f"{__version__} ({os.path.dirname(sys.modules['conceptalpha'].__file__)})"),
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("platform", f"{platform.platform()}, {platform.machine()}"),
        *[(name, _version(name)) for name in LIBRARIES],
        ("cpu cores", str(os.cpu_count())),
        ("torch threads", f"{torch.get_num_threads()} intra-op, {torch.get_num_interop_threads()} inter-op "
                          "(runs set the config's `threads`)"),
        ("device (auto)", _device()),
        ("GRU kernel (CPU)", _gru_kernel()),
        ("kernel cache", str(native.build_directory())),
        *[(name, os.environ.get(name, "(unset)")) for name in SETTINGS],
    ]


def doctor() -> None:
    """Print versions, threads, device, GRU kernel status and cache paths: paste this when asking for help."""
    lines = doctor_lines()
    width = max(len(label) for label, _ in lines)
    for label, value in lines:
        typer.echo(f"{label:<{width}}  {value}")


def register(app: typer.Typer) -> None:
    """Add the doctor command to the main app."""
    app.command("doctor")(doctor)
