"""The ``ofa-cn`` command line.

    ofa-cn score caption   --pred P.jsonl --ref R.jsonl
    ofa-cn score grounding --pred P.jsonl --ref R.jsonl [--threshold 0.5]
    ofa-cn score ocr       --pred P.jsonl --ref R.jsonl

Each ``score`` command prints one JSON object on stdout. Bad input (a missing field, bad JSON,
a box that is not 4 numbers, ids that do not match) prints an error naming the file, line and
field on stderr and exits with status 2.

Every command is one ``_run_*`` function registered in ``build_parser`` with
``set_defaults(run=...)``; commands that need the model import it inside their function, so
scoring stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from .jsonl import JsonlError, read_jsonl, rows_by_id
from .metrics import grounding_accuracy, ocr_scores, score_captions

EXIT_BAD_INPUT = 2  # same status argparse uses for a bad command line


def _run_score_caption(args: argparse.Namespace) -> dict[str, Any]:
    preds = rows_by_id(read_jsonl(args.pred), "image_id")
    refs = rows_by_id(read_jsonl(args.ref), "image_id")
    return score_captions(
        {k: row.get_str("caption") for k, row in preds.items()},
        {k: row.get_str_list("captions") for k, row in refs.items()},
    )


def _run_score_grounding(args: argparse.Namespace) -> dict[str, Any]:
    pred_rows = rows_by_id(read_jsonl(args.pred), "uniq_id")
    ref_rows = rows_by_id(read_jsonl(args.ref), "uniq_id")
    preds = {k: row.get_box("box") for k, row in pred_rows.items()}
    refs = {k: row.get_box("box") for k, row in ref_rows.items()}
    # Per-split accuracy when the reference file says which split each box belongs to:
    # either every reference row has a "split" or none does.
    splits: dict[str, list[str]] = {}
    if any("split" in row.data for row in ref_rows.values()):
        for key, row in ref_rows.items():
            splits.setdefault(row.get_str("split"), []).append(key)

    result: dict[str, Any] = grounding_accuracy(preds, refs, args.threshold)
    if splits:
        result["splits"] = {
            name: grounding_accuracy(
                {k: preds[k] for k in keys}, {k: refs[k] for k in keys}, args.threshold
            )
            for name, keys in sorted(splits.items())
        }
    return result


def _run_score_ocr(args: argparse.Namespace) -> dict[str, Any]:
    preds = rows_by_id(read_jsonl(args.pred), "uniq_id")
    refs = rows_by_id(read_jsonl(args.ref), "uniq_id")
    return ocr_scores(
        {k: row.get_str("text") for k, row in preds.items()},
        {k: row.get_str("text") for k, row in refs.items()},
    )


def _add_score_command(
    commands: argparse._SubParsersAction,
    name: str,
    run: Callable[[argparse.Namespace], dict[str, Any]],
    summary: str,
    pred_format: str,
    ref_format: str,
) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=summary, description=summary)
    parser.add_argument(
        "--pred", required=True, metavar="P.jsonl", help=f"predictions: {pred_format}"
    )
    parser.add_argument(
        "--ref", required=True, metavar="R.jsonl", help=f"references: {ref_format}"
    )
    parser.set_defaults(run=run)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The full ``ofa-cn`` argument parser; each leaf command sets ``run`` to its function."""
    parser = argparse.ArgumentParser(prog="ofa-cn", description="OFA-CN tools.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    score = commands.add_parser(
        "score",
        help="score predictions against references (prints one JSON object)",
        description="Score a JSON-lines prediction file against a JSON-lines reference file.",
    )
    metrics = score.add_subparsers(dest="metric", required=True, metavar="TASK")
    _add_score_command(
        metrics,
        "caption",
        _run_score_caption,
        "character-level BLEU-4, ROUGE-L, CIDEr-D (x100) and sacrebleu-zh BLEU",
        '{"image_id": ..., "caption": "..."} per line',
        '{"image_id": ..., "captions": ["...", ...]} per line',
    )
    grounding = _add_score_command(
        metrics,
        "grounding",
        _run_score_grounding,
        "Acc@0.5 and mean IoU of boxes, per split when references have a split field",
        '{"uniq_id": ..., "box": [x0, y0, x1, y1]} per line',
        '{"uniq_id": ..., "box": [x0, y0, x1, y1], "split": "val" (optional)} per line',
    )
    grounding.add_argument(
        "--threshold", type=float, default=0.5, help="IoU needed for a hit (default 0.5)"
    )
    _add_score_command(
        metrics,
        "ocr",
        _run_score_ocr,
        "exact-match accuracy and NED score (x100) after simplified/NFKC/lower-case normalisation",
        '{"uniq_id": ..., "text": "..."} per line',
        '{"uniq_id": ..., "text": "..."} per line',
    )
    return parser


def _fail(args: argparse.Namespace, message: str) -> int:
    command = " ".join(filter(None, ["ofa-cn", args.command, getattr(args, "metric", None)]))
    sys.stderr.write(f"{command}: error: {message}\n")
    return EXIT_BAD_INPUT


def main(argv: list[str] | None = None) -> int:
    """Run ``ofa-cn``; returns the exit status (0, or 2 for bad input).

    Args:
        argv: arguments after the program name; None reads ``sys.argv[1:]``.
    """
    args = build_parser().parse_args(argv)
    try:
        result = args.run(args)
    except JsonlError as e:  # already names the file and line
        return _fail(args, str(e))
    except OSError as e:
        return _fail(args, f"cannot read {e.filename}: {e.strerror}.")
    except ValueError as e:  # from the metrics: about the pair of files, so name both
        files = f" (--pred {args.pred}, --ref {args.ref})" if hasattr(args, "ref") else ""
        return _fail(args, f"{e}{files}")
    sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
