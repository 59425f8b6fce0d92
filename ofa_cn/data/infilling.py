"""Text infilling noise (BART's whole-word span masking), as the original OFA pretraining uses it.

A sentence ``[bos] w1 ... wn [eos]`` loses ``ceil(n_words * mask_ratio)`` words in spans whose
lengths (in words) are drawn from a Poisson(lambda) distribution; with ``replace_length=1`` each
span becomes one ``<mask>``, so the model must also infer how many words are missing. A span of
length 0 inserts a ``<mask>`` where nothing is missing. Word starts are the ids whose symbol does
not begin with ``##``: for Chinese every character is a word.

The randomness is split from the editing: ``draw_spans`` draws (start positions, lengths) with a
numpy Generator and ``apply_spans`` / ``insert_masks`` are deterministic, so the editing can be
checked by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

POISSON_TAIL = 1e-7  # the span-length distribution stops after the first probability below this
POISSON_MAX_LENGTH = 128


def poisson_span_probabilities(lam: float) -> np.ndarray:
    """P(span length = k) for k = 0, 1, ... under Poisson(lam), cut after the first p < 1e-7, normalised."""
    ps = []
    p = math.exp(-lam)
    for k in range(POISSON_MAX_LENGTH):
        ps.append(p)
        if p < POISSON_TAIL:
            break
        p *= lam / (k + 1)
    probs = np.asarray(ps, dtype=np.float64)
    return probs / probs.sum()


def word_start_table(symbols: list[str], nspecial: int = 4) -> torch.Tensor:
    """[V] bool: True where the dictionary symbol starts a word (specials always do, ``##x`` never)."""
    return torch.tensor([i < nspecial or not s.startswith("##") for i, s in enumerate(symbols)])


@dataclass
class Spans:
    """Where to mask: ``starts`` [k] token positions (word starts) and ``lengths`` [k] in words (>= 1),
    plus ``inserts``, the number of zero-length spans (masks inserted at random places)."""

    starts: torch.Tensor
    lengths: torch.Tensor
    inserts: int


def draw_spans(is_word_start: torch.Tensor, mask_ratio: float, probs: np.ndarray, rng: np.random.Generator) -> Spans:
    """Draw the spans that mask ``ceil(n_words * mask_ratio)`` words.

    Args:
        is_word_start: [L] bool for a sequence with bos and eos (both must be False).
        probs: span-length probabilities (``poisson_span_probabilities``).
    """
    candidates = torch.nonzero(is_word_start).squeeze(1)
    budget = math.ceil(len(candidates) * mask_ratio)
    empty = torch.zeros(0, dtype=torch.long)
    if budget == 0:
        return Spans(empty, empty, 0)
    lengths = rng.choice(len(probs), size=budget, p=probs)
    while lengths.sum() < budget:
        lengths = np.concatenate([lengths, rng.choice(len(probs), size=budget, p=probs)])
    cum = np.cumsum(lengths)
    last = int(np.searchsorted(cum, budget))  # first span that reaches the budget ...
    lengths = lengths[: last + 1].copy()
    lengths[last] = budget - (cum[last - 1] if last > 0 else 0)  # ... trimmed to end on it
    inserts = int((lengths == 0).sum())
    lengths = lengths[lengths > 0]
    chosen = candidates[torch.from_numpy(rng.permutation(len(candidates))[: len(lengths)])]
    return Spans(chosen, torch.from_numpy(lengths).long(), inserts)


def apply_spans(tokens: torch.Tensor, is_word_start: torch.Tensor, spans: Spans, mask_idx: int,
                replace_length: int = 1) -> torch.Tensor:
    """Mask each span: it starts at a word start and runs ``length`` words (a word = its start
    token and the ``##`` tokens after it), never past the last token (eos).

    replace_length: 1 = a span becomes one mask; 0 = a span is deleted; -1 = every token of the
        span becomes a mask.

    Example (every token a word, mask id 9): tokens [0 5 6 7 8 2], spans starts [1, 4],
    lengths [2, 1] -> [0 9 7 9 2] with replace_length 1.
    """
    if replace_length not in (-1, 0, 1):
        raise ValueError(f"replace_length must be -1, 0 or 1, found {replace_length}")
    out = tokens.clone()
    keep = torch.ones(len(tokens), dtype=torch.bool)
    last = len(tokens) - 1
    for start, length in zip(spans.starts.tolist(), spans.lengths.tolist()):
        if replace_length == 0:
            keep[start] = False
        else:
            out[start] = mask_idx
        words_left = length - 1
        pos = start + 1
        while pos < last:
            if is_word_start[pos]:
                if words_left == 0:
                    break
                words_left -= 1
            if replace_length == -1:
                out[pos] = mask_idx
            else:
                keep[pos] = False
            pos += 1
    return out[keep]


def insert_masks(tokens: torch.Tensor, count: int, mask_idx: int, rng: np.random.Generator) -> torch.Tensor:
    """Insert ``count`` masks at random places strictly between the first and the last token."""
    if count == 0:
        return tokens
    total = len(tokens) + count
    where = torch.from_numpy(rng.permutation(total - 2)[:count] + 1)
    is_noise = torch.zeros(total, dtype=torch.bool)
    is_noise[where] = True
    out = torch.empty(total, dtype=tokens.dtype)
    out[is_noise] = mask_idx
    out[~is_noise] = tokens
    return out


def text_infilling(tokens: torch.Tensor, word_starts: torch.Tensor, mask_idx: int, rng: np.random.Generator,
                   mask_ratio: float = 0.3, poisson_lambda: float = 3.0, replace_length: int = 1) -> torch.Tensor:
    """``[bos] text [eos]`` ids -> the same with spans of words masked (module docstring).

    Args:
        tokens: [L] ids with bos first and eos last.
        word_starts: [V] bool, ``word_start_table`` of the dictionary.
        mask_idx: the id of ``<mask>``.
    Returns:
        [L'] ids, bos and eos kept.
    """
    is_word_start = word_starts[tokens].clone()
    is_word_start[0] = is_word_start[-1] = False
    spans = draw_spans(is_word_start, mask_ratio, poisson_span_probabilities(poisson_lambda), rng)
    out = apply_spans(tokens, is_word_start, spans, mask_idx, replace_length)
    return insert_masks(out, spans.inserts, mask_idx, rng)
