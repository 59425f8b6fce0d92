#!/usr/bin/env python
"""Evaluate an OFA-CN checkpoint on a TSV split; writes predictions.jsonl and metrics.json.

A split without references (empty caption / box / text column, as MUGE's test split) gets
predictions.jsonl and, for captions, muge_submission.jsonl for MUGE's leaderboard; no metrics.
metrics.json records the command line that produced it (scripts/make_tables.py shows it).

    python scripts/evaluate.py --checkpoint caption_cn_base.pt --data muge_valid.tsv --out-dir out/muge_base
    torchrun --nproc_per_node 8 scripts/evaluate.py --checkpoint ... --data ... --out-dir ...

Generation defaults are the task's published settings (MUGE: beam 8, max 128, no-repeat 3;
RefCOCO-CN: beam 5, length 4, bins only; OCR: beam 5, max 64); flags override them.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys

import torch

from ofa_cn.checkpoints.formats import CheckpointError
from ofa_cn.apps.evaluate import ScoringError, evaluate
from ofa_cn.checkpoints.loading import TASK_NAMES, parse_task_args
from ofa_cn.train.training_checkpoints import CheckpointReadError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="released .pt, our own checkpoint, or an exported folder")
    p.add_argument("--data", required=True, help="TSV file of the split to evaluate")
    p.add_argument("--out-dir", required=True, help="folder for predictions.jsonl and metrics.json")
    p.add_argument("--task", choices=TASK_NAMES, help="default: the checkpoint's own task")
    p.add_argument("--selected-cols", help="TSV columns in the task's field order (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--beam", type=int)
    p.add_argument("--max-len-a", type=float)
    p.add_argument("--max-len-b", type=int)
    p.add_argument("--min-len", type=int)
    p.add_argument("--no-repeat-ngram-size", type=int)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--dtype", choices=DTYPES, default="fp32")
    p.add_argument("--task-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="override a saved task setting, e.g. max_image_size=512 (repeatable)")
    p.add_argument("--any-task", action="store_true", help="allow a --task the checkpoint was not trained for")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--tokenize", choices=("char", "jieba"),
                   help="caption metrics on characters (MUGE's rule; the default) or on jieba's words")
    p.add_argument("-v", "--verbose", action="store_true", help="on an error, show the full traceback")
    return p.parse_args(argv)


# Bad input a user can fix: the message names the file, row and field (or the option), so one line
# is enough. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError, CheckpointError, CheckpointReadError, ScoringError)
EXIT_BAD_INPUT = 2


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(levelname)s | %(name)s | %(message)s")
    generation = {k: v for k, v in dict(beam=args.beam, max_len_a=args.max_len_a, max_len_b=args.max_len_b,
                                        min_len=args.min_len, no_repeat_ngram_size=args.no_repeat_ngram_size).items()
                  if v is not None}
    try:
        overrides = parse_task_args(args.task_arg)
        metrics = evaluate(args.checkpoint, args.data, args.out_dir, task_name=args.task,
                           selected_cols=args.selected_cols, batch_size=args.batch_size, generation=generation,
                           device=args.device, dtype=DTYPES[args.dtype], progress=not args.no_progress,
                           any_task=args.any_task, tokenize=args.tokenize, **overrides,
                           command=shlex.join(["python", "scripts/evaluate.py",
                                               *(sys.argv[1:] if argv is None else argv)]))
    except USER_ERRORS as e:
        if args.verbose:
            raise
        sys.stderr.write(f"evaluate.py: error: {e} (-v shows the traceback)\n")
        return EXIT_BAD_INPUT
    if metrics is not None:
        print(json.dumps(metrics, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
