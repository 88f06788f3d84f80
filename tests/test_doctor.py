"""``conceptalpha doctor``: the versions, device and GRU kernel status a bug report needs."""

import re

import numpy as np
import torch

from cli_helpers import run
from conceptalpha.models import native


def _fields(out: str) -> dict[str, str]:
    """label → value; labels may hold single spaces, two or more separate the value."""
    return dict(re.split(r" {2,}", line, maxsplit=1) for line in out.splitlines())


def test_doctor_reports_versions_threads_and_device(monkeypatch, capsys):
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("CONCEPTALPHA_NATIVE", "0")
    code, out, _ = run(["doctor"], monkeypatch, capsys)
    fields = _fields(out)
    assert code == 0
    assert fields["torch"] == torch.__version__ and fields["numpy"] == np.__version__
    assert fields["torch threads"].startswith(f"{torch.get_num_threads()} intra-op")
    assert fields["device (auto)"].startswith("cuda" if torch.cuda.is_available() else "cpu")
    assert fields["GRU kernel (CPU)"].startswith("off: CONCEPTALPHA_NATIVE=0")
    assert fields["CONCEPTALPHA_NATIVE"] == "0"


def test_doctor_says_why_the_kernel_fell_back(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.delenv("CONCEPTALPHA_NATIVE", raising=False)
    monkeypatch.delenv("CONCEPTALPHA_NATIVE_REBUILD", raising=False)
    monkeypatch.setenv("CONCEPTALPHA_NATIVE_DIR", str(tmp_path))
    marker = native.build_directory() / native.FAILURE_MARKER
    marker.parent.mkdir(parents=True)
    marker.write_text("RuntimeError: ninja is required to load C++ extensions\n\nfull log\n")
    code, out, _ = run(["doctor"], monkeypatch, capsys)
    fields = _fields(out)
    assert code == 0
    assert fields["GRU kernel (CPU)"].startswith("pure-PyTorch fallback: an earlier build failed (RuntimeError: ninja")
    assert fields["kernel cache"] == str(marker.parent)
