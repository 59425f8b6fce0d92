"""Splits without references (MUGE's test split): predictions only, and MUGE's submission file.

The datasets build a training target for every row, so a row without a reference cannot become a
sample. When the first row of a split has an empty reference column (caption, box or OCR text),
``evaluate`` reads the split through ``PlaceholderReferences``: each row's empty reference is
replaced by a fixed placeholder that only fills the target slot and is never scored. The
predictions are written without references and no metrics are computed. A split has references
in every row or in none: a reference in a later row of such a split is an error.

MUGE's caption leaderboard takes a JSON-lines file, one ``{"image_id": ..., "text": "caption"}``
per test image (MUGE's ECommerce-IC task description on Tianchi; ``write_muge_submission``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..data.errors import DataError
from ..data.tsv import TSVFile

logger = logging.getLogger(__name__)

# task name -> the field that holds the reference, and what stands in for it when it is empty
REFERENCE_FIELD = {"caption": "caption", "refcoco": "box", "ocr": "text"}
PLACEHOLDER = {"caption": "无", "box": "0,0,1,1", "text": "无"}  # 无 = "none"; the box fits any image
MUGE_SUBMISSION = "muge_submission.jsonl"


def lacks_references(tsv: TSVFile, task_name: str) -> bool:
    """True when row 0's reference column is empty (a broken row 0 counts as having one: the
    dataset then reports it)."""
    try:
        return not tsv[0][REFERENCE_FIELD[task_name]].strip()
    except DataError:
        return False


class PlaceholderReferences:
    """A TSVFile whose empty reference fields read as ``PLACEHOLDER``; a filled one is a DataError.

    Args:
        tsv: the split's rows.
        task_name: "caption", "refcoco" or "ocr".
    """

    def __init__(self, tsv: TSVFile, task_name: str):
        self.tsv = tsv
        self.field = REFERENCE_FIELD[task_name]
        self.path, self.field_names, self.columns = tsv.path, tsv.field_names, tsv.columns
        self.num_fields, self.other_rows = tsv.num_fields, tsv.other_rows  # rows of another field count

    def check_field_count(self, row: int) -> None:
        self.tsv.check_field_count(row)

    def __len__(self) -> int:
        return len(self.tsv)

    def where(self, row: int, field: str | None = None) -> str:
        return self.tsv.where(row, field)

    def __getitem__(self, row: int) -> dict[str, str]:
        fields = self.tsv[row]
        if fields[self.field].strip():
            raise DataError(
                self.where(row, self.field),
                f"expected an empty {self.field} like row 0 (this split is read as one without references, "
                f"whose predictions are not scored), found {fields[self.field][:80]!r}. Give every row of the "
                "split its reference, or none.")
        fields[self.field] = PLACEHOLDER[self.field]
        return fields

    def close(self) -> None:
        self.tsv.close()


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_muge_submission(rows: list[dict[str, Any]], path: Path) -> None:
    """Caption prediction rows -> MUGE's submission lines ``{"image_id": ..., "text": ...}``.

    Ids made of digits are written as JSON numbers, others as strings. *[unverified]* whether
    MUGE's server compares ids as numbers; its files' ids are the ones our TSV kept.
    """
    write_jsonl(path, [{"image_id": int(r["image_id"]) if str(r["image_id"]).isdigit() else r["image_id"],
                        "text": r["caption"]} for r in rows])


def write_predictions_only(rows: list[dict[str, Any]], out_dir: Path, task_name: str,
                           info: dict[str, Any]) -> dict[str, Any]:
    """predictions.jsonl (and MUGE's submission file for captions) without metrics; returns what was written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    public = [{k: v for k, v in row.items() if k not in ("reference", "references")} for row in rows]
    write_jsonl(out_dir / "predictions.jsonl", public)
    written = {**info, "references": False, "count": len(rows), "predictions": str(out_dir / "predictions.jsonl")}
    if task_name == "caption":
        write_muge_submission(public, out_dir / MUGE_SUBMISSION)
        written["submission"] = str(out_dir / MUGE_SUBMISSION)
    logger.info("%s has no references (its %s column is empty): wrote %d predictions to %s and no metrics%s",
                info.get("data"), REFERENCE_FIELD[task_name], len(rows), written["predictions"],
                f"; MUGE leaderboard file: {written['submission']}" if "submission" in written else "")
    return written
