#!/usr/bin/env bash
# RefCOCO-CN / RefCOCO+-CN / RefCOCOg-CN: Acc@0.5 of a grounding checkpoint on one TSV split, with
# the published generation settings.
#
#   bash scripts/eval_refcoco.sh CHECKPOINT DATA_TSV OUT_DIR [more scripts/evaluate.py flags]
#   bash scripts/eval_refcoco.sh checkpoints/refcoco_cn_base.pt data/refcoco_cn/refcoco_val.tsv results/rc_base/val
#
# Writes OUT_DIR/predictions.jsonl and OUT_DIR/metrics.json (acc@0.5, mean_iou); scripts/make_tables.py
# turns metrics.json files into the tables of checkpoints.md. Name the TSVs like the original
# (refcoco_val.tsv, refcocoplus_testA.tsv, refcocog_test.tsv, ...): make_tables.py reads the dataset
# and split from the file name.
# Settings of the original evaluate_refcoco_cn.sh: its generation flags, exactly 4 tokens (written
# once, as RefcocoTask.DEFAULT_GENERATION; tests/test_make_tables.py checks that the flags below equal
# it), 16 expressions per batch. Columns as that script reads them:
# "id, image, text, box" from a file laid out uniq-id, text, box, image (--selected-cols 0,3,1,2);
# for "uniq_id, image, text, box" files add: --selected-cols 0,1,2,3. The original ran in fp16
# (add --dtype fp16 on a GPU to match it); fp32 is the default here so that a CPU can run it.
# Flags given after OUT_DIR override these (argparse keeps the last one).
set -euo pipefail

SETTINGS=(--task refcoco --selected-cols 0,3,1,2 --batch-size 16 --dtype fp32
          --beam 5 --max-len-a 0 --max-len-b 4 --min-len 4 --no-repeat-ngram-size 3)
source "$(dirname "${BASH_SOURCE[0]}")/_evaluate.sh"
run_evaluate "$@"
