"""Reading JSON-lines files with errors that name the file, the line and the field.

Used by the command line (``cli.py``) for prediction and reference files: one JSON object per
line, blank lines ignored.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class JsonlError(ValueError):
    """Bad input in a JSON-lines file; the message starts with "path:line:"."""


@dataclass(frozen=True)
class JsonlRow:
    """One JSON object of a JSON-lines file and where it came from."""

    path: str
    line: int  # 1-based line number in the file (item number in a JSON array)
    data: dict[str, Any]
    in_array: bool = False  # read from a JSON array (COCO-style results), not JSON lines

    def error(self, field: str, message: str) -> JsonlError:
        """A JsonlError for ``field`` of this row."""
        where = f"item {self.line}" if self.in_array else self.line
        return JsonlError(f"{self.path}:{where}: field {field!r}: {message}")

    def _get(self, field: str, expected: str) -> Any:
        if field not in self.data:
            found = ", ".join(repr(k) for k in self.data) or "none"
            raise self.error(field, f"missing; expected {expected}. Fields found: {found}.")
        return self.data[field]

    def get_id(self, field: str) -> str:
        """An id given as a string or an integer, returned as a string."""
        value = self._get(field, "a string or integer id")
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise self.error(field, f"expected a string or integer id, found {value!r}.")
        return str(value)

    def get_str(self, field: str) -> str:
        """A string field."""
        value = self._get(field, "a string")
        if not isinstance(value, str):
            raise self.error(field, f"expected a string, found {value!r}.")
        return value

    def get_str_list(self, field: str) -> list[str]:
        """A non-empty list of strings."""
        value = self._get(field, "a list of strings")
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(field, f"expected a list of strings, found {value!r}.")
        if not value:
            raise self.error(field, "expected at least one string, found an empty list.")
        return value

    def get_box(self, field: str) -> list[float]:
        """A box: a list of 4 finite numbers [x0, y0, x1, y1]."""
        value = self._get(field, "a box [x0, y0, x1, y1]")
        if (
            not isinstance(value, list)
            or len(value) != 4
            or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in value
            )
        ):
            raise self.error(field, f"expected 4 numbers [x0, y0, x1, y1], found {value!r}.")
        return [float(v) for v in value]


def read_jsonl(path: str | Path) -> list[JsonlRow]:
    """Every JSON object of a UTF-8 JSON-lines file, skipping blank lines.

    Args:
        path: the file to read.

    Returns:
        One JsonlRow per non-blank line, in file order.

    Raises:
        JsonlError: a line is not UTF-8, not JSON, or not a JSON object, or the file has no
            records.
        OSError: the file cannot be read.
    """
    path = str(path)
    rows = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise JsonlError(f"{path}:{number}: not valid UTF-8 ({e}).") from None
            if not text.strip():
                continue
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise JsonlError(
                    f"{path}:{number}: not valid JSON ({e.msg} at column {e.colno}); expected "
                    "one JSON object per line."
                ) from None
            if not isinstance(data, dict):
                raise JsonlError(
                    f"{path}:{number}: expected a JSON object, found {type(data).__name__}."
                )
            rows.append(JsonlRow(path, number, data))
    if not rows:
        raise JsonlError(f"{path}: no records; expected one JSON object per line.")
    return rows


def read_records(path: str | Path) -> list[JsonlRow]:
    """JSON lines, or a JSON array of objects (COCO-style results, ``[{"image_id", "caption"}]``).

    The file is an array when its first non-blank character is ``[``; rows then number the array
    items from 1.

    Raises:
        JsonlError: as ``read_jsonl``, or an array that is not valid JSON or holds a non-object.
    """
    path = str(path)
    with open(path, "rb") as f:
        head = f.read(4096).lstrip()
    if not head.startswith(b"["):
        return read_jsonl(path)
    try:
        items = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise JsonlError(f"{path}: starts with '[' but is not a valid JSON array ({e}); expected a COCO-style "
                         "result list or one JSON object per line.") from None
    rows = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise JsonlError(f"{path}:item {number}: expected a JSON object, found {type(item).__name__}.")
        rows.append(JsonlRow(path, number, item, in_array=True))
    if not rows:
        raise JsonlError(f"{path}: an empty JSON array; expected at least one record.")
    return rows


def rows_by_id(rows: list[JsonlRow], field: str) -> dict[str, JsonlRow]:
    """Index rows by their id field, rejecting duplicate ids.

    Args:
        rows: rows of one file.
        field: the id field, e.g. "image_id" or "uniq_id".

    Returns:
        id (as a string) -> row, in file order.
    """
    index: dict[str, JsonlRow] = {}
    for row in rows:
        key = row.get_id(field)
        if key in index:
            raise row.error(
                field,
                f"duplicate id {key!r} (first on line {index[key].line}); expected one record "
                "per id.",
            )
        index[key] = row
    return index
