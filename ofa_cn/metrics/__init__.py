"""Pure metric functions over strings and boxes; no torch, nothing else from ``ofa_cn``."""

from .caption import TOKENIZERS, char_tokens, check_same_ids, jieba_tokens, score_captions
from .cider import build_document_frequency, cider_d, ngram_counts
from .grounding import box_hit, box_iou, grounding_accuracy
from .ocr import edit_distance, normalize_ocr_text, ocr_scores

__all__ = [
    "TOKENIZERS",
    "box_hit",
    "box_iou",
    "build_document_frequency",
    "char_tokens",
    "check_same_ids",
    "cider_d",
    "edit_distance",
    "grounding_accuracy",
    "jieba_tokens",
    "ngram_counts",
    "normalize_ocr_text",
    "ocr_scores",
    "score_captions",
]
