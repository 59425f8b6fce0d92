#!/usr/bin/env python
"""Build the character-level CIDEr-D document-frequency cache that SCST rewards use.

    python scripts/build_cider_df.py --refs muge_train.tsv --out muge_train_df.json
    python scripts/build_cider_df.py --refs refs.jsonl --out df.json

Input: a caption TSV (columns image id, image, caption; references joined by ``&&``) read row by
row without decoding images, or a JSON-lines file of ``{"image_id": ..., "captions": [...]}``.
Rows with the same image id are one document (caption TSVs often have one row per caption).
References are cleaned like the caption dataset's (ASCII punctuation removed) and split into
characters. Output JSON: ``{"document_frequency": {"一 个": 12, ...}, "ref_len": log(images),
"num_images": images}``; pass it as ``criterion.scst_cider_cached_tokens``.
"""

from __future__ import annotations

import argparse
import logging
from collections import defaultdict
from pathlib import Path

from ofa_cn.data.caption import REFERENCE_SEPARATOR, clean_caption
from ofa_cn.data.tsv import TSVFile
from ofa_cn.apps.jsonl import read_jsonl
from ofa_cn.metrics.caption import char_tokens
from ofa_cn.metrics.cider import build_document_frequency
from ofa_cn.train.scst import save_document_frequency

logger = logging.getLogger("build_cider_df")


def read_references(path: str, selected_cols: str | None = None) -> dict[str, list[str]]:
    """image id -> its raw reference captions, from a caption TSV or a refs JSONL (by suffix)."""
    refs: dict[str, list[str]] = defaultdict(list)
    if Path(path).suffix.lower() in (".jsonl", ".json"):
        for row in read_jsonl(path):
            refs[row.get_id("image_id")].extend(row.get_str_list("captions"))
    else:
        tsv = TSVFile(path, selected_cols, ("image_id", "image", "caption"))
        for i in range(len(tsv)):
            row = tsv[i]
            refs[row["image_id"]].extend(row["caption"].split(REFERENCE_SEPARATOR))
        tsv.close()
    return refs


def reference_corpus(raw: dict[str, list[str]]) -> list[list[str]]:
    """Per image, its cleaned, character-tokenised references; empty ones are dropped."""
    corpus, empty = [], 0
    for captions in raw.values():
        tokens = [char_tokens(clean_caption(c)) for c in captions]
        empty += sum(1 for t in tokens if not t)
        tokens = [t for t in tokens if t]
        if tokens:
            corpus.append(tokens)
    if empty:
        logger.warning("%d empty references (after removing ASCII punctuation) were skipped", empty)
    return corpus


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--refs", required=True, help="caption TSV (id, image, '&&'-joined captions) or refs .jsonl")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--selected-cols", default=None,
                   help="TSV columns of image id, image and caption (default '0,1,2'); ignored for JSONL")
    args = p.parse_args(argv)
    corpus = reference_corpus(read_references(args.refs, args.selected_cols))
    if not corpus:
        raise SystemExit(f"{args.refs}: no non-empty references; expected at least one captioned image")
    df, ref_len = build_document_frequency(corpus)
    save_document_frequency(args.out, df, ref_len, len(corpus))
    logger.info("%s: %d images, %d n-grams -> %s", args.refs, len(corpus), len(df), args.out)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(levelname)s | %(name)s | %(message)s")
    raise SystemExit(main())
