"""The fast-path switchboard: defaults on, one call flips a path, the context manager restores it."""

from __future__ import annotations

import pytest

from ofa_cn.model.fast_paths import REFERENCE, FastPaths, fast_paths, get_fast_paths, restore, set_fast_paths


def test_defaults_are_every_fast_path_on():
    """All on, but oneDNN's backward products only where torch has AVX-512 kernels (measured slower on AVX2)."""
    import torch

    paths = FastPaths()
    assert paths.onednn_linear == "plain"
    assert paths.onednn_backward == torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    assert all(getattr(paths, name) is True for name in FastPaths.names()
               if name not in ("onednn_linear", "onednn_backward"))
    assert get_fast_paths() == paths  # nothing in the suite leaves a path switched


def test_reference_is_every_fast_path_off():
    assert REFERENCE.onednn_linear == "off"
    assert not any(getattr(REFERENCE, name) for name in FastPaths.names() if name != "onednn_linear")


def test_the_context_manager_restores_the_previous_state_also_on_errors():
    before = get_fast_paths()
    with pytest.raises(RuntimeError):
        with fast_paths(sdpa=False, onednn_linear="packed") as inside:
            assert get_fast_paths() is inside and not inside.sdpa and inside.onednn_linear == "packed"
            raise RuntimeError
    assert get_fast_paths() == before


def test_set_returns_what_restore_puts_back():
    previous = set_fast_paths(fused_resnet=False)
    try:
        assert not get_fast_paths().fused_resnet and previous.fused_resnet
    finally:
        restore(previous)
    assert get_fast_paths().fused_resnet


def test_unknown_names_and_values_are_refused():
    with pytest.raises(ValueError, match="unknown fast paths"):
        set_fast_paths(flash=True)
    with pytest.raises(ValueError, match="onednn_linear"):
        set_fast_paths(onednn_linear="fast")
    assert get_fast_paths() == FastPaths()
