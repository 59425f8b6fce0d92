#!/usr/bin/env bash
# MUGE caption: score a caption checkpoint on one TSV split with the published generation settings.
#
#   bash scripts/eval_caption.sh CHECKPOINT DATA_TSV OUT_DIR [more scripts/evaluate.py flags]
#   bash scripts/eval_caption.sh checkpoints/caption_cn_base.pt data/muge/caption_valid.tsv results/cap_base
#
# Writes OUT_DIR/predictions.jsonl and OUT_DIR/metrics.json (character-level BLEU-4, ROUGE-L,
# CIDEr-D); scripts/make_tables.py turns metrics.json files into the tables of checkpoints.md.
# A split without captions (MUGE's test split) gets predictions.jsonl and muge_submission.jsonl,
# the file MUGE's leaderboard scores, and no metrics.json.
# Settings of the original generate_caption_cn.sh: its generation flags (written once, as
# CaptionTask.DEFAULT_GENERATION; tests/test_make_tables.py checks that the flags below equal it),
# fp32, 16 images per batch. The TSV is read with the original MUGE column order
# (uniq-id, image-id, caption, objects, image; references joined by "&&"); for 3-column
# "image_id, image, caption" files add: --selected-cols 0,1,2. Flags given after OUT_DIR override
# these (argparse keeps the last one), e.g. --device cpu or --batch-size 4.
# Several GPUs: run it under torchrun instead, with the same flags (see scripts/evaluate.py).
set -euo pipefail

SETTINGS=(--task caption --selected-cols 1,4,2 --batch-size 16 --dtype fp32
          --beam 8 --max-len-a 0 --max-len-b 128 --min-len 1 --no-repeat-ngram-size 3)
source "$(dirname "${BASH_SOURCE[0]}")/_evaluate.sh"
run_evaluate "$@"
