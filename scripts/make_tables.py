#!/usr/bin/env python
"""Render result tables from the metrics.json files of scripts/eval_*.sh runs, beside the published numbers.

    python scripts/make_tables.py results/refcoco_cn_base/val results/caption_cn_base/valid ...
    python scripts/make_tables.py --published      # the tables of checkpoints.md

Each argument is a folder holding a metrics.json (written by scripts/evaluate.py) or such a file.
The task is read from the metric keys: caption (bleu4, rouge_l, cider), grounding (acc@0.5) or
OCR (accuracy, ned). A file's split comes from its data file's name, as the original names them
(caption_test.tsv, refcoco_val.tsv, refcocoplus_testA.tsv, refcocog_test.tsv, ...); a grounding
file's dataset too, falling back to the checkpoint's name. Every metric cell reads "this run
(published)", the published number being that of the same checkpoint file name and split in
the original checkpoints_cn.md (``PUBLISHED``), or "–". Rows keep the order of the arguments;
each ends with the exact command recorded in its metrics.json ("–" for files written before
evaluate.py recorded it). A metric recorded as null is shown as "–".

``--published`` prints the published numbers alone, each row with the command that evaluates
that checkpoint at the paths checkpoints.md uses.
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

    out_dir: str  # the folder argument as given
    metrics: dict[str, Any]
    published: bool = False  # a row of PUBLISHED, not of a run

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


# The numbers of the original checkpoints_cn.md: checkpoint file -> split -> metric -> value.
# MUGE's are on its test split, scored by MUGE's leaderboard (references not public).
PUBLISHED: dict[str, dict[str, dict[str, float]]] = {
    "caption_cn_base.pt": {"test": {"bleu4": 26.23, "rouge_l": 58.95, "cider": 50.70}},
    "caption_cn_large.pt": {"test": {"bleu4": 27.32, "rouge_l": 59.20, "cider": 53.51}},
    "refcoco_cn_base.pt": {"val": {"acc@0.5": 82.18}, "testA": {"acc@0.5": 86.07}, "testB": {"acc@0.5": 76.68}},
    "refcocoplus_cn_base.pt": {"val": {"acc@0.5": 69.38}, "testA": {"acc@0.5": 77.26}, "testB": {"acc@0.5": 60.14}},
    "refcocog_cn_base.pt": {"val": {"acc@0.5": 73.57}, "test-u": {"acc@0.5": 72.53}},
    "refcoco_cn_large.pt": {"val": {"acc@0.5": 82.84}, "testA": {"acc@0.5": 86.54}, "testB": {"acc@0.5": 76.50}},
    "refcocoplus_cn_large.pt": {"val": {"acc@0.5": 71.30}, "testA": {"acc@0.5": 78.56}, "testB": {"acc@0.5": 61.85}},
    "refcocog_cn_large.pt": {"val": {"acc@0.5": 71.96}, "test-u": {"acc@0.5": 71.30}},
    "ofa_cn_ocr_base.pt": {"test": {"accuracy": None, "ned": None}},  # none published
    "ofa_cn_ocr_large.pt": {"test": {"accuracy": None, "ned": None}},
}

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


def file_split(result: Result) -> str:
    """'test' from caption_test.tsv / ocr_scene_test.tsv: the part of the data file's stem after its last '_'."""
    return Path(result.data).stem.rsplit("_", 1)[-1]


def split_of(result: Result) -> str:
    return grounding_dataset_and_split(result)[1] if "acc@0.5" in result.metrics else file_split(result)


def cell(result: Result, key: str) -> str:
    """The run's number, then the published one in brackets ("–" for none); published rows: the number alone."""
    if result.published:
        return number(result.metrics, key)
    published = PUBLISHED.get(Path(result.checkpoint).name, {}).get(split_of(result), {})
    return f"{number(result.metrics, key)} ({number(published, key)})"


def command(result: Result) -> str:
    return code(str(result.metrics.get("command", "")))


TABLES = (
    Table("bleu4", "MUGE caption", "eval_caption.sh",
          ("Checkpoint", "Data", "BLEU@4", "ROUGE-L", "CIDEr-D", "Command"),
          lambda r: [name(r.checkpoint), name(r.data), cell(r, "bleu4"), cell(r, "rouge_l"), cell(r, "cider"),
                     command(r)]),
    Table("acc@0.5", "RefCOCO-CN series", "eval_refcoco.sh",
          ("Checkpoint", "Dataset", "Split", "Acc@0.5", "Command"),
          lambda r: [name(r.checkpoint), *grounding_dataset_and_split(r), cell(r, "acc@0.5"), command(r)]),
    Table("accuracy", "Chinese OCR", "eval_ocr.sh",
          ("Checkpoint", "Data", "Accuracy", "NED", "Command"),
          lambda r: [name(r.checkpoint), name(r.data), cell(r, "accuracy"), cell(r, "ned"), command(r)]),
)

# Where checkpoints.md's commands put the data and results of each published split.
_DATA = {"caption": "data/muge/caption_{split}.tsv", "refcoco": "data/refcoco_cn/{dataset}_{split}.tsv",
         "ocr": "data/ocr/ocr_scene_{split}.tsv"}
_OUT = {"caption": "results/{stem}/{split}", "refcoco": "results/{stem}/{split}", "ocr": "results/{stem}/scene_{split}"}


def published_results() -> list[Result]:
    """The published numbers as Results, each with the eval_*.sh command that evaluates it."""
    results = []
    for checkpoint, splits in PUBLISHED.items():
        stem = Path(checkpoint).stem
        kind = "caption" if stem.startswith("caption") else "ocr" if "_ocr_" in stem else "refcoco"
        for split, metrics in splits.items():
            script = next(t.script for t in TABLES if t.key in metrics)
            file_split_name = "test" if split == "test-u" else split  # RefCOCOg's umd test file is *_test.tsv
            data = _DATA[kind].format(split=file_split_name, dataset=stem.split("_cn_")[0])
            out = _OUT[kind].format(stem=stem, split=file_split_name)
            results.append(Result(out, {**metrics, "checkpoint": f"checkpoints/{checkpoint}", "data": data,
                                        "command": f"bash scripts/{script} checkpoints/{checkpoint} {data} {out}"},
                                  published=True))
    return results


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
                                    "scripts/eval_*.sh run (or its metrics.json). A split without references "
                                    "(MUGE's test split) has none: upload its muge_submission.jsonl to MUGE instead")
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
    parser.add_argument("dirs", nargs="*", metavar="DIR",
                        help="OUT_DIR of a scripts/eval_*.sh run, or its metrics.json")
    parser.add_argument("--published", action="store_true",
                        help="print the published numbers (the tables of checkpoints.md) instead")
    args = parser.parse_args(argv)
    if bool(args.dirs) == args.published:
        parser.error("give metrics folders, or --published alone")
    try:
        text = render(published_results() if args.published else load(args.dirs))
    except (OSError, ValueError) as e:
        parser.exit(1, f"make_tables.py: {e}\n")
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
