"""Random access to the rows of a tab-separated file through an index of line offsets.

One streaming pass over the file records where each line starts (8 bytes per row, in memory);
``tsv[i]`` then seeks to row ``i`` and reads that one line. The file's text is never held in
memory, which matters because image columns make rows hundreds of kilobytes long.

The original read rows sequentially and ignored the index it was given, so samples could not be
shuffled or retried; here row ``i`` is always line ``i + 1`` of the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import FIX_OR_SKIP, DataError, location

_CHUNK_BYTES = 1 << 20  # read size of the indexing pass
_NEWLINE = ord("\n")
_TAB = ord("\t")


def parse_selected_cols(selected_cols: str | Sequence[int] | None, num_fields: int) -> list[int]:
    """``"1,4,2"`` or ``[1, 4, 2]`` -> ``[1, 4, 2]``; None -> the first ``num_fields`` columns.

    Raises:
        ValueError: not comma-separated non-negative integers, or not one column per field.
    """
    if selected_cols is None:
        return list(range(num_fields))
    if isinstance(selected_cols, str):
        try:
            cols = [int(c) for c in selected_cols.split(",")]
        except ValueError:
            raise ValueError(
                f"selected_cols {selected_cols!r}: expected comma-separated column numbers such as '1,4,2'"
            ) from None
    else:
        cols = [int(c) for c in selected_cols]
    if any(c < 0 for c in cols):
        raise ValueError(f"selected_cols {selected_cols!r}: column numbers are 0-based and must not be negative")
    if len(cols) != num_fields:
        raise ValueError(
            f"selected_cols {selected_cols!r} picks {len(cols)} columns but the dataset reads "
            f"{num_fields} fields; give one column number per field, in field order."
        )
    return cols


def index_lines(path: str | os.PathLike) -> np.ndarray:
    """Byte offsets of the rows of a file: int64 [num_rows + 1], row i = bytes [off[i], off[i+1]).

    Streams the file in 1 MiB chunks. Trailing blank lines (``\\n`` or ``\\r\\n`` only) are not rows.
    """
    return index_rows(path)[0]


def index_rows(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One pass over a file: the row offsets (see ``index_lines``) and the tabs of each row.

    Returns:
        offsets int64 [num_rows + 1]; tabs int64 [num_rows], so row i has tabs[i] + 1 fields.
    """
    starts = [np.zeros(1, dtype=np.int64)]
    tabs = []  # per chunk: tab counts of the rows that end in it
    carry = 0  # tabs of the row that continues into the next chunk
    position = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            data = np.frombuffer(chunk, dtype=np.uint8)
            newlines = np.flatnonzero(data == _NEWLINE)
            starts.append(newlines.astype(np.int64) + position + 1)  # a line starts after each \n
            # a tab at k belongs to the chunk's row searchsorted(newlines, k): [len(newlines) + 1]
            tab_rows = np.searchsorted(newlines, np.flatnonzero(data == _TAB))
            per_row = np.bincount(tab_rows, minlength=len(newlines) + 1)
            per_row[0] += carry
            tabs.append(per_row[:-1])
            carry = int(per_row[-1])
            position += len(chunk)
        offsets = np.concatenate(starts)
        if offsets[-1] != position:  # the last line has no \n: close it at end of file
            offsets = np.append(offsets, np.int64(position))
            tabs.append(np.array([carry]))
        # Drop blank lines at the end; a blank line in the middle stays a (bad) row so that
        # row numbers keep matching line numbers.
        while len(offsets) > 1 and offsets[-1] - offsets[-2] <= 2:
            f.seek(int(offsets[-2]))
            if f.read(int(offsets[-1] - offsets[-2])).strip(b"\r\n"):
                break
            offsets = offsets[:-1]
    tabs_per_row = np.concatenate(tabs).astype(np.int64) if tabs else np.zeros(0, dtype=np.int64)
    return offsets, tabs_per_row[: len(offsets) - 1]


