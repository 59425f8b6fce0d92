#!/usr/bin/env bash
# Chinese OCR: exact-match accuracy (and NED) of an OCR checkpoint on one TSV split, with the
# published generation settings.
#
#   bash scripts/eval_ocr.sh CHECKPOINT DATA_TSV OUT_DIR [more scripts/evaluate.py flags]
#   bash scripts/eval_ocr.sh checkpoints/ofa_cn_ocr_base.pt data/ocr/ocr_scene_test.tsv results/ocr_base
#
# Writes OUT_DIR/predictions.jsonl and OUT_DIR/metrics.json (accuracy, ned); scripts/make_tables.py
# turns metrics.json files into the tables of checkpoints.md.
# Settings of the original evaluate_ocr.sh / evaluate_ocr_base.sh: its generation flags (written once,
# as OCRTask.DEFAULT_GENERATION; tests/test_make_tables.py checks that the flags below equal it);
# columns uniq-id, image, text (--selected-cols 0,1,2).
# The original ran in fp16 (add --dtype fp16 on a GPU to match it) and padded each image at a random
# offset; ofa_cn centres it, so results are deterministic. Flags given after OUT_DIR override these
# (argparse keeps the last one).
set -euo pipefail

SETTINGS=(--task ocr --selected-cols 0,1,2 --batch-size 16 --dtype fp32
          --beam 5 --max-len-a 0 --max-len-b 64 --min-len 1 --no-repeat-ngram-size 0)
source "$(dirname "${BASH_SOURCE[0]}")/_evaluate.sh"
run_evaluate "$@"
