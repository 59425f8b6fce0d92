"""ofa_cn/prepare/common.py: an interrupted conversion leaves no half-written TSV."""

from __future__ import annotations

import pytest

from ofa_cn.prepare.common import Report, Skip, convert, format_box


def test_interrupted_run_keeps_the_old_output_and_leaves_no_partial_file(tmp_path):
    out = tmp_path / "out.tsv"
    out.write_text("old\trows\n", encoding="utf-8")

    def records():
        yield ["a", "b"]
        yield Skip("bad", "row 2")
        raise KeyboardInterrupt  # the user pressed Ctrl-C half-way

    with pytest.raises(KeyboardInterrupt):
        convert(records(), out, Report("test", str(out)))
    assert out.read_text(encoding="utf-8") == "old\trows\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tsv"]

    report = convert(iter([["x", "y"], Skip("bad", "e1"), Skip("bad", "e2"), Skip("bad", "e3"), Skip("bad", "e4")]),
                     out, Report("test", str(out)))
    assert out.read_text(encoding="utf-8") == "x\ty\n"
    assert report.to_dict()["skipped"] == {"bad": 4} and report.examples["bad"] == ["e1", "e2", "e3"]


def test_format_box():
    assert format_box([10.0, 20.5, 30.25, 40]) == "10,20.5,30.25,40"
    assert format_box([0.004, 1.999, 2.105, 3]) == "0,2,2.1,3"  # 2 decimals, as COCO's boxes
