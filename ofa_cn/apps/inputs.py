"""The images users give the Predictor and the CLI: paths, URLs, bytes, numpy arrays, PIL images.

Each becomes an RGB PIL image, turned upright by its EXIF orientation unless ``exif=False`` (what
every photo viewer shows; TSV datasets never do this, as the original did not). Every failure is an
``ImageInputError`` (a ``ValueError``) whose one-line message names the input and says what was
wrong, or a ``TypeError`` for an input of a type we do not read.
"""

from __future__ import annotations

import io
import urllib.error
import urllib.request
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..data.image import to_rgb

ImageInput = Union[str, Path, Image.Image, np.ndarray, bytes]
URL_SCHEMES = ("http://", "https://")
URL_TIMEOUT_S = 30.0  # per download; a server that stalls longer is reported as unreachable
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
ACCEPTED = "a path (str or Path), an http(s) URL, a PIL image, a numpy uint8 array [H, W, 3] or raw bytes"


class ImageInputError(ValueError):
    """An input that is not a readable image; the message names it and says what was wrong."""


def is_url(source: object) -> bool:
    return isinstance(source, str) and source.lower().startswith(URL_SCHEMES)


def describe(source: ImageInput, position: int) -> str:
    """The name of an input in results and errors: its path or URL, else its kind and position."""
    if isinstance(source, (str, Path)):
        return str(source)
    kind = {Image.Image: "PIL image", np.ndarray: "array", bytes: "bytes"}
    name = next((v for k, v in kind.items() if isinstance(source, k)), type(source).__name__)
    return f"{name} #{position}"


def fetch_url(url: str, timeout: float = URL_TIMEOUT_S) -> bytes:
    """The body of an http(s) URL (standard library only).

    Raises:
        ImageInputError: the server could not be reached, answered with an error, or timed out.
    """
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http(s) only, checked above
            return response.read()
    except urllib.error.HTTPError as e:
        raise ImageInputError(f"image URL {url}: the server answered HTTP {e.code} ({e.reason})") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, TimeoutError):  # while connecting
            raise ImageInputError(f"image URL {url}: no answer within {timeout:g} s") from None
        raise ImageInputError(
            f"image URL {url} is unreachable ({e.reason}); check the address and the network") from None
    except TimeoutError:  # while reading
        raise ImageInputError(f"image URL {url}: no answer within {timeout:g} s") from None


def _array_to_image(array: np.ndarray, name: str) -> Image.Image:
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ImageInputError(
            f"{name}: expected a uint8 array of shape [H, W, 3] (RGB), [H, W, 4] (RGBA) or [H, W] (grey), "
            f"found dtype {array.dtype} and shape {list(array.shape)}; e.g. np.asarray(pil_image.convert('RGB'))"
        )
    return Image.fromarray(np.ascontiguousarray(array))


def _decode(data: bytes | Path, name: str) -> Image.Image:
    """File bytes (or a file) -> a loaded PIL image in its own mode."""
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
            img.load()  # decodes now, so a truncated file fails here
            return img
    except Image.DecompressionBombError as e:
        raise ImageInputError(f"{name} was refused as a possible decompression bomb ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError, ValueError) as e:
        raise ImageInputError(f"{name} is not an image PIL can read ({type(e).__name__}: {e}); "
                              f"expected a PNG, JPEG or other picture file") from None


def read_image(source: ImageInput, name: str, exif: bool = True, timeout: float = URL_TIMEOUT_S) -> Image.Image:
    """One input -> an RGB PIL image.

    Args:
        source: see ``ImageInput`` (a str is a path unless it starts with http:// or https://).
        name: how errors name the input (``describe``).
        exif: turn the picture as its EXIF orientation says (only files, URLs and bytes carry one;
            a PIL image keeps its own EXIF too).
        timeout: seconds a URL may take.

    Raises:
        FileNotFoundError: a path that does not exist.
        ImageInputError: a directory, an unreachable URL, bytes or a file that are not an image.
        TypeError: an input of another type.
    """
    if is_url(source):
        img = _decode(fetch_url(source, timeout), name)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            raise ImageInputError(f"{name} is a directory; give image files (the ofa-cn command line reads "
                                  "the images in a directory for you)")
        if not path.exists():
            raise FileNotFoundError(f"image {name} does not exist")
        img = _decode(path, name)
    elif isinstance(source, bytes):
        img = _decode(source, name)
    elif isinstance(source, Image.Image):
        img = source
    elif isinstance(source, np.ndarray):
        return to_rgb(_array_to_image(source, name), name)  # arrays carry no EXIF
    else:
        raise TypeError(f"{name}: cannot read an image from a {type(source).__name__}; give {ACCEPTED}")
    if exif:
        img = ImageOps.exif_transpose(img)
    return to_rgb(img, name)  # every PIL mode, as the TSV datasets convert it (data/image.py)
