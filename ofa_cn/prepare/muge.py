"""MUGE image captioning (ECommerce-IC) -> the caption TSV.

The release (Tianchi dataset 107332, ``ECommerce-IC.zip``) holds per split a JSON-lines file of
captions, one image per line: ``{"image_id": ..., "text": ["caption", ...]}`` (``text`` absent or
empty in the test split, whose references are not public), and a TSV of images,
``image_id<TAB>URL-safe base64 of the image file``.

Output rows, in the column order the caption configs read (``selected_cols: "1,4,2"``)::

    uniq_id  image_id  caption  objects  image

``caption`` joins an image's references with ``&&`` (one row per image, for evaluation), or holds
one caption per row with ``--one-row-per-caption`` (training: the dataset's target is the first
reference of a row). ``objects`` is empty (the original English layout's column, unused).
Test-split images without captions become rows with an empty caption: ``scripts/evaluate.py``
writes predictions for them and no metrics.

Only the captions file is held in memory (tens of MB); the image TSV (GBs) is streamed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from ..data.caption import REFERENCE_SEPARATOR, clean_caption
from .common import Report, Skip, check_image, convert, progress, read_jsonl_lines


def read_captions(path: str | os.PathLike, report: Report) -> dict[str, list[str] | Skip]:
    """image_id -> its captions (whitespace collapsed; [] when the line has none), or a Skip."""
    captions: dict[str, list[str] | Skip] = {}
    dropped = 0
    for number, value in read_jsonl_lines(path):
        if isinstance(value, Skip):
            report.skip(value)
            continue
        where = f"{path}:{number}"
        image_id = value.get("image_id")
        if isinstance(image_id, bool) or not isinstance(image_id, (str, int)) or str(image_id) == "":
            report.skip(Skip("caption line without an image_id", f"{where}: {str(value)[:80]}"))
            continue
        image_id = str(image_id)
        texts = value.get("text") or []
        if isinstance(texts, str):
            texts = [texts]
        if image_id in captions:
            captions[image_id] = Skip("image_id on two caption lines", f"{where}: image_id {image_id}")
            continue
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            captions[image_id] = Skip("caption 'text' is not a list of strings", f"{where}: {str(texts)[:80]}")
            continue
        kept = []
        for text in texts:
            text = " ".join(text.split())  # tabs and line breaks would break the TSV row
            if REFERENCE_SEPARATOR in text or not clean_caption(text):
                dropped += 1  # one bad caption; the image keeps its others
                reason = "caption contains '&&'" if REFERENCE_SEPARATOR in text else "empty caption"
                report.skip(Skip(f"{reason} (that caption dropped)", f"{where}: image_id {image_id}: {text[:80]!r}"))
                continue
            kept.append(text)
        if texts and not kept:
            captions[image_id] = Skip("no usable caption left", f"{where}: image_id {image_id}")
        else:
            captions[image_id] = kept
    return captions


def rows(captions_path: str | os.PathLike, images_path: str | os.PathLike, report: Report,
         one_row_per_caption: bool = False, show_progress: bool = True) -> Iterator[list[str] | Skip]:
    """Stream the image TSV and yield one output row per image (or per caption), or a Skip."""
    captions = read_captions(captions_path, report)
    seen: set[str] = set()
    unlabeled = 0
    bar = progress(Path(images_path).stat().st_size, "B", "muge", show_progress)
    with open(images_path, "rb") as f:
        for number, raw in enumerate(f, 1):
            bar.update(len(raw))
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if not line.strip():
                continue
            where = f"{images_path}:{number}"
            parts = line.split("\t")
            if len(parts) != 2 or not parts[0]:
                yield Skip("image line is not 'image_id<TAB>base64'", f"{where}: {len(parts)} columns")
                continue
            image_id, b64 = parts
            if image_id in seen:
                yield Skip("image_id on two image lines", f"{where}: image_id {image_id}")
                continue
            seen.add(image_id)
            texts = captions.get(image_id)
            if texts is None:
                yield Skip("image without a caption line", f"{where}: image_id {image_id}")
                continue
            if isinstance(texts, Skip):
                yield texts
                continue
            size, bad = check_image(b64, f"{where}: image_id {image_id}")
            if bad:
                yield bad
                continue
            if not texts:
                unlabeled += 1
                yield [image_id, image_id, "", "", b64]
            elif one_row_per_caption:
                for k, text in enumerate(texts):
                    yield [f"{image_id}_{k}", image_id, text, "", b64]
            else:
                yield [image_id, image_id, REFERENCE_SEPARATOR.join(texts), "", b64]
    bar.close()
    missing = [k for k, v in captions.items() if k not in seen and not isinstance(v, Skip)]
    for image_id in missing:
        report.skip(Skip("caption line without an image", f"{captions_path}: image_id {image_id}"))
    report.notes["rows_without_captions"] = unlabeled  # test split: predictions only


def prepare(captions: str | os.PathLike, images: str | os.PathLike, out: str | os.PathLike,
            one_row_per_caption: bool = False, show_progress: bool = True) -> Report:
    """Convert one MUGE caption split to ``out``; returns the report (also in ``OUT.report.json``)."""
    report = Report("prepare muge", str(out))
    return convert(rows(captions, images, report, one_row_per_caption, show_progress), out, report)
