"""OCR metrics: exact-match accuracy and normalised edit distance on normalised text.

Both sides go through ``normalize_ocr_text``, which applies what the original applies to the
target before it is tokenised (traditional -> simplified Chinese, NFKC, lower case) and then
removes whitespace, since the original compares strings with spaces removed. Model outputs are
usually already in this form, so normalising them too changes nothing but makes hand-written
predictions comparable.
"""

from __future__ import annotations

import unicodedata
import warnings

from .caption import check_same_ids


def normalize_ocr_text(text: str) -> str:
    """Simplified Chinese, NFKC, lower case, with all whitespace removed.

    Args:
        text: recognised or reference text.

    Returns:
        e.g. "中国abc123" for "中國 ＡＢＣ １２３".
    """
    # zhconv is a declared dependency, imported here so that the other metrics work without it.
    # zhconv 1.4.3 tries pkg_resources first (and falls back to a plain open without it).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "pkg_resources is deprecated", DeprecationWarning)
        import zhconv

    text = zhconv.convert(text, "zh-hans")
    text = unicodedata.normalize("NFKC", text).lower().strip()
    return "".join(text.split())


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between two strings (unit-cost insert, delete, substitute).

    Args:
        a: first string.
        b: second string.

    Returns:
        The least number of single-character edits turning ``a`` into ``b``.
    """
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))  # distances from a[:0] to every prefix of b
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(
                min(
                    previous[j] + 1,  # delete ca
                    current[j - 1] + 1,  # insert cb
                    previous[j - 1] + (ca != cb),  # substitute (free if equal)
                )
            )
        previous = current
    return previous[-1]


def ocr_scores(preds: dict[str, str], refs: dict[str, str]) -> dict[str, float]:
    """Exact-match accuracy and NED score of recognised text, after ``normalize_ocr_text``.

    NED score = 1 - mean(edit_distance / max(len(pred), len(ref))); a pair of two empty
    strings has distance 0.

    Args:
        preds: uniq_id -> recognised text.
        refs: uniq_id -> reference text.

    Returns:
        {"accuracy": % of exact matches (x100), "ned": NED score (x100), "count": items}.

    Raises:
        ValueError: ids differ between predictions and references.
    """
    check_same_ids(preds, refs, what="uniq_id")
    matches = 0
    ned_sum = 0.0
    for uniq_id, ref in refs.items():
        pred = normalize_ocr_text(preds[uniq_id])
        ref = normalize_ocr_text(ref)
        matches += pred == ref
        longest = max(len(pred), len(ref))
        if longest:
            ned_sum += edit_distance(pred, ref) / longest
    return {
        "accuracy": 100.0 * matches / len(refs),
        "ned": 100.0 * (1.0 - ned_sum / len(refs)),
        "count": len(refs),
    }
