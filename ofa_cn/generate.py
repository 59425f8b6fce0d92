"""fairseq's SequenceGenerator set up for OFA: start from bos, optional allowed-token range.

Nothing of fairseq's beam search is copied. OFA needs three things beyond it, and grounding a fourth:
- decoding starts from bos (0), not eos: `generate(..., bos_token=BOS)`;
- n-gram blocking over the hypothesis so far: fairseq 0.12's CPU fallback of `NGramRepeatBlock`
  compares against the end of the whole (padded) token buffer rather than the current prefix,
  so it never blocks anything; `NoRepeatNGram` replaces it (vectorised, any device);
- an allowed range of ids (the original `constraint_range "a,b"`): logits of ids 4..a-1 and >= b
  are set to -inf BEFORE the log-softmax, so scores are normalised over what may be chosen. The
  four specials stay allowed; fairseq masks pad itself and eos below min_len. This is the one
  hook: each model is wrapped in `AllowedTokens`, whose `get_normalized_probs` applies the mask;
- a fixed answer shape (grounding: four `<bin_k>` then `</s>`) through fairseq's own
  `prefix_allowed_tokens_fn` hook (`PrefixConstrainedBeamSearch`), built by `fixed_shape`.

`check_generation_options` validates the options before any model is loaded; every generator
built here goes through it, so a bad value names its option instead of failing inside fairseq.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import torch
from fairseq.ngram_repeat_block import NGramRepeatBlock
from fairseq.search import PrefixConstrainedBeamSearch
from fairseq.sequence_generator import SequenceGenerator
from torch import nn

from .tokenizer import BOS

NUM_SPECIALS = 4  # <s> <pad> </s> <unk> stay allowed under a constraint range

# The value of every generation option that is not given: fairseq's own (GenerationConfig), under
# the names of fairseq-generate's flags and of the tasks' eval_args. A task's published settings
# (its DEFAULT_GENERATION) override them.
GENERATION_DEFAULTS: dict[str, Any] = {
    "beam": 5, "max_len_a": 0, "max_len_b": 200, "min_len": 1, "no_repeat_ngram_size": 0,
    "lenpen": 1.0, "unkpen": 0.0, "temperature": 1.0,
}


# option -> (what it must be, test); ints exclude bool, numbers exclude NaN/inf
_OPTION_RULES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "beam": ("an integer >= 1 (hypotheses kept per step)", lambda v: _is_int(v) and v >= 1),
    "max_len_a": ("a number >= 0 (length limit = max_len_a * source length + max_len_b)",
                  lambda v: _is_number(v) and v >= 0),
    "max_len_b": ("an integer >= 1 (length limit = max_len_a * source length + max_len_b)",
                  lambda v: _is_int(v) and v >= 1),
    "min_len": ("an integer >= 1 (</s> is blocked before it)", lambda v: _is_int(v) and v >= 1),
    "no_repeat_ngram_size": ("an integer >= 0 (0: no blocking)", lambda v: _is_int(v) and v >= 0),
    "lenpen": ("a finite number (length penalty)", lambda v: _is_number(v)),
    "unkpen": ("a finite number (unknown-word penalty)", lambda v: _is_number(v)),
    "temperature": ("a number > 0 (logits are divided by it)", lambda v: _is_number(v) and v > 0),
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def check_generation_options(options: Mapping[str, Any], answer_length: int | None = None) -> None:
    """Raise a ValueError that names the option for any generation setting that cannot work.

    Args:
        options: generation settings by name (beam, max_len_a, max_len_b, min_len,
            no_repeat_ngram_size, lenpen, unkpen, temperature); others are not checked here.
        answer_length: the exact answer length of a task whose answers have one (grounding: 4
            bins); max_len and min_len must leave room for it.

    Raises:
        ValueError: e.g. "beam 0: expected an integer >= 1 (hypotheses kept per step)".
    """
    for name, (expected, ok) in _OPTION_RULES.items():
        if name in options and options[name] is not None and not ok(options[name]):
            raise ValueError(f"generation option {name} = {options[name]!r}: expected {expected}.")
    min_len, max_len_b = options.get("min_len"), options.get("max_len_b")
    if min_len is not None and max_len_b is not None and not options.get("max_len_a") and min_len > max_len_b:
        raise ValueError(f"generation options min_len = {min_len} > max_len_b = {max_len_b}: no length is allowed; "
                         "lower min_len or raise max_len_b.")
    if answer_length is not None:
        if max_len_b is not None and not options.get("max_len_a") and max_len_b < answer_length:
            raise ValueError(f"generation option max_len_b = {max_len_b}: this task's answer is exactly "
                             f"{answer_length} tokens, so max_len_b must be >= {answer_length}.")
        if min_len is not None and min_len > answer_length:
            raise ValueError(f"generation option min_len = {min_len}: this task's answer is exactly "
                             f"{answer_length} tokens and then </s>, so min_len must be <= {answer_length}.")


def fixed_shape(allowed: Sequence[int], length: int, eos: int) -> Callable[[int, torch.Tensor], Sequence[int]]:
    """A `prefix_allowed_tokens_fn`: `length` tokens from `allowed`, then `eos` (nothing else).

    Grounding uses it with the 1000 `<bin_k>` ids and length 4, so every answer is a box: the
    range mask alone still lets `<s>` or `<unk>` through, which decoded to x0 = -9393 px.
    """
    allowed = list(allowed)

    def allowed_next(batch_id: int, prefix: torch.Tensor) -> Sequence[int]:
        # prefix: [step + 1] tokens so far, the leading bos included
        return allowed if len(prefix) <= length else [eos]

    return allowed_next


def parse_constraint_range(spec: str | Sequence[int] | None) -> tuple[int, int] | None:
    """"29325,30325" -> (29325, 30325); None/"" -> None."""
    if spec is None or spec == "" or spec == "None":
        return None
    if isinstance(spec, str):
        parts = spec.split(",")
        if len(parts) != 2 or not all(p.strip().lstrip("-").isdigit() for p in parts):
            raise ValueError(f"constraint_range must be 'start,end' (two integers), got {spec!r}")
        start, end = int(parts[0]), int(parts[1])
    else:
        start, end = (int(v) for v in spec)
    if not NUM_SPECIALS <= start < end:
        raise ValueError(f"constraint_range {start},{end}: expected {NUM_SPECIALS} <= start < end")
    return start, end


def mask_outside_range(logits: torch.Tensor, allowed: tuple[int, int] | None) -> torch.Tensor:
    """Set logits of ids in [4, start) and [end, V) to -inf (ids 0..3 stay). logits [..., V]"""
    if allowed is None:
        return logits
    start, end = allowed
    logits = logits.clone()
    logits[..., NUM_SPECIALS:start] = float("-inf")
    logits[..., end:] = float("-inf")
    return logits


class NoRepeatNGram(NGramRepeatBlock):
    """Ban every token that would repeat an n-gram of the hypothesis (bos included)."""

    def __init__(self, no_repeat_ngram_size: int):
        super().__init__(no_repeat_ngram_size, use_extension=False)

    def forward(self, tokens: torch.Tensor, lprobs: torch.Tensor, bsz: int, beam_size: int, step: int):
        """tokens [R, >= step+1] (the prefix is tokens[:, :step+1]); lprobs [R, V], changed in place."""
        n = self.no_repeat_ngram_size
        length = step + 1
        if length < n:
            return lprobs
        prefix = tokens[:, :length]
        grams = prefix.unfold(1, n, 1)  # [R, G, n], every n-gram so far
        last = prefix[:, length - (n - 1):]  # [R, n-1], what the next token would extend
        hit = (grams[:, :, : n - 1] == last[:, None, :]).all(-1)  # [R, G]
        rows, cols = hit.nonzero(as_tuple=True)
        lprobs[rows, grams[rows, cols, n - 1]] = float("-inf")
        return lprobs


class AllowedTokens(nn.Module):
    """A model seen by the generator with every id outside `allowed` masked before log-softmax."""

    def __init__(self, model: nn.Module, allowed: tuple[int, int] | None):
        super().__init__()
        self.model = model
        self.allowed = allowed

    @property
    def encoder(self):
        return self.model.encoder

    @property
    def decoder(self):
        return self.model.decoder

    def max_decoder_positions(self) -> int:
        return self.model.max_decoder_positions()

    def get_normalized_probs(self, net_output, log_probs: bool, sample=None):
        logits = mask_outside_range(net_output[0], self.allowed)
        return self.model.get_normalized_probs((logits, *net_output[1:]), log_probs, sample)


def build_generator(models: Sequence[nn.Module], dictionary, *, beam: int = GENERATION_DEFAULTS["beam"],
                    max_len_a: float = GENERATION_DEFAULTS["max_len_a"],
                    max_len_b: int = GENERATION_DEFAULTS["max_len_b"], min_len: int = GENERATION_DEFAULTS["min_len"],
                    no_repeat_ngram_size: int = GENERATION_DEFAULTS["no_repeat_ngram_size"],
                    len_penalty: float = GENERATION_DEFAULTS["lenpen"],
                    unk_penalty: float = GENERATION_DEFAULTS["unkpen"],
                    temperature: float = GENERATION_DEFAULTS["temperature"],
                    normalize_scores: bool = True, constraint_range: Any = None,
                    prefix_allowed_tokens_fn: Callable[[int, torch.Tensor], Sequence[int]] | None = None,
                    **unused) -> SequenceGenerator:
    """A fairseq SequenceGenerator over `models` (an ensemble when several).

    Raises:
        ValueError: an option that cannot work (`check_generation_options`).
    """
    check_generation_options(dict(beam=beam, max_len_a=max_len_a, max_len_b=max_len_b, min_len=min_len,
                                  no_repeat_ngram_size=no_repeat_ngram_size, lenpen=len_penalty,
                                  unkpen=unk_penalty, temperature=temperature))
    allowed = parse_constraint_range(constraint_range)
    wrapped = [AllowedTokens(m, allowed) for m in models]
    search = PrefixConstrainedBeamSearch(dictionary, prefix_allowed_tokens_fn) if prefix_allowed_tokens_fn else None
    generator = SequenceGenerator(
        wrapped, dictionary, beam_size=beam, max_len_a=max_len_a, max_len_b=max_len_b, min_len=min_len,
        normalize_scores=normalize_scores, len_penalty=len_penalty, unk_penalty=unk_penalty,
        temperature=temperature, no_repeat_ngram_size=no_repeat_ngram_size, search_strategy=search,
    )
    if no_repeat_ngram_size > 0:
        generator.repeat_ngram_blocker = NoRepeatNGram(no_repeat_ngram_size)
    return generator


@torch.no_grad()
def generate(generator: SequenceGenerator, sample: dict[str, Any]) -> list[list[dict[str, torch.Tensor]]]:
    """Beam search from bos. -> per row, hypotheses best first: {"tokens" (ends with eos), "score", ...}"""
    return generator.generate(generator.model.models, sample, bos_token=BOS)
