"""Text infilling: the span-length distribution, hand-checked span edits, and the word budget."""

import math

import numpy as np
import pytest
import torch

from ofa_cn.data.infilling import (Spans, apply_spans, draw_spans, insert_masks, poisson_span_probabilities,
                                   text_infilling, word_start_table)

MASK = 9


def test_poisson_probabilities():
    probs = poisson_span_probabilities(3.0)
    raw = [math.exp(-3) * 3 ** k / math.factorial(k) for k in range(len(probs))]
    assert raw[-1] < 1e-7 <= raw[-2]  # cut right after the first tiny probability
    np.testing.assert_allclose(probs, np.array(raw) / sum(raw))
    assert len(probs) == 18  # k = 0..17: P(17) = 1.8e-8 is the first below 1e-7


def test_word_starts():
    table = word_start_table(["<s>", "<pad>", "</s>", "<unk>", "图", "##s", "a", "##"])
    assert table.tolist() == [True] * 4 + [True, False, True, False]


def test_apply_spans_by_hand():
    tokens = torch.tensor([0, 5, 6, 7, 8, 2])
    starts = torch.ones(6, dtype=torch.bool)
    starts[0] = starts[-1] = False
    spans = Spans(torch.tensor([1, 4]), torch.tensor([2, 1]), 0)
    assert apply_spans(tokens, starts, spans, MASK, 1).tolist() == [0, MASK, 7, MASK, 2]
    assert apply_spans(tokens, starts, spans, MASK, 0).tolist() == [0, 7, 2]
    assert apply_spans(tokens, starts, spans, MASK, -1).tolist() == [0, MASK, MASK, 7, MASK, 2]


def test_a_span_covers_whole_words_and_stops_at_eos():
    # words: [5 ##51] [6] [7 ##71 ##72]; a 2-word span from 5 takes 5 ##51 6; one from 7 runs to eos only
    tokens = torch.tensor([0, 5, 51, 6, 7, 71, 72, 2])
    starts = torch.tensor([False, True, False, True, True, False, False, False])
    assert apply_spans(tokens, starts, Spans(torch.tensor([1]), torch.tensor([2]), 0), MASK).tolist() == [0, MASK, 7, 71, 72, 2]
    assert apply_spans(tokens, starts, Spans(torch.tensor([4]), torch.tensor([5]), 0), MASK).tolist() == [0, 5, 51, 6, MASK, 2]


def test_insert_masks_keeps_the_ends_and_the_order():
    tokens = torch.tensor([0, 5, 6, 7, 2])
    out = insert_masks(tokens, 3, MASK, np.random.default_rng(0))
    assert len(out) == 8 and out[0] == 0 and out[-1] == 2
    assert out[out != MASK].tolist() == tokens.tolist()


@pytest.mark.parametrize("seed", range(20))
def test_the_budget_of_masked_words(seed):
    """20 one-token words: ceil(20 * 0.3) = 6 words are masked or inserted in total."""
    rng = np.random.default_rng(seed)
    starts = torch.ones(22, dtype=torch.bool)
    starts[0] = starts[-1] = False
    spans = draw_spans(starts, 0.3, poisson_span_probabilities(3.0), rng)
    assert int(spans.lengths.sum()) == 6 and (spans.lengths > 0).all()
    assert len(set(spans.starts.tolist())) == len(spans.starts) and 0 not in spans.starts and 21 not in spans.starts


def test_text_infilling_end_to_end():
    words = torch.ones(30, dtype=torch.bool)
    tokens = torch.tensor([0] + list(range(10, 30)) + [2])
    out = text_infilling(tokens, words, MASK, np.random.default_rng(3))
    assert out[0] == 0 and out[-1] == 2 and (out == MASK).any()
    kept = out[out != MASK].tolist()
    assert kept == [t for t in tokens.tolist() if t in kept]  # a subsequence, in order
    assert len(kept) >= len(tokens) - 6  # at most the 6 budgeted words (one token each) are gone
    again = text_infilling(tokens, words, MASK, np.random.default_rng(3))
    assert torch.equal(out, again)
