"""The ``ofa-cn prepare`` sub-commands: flags, and a call into the source's ``prepare`` function.

    ofa-cn prepare muge    --captions X.jsonl --images X.tsv --out OUT.tsv [--one-row-per-caption]
    ofa-cn prepare refcoco --refs "refs(unc).p" --instances instances.json --images DIR \\
                           --translations ZH.jsonl --split val --out OUT.tsv [--strict]
    ofa-cn prepare lmdb    --lmdb DIR --out OUT.tsv
    ofa-cn prepare folder  --images DIR --labels L.jsonl --task caption|refcoco|ocr --out OUT.tsv

Each prints its report (rows written, records skipped by reason with examples) on stderr, writes
it to OUT.report.json, prints a one-line JSON summary on stdout, and exits with status 2 when no
row was written.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _finish(report) -> dict[str, Any]:
    sys.stderr.write("\n".join(report.lines()) + "\n")
    return {"written": report.written, "skipped": sum(report.skipped.values()), "out": report.out}


def _run(args: argparse.Namespace) -> dict[str, Any]:
    from .common import NoRowsWritten

    show = not args.no_progress
    try:
        if args.source == "muge":
            from .muge import prepare
            report = prepare(args.captions, args.images, args.out, args.one_row_per_caption, show)
        elif args.source == "refcoco":
            from .refcoco import prepare
            report = prepare(args.refs, args.instances, args.images, args.translations, args.split, args.out,
                             args.strict, show)
        elif args.source == "lmdb":
            from .lmdb import prepare
            report = prepare(args.lmdb, args.out, show)
        else:
            from .folder import prepare
            report = prepare(args.images, args.labels, args.task, args.out, show)
    except NoRowsWritten as e:
        _finish(e.report)  # the reasons, before the error line
        raise
    return _finish(report)


def add_prepare_command(commands: argparse._SubParsersAction) -> None:
    """Register ``prepare`` and its four sources under the top-level ``ofa-cn`` commands."""
    prepare = commands.add_parser("prepare", help="convert a raw dataset to the TSV a task reads",
                                  description="Convert a raw dataset to the TSV a task reads (see the README's "
                                              "data layout section).")
    sources = prepare.add_subparsers(dest="source", required=True, metavar="SOURCE")

    def source(name: str, summary: str) -> argparse.ArgumentParser:
        parser = sources.add_parser(name, help=summary, description=summary)
        parser.add_argument("--out", required=True, metavar="OUT.tsv",
                            help="the TSV to write (its report goes to OUT.report.json)")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")
        parser.set_defaults(run=_run)
        return parser

    muge = source("muge", "MUGE captions (ECommerce-IC): captions JSONL + image TSV -> caption TSV")
    muge.add_argument("--captions", required=True, metavar="X.jsonl",
                      help='{"image_id": ..., "text": ["caption", ...]} per line (no text in the test split)')
    muge.add_argument("--images", required=True, metavar="X.tsv", help="image_id<TAB>base64 image per line")
    muge.add_argument("--one-row-per-caption", action="store_true",
                      help="one row per caption (training files); default: one row per image, references joined "
                           "with && (evaluation files)")

    refcoco = source("refcoco", "RefCOCO/+/g in the refer toolkit's layout + Chinese translations -> grounding TSV")
    refcoco.add_argument("--refs", required=True, metavar="refs(unc).p", help="the refer toolkit's refs pickle")
    refcoco.add_argument("--instances", required=True, metavar="instances.json", help="COCO instances (bbox x,y,w,h)")
    refcoco.add_argument("--images", required=True, metavar="DIR", help="the COCO train2014 image folder")
    refcoco.add_argument("--translations", required=True, metavar="ZH.jsonl",
                         help='{"sent_id": ..., "sent": "Chinese expression"} per line')
    refcoco.add_argument("--split", required=True, help="the refs' split to convert: train, val, testA, testB, test")
    refcoco.add_argument("--strict", action="store_true", help="an expression without a translation is an error")

    lmdb = source("lmdb", "a text-recognition LMDB (num-samples, image-%%09d, label-%%09d) -> OCR TSV")
    lmdb.add_argument("--lmdb", required=True, metavar="DIR", help="the folder holding data.mdb")

    folder = source("folder", "your own images + a JSON-lines label file -> the TSV of one task")
    folder.add_argument("--images", required=True, metavar="DIR", help="the folder the label paths start in")
    folder.add_argument("--labels", required=True, metavar="L.jsonl",
                        help='{"image": "rel/path.jpg", "caption" | "text" | "expression" + "box": ...} per line')
    folder.add_argument("--task", required=True, choices=("caption", "refcoco", "ocr"))
