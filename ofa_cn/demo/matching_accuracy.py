"""How often a model answers image-text matching rows right: 是 or 否, whichever it scores higher.

    python -m ofa_cn.demo.matching_accuracy CHECKPOINT TSV        # e.g. 100.0 (%)

The binding experiments of the README's demo section score their matching rows
(ofa_cn/demo/data/binding.py) with it; grounding rows are scored by ofa_cn.apps.evaluate.
"""

from __future__ import annotations

from pathlib import Path

import torch


def answers_right(logits: torch.Tensor, target: torch.Tensor, yes: int, no: int) -> int:
    """How many rows' target first token is the higher scored of `yes` and `no`.

    logits: [B, T, V] teacher-forced; target: [B, T], each row's first token `yes` or `no`.
    """
    first = logits[:, 0]  # [B, V]
    predicted = torch.where(first[:, yes] > first[:, no], yes, no)  # [B]
    return int((predicted == target[:, 0]).sum())


def matching_accuracy(checkpoint: str | Path, tsv: str | Path, rows: int = 200, batch_size: int = 50) -> float:
    """The percentage of `answers_right` of a checkpoint on the first `rows` rows of a matching TSV (uniq_id,
    image, text, answer), read as unify_task's `matching_data` reads them, on the CPU."""
    from ..checkpoints.loading import load_model, setup_task
    from ..data.matching import NO, YES, MatchingDataset
    from ..data.tsv import TSVFile

    model = load_model(checkpoint)
    # the caption task: the same tokenizer and image settings as the checkpoint's unify_task
    task = setup_task(model.task_config, "caption", data=str(tsv))
    dataset = MatchingDataset(TSVFile(str(tsv), None, MatchingDataset.FIELDS), task.tokenizer,
                              **task.common_dataset_args("valid", 1))
    yes, no = (task.tokenizer.encode(word)[0] for word in (YES, NO))
    count = min(rows, len(dataset))
    correct = 0
    for start in range(0, count, batch_size):
        batch = dataset.collater([dataset[i] for i in range(start, min(start + batch_size, count))])
        with torch.no_grad():
            logits = model(**batch["net_input"])[0]
        correct += answers_right(logits, batch["target"], yes, no)
    return 100.0 * correct / count


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m ofa_cn.demo.matching_accuracy CHECKPOINT TSV")
    torch.set_num_threads(1)
    print(f"{matching_accuracy(sys.argv[1], sys.argv[2]):.1f}")
