"""A seeded generator of a small Chinese vision-language dataset: captions, grounding and OCR.

Scenes hold 1-3 flat-coloured shapes on a light background; each gets a Chinese caption that
lists its objects left to right, and referring expressions that are checked to pick out exactly
one object. OCR samples are short lines of common hanzi rendered with a CJK font from a system
package. Everything is written as the TSV files the tasks read (see ``generate_dataset``).

Boxes are ``(x0, y0, x1, y1)`` in pixels with x1, y1 exclusive (width = x1 - x0), the tight box
of the object's drawn pixels; this is the convention of the Acc@0.5 metric.

All randomness comes from a ``random.Random`` the caller passes in (and numpy generators seeded
from it), so the same seed gives byte-identical files.

Modules: ``background.py`` (the light backgrounds both kinds of image share), ``scenes.py``
(shapes, captions, referring expressions), ``text_lines.py`` (fonts and OCR text lines) and
``dataset.py`` (drawing samples in worker processes, writing the TSVs and the manifest).
"""

from .background import light_background
from .dataset import GENERATOR_VERSION, SPLITS, TASKS, encode_png_base64, generate_dataset
from .dataset import _write_split  # noqa: F401  (not public; tests call it as demo_data._write_split)
from .scenes import (
    COLOURS,
    RELATIONS,
    SCENE_SIZES,
    SHAPES,
    Scene,
    SceneObject,
    caption_references,
    left_to_right,
    referring_expressions,
    render_scene,
    resolve_expression,
    sample_scene,
    shape_mask,
)
from .text_lines import CHARACTERS, FONT_ENV, OCR_SIZE, find_font, render_text_line, sample_ocr_text

__all__ = [
    "CHARACTERS",
    "COLOURS",
    "FONT_ENV",
    "GENERATOR_VERSION",
    "OCR_SIZE",
    "RELATIONS",
    "SCENE_SIZES",
    "SHAPES",
    "SPLITS",
    "Scene",
    "SceneObject",
    "TASKS",
    "caption_references",
    "encode_png_base64",
    "find_font",
    "generate_dataset",
    "left_to_right",
    "light_background",
    "referring_expressions",
    "render_scene",
    "render_text_line",
    "resolve_expression",
    "sample_ocr_text",
    "sample_scene",
    "shape_mask",
]
