"""The compiled GRU step kernels (``models/gru_steps.cpp``): same results as the
pure-PyTorch steps, a clear fallback when they cannot be built, and an off switch."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

import conceptalpha.models.fast_gru as fast_gru
from conceptalpha.models import native
from conceptalpha.models.fast_gru import gru_last_state

needs_kernels = pytest.mark.skipif(native.gru_steps() is None, reason="compiled GRU step kernels unavailable")


def _outputs_and_grads(rnn, x, weight):
    out = gru_last_state(rnn, x)
    grads = torch.autograd.grad((out * weight).sum(), [x, *rnn.parameters()])
    return out, grads


@needs_kernels
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 17, 150])
def test_compiled_steps_equal_pytorch_steps(monkeypatch, threads, n):
    """Forward and every gradient, over several column splits (threads) and chunks."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        rnn = torch.nn.GRU(5, 16, 2, batch_first=True)
        x = torch.randn(n, 11, 5, requires_grad=True)
        weight = torch.randn(n, 16)
        monkeypatch.setattr(fast_gru, "CHUNK_BYTES_PER_THREAD", 4 * 5 * 16 * 3 * n // threads + 1)  # ~3-step chunks
        compiled = _outputs_and_grads(rnn, x, weight)
        monkeypatch.setattr(fast_gru, "gru_steps", lambda: None)
        pytorch = _outputs_and_grads(rnn, x, weight)
    finally:
        torch.set_num_threads(previous)
    torch.testing.assert_close(compiled[0], pytorch[0], rtol=1e-5, atol=1e-6)
    for a, b in zip(compiled[1], pytorch[1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@needs_kernels
def test_compiled_steps_are_deterministic():
    torch.manual_seed(1)
    rnn = torch.nn.GRU(6, 32, 2, batch_first=True)
    x = torch.randn(300, 20, 6, requires_grad=True)
    first = _outputs_and_grads(rnn, x, torch.ones(300, 32))
    second = _outputs_and_grads(rnn, x, torch.ones(300, 32))
    for a, b in zip([first[0], *first[1]], [second[0], *second[1]]):
        assert torch.equal(a, b)


def test_build_failure_falls_back_to_pytorch_steps_and_says_why(monkeypatch, caplog, tmp_path):
    from torch.utils import cpp_extension

    def broken_build(**kwargs):
        raise RuntimeError("Error building extension 'conceptalpha_gru': g++ not found")

    monkeypatch.setattr(cpp_extension, "load", broken_build)
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("CONCEPTALPHA_NATIVE_DIR", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="conceptalpha.models.native"):
        assert native.gru_steps() is None
    assert "g++ not found" in caplog.text and "pure-PyTorch" in caplog.text
    torch.manual_seed(0)
    rnn = torch.nn.GRU(3, 8, batch_first=True)
    x = torch.randn(4, 5, 3)
    torch.testing.assert_close(gru_last_state(rnn, x), rnn(x)[0][:, -1], rtol=1e-5, atol=1e-6)


def _counting_broken_build(monkeypatch, tmp_path) -> list:
    from torch.utils import cpp_extension

    calls = []

    def broken_build(**kwargs):
        calls.append(kwargs["build_directory"])
        raise RuntimeError("Error building extension 'conceptalpha_gru': g++ not found")

    monkeypatch.setattr(cpp_extension, "load", broken_build)
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("CONCEPTALPHA_NATIVE_DIR", str(tmp_path))
    monkeypatch.delenv("CONCEPTALPHA_NATIVE_REBUILD", raising=False)
    return calls


def test_a_failed_build_is_remembered_and_not_retried_by_the_next_process(monkeypatch, tmp_path):
    calls = _counting_broken_build(monkeypatch, tmp_path)
    assert native.gru_steps() is None
    marker = tmp_path / native._build_key() / native.FAILURE_MARKER
    assert "g++ not found" in marker.read_text().splitlines()[0]
    monkeypatch.setattr(native, "_state", {})  # a new process (e.g. the next worker)
    state, why = native.status()
    assert (state, len(calls)) == ("fallback", 1)
    assert "g++ not found" in why and "CONCEPTALPHA_NATIVE_REBUILD=1" in why and str(marker) in why


def test_a_remembered_failure_is_retried_when_asked(monkeypatch, tmp_path):
    calls = _counting_broken_build(monkeypatch, tmp_path)
    native.gru_steps()
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("CONCEPTALPHA_NATIVE_REBUILD", "1")
    native.gru_steps()
    assert len(calls) == 2
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.delenv("CONCEPTALPHA_NATIVE_REBUILD")
    (tmp_path / native._build_key() / native.FAILURE_MARKER).unlink()  # the documented other way
    native.gru_steps()
    assert len(calls) == 3


def test_a_failure_with_other_flags_does_not_stop_this_build(monkeypatch, tmp_path):
    calls = _counting_broken_build(monkeypatch, tmp_path)
    native.gru_steps()
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setattr(native, "CFLAGS", [*native.CFLAGS, "-DOTHER"])
    native.gru_steps()
    assert len(calls) == 2 and calls[0] != calls[1]


@needs_kernels
def test_status_names_the_built_library():
    assert native.status() == ("built", str(native.build_directory()))


def test_switched_off_by_environment(monkeypatch):
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("CONCEPTALPHA_NATIVE", "0")
    assert native.gru_steps() is None
    assert native.status()[0] == "off"


def test_cache_key_follows_the_source_and_the_flags(monkeypatch):
    key = native._build_key()
    monkeypatch.setattr(native, "CFLAGS", [*native.CFLAGS, "-DSOMETHING"])
    assert native._build_key() != key


def test_a_build_lock_left_by_a_killed_build_is_removed(monkeypatch, tmp_path):
    import os
    import time

    from torch.utils import cpp_extension

    seen = {}

    def build(**kwargs):
        seen["lock_there"] = (Path(kwargs["build_directory"]) / "lock").exists()
        raise RuntimeError("stop here")

    monkeypatch.setattr(cpp_extension, "load", build)
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("CONCEPTALPHA_NATIVE_DIR", str(tmp_path))
    directory = tmp_path / native._build_key()
    directory.mkdir()
    lock = directory / "lock"
    lock.touch()
    old = time.time() - native.STALE_LOCK_SECONDS - 5
    os.utime(lock, (old, old))
    assert native.gru_steps() is None
    assert seen == {"lock_there": False}


def test_a_fresh_build_lock_is_left_alone(monkeypatch, tmp_path):
    from torch.utils import cpp_extension

    monkeypatch.setattr(cpp_extension, "load", lambda **kwargs: (_ for _ in ()).throw(RuntimeError("stop")))
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("CONCEPTALPHA_NATIVE_DIR", str(tmp_path))
    directory = tmp_path / native._build_key()
    directory.mkdir()
    (directory / "lock").touch()
    native.gru_steps()
    assert (directory / "lock").exists()


@needs_kernels
def test_kernels_take_contiguous_and_step_by_step_arrays_alike():
    """fast_gru hands the kernels [rows, T, B] arrays stored step by step; contiguous ones give the same bits."""
    torch.manual_seed(2)
    size, features, steps, rows = 8, 5, 7, 13
    w_in, b_in, w_hh = torch.randn(3 * size, features), torch.randn(4 * size), torch.randn(3 * size, size)
    x = torch.randn(features, steps, rows)

    def forward(by_step: bool):
        def array(rows_, steps_):
            return torch.empty(steps_, rows_, rows).permute(1, 0, 2) if by_step else torch.empty(rows_, steps_, rows)

        inputs = x.permute(1, 0, 2).contiguous().permute(1, 0, 2) if by_step else x
        states, gates = array(size, steps + 1), array(4 * size, steps)
        native.gru_steps().forward_layer(w_in, b_in, w_hh, [inputs], [states], [gates])
        return states, gates

    for contiguous, by_step in zip(forward(False), forward(True)):
        assert torch.equal(contiguous, by_step)
    with pytest.raises(RuntimeError, match="step by step"):
        native.gru_steps().forward_layer(w_in, b_in, w_hh, [x], [torch.empty(rows, steps + 1, size).permute(2, 1, 0)], [])


@needs_kernels
def test_scoring_without_gradients_gives_the_training_forward_exactly():
    torch.manual_seed(3)
    rnn = torch.nn.GRU(6, 16, 2, batch_first=True)
    x = torch.randn(40, 9, 6)
    with torch.no_grad():
        scored = gru_last_state(rnn, x)
    trained = gru_last_state(rnn, x)
    assert scored.grad_fn is None and trained.grad_fn is not None
    assert torch.equal(scored, trained)
