"""The ``ofa-cn`` command line.

    ofa-cn score caption   --pred P.jsonl --ref R.jsonl
    ofa-cn score grounding --pred P.jsonl --ref R.jsonl [--threshold 0.5]
    ofa-cn score ocr       --pred P.jsonl --ref R.jsonl
    ofa-cn caption IMAGE [IMAGE ...] --checkpoint CKPT [--batch-size 8] [--jsonl]
    ofa-cn ground  IMAGE TEXT [IMAGE TEXT ...] --checkpoint CKPT
    ofa-cn ocr     IMAGE [IMAGE ...] --checkpoint CKPT
    ofa-cn convert CKPT OUT [--format safetensors|modelscope|fairseq] [--overwrite]
    ofa-cn prepare muge|refcoco|lmdb|folder ... --out OUT.tsv   (ofa_cn/prepare/cli.py)

Each ``score`` command prints one JSON object on stdout. Bad input (a missing field, bad JSON,
a box that is not 4 numbers, ids that do not match) prints an error naming the file, line and
field on stderr and exits with status 2. An IMAGE is a file, a directory, a glob or a URL; the
model commands answer through ``ofa_cn.apps.inference.Predictor``, batch by batch.

Every command is one ``_run_*`` function registered in ``build_parser`` with
``set_defaults(run=...)``; commands that need the model import it (torch, fairseq) inside their
function, so ``--help`` and scoring start at once. stderr shows warnings and errors only; ``-v``
adds progress messages and tracebacks.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .jsonl import JsonlError, read_jsonl, read_records, rows_by_id
from ..metrics import grounding_accuracy, ocr_scores, score_captions

EXIT_OK = 0
EXIT_FAILED = 1  # anything unexpected while running: a bug, out of memory, a CUDA error
EXIT_BAD_INPUT = 2  # same status argparse uses for a bad command line
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT
EXIT_CODES = """exit status:
  0    success
  1    failed while running (a bug, out of memory, a device error); -v shows the traceback
  2    bad command line or input: a missing or unreadable image or file, an empty directory,
       an unreachable URL, a file that is not a checkpoint, a checkpoint trained for another task
  130  interrupted (Ctrl-C)"""


def _run_score_caption(args: argparse.Namespace) -> dict[str, Any]:
    preds = rows_by_id(read_records(args.pred), "image_id")  # JSON lines or a COCO-style result list
    refs = rows_by_id(read_jsonl(args.ref), "image_id")
    return score_captions(
        {k: row.get_str("caption") for k, row in preds.items()},
        {k: row.get_str_list("captions") for k, row in refs.items()},
        tokenize=args.tokenize,
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


IMAGE_HELP = ("an image file, a directory (its images), a quoted glob such as 'photos/*.jpg', or an http(s) URL")


class UsageError(ValueError):
    """A command-line argument that cannot work; the message names the argument and what was wrong."""


def expand_images(value: str, argument: str = "IMAGE") -> list[str]:
    """One IMAGE argument -> the images it names: a URL or file as is, a directory's image files
    (sorted; subdirectories are not read), or the files a glob matches (sorted).

    Raises:
        UsageError: a missing file, a directory without images, a pattern that matches nothing.
    """
    from .inputs import IMAGE_SUFFIXES, is_url

    if is_url(value):
        return [value]
    path = Path(value)
    if path.is_dir():
        found = sorted(str(p) for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise UsageError(f"argument {argument} {value!r}: a directory with no image files "
                             f"({', '.join(IMAGE_SUFFIXES)})")
        return found
    if path.is_file():
        return [value]
    if glob.has_magic(value):
        found = sorted(p for p in glob.glob(value, recursive=True) if Path(p).is_file())
        if not found:
            raise UsageError(f"argument {argument} {value!r}: the pattern matches no file")
        return found
    raise UsageError(f"argument {argument} {value!r}: no such file or directory")


def _generation(args: argparse.Namespace) -> dict[str, Any]:
    names = ("beam", "max_len_b", "min_len", "no_repeat_ngram_size")
    return {k: getattr(args, k) for k in names if getattr(args, k) is not None}


def _predict(args: argparse.Namespace, command: str, images: list[str], texts: list[str | None]):
    """Check every input, then load the checkpoint; the answers as they come (``Predictor.iter_answers``)."""
    from ..checkpoints.loading import parse_task_args

    task_args = parse_task_args(args.task_arg)
    if not Path(args.checkpoint).exists():
        raise UsageError(f"argument --checkpoint {args.checkpoint!r}: no such file or directory")
    from .inference import Predictor

    predictor = Predictor(args.checkpoint, task=command, device=args.device, dtype=args.dtype,
                          exif=not args.no_exif, any_task=args.any_task, task_args=task_args)
    return predictor.iter_answers(command, images, texts, batch_size=args.batch_size, return_scores=args.scores,
                                  names=images, **_generation(args))


def _row(args: argparse.Namespace, key: str, image: str, text: str | None, answer: Any) -> dict[str, Any]:
    value, score = (answer[key], answer["score"]) if args.scores else (answer, None)
    if key == "box":
        from ..tasks.grounding import BOX_DECIMALS  # as in evaluation's predictions.jsonl

        value = [round(v, BOX_DECIMALS) for v in value]
    row = {"image": image, **({"text": text} if text is not None else {}), key: value}
    return row if score is None else {**row, "score": score}


def _format(args: argparse.Namespace, row: dict[str, Any], key: str) -> str:
    """One line: JSON (--jsonl) or ``IMAGE<TAB>answer[<TAB>score]``."""
    if args.jsonl:
        return json.dumps(row, ensure_ascii=False)
    value = ",".join(f"{v:g}" for v in row[key]) if key == "box" else row[key]
    score = f"\t{row['score']:.4f}" if "score" in row else ""
    return f"{row['image']}\t{value}{score}"


def _answer_rows(args, command: str, key: str, images: list[str], texts: list[str | None]) -> None:
    """Print each image's answer as soon as its batch is done (--json: one object at the end)."""
    from .inputs import ImageInputError

    rows = []
    try:
        for image, text, answer in zip(images, texts, _predict(args, command, images, texts)):
            rows.append(_row(args, key, image, text, answer))
            if not args.json:
                sys.stdout.write(_format(args, rows[-1], key) + "\n")
                sys.stdout.flush()
    except ImageInputError as e:  # names the image; say which argument it came from
        raise UsageError(f"argument IMAGE: {e}") from None
    if args.json:
        sys.stdout.write(json.dumps({"results": rows}, ensure_ascii=False) + "\n")


