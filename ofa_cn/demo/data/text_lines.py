"""OCR samples: short lines of common hanzi rendered with a CJK font from a system package."""

from __future__ import annotations

import functools
import os
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .background import light_background, sample_background

# OCR inventory: common hanzi, all single entries of the Chinese BERT vocabulary.
CHARACTERS = "天地人上下大小中山水火木金土日月明红绿蓝白黑云雨风花草石田口东西南北光心手门书车马鱼鸟"

# (width, height) of a rendered text card. Square on purpose: the OCR transform never makes a side
# shorter than 64 px (data/image.py OCR_MIN_SIDE), so at the demo's patch_image_size 64 a wider
# strip would be stretched in height; 64 x 64 is seen unchanged.
OCR_SIZE = (64, 64)
OCR_TEXT_LENGTH = (2, 3)
OCR_FONT_SIZE = (19, 21)  # px, inclusive
# Characters sit on a fixed OCR_PITCH in one band across the middle of the card, left-aligned
# within OCR_JITTER px: each glyph covers about 1.3 x 1.3 image patches of the demo model (patch
# stride 16), large enough for a small stem trained from scratch to tell the 43 characters apart,
# and in a layout it need not search for.
OCR_PITCH = 21
OCR_BAND_TOP = 21
OCR_JITTER = 1

# Where the CJK fonts of Debian packages live; the first that exists is used.
FONT_CANDIDATES: tuple[Path, ...] = (
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),  # fonts-wqy-microhei
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),  # fonts-wqy-zenhei
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),  # fonts-noto-cjk
    Path("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf"),  # fonts-droid-fallback
)
FONT_ENV = "OFA_CN_DEMO_FONT"  # overrides the candidates with an explicit font file


def find_font(explicit: str | os.PathLike | None = None) -> Path:
    """The CJK font file to render OCR text with; nothing is downloaded.

    Looks at ``explicit``, else $OFA_CN_DEMO_FONT, else the first of FONT_CANDIDATES that exists.

    Raises:
        FileNotFoundError: if no font is found, with the package to install.
        ValueError: if the font cannot draw distinct hanzi (e.g. a Latin-only font).
    """
    chosen = explicit or os.environ.get(FONT_ENV)
    if chosen:
        path = Path(chosen)
        if not path.is_file():
            raise FileNotFoundError(f"font file {path} does not exist (given by argument or ${FONT_ENV})")
    else:
        path = next((p for p in FONT_CANDIDATES if p.is_file()), None)
        if path is None:
            raise FileNotFoundError(
                "no CJK font found for the OCR demo data; looked for "
                + ", ".join(str(p) for p in FONT_CANDIDATES)
                + ". Install one with `apt-get install -y fonts-wqy-microhei`, "
                f"or point ${FONT_ENV} at any .ttf/.ttc/.otf that covers Chinese."
            )
    font = _font(str(path), 32)
    glyphs = set()
    for ch in "天地人":
        canvas = Image.new("L", (48, 48), 0)
        ImageDraw.Draw(canvas).text((8, 8), ch, font=font, fill=255)
        glyphs.add(canvas.tobytes())
    if len(glyphs) < 3:  # fonts without CJK draw the same .notdef box for every hanzi
        raise ValueError(f"font {path} has no Chinese glyphs (天地人 render alike); use a CJK font")
    return path


@functools.lru_cache(maxsize=None)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    # BASIC layout: no dependency on libraqm, so output does not change with its presence.
    return ImageFont.truetype(path, size, layout_engine=ImageFont.Layout.BASIC)


def sample_ocr_text(rng: random.Random) -> str:
    """2-3 characters drawn (with repetition) from CHARACTERS."""
    return "".join(rng.choice(CHARACTERS) for _ in range(rng.randint(*OCR_TEXT_LENGTH)))


def render_text_line(text: str, font_path: Path, rng: random.Random) -> Image.Image:
    """Dark ``text`` on a light, lightly noisy OCR_SIZE card, one character per OCR_PITCH px.

    Font size, a shift of up to OCR_JITTER px, and the colours vary with ``rng``.
    """
    width, height = OCR_SIZE
    if len(text) * OCR_PITCH > width:
        raise ValueError(f"{text!r} has {len(text)} characters; a {width} px card holds {width // OCR_PITCH}")
    image = Image.fromarray(light_background(height, width, *sample_background(rng)), "RGB")
    font = _font(str(font_path), rng.randint(*OCR_FONT_SIZE))
    x0, y0 = rng.randint(0, OCR_JITTER), OCR_BAND_TOP + rng.randint(0, OCR_JITTER)
    colour = tuple(rng.randint(0, 70) for _ in range(3))
    draw = ImageDraw.Draw(image)
    for i, ch in enumerate(text):
        left, top, _right, _bottom = font.getbbox(ch)
        draw.text((x0 + i * OCR_PITCH - left, y0 - top), ch, font=font, fill=colour)
    return image
