"""A Chinese text-recognition LMDB -> the OCR TSV.

The layout of FudanVI's benchmark ("Benchmarking Chinese Text Recognition", github.com/FudanVI/
benchmarking-chinese-text-recognition), shared with most text-recognition LMDBs: the key
``num-samples`` holds the count N as text, and for i = 1..N (1-based) ``image-%09d`` holds the
image file's bytes and ``label-%09d`` its text in UTF-8.

Output rows, in the column order the OCR configs read (``selected_cols: "0,1,2"``)::

    uniq_id (= the 9-digit index)  image  text

The database is read in key order, one record at a time (never loaded whole), read-only and
without a lock file, so a database on a read-only disk works.
"""

from __future__ import annotations

import os
from typing import Iterator

try:
    import lmdb  # the PyPI package (this module is ofa_cn.prepare.lmdb; absolute imports find the package)
except ImportError:
    raise ImportError("ofa-cn prepare lmdb needs the lmdb package: pip install lmdb (or the dev extras)") from None

from ..data.ocr import normalize_ocr_target
from .common import Report, Skip, check_column_text, check_image, convert, encode_image, progress


def check_label(text: str, where: str) -> Skip | None:
    """An OCR label: a valid column that stays non-empty after the dataset's normalisation."""
    bad = check_column_text(text, "label", where)
    if bad is None and not normalize_ocr_target(text).strip():
        bad = Skip("label empty after normalisation", f"{where}: {text!r}")
    return bad


def rows(path: str | os.PathLike, report: Report, show_progress: bool = True) -> Iterator[list[str] | Skip]:
    """One OCR row per sample of the LMDB at ``path``, or a Skip."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"LMDB folder {path} does not exist (expected a folder with data.mdb)")
    env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, meminit=False, max_readers=1)
    try:
        with env.begin(write=False) as txn:
            count = txn.get(b"num-samples")
            try:
                total = int(count.decode("ascii"))
            except (AttributeError, ValueError, UnicodeDecodeError):
                raise ValueError(f"{path}: expected the key 'num-samples' holding the sample count, found "
                                 f"{count!r}; is this a text-recognition LMDB?") from None
            report.notes["num_samples"] = total
            bar = progress(total, "sample", "lmdb", show_progress)
            for i in range(1, total + 1):
                bar.update(1)
                uniq_id = f"{i:09d}"
                image, label = txn.get(f"image-{uniq_id}".encode()), txn.get(f"label-{uniq_id}".encode())
                where = f"{path}: sample {uniq_id}"
                if image is None or label is None:
                    yield Skip("image or label key missing", f"{where}: {'image' if image is None else 'label'}")
                    continue
                try:
                    text = label.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield Skip("label is not UTF-8", f"{where}: {e}")
                    continue
                bad = check_label(text, where)
                if bad:
                    yield bad
                    continue
                b64 = encode_image(image)
                _, bad = check_image(b64, where)
                if bad:
                    yield bad
                    continue
                yield [uniq_id, b64, text]
            bar.close()
    finally:
        env.close()


def prepare(path: str | os.PathLike, out: str | os.PathLike, show_progress: bool = True) -> Report:
    """Convert the LMDB folder ``path`` to ``out``; returns the report."""
    report = Report("prepare lmdb", str(out))
    return convert(rows(path, report, show_progress), out, report)
