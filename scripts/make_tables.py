#!/usr/bin/env python
"""Render the result tables of checkpoints.md from the metrics.json files of scripts/eval_*.sh runs.

    python scripts/make_tables.py results/caption_cn_base/test results/refcoco_cn_base/val ...

Each argument is a folder holding a metrics.json (written by scripts/evaluate.py) or such a file.
The task is read from the metric keys: caption (bleu4, rouge_l, cider), grounding (acc@0.5) or
OCR (accuracy, ned). A grounding file's dataset and split come from its data file's name, as the
original names them (refcoco_val.tsv, refcocoplus_testA.tsv, refcocog_test.tsv, ...), falling back
to the checkpoint's name for the dataset. Rows keep the order of the arguments; each row ends with
the command that reproduces it. A metric recorded as null is shown as "–".
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

MISSING = "–"


@dataclass
class Result:
    """One metrics.json: where it was written, and what it says."""

    out_dir: str  # the folder argument as given (it appears in the command column)
    metrics: dict[str, Any]

    @property
    def checkpoint(self) -> str:
        return str(self.metrics.get("checkpoint", ""))

    @property
    def data(self) -> str:
        return str(self.metrics.get("data", ""))


@dataclass(frozen=True)
class Table:
    """A section of checkpoints.md: which metrics.json files belong to it and how a row reads."""

    key: str  # the metric key that identifies the task
    heading: str
    script: str
    columns: tuple[str, ...]
    row: Callable[[Result], list[str]]


def number(metrics: dict[str, Any], key: str) -> str:
    value = metrics.get(key)
    return MISSING if value is None else f"{float(value):.2f}"


def code(text: str) -> str:
    return f"`{text}`" if text else MISSING


def name(path: str) -> str:
    return code(Path(path).name)


# Dataset prefix of the original TSV and checkpoint names -> the name in the published table.
DATASETS = {"refcoco": "RefCOCO-CN", "refcocoplus": "RefCOCO+-CN", "refcocog": "RefCOCOg-CN"}
SPLITS = {"val": "val", "testa": "testA", "testb": "testB", "test": "test"}
_DATASET_PREFIX = re.compile(r"^(refcocoplus|refcocog|refcoco)(?:_cn)?(?:[_-](.*))?$", re.IGNORECASE)


def grounding_dataset_and_split(result: Result) -> tuple[str, str]:
    """('RefCOCOg-CN', 'test-u') from data/refcocog_test.tsv; unknown parts are '–' / the file stem."""
    stem = Path(result.data).stem
    data_match = _DATASET_PREFIX.match(stem)
    ckpt_match = _DATASET_PREFIX.match(Path(result.checkpoint).stem)
    prefix = (data_match or ckpt_match).group(1).lower() if (data_match or ckpt_match) else None
    dataset = DATASETS.get(prefix, MISSING)
    raw_split = data_match.group(2) if data_match and data_match.group(2) else stem
    split = SPLITS.get(raw_split.lower(), raw_split)
    if prefix == "refcocog" and split == "test":
        split = "test-u"  # RefCOCOg's umd test split, as the published table calls it
    return dataset, split


def command(script: str, result: Result) -> str:
    return code(f"bash scripts/{script} {result.checkpoint} {result.data} {result.out_dir}")


TABLES = (
    Table("bleu4", "MUGE caption", "eval_caption.sh",
          ("Checkpoint", "Data", "BLEU@4", "ROUGE-L", "CIDEr-D", "Command"),
          lambda r: [name(r.checkpoint), name(r.data), number(r.metrics, "bleu4"), number(r.metrics, "rouge_l"),
                     number(r.metrics, "cider"), command("eval_caption.sh", r)]),
    Table("acc@0.5", "RefCOCO-CN series", "eval_refcoco.sh",
          ("Checkpoint", "Dataset", "Split", "Acc@0.5", "Command"),
          lambda r: [name(r.checkpoint), *grounding_dataset_and_split(r), number(r.metrics, "acc@0.5"),
                     command("eval_refcoco.sh", r)]),
    Table("accuracy", "Chinese OCR", "eval_ocr.sh",
          ("Checkpoint", "Data", "Accuracy", "NED", "Command"),
          lambda r: [name(r.checkpoint), name(r.data), number(r.metrics, "accuracy"), number(r.metrics, "ned"),
                     command("eval_ocr.sh", r)]),
)


def load(arguments: list[str]) -> list[Result]:
    """A Result per argument (a folder with metrics.json, or the file itself)."""
    results = []
    for argument in arguments:
        path = Path(argument)
        out_dir = argument
        if path.is_dir():
            path = path / "metrics.json"
        else:
            out_dir = str(path.parent)
        if not path.is_file():
            raise FileNotFoundError(f"{argument}: no metrics.json there; expected the OUT_DIR of a "
                                    "scripts/eval_*.sh run (or its metrics.json)")
        metrics = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(metrics, dict):
            raise ValueError(f"{path}: expected a JSON object as scripts/evaluate.py writes, found "
                             f"{type(metrics).__name__}")
        results.append(Result(out_dir.rstrip("/"), metrics))
    return results


def table_of(result: Result) -> Table:
    for table in TABLES:
        if table.key in result.metrics:
            return table
    keys = ", ".join(t.key for t in TABLES)
    raise ValueError(f"{result.out_dir}/metrics.json has none of the metric keys {keys} "
                     f"(found {sorted(result.metrics)}); was it written by scripts/evaluate.py?")


def render(results: list[Result]) -> str:
    """Markdown: one section per task present, rows in the order given."""
    sections = []
    for table in TABLES:
        rows = [table.row(r) for r in results if table_of(r) is table]
        if not rows:
            continue
        lines = [f"### {table.heading}", "",
                 "| " + " | ".join(table.columns) + " |",
                 "|" + "---|" * len(table.columns)]
        lines += ["| " + " | ".join(cells) + " |" for cells in rows]
        sections.append("\n".join(lines) + "\n")
    return "\n".join(sections)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", metavar="DIR",
                        help="OUT_DIR of a scripts/eval_*.sh run, or its metrics.json")
    args = parser.parse_args(argv)
    try:
        text = render(load(args.dirs))
    except (OSError, ValueError) as e:
        parser.exit(1, f"make_tables.py: {e}\n")
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