class TSVFile:
    """The rows of a UTF-8 TSV file as dicts ``field name -> str``, read on demand.

    Args:
        path: the file; one sample per line, columns separated by tabs.
        selected_cols: which columns become the fields, in field order (``"1,4,2"`` or ``[1, 4, 2]``);
            None takes the first ``len(field_names)`` columns.
        field_names: the names of the returned fields.

    Raises:
        ValueError: bad ``selected_cols``, or a file without rows.
        DataError (from ``tsv[i]``): a row with another number of fields than most rows of the file,
            too few columns for ``selected_cols``, or bytes that are not UTF-8. Columns that no field
            selects are normal (the original's files carry more than a task reads).

    Picklable for DataLoader workers: the file handle is not pickled and each process opens its own
    (a handle inherited through fork would share its file offset with the parent).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        selected_cols: str | Sequence[int] | None,
        field_names: Sequence[str],
    ):
        self.path = str(path)
        self.field_names = tuple(field_names)
        self.columns = parse_selected_cols(selected_cols, len(self.field_names))
        if not Path(self.path).is_file():
            raise FileNotFoundError(f"TSV file {self.path} does not exist")
        self.offsets, tabs = index_rows(self.path)
        if len(self) == 0:
            raise ValueError(f"{self.path}: no rows; expected one tab-separated sample per line")
        # The file's layout is the number of fields most of its rows have; a row with another
        # number (a tab inside a caption, a column too many) would shift the selected columns.
        fields = tabs + 1
        rows_per_count = np.bincount(fields)
        most = np.flatnonzero(rows_per_count == rows_per_count.max())
        self.num_fields = int(fields[0] if fields[0] in most else most[0])  # a tie: the first row's layout
        self.other_rows = np.flatnonzero(fields != self.num_fields)  # int64 [k], usually empty
        self._file = None
        self._pid = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def where(self, row: int, field: str | None = None) -> str:
        """The location string for error messages, e.g. ``"a.tsv: row 3 (line 4), field 'image'"``."""
        return location(self.path, row, field)

    def read_line(self, row: int) -> bytes:
        """The raw bytes of row ``row``, without its line ending."""
        if not 0 <= row < len(self):
            raise IndexError(f"{self.path}: row {row} out of range; the file has {len(self)} rows")
        if self._file is None or self._pid != os.getpid():
            self.close()  # in a forked worker this closes only the worker's copy of the parent's fd
            self._file = open(self.path, "rb")
            self._pid = os.getpid()
        start, end = int(self.offsets[row]), int(self.offsets[row + 1])
        self._file.seek(start)
        return self._file.read(end - start).rstrip(b"\n").rstrip(b"\r")

    def check_field_count(self, row: int, found: int | None = None) -> None:
        """Raises DataError when row ``row`` (with ``found`` fields; None: read it) has another
        number of fields than most rows of the file."""
        if found is None:
            found = len(self.read_line(row).split(b"\t"))
        if found != self.num_fields:
            others = len(self) - len(self.other_rows)
            more = len(self.other_rows) - 1
            raise DataError(
                self.where(row),
                f"expected {self.num_fields} tab-separated fields, as {others} of the file's {len(self)} rows have, "
                f"found {found}{f' ({more} more rows differ too)' if more else ''}. A tab inside a field (e.g. in "
                f"a caption) splits it, and a column too many or too few shifts the columns after it; remove the "
                f"stray tab or column. {FIX_OR_SKIP}",
            )

    def __getitem__(self, row: int) -> dict[str, str]:
        columns = self.read_line(row).split(b"\t")
        self.check_field_count(row, len(columns))
        fields = {}
        for name, col in zip(self.field_names, self.columns):
            if col >= len(columns):
                raise DataError(
                    self.where(row, name),
                    f"missing column {col}: selected_cols {','.join(map(str, self.columns))} needs at "
                    f"least {max(self.columns) + 1} tab-separated columns, the row has {len(columns)}. "
                    f"Check the file's column layout and selected_cols. {FIX_OR_SKIP}",
                )
            try:
                fields[name] = columns[col].decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    self.where(row, name),
                    f"column {col} is not valid UTF-8 ({e.reason} at byte {e.start}). "
                    f"Re-encode the file as UTF-8. {FIX_OR_SKIP}",
                ) from None
        return fields

    def close(self) -> None:
        if getattr(self, "_file", None) is not None:  # __init__ may have failed before setting it
            self._file.close()
        self._file = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state

    def __del__(self):
        self.close()

    def __repr__(self) -> str:
        return f"TSVFile({self.path!r}, rows={len(self)}, fields={dict(zip(self.field_names, self.columns))})"
