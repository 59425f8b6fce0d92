"""The shared token embedding, with a sparse gradient for the lookups while training on a CPU.

The token embedding E [V, D] is used three times: encoder lookup, decoder lookup and the tied
output projection. Autograd gives each lookup a dense [V, D] gradient (a zero-filled V x D buffer
plus the rows used) and adds the three. With sparse lookup gradients, the rows are added into the
output projection's dense gradient directly, which saves two V x D fills and additions per
training step. The parameter's final gradient is always dense: a hook
densifies it in the rare case no dense gradient reached it (e.g. a features-only pass), since
optimizers, gradient clipping and DDP expect dense gradients.

Autograd adds a sparse gradient into a dense one in place only when the sparse one arrives first;
the projection's gradient comes first (its backward runs first), so each lookup's rows cost a
V x D copy of it. `projection_weight` reverses the order: the projection takes the weight through
an identity node made before the lookups, and autograd, which runs the most recently made ready
node first, runs that node last. Then the dense gradient meets the lookups' rows last and takes
them in place, with no V x D copies. Only the order of the additions changes, not what is added.

Both are the `sparse_embedding_grad` fast path (`fast_paths.py`); with it off, the lookups are
nn.Embedding's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .fast_paths import get_fast_paths


def _densify(param: torch.Tensor) -> None:
    if param.grad is not None and param.grad.is_sparse:
        param.grad = param.grad.to_dense()


class _GradLast(torch.autograd.Function):
    """The identity; made before the lookups, autograd runs its backward after theirs."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor) -> torch.Tensor:
        return weight.view_as(weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


class TokenEmbedding(nn.Embedding):
    """nn.Embedding (same parameter, same results) whose lookups have a sparse gradient on CPU."""

    def _sparse_lookups(self) -> bool:
        weight = self.weight
        return (get_fast_paths().sparse_embedding_grad and torch.is_grad_enabled() and weight.requires_grad
                and weight.device.type == "cpu")

    def projection_weight(self) -> torch.Tensor | None:
        """The weight for the tied output projection of one training pass, or None for `self.weight`.

        Call it before the pass's first lookup. While the lookups' gradients are sparse, it is the
        weight through an identity node, so that the projection's dense gradient reaches the
        parameter after the lookups' rows and adds them in place (see the module docstring).
        """
        return _GradLast.apply(self.weight) if self._sparse_lookups() else None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if not self._sparse_lookups():
            return super().forward(tokens)
        # once per parameter object (a deepcopy keeps attributes but drops hooks, hence the id)
        if getattr(weight, "_ofa_densify_hook", None) != id(weight):
            weight.register_post_accumulate_grad_hook(_densify)
            weight._ofa_densify_hook = id(weight)
        return F.embedding(tokens, weight, self.padding_idx, self.max_norm, self.norm_type,
                           self.scale_grad_by_freq, sparse=True)
