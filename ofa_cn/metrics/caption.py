"""Caption metrics for Chinese (MUGE-style): BLEU-4, ROUGE-L and CIDEr-D on characters.

The reported numbers come from coco-caption's own scorers (pycocoevalcap 1.2) fed with
pre-tokenized text, tokens joined by single spaces; coco-caption's Java PTB tokenizer (made for
English) is not used. Two tokenizations (``TOKENIZERS``):

  * ``char`` (the default): MUGE's rule for its caption leaderboard: every Chinese character (and
    every other non-space symbol) is a token, and a run of ASCII letters and digits is one token
    (``iphone12`` stays whole, as BERT's decoder also keeps it). The README's data notes give
    the sources.
  * ``jieba``: jieba's default word segmentation (``jieba.lcut``), for comparison with papers
    that score words.

  * BLEU-4: ``pycocoevalcap.bleu.Bleu``, corpus-level, "closest" reference length.
  * ROUGE-L: ``pycocoevalcap.rouge.Rouge``, LCS F-measure with beta = 1.2, averaged over images.
  * CIDEr-D: ``pycocoevalcap.cider.Cider``. Despite the class name it is CIDEr-D: n = 1..4,
    min(hyp, ref) clipping of the tf-idf weights, a Gaussian length penalty with sigma = 6,
    idf taken from the references of the images being scored, and x10. ``cider.py`` has a pure
    reimplementation with the same numbers.
  * sacrebleu_zh: sacrebleu's corpus BLEU with its ``zh`` tokenizer (each CJK character a
    token, other text tokenized like ``13a``), as a cross-check; it reads the raw strings, so
    it does not change with ``tokenize``.

All scores are reported x100; for CIDEr-D that is 100 x coco-caption's value, which is
already x10.
"""

from __future__ import annotations

import logging
import re
from typing import Callable

# A run of ASCII letters/digits, or any other single non-space character.
_CHAR_TOKEN = re.compile(r"[A-Za-z0-9]+|\S")
# Whitespace next to a CJK character (CJK symbols, ideographs, full-width forms): what the
# original's decoder put between characters; removed before word segmentation.
_CJK = "\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_SPACE_AT_CJK = re.compile(rf"(?<=[{_CJK}])\s+|\s+(?=[{_CJK}])")


def char_tokens(text: str) -> str:
    """MUGE's character tokens: each character, except that ASCII letter/digit runs stay whole.

    Args:
        text: a caption, with or without spaces between characters.

    Returns:
        e.g. "一 个 穿 着 T 恤 的 iphone12" for "一个穿着 T恤的iphone12" (case is kept).
    """
    return " ".join(_CHAR_TOKEN.findall(text))


def jieba_tokens(text: str) -> str:
    """jieba's words (default dictionary, precise mode), joined by single spaces.

    Spaces next to Chinese characters are removed first, so "一 个 男 人" and "一个男人" give
    the same words ("一个 男人").
    """
    import jieba  # imported here: loading its dictionary takes about a second

    jieba.setLogLevel(logging.WARNING)  # no "Building prefix dict" lines on every run
    return " ".join(w for w in jieba.lcut(_SPACE_AT_CJK.sub("", text)) if w.strip())


TOKENIZERS: dict[str, Callable[[str], str]] = {"char": char_tokens, "jieba": jieba_tokens}


def _describe_ids(ids: set[str], limit: int = 5) -> str:
    shown = ", ".join(repr(i) for i in sorted(ids)[:limit])
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return f"{shown}{more}"


def check_same_ids(predictions: dict, references: dict, what: str = "image id") -> None:
    """Raise ValueError unless predictions and references cover exactly the same ids.

    Args:
        predictions: id -> prediction.
        references: id -> reference(s).
        what: how the ids are called in the error message.
    """
    if not references:
        raise ValueError(f"No references to score against; expected at least one {what}.")
    missing_refs = set(predictions) - set(references)
    missing_preds = set(references) - set(predictions)
    if missing_refs:
        raise ValueError(
            f"{len(missing_refs)} {what}(s) have a prediction but no reference: "
            f"{_describe_ids(missing_refs)}. Score predictions against the reference file of "
            "the same split, or drop these predictions."
        )
    if missing_preds:
        raise ValueError(
            f"{len(missing_preds)} {what}(s) have references but no prediction: "
            f"{_describe_ids(missing_preds)}. Every reference item needs a prediction "
            "(an empty one counts as wrong); was generation cut short?"
        )


def score_captions(
    predictions: dict[str, str], references: dict[str, list[str]], tokenize: str = "char"
) -> dict[str, float]:
    """BLEU-4, ROUGE-L, CIDEr-D (on ``tokenize`` tokens) and sacrebleu-zh BLEU of a caption corpus.

    Args:
        predictions: image id -> predicted caption (spaces next to Chinese characters are ignored).
        references: image id -> reference captions (at least one non-empty caption each).
        tokenize: "char" (MUGE's rule, the default) or "jieba" (words); see ``TOKENIZERS``.

    Returns:
        {"bleu4", "rouge_l", "cider", "sacrebleu_zh"} all x100, "count" (images scored) and
        "tokenize".

    Raises:
        ValueError: ids differ between predictions and references, or an image has an empty
            reference list or an empty reference caption, or ``tokenize`` is unknown.
    """
    if tokenize not in TOKENIZERS:
        raise ValueError(f"tokenize {tokenize!r}: expected one of {sorted(TOKENIZERS)}")
    tokens = TOKENIZERS[tokenize]
    check_same_ids(predictions, references)
    ids = sorted(references)
    for image_id in ids:
        refs = references[image_id]
        if not refs:
            raise ValueError(
                f"Image id {image_id!r} has an empty reference list; expected at least one "
                "reference caption. Remove the image or add its captions."
            )
        for k, ref in enumerate(refs):
            if not ref.strip():
                raise ValueError(
                    f"Reference caption {k} of image id {image_id!r} is empty; expected a "
                    "non-empty caption. Fix or remove it in the reference file."
                )

    res = {i: [tokens(predictions[i])] for i in ids}
    gts = {i: [tokens(ref) for ref in references[i]] for i in ids}
    # imported here: the scorers are only needed to report, and `import ofa_cn` stays light
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from sacrebleu.metrics import BLEU

    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge_l, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)

    # sacrebleu wants reference *streams*; images with fewer captions are padded with None,
    # which sacrebleu skips (variable number of references).
    max_refs = max(len(references[i]) for i in ids)
    streams = [
        [references[i][k] if k < len(references[i]) else None for i in ids] for k in range(max_refs)
    ]
    sacre = BLEU(tokenize="zh").corpus_score([predictions[i] for i in ids], streams)

    return {
        "bleu4": 100.0 * float(bleu[3]),
        "rouge_l": 100.0 * float(rouge_l),
        "cider": 100.0 * float(cider),
        "sacrebleu_zh": float(sacre.score),
        "count": len(ids),
        "tokenize": tokenize,
    }
