"""RefCOCO / RefCOCO+ / RefCOCOg in the ``refer`` toolkit's layout -> the grounding TSV.

Inputs (the layout of github.com/lichengunc/refer):

* ``refs(unc).p`` (``refs(umd).p`` for RefCOCOg): a pickled list of refs, each a dict with
  ``ref_id``, ``ann_id``, ``image_id``, ``split`` and ``sentences`` (dicts with ``sent_id`` and
  ``sent``). It is read with ``load_plain_pickle``, which refuses anything but plain containers
  and scalars, because unpickling a file from the internet can run arbitrary code.
* ``instances.json``: COCO annotations; ``annotations[i].bbox`` is ``[x, y, width, height]`` in
  pixels, ``images[i].file_name`` names the file in the COCO train2014 folder (``--images``).
* ``--translations``: the Chinese expressions, which RefCOCO-CN never released: JSON lines
  ``{"sent_id": ..., "sent": "..."}``. Expressions without one are skipped and counted
  (``strict=True`` makes that an error).

Output rows, in the column order the grounding configs read (``selected_cols: "0,3,1,2"``)::

    uniq_id (= sent_id)  text  x0,y0,x1,y1  image

The refs, the instances (tens of MB) and the translations are held in memory; the images are
read one at a time (the last 64 are kept, as one image's expressions usually follow each other).
"""

from __future__ import annotations

import io
import json
import os
import pickle
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from ..data.grounding import pre_caption
from .common import (Report, Skip, check_box, check_column_text, check_image, convert, encode_image, format_box,
                     progress, read_jsonl_lines)

# The only names a refs pickle may load: Python 2 and 3 spellings of set and frozenset (protocol 2
# pickles them by name). Dicts, lists, tuples, strings and numbers need no name at all.
_ALLOWED_GLOBALS = {("builtins", "set"), ("builtins", "frozenset"),
                    ("__builtin__", "set"), ("__builtin__", "frozenset")}


MAX_WORDS = 10**6  # only emptiness is checked; the task's max_src_length truncates later


class UnsafePickleError(ValueError):
    """A pickle that names a class or function other than plain containers; nothing of it was run."""


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return set if name == "set" else frozenset
        raise UnsafePickleError(
            f"refused to load {module}.{name}: the refs pickle may hold only dicts, lists, tuples, sets, strings "
            f"and numbers (a pickle that names other objects can run code when loaded). Re-create the file with "
            f"the refer toolkit, or convert it to JSON yourself in a sandbox.")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refused a persistent id ({pid!r}) in the refs pickle; expected plain data")


