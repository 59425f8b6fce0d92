"""What every converter shares: the skip report, the atomic TSV writer and the row checks.

A converter is a generator of rows (lists of column strings) and ``Skip`` records. ``convert``
writes the rows through ``AtomicTSV`` (a temporary file renamed over the output only when the
whole input was read, so an interrupted run never leaves a complete-looking TSV), counts the
skips by reason with the first few examples, and writes the report beside the output as
``OUT.report.json``. A run that writes no row raises ``NoRowsWritten`` after writing the report.

The checks reuse the datasets' own rules where they exist (``data.image.decode_image`` decodes
images exactly as training and evaluation will); the box check is stricter than
``data.boxes.parse_box`` (a box must have a positive width and height).
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from tqdm import tqdm

from ..data.errors import DataError
from ..data.image import decode_image

logger = logging.getLogger(__name__)

MAX_EXAMPLES = 3  # examples kept per skip reason
_FORBIDDEN_IN_COLUMNS = ("\t", "\n", "\r")


@dataclass(frozen=True)
class Skip:
    """An input record that did not become a row: why (a short, fixed phrase) and which record."""

    reason: str  # e.g. "image does not decode"; the report counts by this
    example: str  # where and what, e.g. "IC_valid.tsv line 3: image_id 17: ..."


class NoRowsWritten(ValueError):
    """A conversion that wrote no row (its ``report`` says why); no output file is left behind."""

    def __init__(self, message: str, report: "Report"):
        super().__init__(message)
        self.report = report


@dataclass
class Report:
    """Rows written and records skipped (per reason, with the first examples) of one conversion."""

    source: str
    out: str
    written: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    notes: dict[str, object] = field(default_factory=dict)  # converter-specific counts

    def skip(self, item: Skip) -> None:
        self.skipped[item.reason] += 1
        kept = self.examples.setdefault(item.reason, [])
        if len(kept) < MAX_EXAMPLES:
            kept.append(item.example)

    def to_dict(self) -> dict:
        return {"source": self.source, "out": self.out, "written": self.written,
                "skipped": dict(sorted(self.skipped.items())), "skipped_total": sum(self.skipped.values()),
                "examples": {k: self.examples[k] for k in sorted(self.examples)}, **self.notes}

    def lines(self) -> list[str]:
        """The report as text, for the end of a command-line run."""
        out = [f"{self.source}: wrote {self.written} rows to {self.out}"
               if self.written else f"{self.source}: wrote NO rows; {self.out} was not created"]
        out += [f"  {k}: {v}" for k, v in self.notes.items()]
        for reason, count in sorted(self.skipped.items(), key=lambda kv: (-kv[1], kv[0])):
            out.append(f"  skipped {count}: {reason}")
            out += [f"      e.g. {example}" for example in self.examples.get(reason, [])]
        return out


def report_path(out: str | os.PathLike) -> Path:
    """``OUT.tsv`` -> ``OUT.report.json``, beside the output."""
    return Path(out).with_suffix(".report.json")


class AtomicTSV:
    """Writes rows to ``path + ".partial"``, renamed to ``path`` on a clean exit with at least one row.

    On an exception, or with no row written, the partial file is deleted and ``path`` is left as
    it was. Columns may not hold tabs or line breaks (the converters check this first).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.rows = 0
        self._file = None

    def __enter__(self) -> "AtomicTSV":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.partial, "w", encoding="utf-8", newline="\n")
        return self

    def write(self, columns: Sequence[str]) -> None:
        for i, column in enumerate(columns):
            assert not any(c in column for c in _FORBIDDEN_IN_COLUMNS), (
                f"column {i} of row {self.rows} holds a tab or line break; the converter must skip such records")
        self._file.write("\t".join(columns) + "\n")
        self.rows += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        self._file.close()
        if exc_type is None and self.rows:
            os.replace(self.partial, self.path)  # atomic on one file system
        else:
            self.partial.unlink(missing_ok=True)


def convert(records: Iterable[list[str] | Skip], out: str | os.PathLike, report: Report) -> Report:
    """Write the rows of ``records`` to ``out`` (atomically), count the skips, write the report.

    Raises:
        NoRowsWritten: every record was skipped (the report is written first).
    """
    with AtomicTSV(out) as tsv:
        for record in records:
            if isinstance(record, Skip):
                report.skip(record)
            else:
                tsv.write(record)
        report.written = tsv.rows
    report_path(out).write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    for line in report.lines():
        logger.info("%s", line)
    if not report.written:
        raise NoRowsWritten(f"{report.source}: no row written to {out}; every record was skipped (see "
                            f"{report_path(out)} for the reasons and examples)", report)
    return report


def progress(total: int | None, unit: str, desc: str, enabled: bool = True) -> tqdm:
    """The progress bar of a converter (on stderr; off in tests and with --no-progress)."""
    return tqdm(total=total, unit=unit, unit_scale=unit == "B", desc=desc, disable=not enabled)


# ---------------------------------------------------------------------------- row checks
# Each returns None when the value is fine, or a Skip naming the problem.

def encode_image(data: bytes) -> str:
    """Image file bytes -> the TSV image column (URL-safe base64, as MUGE's release)."""
    return base64.urlsafe_b64encode(data).decode("ascii")


def check_image(b64: str, where: str) -> tuple[tuple[int, int] | None, Skip | None]:
    """((width, height), None) when the base64 decodes to an image as the datasets decode it; else (None, Skip)."""
    try:
        image = decode_image(b64, where)
    except DataError as e:
        return None, Skip("image does not decode", str(e)[:300])
    return image.size, None


def check_box(box: Sequence[float], image_size: tuple[int, int], where: str) -> Skip | None:
    """A box [x0, y0, x1, y1] in pixels must have x0 < x1, y0 < y1 and lie inside the image."""
    width, height = image_size
    x0, y0, x1, y1 = box
    if not (x0 < x1 and y0 < y1):
        return Skip("box has no area (needs x0 < x1 and y0 < y1)", f"{where}: box {list(box)}")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        return Skip("box outside its image", f"{where}: box {list(box)} in a {width}x{height} (w x h) image")
    return None


def check_column_text(text: str, what: str, where: str) -> Skip | None:
    """Text that will be a TSV column: not empty, and no tab or line break inside."""
    if not text.strip():
        return Skip(f"empty {what}", where)
    if any(c in text for c in _FORBIDDEN_IN_COLUMNS):
        return Skip(f"{what} holds a tab or line break", f"{where}: {text[:80]!r}")
    return None


def format_box(box: Sequence[float]) -> str:
    """[10.0, 20.5, 30.25, 40] -> "10,20.5,30.25,40" (at most 2 decimals, as COCO's boxes)."""
    return ",".join(f"{v:.2f}".rstrip("0").rstrip(".") for v in box)


def read_jsonl_lines(path: str | os.PathLike) -> Iterator[tuple[int, dict | Skip]]:
    """(line number, object) per non-blank line of a JSON-lines file; a bad line gives a Skip."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                yield number, Skip("line is not JSON", f"{path}:{number}: {e}")
                continue
            if not isinstance(value, dict):
                yield number, Skip("line is not a JSON object", f"{path}:{number}: {line[:80]!r}")
                continue
            yield number, value
