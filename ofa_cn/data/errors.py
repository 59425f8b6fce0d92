"""The one error type for bad input rows, with a message that says where the row is.

Every message starts with the location, ``<file>: row <i> (line <i+1>), field '<name>'``, then
says what was expected, what was found and what to do. Rows are 0-based and equal the dataset
index (and the sample ``id``); lines are 1-based, as an editor shows them.
"""

from __future__ import annotations

import os

# Appended to row-level problems: the two ways out for the user.
FIX_OR_SKIP = ("Fix or remove the row, or construct the dataset with skip_bad_rows=True to skip such rows "
               "(--skip-bad-rows for fairseq-train, task.skip_bad_rows=true in a YAML).")


def location(path: str | os.PathLike, row: int, field: str | None = None) -> str:
    """``"<path>: row 3 (line 4), field 'image'"``; without ``field`` the whole row is meant."""
    where = f"{os.fspath(path)}: row {row} (line {row + 1})"
    return where if field is None else f"{where}, field {field!r}"


class DataError(ValueError):
    """A row of a data file that cannot become a sample.

    Args:
        where: the location, usually from ``location(path, row, field)``.
        problem: what was expected, what was found, and what to do.
    """

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem

    def __reduce__(self):
        # The default reduce would call DataError(message) with one argument; DataLoader workers
        # and multiprocessing pickle exceptions, so rebuild from both parts.
        return type(self), (self.where, self.problem)