def load_plain_pickle(path: str | os.PathLike) -> Any:
    """Unpickle a file of plain data (dict, list, tuple, set, str, numbers, None) only.

    Python 2 pickles (the refer toolkit's) decode their byte strings as latin-1.

    Raises:
        UnsafePickleError: the pickle names any other class or function; nothing was called.
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        return _PlainUnpickler(io.BytesIO(data), encoding="latin1").load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise ValueError(f"{path}: not a readable pickle ({type(e).__name__}: {e}); expected the refer "
                         "toolkit's refs(unc).p / refs(umd).p") from None


def _check_refs(refs: Any, path: str) -> list[dict]:
    keys = ("ref_id", "ann_id", "image_id", "split", "sentences")
    if not isinstance(refs, list) or not all(isinstance(r, dict) and all(k in r for k in keys) for r in refs):
        raise ValueError(f"{path}: expected the refer toolkit's refs, a list of dicts with the keys {keys}")
    return refs


def read_translations(path: str | os.PathLike, report: Report) -> dict[str, str]:
    """sent_id (as a string) -> Chinese expression."""
    out: dict[str, str] = {}
    for number, value in read_jsonl_lines(path):
        if isinstance(value, Skip):
            report.skip(value)
            continue
        sent_id, sent = value.get("sent_id"), value.get("sent")
        if sent_id is None or not isinstance(sent, str):
            report.skip(Skip("translation line without sent_id and sent", f"{path}:{number}"))
            continue
        out[str(sent_id)] = " ".join(sent.split())
    return out


def rows(refs_path: str | os.PathLike, instances_path: str | os.PathLike, images_dir: str | os.PathLike,
         translations_path: str | os.PathLike, split: str, report: Report, strict: bool = False,
         show_progress: bool = True) -> Iterator[list[str] | Skip]:
    """One grounding row per translated expression of the refs in ``split``, or a Skip."""
    refs = _check_refs(load_plain_pickle(refs_path), str(refs_path))
    with open(instances_path, encoding="utf-8") as f:
        instances = json.load(f)
    boxes = {ann["id"]: ann["bbox"] for ann in instances.get("annotations", [])}
    files = {img["id"]: img.get("file_name") for img in instances.get("images", [])}
    translations = read_translations(translations_path, report)
    chosen = [r for r in refs if r["split"] == split]
    if not chosen:
        found = sorted({str(r["split"]) for r in refs})
        raise ValueError(f"{refs_path}: no ref has split {split!r}; the splits there are {found}")

    @lru_cache(maxsize=64)  # the expressions of one image are usually next to each other
    def image(image_id: int) -> tuple[str, tuple[int, int] | None, Skip | None]:
        name = files.get(image_id) or f"COCO_train2014_{int(image_id):012d}.jpg"
        path = Path(images_dir) / name
        if not path.is_file():
            return "", None, Skip("image file missing", str(path))
        b64 = encode_image(path.read_bytes())
        size, bad = check_image(b64, str(path))
        return b64, size, bad

    bar = progress(len(chosen), "ref", f"refcoco {split}", show_progress)
    for ref in chosen:
        bar.update(1)
        problem, box, b64 = _check_ref(ref, boxes, image)
        for sentence in ref["sentences"]:  # every skip counts expressions, the rows they would have been
            sent_id = str(sentence["sent_id"])
            if problem:
                yield Skip(problem.reason, f"sent_id {sent_id}: {problem.example}")
                continue
            text = translations.get(sent_id)
            if text is None:
                if strict:
                    raise ValueError(f"{translations_path}: no translation for sent_id {sent_id} (ref_id "
                                     f"{ref['ref_id']}, English {sentence.get('sent', '')!r}); add it or run "
                                     "without --strict to skip it")
                yield Skip("no translation for the expression", f"sent_id {sent_id} (ref_id {ref['ref_id']})")
                continue
            bad = check_expression(text, f"sent_id {sent_id}")
            if bad:
                yield bad
                continue
            yield [sent_id, text, format_box(box), b64]
    bar.close()
    report.notes["refs_in_split"] = len(chosen)


def _check_ref(ref: dict, boxes: dict, image) -> tuple[Skip | None, list[float], str]:
    """(problem or None, box corners, image column) of one ref."""
    where = f"ref_id {ref['ref_id']}"
    bbox = boxes.get(ref["ann_id"])
    if bbox is None:
        return Skip("ann_id not in the instances file", f"{where}: ann_id {ref['ann_id']}"), [], ""
    b64, size, bad = image(ref["image_id"])
    if bad:
        return bad, [], ""
    x, y, w, h = (float(v) for v in bbox)
    box = [x, y, x + w, y + h]  # COCO x, y, width, height -> corners
    return check_box(box, size, f"{where} (image_id {ref['image_id']})"), box, b64


def check_expression(text: str, where: str) -> Skip | None:
    """A grounding expression: a valid column that the dataset's cleaning (``pre_caption``) leaves non-empty."""
    bad = check_column_text(text, "expression", where)
    if bad is None and not pre_caption(text, MAX_WORDS):
        bad = Skip("expression empty after cleaning", f"{where}: {text[:80]!r}")
    return bad


def prepare(refs: str | os.PathLike, instances: str | os.PathLike, images: str | os.PathLike,
            translations: str | os.PathLike, split: str, out: str | os.PathLike, strict: bool = False,
            show_progress: bool = True) -> Report:
    """Convert one split of a refer-toolkit dataset to ``out``; returns the report."""
    report = Report(f"prepare refcoco ({split})", str(out))
    return convert(rows(refs, instances, images, translations, split, report, strict, show_progress), out, report)
