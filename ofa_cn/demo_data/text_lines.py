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

OCR_SIZE = (192, 48)  # (width, height) of a rendered text line
OCR_TEXT_LENGTH = (2, 6)
OCR_FONT_SIZE = (24, 34)

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
    """2-6 characters drawn (with repetition) from CHARACTERS."""
    return "".join(rng.choice(CHARACTERS) for _ in range(rng.randint(*OCR_TEXT_LENGTH)))


def render_text_line(text: str, font_path: Path, rng: random.Random) -> Image.Image:
    """Dark ``text`` on a light, lightly noisy OCR_SIZE strip; size, place and colours vary with ``rng``."""
    width, height = OCR_SIZE
    image = Image.fromarray(light_background(height, width, *sample_background(rng)), "RGB")

    size = rng.randint(*OCR_FONT_SIZE)
    while True:  # shrink until the line fits with a small margin
        font = _font(str(font_path), size)
        left, top, right, bottom = font.getbbox(text)
        if right - left <= width - 8 and bottom - top <= height - 4:
            break
        size -= 1
    x = rng.randint(4, width - 4 - (right - left)) - left
    y = rng.randint(2, height - 2 - (bottom - top)) - top
    colour = tuple(rng.randint(0, 70) for _ in range(3))
    ImageDraw.Draw(image).text((x, y), text, font=font, fill=colour)
    return image
