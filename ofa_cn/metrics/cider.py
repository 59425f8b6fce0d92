"""CIDEr-D as a pure function, with a document-frequency table that can be computed once.

This gives the same numbers as coco-caption's scorer (``pycocoevalcap.cider.Cider`` 1.2, which
despite its name is CIDEr-D), but per hypothesis and with the idf table as an argument, so SCST
rewards and in-loop validation can score against a fixed corpus without rebuilding it.

What coco-caption computes, and we reproduce:
  * Tokens are whitespace-split words; n-grams for n = 1..4.
  * Each image is one "document": an n-gram's document frequency is the number of images with
    at least one reference containing it. log_ref_len = log(number of images).
  * Weight of an n-gram with term frequency tf: tf * (log_ref_len - log(max(1, df))).
  * Per n and per reference: sum over the hypothesis' n-grams of
    min(w_hyp, w_ref) * w_ref (the "-D" clipping), divided by |w_hyp| * |w_ref| when both
    norms are non-zero, times the Gaussian length penalty exp(-delta^2 / (2 sigma^2)).
  * Score = mean over n, averaged over the references, times 10.

Two quirks of coco-caption, kept so that numbers match it exactly:
  * The "length" in the penalty counts **bigrams** (words - 1), not words. The difference
    delta is the same whenever both sentences have a word; otherwise the score is 0 anyway.
  * log_ref_len is log(number of images), so with a single-image corpus every score is 0.
"""

from __future__ import annotations

import math
from collections import Counter

NGram = tuple[str, ...]


def ngram_counts(text: str, n: int = 4) -> Counter[NGram]:
    """Counts of every 1..n-gram of whitespace-split words, in order of first appearance.

    Args:
        text: a sentence; words are separated by whitespace.
        n: the longest n-gram.

    Returns:
        Counter mapping each n-gram (a tuple of words) to its count.
    """
    words = text.split()
    counts: Counter[NGram] = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return counts


def build_document_frequency(
    refs_corpus: list[list[str]], n: int = 4
) -> tuple[dict[NGram, int], float]:
    """Document frequencies over a reference corpus, one document per image.

    Args:
        refs_corpus: for each image, its reference sentences (whitespace-separated words).
        n: the longest n-gram.

    Returns:
        (df, log_ref_len): df maps an n-gram to the number of images whose references contain
        it; log_ref_len = log(number of images).
    """
    if not refs_corpus:
        raise ValueError(
            "build_document_frequency got an empty corpus; expected at least one image's "
            "references (CIDEr-D's idf is log(number of images))."
        )
    df: Counter[NGram] = Counter()
    for refs in refs_corpus:
        seen: set[NGram] = set()
        for ref in refs:
            seen.update(ngram_counts(ref, n))
        df.update(seen)
    return dict(df), math.log(float(len(refs_corpus)))


def _tfidf(
    counts: Counter[NGram], df: dict[NGram, int], log_ref_len: float, n: int
) -> tuple[list[dict[NGram, float]], list[float], int]:
    """tf-idf vectors per n-gram order, their norms, and coco-caption's "length" (bigram count)."""
    vec: list[dict[NGram, float]] = [{} for _ in range(n)]
    norm = [0.0] * n
    length = 0
    for gram, tf in counts.items():
        order = len(gram) - 1
        weight = float(tf) * (log_ref_len - math.log(max(1.0, df.get(gram, 0))))
        vec[order][gram] = weight
        norm[order] += weight**2
        if order == 1:  # coco-caption counts bigrams here, so "length" is words - 1
            length += tf
    return vec, [math.sqrt(x) for x in norm], length


def _similarity(
    hyp: tuple[list[dict[NGram, float]], list[float], int],
    ref: tuple[list[dict[NGram, float]], list[float], int],
    n: int,
    sigma: float,
) -> list[float]:
    """Clipped cosine similarity per n-gram order, times the Gaussian length penalty."""
    vec_hyp, norm_hyp, len_hyp = hyp
    vec_ref, norm_ref, len_ref = ref
    delta = float(len_hyp - len_ref)
    penalty = math.e ** (-(delta**2) / (2 * sigma**2))
    val = [0.0] * n
    for order in range(n):
        for gram, w_hyp in vec_hyp[order].items():
            w_ref = vec_ref[order].get(gram, 0.0)
            val[order] += min(w_hyp, w_ref) * w_ref
        if norm_hyp[order] != 0 and norm_ref[order] != 0:
            val[order] /= norm_hyp[order] * norm_ref[order]
        val[order] *= penalty
    return val


def cider_d(
    hyps: list[str],
    refs: list[list[str]],
    df: dict[NGram, int] | None = None,
    ref_len: float | None = None,
    n: int = 4,
    sigma: float = 6.0,
) -> list[float]:
    """CIDEr-D of each hypothesis against its references, on coco-caption's scale (x10).

    Args:
        hyps: one sentence per image, words separated by whitespace.
        refs: refs[i] are the reference sentences of hyps[i] (at least one each).
        df: document frequencies from ``build_document_frequency``. None ("corpus mode"): built
            from ``refs`` itself, which is what coco-caption does.
        ref_len: the log_ref_len that goes with ``df``; give both or neither.
        n: the longest n-gram.
        sigma: standard deviation of the Gaussian length penalty.

    Returns:
        One score per hypothesis; their mean equals ``pycocoevalcap.cider.Cider`` on the same
        corpus (n=4, sigma=6) in corpus mode.
    """
    if len(hyps) != len(refs):
        raise ValueError(
            f"cider_d expected one list of references per hypothesis, found {len(hyps)} "
            f"hypotheses and {len(refs)} reference lists; pass them in the same order."
        )
    for i, image_refs in enumerate(refs):
        if not image_refs:
            raise ValueError(
                f"cider_d found an empty reference list for hypothesis {i}; every hypothesis "
                "needs at least one reference (drop the image or add its references)."
            )
    if (df is None) != (ref_len is None):
        raise ValueError(
            "cider_d needs df and ref_len together (both from build_document_frequency) or "
            f"neither (corpus mode); found df={'set' if df is not None else None}, "
            f"ref_len={ref_len}."
        )
    if df is None:
        df, ref_len = build_document_frequency(refs, n)
    assert ref_len is not None, "ref_len is set together with df above"

    scores = []
    for hyp, image_refs in zip(hyps, refs):
        hyp_vec = _tfidf(ngram_counts(hyp, n), df, ref_len, n)
        total = [0.0] * n
        for ref in image_refs:
            ref_vec = _tfidf(ngram_counts(ref, n), df, ref_len, n)
            total = [t + s for t, s in zip(total, _similarity(hyp_vec, ref_vec, n, sigma))]
        scores.append(sum(total) / n / len(image_refs) * 10.0)
    return scores
