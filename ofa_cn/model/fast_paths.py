"""Which optional fast paths of the model are on: one object, read where each path is taken.

Every speed-up in `ofa_cn.model` computes what the plain path computes (up to float rounding);
each is a choice because it trades memory, portability or readability for speed, or because the
benchmark's reference path (`scripts/benchmark.py`) needs to switch it off. The plain path is
always the readable one; the fast path sits next to it behind one of these fields.

    from ofa_cn.model.fast_paths import fast_paths, get_fast_paths, set_fast_paths

    get_fast_paths().sdpa                       # read at the point of use
    set_fast_paths(onednn_linear="packed")      # process-wide, until changed again
    with fast_paths(sdpa=False, fused_resnet=False):
        ...                                     # restored on exit

The defaults are decided once, here, at import (as timm's `use_fused_attn` / `set_fused_attn` in
`timm/layers/config.py`). Switches that change the state-dict keys are architecture, not fast
paths: they live in `OFAConfig`. Per-layer choices (`Linear.pack_weight`) stay on the layer.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any, Iterator

ONEDNN_LINEAR_MODES = ("packed", "plain", "off")


def _onednn_backward_default() -> bool:
    """oneDNN for the training backward's products only where torch runs AVX-512 kernels.

    Measured on two 2-core AMD EPYC hosts, torch 2.13 CPU, the model's shapes: with AVX-512
    (2026-11-27) oneDNN beat torch's mm for grad_x (1.06-1.36x) and for fc2's grad_W; with AVX2
    only (2026-12-07) torch's mm beat oneDNN for every backward product, 1.1-2.0x (fc2's grad_W:
    44 ms against 90 ms at 1,072 rows), and a base train step lost ~0.6 s to oneDNN there.
    """
    import torch

    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


@dataclass(frozen=True)
class FastPaths:
    """One field per fast path; True (or a mode other than "off") = on. Defaults = on, as shipped."""

    # attention through F.scaled_dot_product_attention's fused kernels; False: `eager_attention`
    sdpa: bool = True
    # the stem's convolutions on channels-last (NHWC) activations: oneDNN's layout, tensor-core friendly
    channels_last: bool = True
    # CPU fp32 inference: the stem's BatchNorms folded into oneDNN convs (costs a cached weight copy)
    fused_resnet: bool = True
    # CPU fp32 linears through oneDNN's matmul; "packed": every weight also kept in oneDNN's blocked
    # layout (one more copy of the weights); "plain": only layers with `pack_weight`; "off": torch's BLAS
    onednn_linear: str = "plain"
    # CPU fp32 training with onednn_linear on: the backward's products through oneDNN too; False:
    # torch's mm (which is faster where torch has no AVX-512 kernels: `_onednn_backward_default`)
    onednn_backward: bool = dataclasses.field(default_factory=_onednn_backward_default)
    # with onednn_linear "off": a decoding step's few rows as (W x^T)^T, which MKL streams faster
    transposed_linear: bool = True
    # CPU cross-attention over many keys without projecting them (`folded_attention`) where that is less work
    folded_cross_attention: bool = True
    # CPU token lookups with sparse gradients, added in place into the tied projection's dense gradient
    sparse_embedding_grad: bool = True
    # decoding: cross K/V once per distinct encoder row, kept across steps, beams grouped (`CrossMemory`)
    cross_memory: bool = True
    # decoding: the self position bias of the new position only, with the prefix's position keys cached
    incremental_self_bias: bool = True

    def __post_init__(self):
        if self.onednn_linear not in ONEDNN_LINEAR_MODES:
            raise ValueError(f"onednn_linear must be one of {ONEDNN_LINEAR_MODES}, got {self.onednn_linear!r}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))


# Every fast path off: the plain reference path (what `scripts/benchmark.py` times against).
REFERENCE = FastPaths(**{name: False for name in FastPaths.names()} | {"onednn_linear": "off"})

_current = FastPaths()


def get_fast_paths() -> FastPaths:
    """The fast paths in effect now (read it at the point of use, not once at construction)."""
    return _current


def set_fast_paths(**changes: Any) -> FastPaths:
    """Switch the named fast paths, process-wide. -> the previous state (to restore it with `restore`).

    Raises:
        ValueError: an unknown name, or a value the field does not take.
    """
    global _current
    unknown = sorted(set(changes) - set(FastPaths.names()))
    if unknown:
        raise ValueError(f"unknown fast paths {unknown}; known: {list(FastPaths.names())}")
    previous, _current = _current, dataclasses.replace(_current, **changes)
    return previous


def restore(state: FastPaths) -> None:
    """Put back a state that `set_fast_paths` returned."""
    global _current
    if not isinstance(state, FastPaths):
        raise TypeError(f"restore takes a FastPaths (what set_fast_paths returned), got {type(state).__name__}")
    _current = state


@contextlib.contextmanager
def fast_paths(**changes: Any) -> Iterator[FastPaths]:
    """Switch the named fast paths inside a `with` block; the previous state comes back on exit."""
    previous = set_fast_paths(**changes)
    try:
        yield _current
    finally:
        restore(previous)
