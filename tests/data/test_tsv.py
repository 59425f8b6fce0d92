"""TSVFile: the line index, column selection, errors that name the row, and use from workers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from ofa_cn.data import tsv as tsv_module
from ofa_cn.data.errors import DataError
from ofa_cn.data.tsv import TSVFile, index_lines, parse_selected_cols

ROWS = [
    ["id0", "第一行", "a,b", "x"],
    ["id1", "第二行", "c", "y"],
    ["id2", "", "d", "z"],
]


@pytest.fixture
def tsv_path(tmp_path, write_tsv):
    return write_tsv(tmp_path / "rows.tsv", ROWS)


def test_rows_with_selected_columns(tsv_path):
    tsv = TSVFile(tsv_path, "2,0", ("box", "uniq_id"))
    assert len(tsv) == 3
    assert tsv[0] == {"box": "a,b", "uniq_id": "id0"}
    assert tsv[2] == {"box": "d", "uniq_id": "id2"}
    assert tsv[1] == TSVFile(tsv_path, [2, 0], ("box", "uniq_id"))[1]  # str or list, same columns
    # None: the first len(field_names) columns; empty columns are kept as ""
    assert TSVFile(tsv_path, None, ("a", "b"))[2] == {"a": "id2", "b": ""}


def test_random_access_in_any_order(tsv_path):
    tsv = TSVFile(tsv_path, None, ("uniq_id", "text"))
    assert [tsv[i]["text"] for i in (2, 0, 1, 0)] == ["", "第一行", "第二行", "第一行"]
    with pytest.raises(IndexError, match="out of range; the file has 3 rows"):
        tsv[3]


def test_index_is_int64_offsets(tsv_path):
    offsets = TSVFile(tsv_path, None, ("uniq_id",)).offsets
    assert offsets.dtype == np.int64
    lines = tsv_path.read_bytes().split(b"\n")[:-1]
    expected = np.cumsum([0] + [len(line) + 1 for line in lines])
    np.testing.assert_array_equal(offsets, expected)


def test_index_across_chunk_boundaries(tmp_path, monkeypatch, write_tsv):
    # Rows longer than a read chunk (as image rows are) and newlines at chunk edges.
    rows = [[f"r{i}", "x" * (i * 5 % 23)] for i in range(40)]
    path = write_tsv(tmp_path / "long.tsv", rows)
    monkeypatch.setattr(tsv_module, "_CHUNK_BYTES", 7)
    tsv = TSVFile(path, None, ("id", "text"))
    assert [tsv[i]["text"] for i in range(len(tsv))] == [r[1] for r in rows]


@pytest.mark.parametrize(
    "content, rows",
    [
        (b"a\tb\nc\td", 2),  # no final newline
        (b"a\tb\nc\td\n\n\n", 2),  # trailing blank lines
        (b"a\tb\r\nc\td\r\n\r\n", 2),  # CRLF
        (b"a\tb\n\nc\td\n", 3),  # a blank line inside is a row, so rows keep matching lines
    ],
)
def test_line_endings_and_blank_lines(tmp_path, content, rows):
    path = tmp_path / "t.tsv"
    path.write_bytes(content)
    assert len(index_lines(path)) - 1 == rows
    tsv = TSVFile(path, None, ("x",))
    assert tsv[0] == {"x": "a"} and tsv[rows - 1] == {"x": "c"}
    assert TSVFile(path, "1", ("y",))[rows - 1] == {"y": "d"}  # no "\r" left on the last column


def test_missing_column_names_file_row_line_and_field(tsv_path):
    tsv = TSVFile(tsv_path, "0,5", ("uniq_id", "image"))
    with pytest.raises(DataError) as err:
        tsv[1]
    message = str(err.value)
    assert message.startswith(f"{tsv_path}: row 1 (line 2), field 'image': missing column 5")
    assert "the row has 4" in message and "selected_cols" in message and "skip_bad_rows" in message


def test_blank_line_inside_is_a_bad_row(tmp_path):
    path = tmp_path / "blank.tsv"
    path.write_text("a\tb\n\nc\td\n", encoding="utf-8")
    tsv = TSVFile(path, "0,1", ("x", "y"))
    with pytest.raises(DataError, match=r"row 1 \(line 2\): expected 2 tab-separated fields, as 2 of the file's 3 "
                                        r"rows have, found 1\."):
        tsv[1]
    assert tsv[2] == {"x": "c", "y": "d"}


@pytest.mark.parametrize(
    "lines, bad_row, found",
    [
        (["a\tb\tc", "d\te\tf", "g\th\tcut\there", "j\tk\tl"], 2, 4),  # a tab inside the caption
        (["a\tb\tc\tx", "d\te\tf\tx", "g\th\ti", "j\tk\tl\tx"], 2, 3),  # a column missing
        (["a\tb\tc\tx", "d\te\tf"], 1, 3),  # a tie: the first row's layout is the file's
    ],
    ids=["tab-inside-a-field", "column-missing", "tie"],
)
def test_row_with_another_field_count_names_file_row_and_counts(tmp_path, lines, bad_row, found):
    path = tmp_path / "t.tsv"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    tsv = TSVFile(path, "0,2", ("id", "caption"))  # the unused columns are normal
    assert tsv.other_rows.tolist() == [bad_row]
    expected = len(lines[0].split("\t"))
    with pytest.raises(DataError) as err:
        tsv[bad_row]
    assert str(err.value).startswith(
        f"{path}: row {bad_row} (line {bad_row + 1}): expected {expected} tab-separated fields, as "
        f"{len(lines) - 1} of the file's {len(lines)} rows have, found {found}. A tab inside a field")
    assert tsv[0]["caption"] == lines[0].split("\t")[2]


def test_field_counts_across_chunk_boundaries(tmp_path, monkeypatch, write_tsv):
    rows = [[f"r{i}", "x" * (i * 5 % 23), "y"] for i in range(40)]
    rows[17] = ["r17", "a", "b", "extra"]
    path = write_tsv(tmp_path / "long.tsv", rows)
    monkeypatch.setattr(tsv_module, "_CHUNK_BYTES", 7)
    offsets, tabs = tsv_module.index_rows(path)
    assert tabs.tolist() == [len(r) - 1 for r in rows]
    assert TSVFile(path, None, ("id",)).other_rows.tolist() == [17]


def test_invalid_utf8_is_a_data_error(tmp_path):
    path = tmp_path / "latin1.tsv"
    path.write_bytes("ok\tfine\n".encode() + "x\tcafé\n".encode("latin-1"))
    tsv = TSVFile(path, None, ("a", "b"))
    assert tsv[0] == {"a": "ok", "b": "fine"}
    with pytest.raises(DataError, match=r"latin1.tsv: row 1 \(line 2\), field 'b': column 1 is not valid UTF-8"):
        tsv[1]


def test_bad_arguments(tmp_path, tsv_path):
    with pytest.raises(ValueError, match="comma-separated column numbers"):
        parse_selected_cols("1,x", 2)
    with pytest.raises(ValueError, match="picks 3 columns but the dataset reads 2 fields"):
        parse_selected_cols("0,1,2", 2)
    with pytest.raises(ValueError, match="must not be negative"):
        parse_selected_cols([0, -1], 2)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TSVFile(tmp_path / "absent.tsv", None, ("a",))
    empty = tmp_path / "empty.tsv"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no rows"):
        TSVFile(empty, None, ("a",))


def test_pickle_drops_the_open_handle(tsv_path):
    tsv = TSVFile(tsv_path, "1", ("text",))
    assert tsv[0] == {"text": "第一行"}  # opens the handle
    state = tsv.__getstate__()
    assert state["_file"] is None
    copy = pickle.loads(pickle.dumps(tsv))
    assert [copy[i] for i in range(3)] == [tsv[i] for i in range(3)]
    err = pickle.loads(pickle.dumps(DataError("f.tsv: row 0 (line 1), field 'x'", "bad")))
    assert str(err) == "f.tsv: row 0 (line 1), field 'x': bad" and err.problem == "bad"


class _Rows(torch.utils.data.Dataset):
    def __init__(self, tsv):
        self.tsv = tsv

    def __len__(self):
        return len(self.tsv)

    def __getitem__(self, i):
        return self.tsv[i]["text"]


def test_reads_in_forked_dataloader_workers(tmp_path, write_tsv):
    # The parent's already-open handle is inherited by forked workers and shares its file offset;
    # each worker must open its own. (Spawned workers get a pickled copy: test_pickle_* above.)
    rows = [[f"id{i}", "字" * (i % 7 + 1)] for i in range(64)]
    tsv = TSVFile(write_tsv(tmp_path / "w.tsv", rows), None, ("uniq_id", "text"))
    assert tsv[5]["text"] == rows[5][1]
    loader = torch.utils.data.DataLoader(
        _Rows(tsv), batch_size=5, num_workers=2, multiprocessing_context="fork", collate_fn=list
    )
    assert [t for batch in loader for t in batch] == [r[1] for r in rows]
    assert tsv[63]["text"] == rows[63][1]  # the parent's handle is still usable