def _run_caption(args: argparse.Namespace) -> None:
    images = [p for value in args.images for p in expand_images(value)]
    _answer_rows(args, "caption", "caption", images, [None] * len(images))


def _run_ground(args: argparse.Namespace) -> None:
    if len(args.pairs) % 2:
        raise UsageError(f"ground takes IMAGE TEXT pairs; the last image, {args.pairs[-1]!r}, has no expression")
    images, texts = [], []
    for value, text in zip(args.pairs[0::2], args.pairs[1::2]):
        found = expand_images(value)
        images += found
        texts += [text] * len(found)
    _answer_rows(args, "ground", "box", images, texts)


def _run_ocr(args: argparse.Namespace) -> None:
    images = [p for value in args.images for p in expand_images(value)]
    _answer_rows(args, "ocr", "text", images, [None] * len(images))


def _run_convert(args: argparse.Namespace) -> dict[str, Any]:
    from ..checkpoints.formats import convert_checkpoint

    out = convert_checkpoint(args.checkpoint_in, args.out_dir, args.format, overwrite=args.overwrite)
    return {"exported": str(out)}


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text}")
    return value


def _add_model_command(commands, name: str, run, summary: str, positional: str, help_: str, metavar: str):
    parser = commands.add_parser(name, help=summary, description=summary, epilog=EXIT_CODES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(positional, nargs="+", help=help_, metavar=metavar)
    parser.add_argument("--checkpoint", required=True, help="released .pt, our checkpoint or an exported folder")
    parser.add_argument("--batch-size", type=_positive_int, default=8, help="images per forward pass (default 8)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "fp32", "bfloat16", "bf16"],
                        help="float32 (default) or bfloat16")
    parser.add_argument("--beam", type=int, help="beam size (default: the task's published setting)")
    parser.add_argument("--max-len-b", type=int, help="most tokens generated")
    parser.add_argument("--min-len", type=int, help="fewest tokens generated")
    parser.add_argument("--no-repeat-ngram-size", type=int, help="block repeated n-grams of this size")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help='print one JSON object {"results": [...]}')
    output.add_argument("--jsonl", action="store_true", help="print one JSON object per image, one a line")
    parser.add_argument("--scores", action="store_true", help="add each answer's score (mean log-probability)")
    parser.add_argument("--no-exif", action="store_true",
                        help="ignore the EXIF orientation of photos (by default they are turned upright)")
    parser.add_argument("--any-task", action="store_true", help="allow a checkpoint trained for another task")
    parser.add_argument("--task-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="override a saved task setting, e.g. max_image_size=512 (repeatable)")
    _add_verbose(parser)
    parser.set_defaults(run=run)
    return parser


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="-v: progress messages and tracebacks of errors; -vv: debug messages")


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
    _add_verbose(parser)
    parser.set_defaults(run=run)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The full ``ofa-cn`` argument parser; each leaf command sets ``run`` to its function."""
    parser = argparse.ArgumentParser(prog="ofa-cn", description="OFA-CN tools.", epilog=EXIT_CODES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    score = commands.add_parser(
        "score",
        help="score predictions against references (prints one JSON object)",
        description="Score a JSON-lines prediction file against a JSON-lines reference file.",
    )
    metrics = score.add_subparsers(dest="metric", required=True, metavar="TASK")
    caption = _add_score_command(
        metrics,
        "caption",
        _run_score_caption,
        "character-level BLEU-4, ROUGE-L, CIDEr-D (x100) and sacrebleu-zh BLEU",
        '{"image_id": ..., "caption": "..."} per line, or a COCO-style list [{"image_id": ..., "caption": ...}]',
        '{"image_id": ..., "captions": ["...", ...]} per line',
    )
    caption.add_argument("--tokenize", choices=("char", "jieba"), default="char",
                         help="char: MUGE's rule, characters with ASCII letter/digit runs whole (default; what the "
                              "published MUGE numbers use); jieba: jieba's words")
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
    _add_model_command(commands, "caption", _run_caption, "caption images in Chinese", "images", IMAGE_HELP, "IMAGE")
    _add_model_command(commands, "ground", _run_ground, "find the region an expression describes; prints x0,y0,x1,y1 "
                       "in the image's pixels", "pairs", f"IMAGE TEXT pairs; IMAGE: {IMAGE_HELP} (the TEXT is used "
                       "for each of its images)", "IMAGE TEXT")
    _add_model_command(commands, "ocr", _run_ocr, "read the text in images of a text line", "images", IMAGE_HELP,
                       "IMAGE")
    convert = commands.add_parser("convert", help="rewrite a checkpoint (.pt, exported or ModelScope folder) in "
                                  "another format")
    convert.add_argument("checkpoint_in", metavar="CKPT")
    convert.add_argument("out_dir", metavar="OUT")
    convert.add_argument("--format", default="safetensors", choices=("safetensors", "modelscope", "fairseq"),
                         help="safetensors: our folder (default); modelscope: a ModelScope OFA folder; "
                              "fairseq: a .pt for fairseq-train --restore-file")
    convert.add_argument("--overwrite", action="store_true", help="replace the files of a non-empty OUT")
    _add_verbose(convert)
    convert.set_defaults(run=_run_convert)
    from ..prepare.cli import add_prepare_command  # ofa-cn prepare muge|refcoco|lmdb|folder (ofa_cn/prepare/)

    add_prepare_command(commands)
    return parser


def _fail(args: argparse.Namespace, message: str, status: int = EXIT_BAD_INPUT) -> int:
    command = " ".join(filter(None, ["ofa-cn", args.command, getattr(args, "metric", None)]))
    if getattr(args, "verbose", 0):
        traceback.print_exc(file=sys.stderr)
    sys.stderr.write(f"{command}: error: {message}\n")
    return status


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes (tests swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _configure_logging(verbosity: int) -> Callable[[], None]:
    """Warnings and errors only by default (fairseq's import-time notices and PIL's debug lines are
    below that); -v: INFO; -vv: DEBUG. Returns the function that undoes it (``main`` is called
    in-process by tests and scripts)."""
    root = logging.getLogger()
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    previous = root.level
    # Installed before fairseq is imported: its text_to_speech module calls logging.basicConfig,
    # which does nothing once the root logger has a handler.
    root.addHandler(handler)
    root.setLevel({0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG))
    catcher = warnings.catch_warnings()
    catcher.__enter__()
    if verbosity == 0:
        for category in (DeprecationWarning, FutureWarning, UserWarning):
            warnings.simplefilter("ignore", category)

    def undo() -> None:
        catcher.__exit__(None, None, None)
        root.removeHandler(handler)
        root.setLevel(previous)

    return undo


def main(argv: list[str] | None = None) -> int:
    """Run ``ofa-cn``; returns the exit status (``EXIT_CODES``).

    Args:
        argv: arguments after the program name; None reads ``sys.argv[1:]``.
    """
    args = build_parser().parse_args(argv)
    undo_logging = _configure_logging(getattr(args, "verbose", 0))
    try:
        result = args.run(args)
    except KeyboardInterrupt:
        return _fail(args, "interrupted", EXIT_INTERRUPTED)
    except JsonlError as e:  # already names the file and line
        return _fail(args, str(e))
    except FileNotFoundError as e:
        return _fail(args, str(e) if not e.filename else f"cannot read {e.filename}: {e.strerror}.")
    except OSError as e:
        return _fail(args, f"cannot read {e.filename}: {e.strerror}." if e.filename else f"{type(e).__name__}: {e}")
    except ValueError as e:  # bad input: from the metrics, an image, an argument, a checkpoint's task
        files = f" (--pred {args.pred}, --ref {args.ref})" if hasattr(args, "ref") else ""
        return _fail(args, f"{e}{files}")
    except Exception as e:  # noqa: BLE001 - anything else is reported in one line, with its type
        from ..checkpoints.formats import CheckpointError

        if isinstance(e, CheckpointError):  # a refused or mismatched checkpoint: bad input
            return _fail(args, f"argument --checkpoint: {e}" if hasattr(args, "checkpoint") else str(e))
        hint = "" if getattr(args, "verbose", 0) else " (run with -v for the traceback)"
        return _fail(args, f"{type(e).__name__}: {e}{hint}", EXIT_FAILED)
    finally:
        undo_logging()
    if result is not None:
        sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
