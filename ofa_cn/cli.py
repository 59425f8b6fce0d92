"""The ``ofa-cn`` command line.

    ofa-cn score caption   --pred P.jsonl --ref R.jsonl
    ofa-cn score grounding --pred P.jsonl --ref R.jsonl [--threshold 0.5]
    ofa-cn score ocr       --pred P.jsonl --ref R.jsonl
    ofa-cn caption IMAGE [IMAGE ...] --checkpoint CKPT
    ofa-cn ground  IMAGE TEXT [IMAGE TEXT ...] --checkpoint CKPT
    ofa-cn ocr     IMAGE [IMAGE ...] --checkpoint CKPT
    ofa-cn convert CKPT OUT [--format safetensors|modelscope|fairseq]

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


def _generation(args: argparse.Namespace) -> dict[str, Any]:
    names = ("beam", "max_len_b", "min_len", "no_repeat_ngram_size")
    return {k: getattr(args, k) for k in names if getattr(args, k) is not None}


def _print_rows(args: argparse.Namespace, rows: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    if args.json:
        return {"results": rows}
    for row in rows:
        value = row[key]
        shown = ",".join(f"{v:.1f}" for v in value) if key == "box" else value
        sys.stdout.write(f"{row['image']}\t{shown}\n")
    return None


def _predictor(args: argparse.Namespace):
    from .evaluate import parse_task_args
    from .inference import Predictor

    return Predictor(args.checkpoint, device=args.device, any_task=args.any_task,
                     task_args=parse_task_args(args.task_arg))


def _run_caption(args: argparse.Namespace) -> dict[str, Any] | None:
    captions = _predictor(args).caption(args.images, **_generation(args))
    return _print_rows(args, [{"image": i, "caption": c} for i, c in zip(args.images, captions)], "caption")


def _run_ground(args: argparse.Namespace) -> dict[str, Any] | None:
    if len(args.pairs) % 2:
        raise ValueError("ground takes IMAGE TEXT pairs; the last image has no expression")
    images, texts = args.pairs[0::2], args.pairs[1::2]
    boxes = _predictor(args).ground(images, texts, **_generation(args))
    rows = [{"image": i, "text": t, "box": [round(v, 2) for v in b]} for i, t, b in zip(images, texts, boxes)]
    return _print_rows(args, rows, "box")


def _run_ocr(args: argparse.Namespace) -> dict[str, Any] | None:
    texts = _predictor(args).ocr(args.images, **_generation(args))
    return _print_rows(args, [{"image": i, "text": t} for i, t in zip(args.images, texts)], "text")


def _run_convert(args: argparse.Namespace) -> dict[str, Any]:
    from .checkpoint import convert_checkpoint

    out = convert_checkpoint(args.checkpoint_in, args.out_dir, args.format)
    return {"exported": str(out)}


def _add_model_command(commands, name: str, run, summary: str, positional: str, help_: str):
    parser = commands.add_parser(name, help=summary, description=summary)
    parser.add_argument(positional, nargs="+", help=help_)
    parser.add_argument("--checkpoint", required=True, help="released .pt, our checkpoint or an exported folder")
    parser.add_argument("--beam", type=int)
    parser.add_argument("--max-len-b", type=int)
    parser.add_argument("--min-len", type=int)
    parser.add_argument("--no-repeat-ngram-size", type=int)
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    parser.add_argument("--any-task", action="store_true", help="allow a checkpoint trained for another task")
    parser.add_argument("--task-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="override a saved task setting, e.g. max_image_size=512 (repeatable)")
    parser.set_defaults(run=run)
    return parser


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
    _add_model_command(commands, "caption", _run_caption, "caption images in Chinese", "images", "image files")
    _add_model_command(commands, "ground", _run_ground, "find the region an expression describes; prints x0,y0,x1,y1 "
                       "in the image's pixels", "pairs", "IMAGE TEXT pairs")
    _add_model_command(commands, "ocr", _run_ocr, "read the text in images of a text line", "images", "image files")
    convert = commands.add_parser("convert", help="rewrite a checkpoint (.pt, exported or ModelScope folder) in "
                                  "another format")
    convert.add_argument("checkpoint_in", metavar="CKPT")
    convert.add_argument("out_dir", metavar="OUT")
    convert.add_argument("--format", default="safetensors", choices=("safetensors", "modelscope", "fairseq"),
                         help="safetensors: our folder (default); modelscope: a ModelScope OFA folder; "
                              "fairseq: a .pt for fairseq-train --restore-file")
    convert.set_defaults(run=_run_convert)
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
    except FileNotFoundError as e:
        return _fail(args, str(e) if not e.filename else f"cannot read {e.filename}: {e.strerror}.")
    except OSError as e:
        return _fail(args, f"cannot read {e.filename}: {e.strerror}.")
    except RuntimeError as e:  # CheckpointError: a refused or mismatched checkpoint
        return _fail(args, str(e))
    except ValueError as e:  # from the metrics: about the pair of files, so name both
        files = f" (--pred {args.pred}, --ref {args.ref})" if hasattr(args, "ref") else ""
        return _fail(args, f"{e}{files}")
    if result is not None:
        sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
