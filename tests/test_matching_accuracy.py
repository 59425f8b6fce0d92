"""The demo's matching accuracy: 是 or 否, whichever the model scores higher at the first target token."""

import torch

from ofa_cn.demo.matching_accuracy import answers_right

YES, NO = 7, 9


def test_the_higher_of_the_two_answers_counts_and_other_tokens_do_not():
    logits = torch.zeros(4, 2, 12)  # [B, T, V]
    logits[0, 0, YES], logits[1, 0, NO] = 1.0, 2.0  # rows 0, 1: 是, 否
    logits[2, 0, YES], logits[2, 0, 3] = 0.5, 9.0  # row 2: 是 (token 3 scores higher but is no answer)
    logits[3, 0, NO], logits[3, 1, YES] = 0.1, 5.0  # row 3: 否 (the second position is not read)
    target = torch.tensor([[YES, 2], [YES, 2], [YES, 2], [YES, 2]])
    assert answers_right(logits, target, YES, NO) == 2  # rows 0 and 2
    target[:, 0] = torch.tensor([YES, NO, NO, NO])
    assert answers_right(logits, target, YES, NO) == 3  # rows 0, 1, 3
