"""A seeded generator of a small Chinese vision-language dataset: captions, grounding and OCR.

Scenes hold 1-3 flat-coloured shapes on a light background; each gets a Chinese caption that
lists its objects left to right, and referring expressions that are checked to pick out exactly
one object. OCR samples are short lines of common hanzi rendered with a CJK font from a system
package. Everything is written as the TSV files the tasks read (see ``generate_dataset``).

Boxes are ``(x0, y0, x1, y1)`` in pixels with x1, y1 exclusive (width = x1 - x0), the tight box
of the object's drawn pixels; this is the convention of the Acc@0.5 metric.

All randomness comes from a ``random.Random`` the caller passes in (and numpy generators seeded
from it), so the same seed gives byte-identical files.
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import functools
import hashlib
import io
import itertools
import json
import logging
import os
import random
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

logger = logging.getLogger(__name__)

# Bump when the generated content changes, so an old directory is not taken as complete.
GENERATOR_VERSION = 1

# Colour name -> RGB. Every colour has a channel of at most 80, so none can equal a background
# pixel (all channels >= 194, see light_background); tests rely on matching object pixels exactly.
COLOURS: dict[str, tuple[int, int, int]] = {
    "红色": (220, 30, 40),
    "绿色": (40, 160, 60),
    "蓝色": (40, 80, 220),
    "黄色": (240, 200, 0),
    "紫色": (140, 60, 190),
    "橙色": (245, 130, 20),
    "黑色": (30, 30, 30),
    "棕色": (140, 80, 30),
}
SHAPES: tuple[str, ...] = ("圆形", "正方形", "三角形", "星形", "菱形")

# OCR inventory: common hanzi, all single entries of the Chinese BERT vocabulary.
CHARACTERS = "天地人上下大小中山水火木金土日月明红绿蓝白黑云雨风花草石田口东西南北光心手门书车马鱼鸟"

# Relations that single out one of several same-colour, same-shape objects. Each maps to
# (the SceneObject property compared, True if the object meant has its largest value).
RELATIONS: dict[str, tuple[str, bool]] = {
    "左边的": ("cx", False),
    "右边的": ("cx", True),
    "上面的": ("cy", False),
    "下面的": ("cy", True),
    "最大的": ("area", True),
    "最小的": ("area", False),
}
POSITION_MARGIN = 10  # px: centres closer than this are "level", so left/right/above/below is ambiguous
SIZE_RATIO = 1.5  # "biggest" needs every other candidate's area to be at most 1/SIZE_RATIO of it

SCENE_SIZES: tuple[tuple[int, int], ...] = (
    (128, 128), (144, 144), (160, 128), (160, 144), (176, 128), (192, 144), (144, 160),
)  # (width, height): around 128-192 px so a model at patch_image_size 128 sees them nearly 1:1
OBJECT_SIZE = (18, 44)  # side of an object's square cell in px, inclusive range
OBJECT_GAP = 3  # px of background kept between object cells, so boxes never touch
DISTRACTOR_PROB = 0.5  # chance that a further object copies the colour and/or shape of an earlier one

OCR_SIZE = (192, 48)  # (width, height) of a rendered text line
OCR_TEXT_LENGTH = (2, 6)
OCR_FONT_SIZE = (24, 34)

COUNT_WORDS = ("一个", "两个", "三个")

# Where the CJK fonts of Debian packages live; the first that exists is used.
FONT_CANDIDATES: tuple[Path, ...] = (
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),  # fonts-wqy-microhei
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),  # fonts-wqy-zenhei
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),  # fonts-noto-cjk
    Path("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf"),  # fonts-droid-fallback
)
FONT_ENV = "OFA_CN_DEMO_FONT"  # overrides the candidates with an explicit font file

TASKS = ("caption", "grounding", "ocr")
SPLITS = ("train", "valid", "test")
CHUNK_ROWS = 500  # rows per independently seeded chunk of a split; the unit of parallel work


@dataclasses.dataclass(frozen=True)
class SceneObject:
    """One flat-coloured shape drawn in a size x size cell whose top-left corner is (x, y)."""

    colour: str
    shape: str
    x: int
    y: int
    size: int
    box: tuple[int, int, int, int]  # tight box of the drawn pixels, x1/y1 exclusive

    @property
    def cx(self) -> float:
        return (self.box[0] + self.box[2]) / 2

    @property
    def cy(self) -> float:
        return (self.box[1] + self.box[3]) / 2

    @property
    def area(self) -> int:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


@dataclasses.dataclass(frozen=True)
class Scene:
    """Everything needed to render a scene image; ``render_scene`` is a pure function of it."""

    width: int
    height: int
    background: tuple[int, int, int]  # light tint of the plain background
    gradient: tuple[int, int]  # grey-level change across the full width and height
    speckle: float  # fraction of background pixels darkened a little; 0 = none
    noise_seed: int  # seeds where the speckles go
    objects: tuple[SceneObject, ...]


# ---------------------------------------------------------------- scenes


def _sample_background(rng: random.Random) -> tuple[tuple[int, int, int], tuple[int, int], float, int]:
    """Draw (tint, gradient, speckle, noise_seed) for ``light_background``.

    About half the backgrounds are plain; the rest get a gentle gradient and/or a few speckles.
    Per-pixel noise is avoided on purpose: it makes each PNG ~20x larger and slower to write.
    """
    tint = tuple(rng.randint(226, 255) for _ in range(3))
    gradient = (rng.randint(-8, 8), rng.randint(-8, 8)) if rng.random() < 0.5 else (0, 0)
    speckle = rng.choice((0.0, 0.0, 0.003, 0.01))
    return tint, gradient, speckle, rng.getrandbits(32)


def light_background(
    height: int, width: int, tint: tuple[int, int, int], gradient: tuple[int, int], speckle: float, seed: int
) -> np.ndarray:
    """A light background: ``tint`` plus a linear grey gradient plus sparse darker speckles.

    Every channel stays >= 226 - 8 - 24 = 194, above the darkest channel of every colour in
    COLOURS, so an object's pixels never coincide with background pixels.

    Returns:
        (height, width, 3) uint8 array.
    """
    shade_x = np.round(gradient[0] * (np.arange(width) / width - 0.5)).astype(np.int16)  # (W,)
    shade_y = np.round(gradient[1] * (np.arange(height) / height - 0.5)).astype(np.int16)  # (H,)
    row = np.asarray(tint, dtype=np.int16) + shade_x[:, None]  # (W, 3)
    pixels = row[None, :, :] + shade_y[:, None, None]  # (H, W, 3), shade within +-8
    if speckle:
        noise_rng = np.random.default_rng(seed)
        count = round(speckle * height * width)
        ys, xs = noise_rng.integers(0, height, count), noise_rng.integers(0, width, count)
        pixels[ys, xs] -= noise_rng.integers(8, 25, size=(count, 1), dtype=np.int16)
    return np.clip(pixels, 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=None)
def shape_mask(shape: str, size: int) -> np.ndarray:
    """Pixels of ``shape`` drawn without antialiasing in a size x size cell.

    Returns:
        (size, size) bool array; read-only because it is cached.
    """
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    last, half = size - 1, (size - 1) / 2
    if shape == "圆形":
        draw.ellipse((0, 0, last, last), fill=255)
    elif shape == "正方形":
        inset = round(size * 0.1)  # a full-cell square would look bigger than the other shapes
        draw.rectangle((inset, inset, last - inset, last - inset), fill=255)
    elif shape == "三角形":
        draw.polygon([(half, 0), (last, last), (0, last)], fill=255)
    elif shape == "菱形":
        draw.polygon([(half, 0), (last, half), (half, last), (0, half)], fill=255)
    elif shape == "星形":
        outer, inner = half, half * 0.42
        points = []
        for k in range(10):  # alternate outer and inner vertices, starting at the top
            radius = outer if k % 2 == 0 else inner
            angle = np.pi * k / 5
            points.append((half + radius * np.sin(angle), half - radius * np.cos(angle)))
        draw.polygon(points, fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    mask = np.asarray(canvas) > 0
    mask.setflags(write=False)
    return mask


def _tight_box(mask: np.ndarray, x: int, y: int) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return (x + int(cols[0]), y + int(rows[0]), x + int(cols[-1]) + 1, y + int(rows[-1]) + 1)


def _pick_kinds(rng: random.Random, count: int) -> list[tuple[str, str]]:
    """Colour and shape of each object; some repeat an earlier object's colour, shape or both."""
    colours = list(COLOURS)
    kinds: list[tuple[str, str]] = []
    for _ in range(count):
        if kinds and rng.random() < DISTRACTOR_PROB:
            colour, shape = rng.choice(kinds)
            copy = rng.choices(("colour", "shape", "both"), weights=(2, 2, 1))[0]
            if copy == "shape":
                colour = rng.choice([c for c in colours if c != colour])
            elif copy == "colour":
                shape = rng.choice([s for s in SHAPES if s != shape])
        else:
            colour, shape = rng.choice(colours), rng.choice(SHAPES)
        kinds.append((colour, shape))
    return kinds


def _place(rng: random.Random, width: int, height: int, sizes: list[int]) -> list[tuple[int, int]] | None:
    """Top-left corners for cells of the given sizes that keep OBJECT_GAP apart, or None."""
    placed: list[tuple[int, int, int]] = []
    for size in sizes:
        for _ in range(50):
            x = rng.randint(OBJECT_GAP, width - OBJECT_GAP - size)
            y = rng.randint(OBJECT_GAP, height - OBJECT_GAP - size)
            if all(
                x + size + OBJECT_GAP <= px or px + psize + OBJECT_GAP <= x
                or y + size + OBJECT_GAP <= py or py + psize + OBJECT_GAP <= y
                for px, py, psize in placed
            ):
                placed.append((x, y, size))
                break
        else:
            return None
    return [(x, y) for x, y, _ in placed]


def sample_scene(rng: random.Random) -> Scene:
    """Draw a random scene of 1-3 non-overlapping objects; uses only ``rng``."""
    width, height = rng.choice(SCENE_SIZES)
    count = rng.choices((1, 2, 3), weights=(1, 2, 2))[0]
    kinds = _pick_kinds(rng, count)
    while True:  # a crowded draw of sizes may not fit; a few retries always suffice
        sizes = [rng.randint(*OBJECT_SIZE) for _ in kinds]
        corners = _place(rng, width, height, sizes)
        if corners is not None:
            break
    objects = tuple(
        SceneObject(colour, shape, x, y, size, _tight_box(shape_mask(shape, size), x, y))
        for (colour, shape), size, (x, y) in zip(kinds, sizes, corners)
    )
    return Scene(width, height, *_sample_background(rng), objects=objects)


def render_scene(scene: Scene) -> Image.Image:
    """The RGB image of ``scene``: the background, then each object in its exact colour."""
    pixels = light_background(
        scene.height, scene.width, scene.background, scene.gradient, scene.speckle, scene.noise_seed
    )
    for obj in scene.objects:
        cell = pixels[obj.y : obj.y + obj.size, obj.x : obj.x + obj.size]
        cell[shape_mask(obj.shape, obj.size)] = COLOURS[obj.colour]
    return Image.fromarray(pixels, "RGB")


def left_to_right(scene: Scene) -> list[SceneObject]:
    """Objects in caption order: by box centre x, then y."""
    return sorted(scene.objects, key=lambda o: (o.cx, o.cy))


def caption_references(scene: Scene) -> list[str]:
    """Captions listing the objects left to right; the first is the canonical one.

    Identical objects (same colour and shape) are counted at the place of the leftmost one:
    ``两个红色的圆形和一个蓝色的正方形``. Three groups are joined as ``A、B和C``.

    Returns:
        [canonical, "图中有" + canonical, canonical without 的 between colour and shape]
    """
    groups: dict[tuple[str, str], int] = {}
    for obj in left_to_right(scene):
        groups[(obj.colour, obj.shape)] = groups.get((obj.colour, obj.shape), 0) + 1

    def join(link: str) -> str:
        phrases = [f"{COUNT_WORDS[n - 1]}{colour}{link}{shape}" for (colour, shape), n in groups.items()]
        if len(phrases) == 1:
            return phrases[0]
        return "、".join(phrases[:-1]) + "和" + phrases[-1]

    canonical = join("的")
    return [canonical, "图中有" + canonical, join("")]


_EXPRESSION = re.compile(
    "^(?P<relation>{})?(?P<colour>{})的?(?P<shape>{})$".format(
        "|".join(RELATIONS), "|".join(COLOURS), "|".join(SHAPES)
    )
)


def resolve_expression(scene: Scene, expression: str) -> list[SceneObject]:
    """The objects of ``scene`` that ``expression`` could refer to; exactly one means unambiguous.

    Args:
        expression: ``[relation]colour[的]shape``, e.g. ``红色的圆形`` or ``左边的绿色三角形``. A
            relation picks the extreme object among those of that colour and shape, and also
            returns any other within POSITION_MARGIN (or SIZE_RATIO) of it, which makes it ambiguous.

    Raises:
        ValueError: if the expression does not follow that grammar.
    """
    match = _EXPRESSION.match(expression)
    if match is None:
        raise ValueError(
            f"cannot parse referring expression {expression!r}; expected [relation]colour[的]shape "
            f"with a relation in {list(RELATIONS)}, a colour in {list(COLOURS)} and a shape in {SHAPES}"
        )
    candidates = [o for o in scene.objects if (o.colour, o.shape) == (match["colour"], match["shape"])]
    if match["relation"] is None or not candidates:
        return candidates
    key, largest = RELATIONS[match["relation"]]
    values = [getattr(o, key) for o in candidates]
    extreme = max(values) if largest else min(values)
    if key == "area":
        near = [v * SIZE_RATIO > extreme if largest else v < extreme * SIZE_RATIO for v in values]
    else:
        near = [abs(v - extreme) < POSITION_MARGIN for v in values]
    return [o for o, keep in zip(candidates, near) if keep]


def referring_expressions(scene: Scene) -> list[tuple[str, SceneObject]]:
    """For each object that can be singled out, the simplest expression that does so.

    ``红色的圆形`` when the colour and shape are unique in the scene. Otherwise a relation among
    the objects of that colour and shape (``左边的红色圆形``): left/right or above/below, whichever
    axis separates them more, then biggest/smallest. Objects that no expression isolates are left
    out. Every expression returned resolves to exactly its object (``resolve_expression``).
    """
    found = []
    for obj in scene.objects:
        twins = [o for o in scene.objects if (o.colour, o.shape) == (obj.colour, obj.shape) and o is not obj]

        def separation(relation: str) -> float:  # sort key: the clearer axis first, sizes last
            key = RELATIONS[relation][0]
            if key == "area" or not twins:
                return float("inf")
            return -min(abs(getattr(obj, key) - getattr(o, key)) for o in twins)

        relations = sorted(RELATIONS, key=separation)
        options = [f"{obj.colour}的{obj.shape}"] + [f"{rel}{obj.colour}{obj.shape}" for rel in relations]
        for expression in options:
            if resolve_expression(scene, expression) == [obj]:
                found.append((expression, obj))
                break
    return found


# ---------------------------------------------------------------- OCR


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
    image = Image.fromarray(light_background(height, width, *_sample_background(rng)), "RGB")

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


# ---------------------------------------------------------------- files


def encode_png_base64(image: Image.Image) -> str:
    """Standard base64 of the image's PNG bytes, as stored in the TSV image column."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _sample(
    task: str, split: str, rng: random.Random, font: Path
) -> tuple[Image.Image, tuple[str, ...]] | None:
    """One sample of ``task``: its image and the TSV fields after the image, or None to draw again."""
    if task == "ocr":
        text = sample_ocr_text(rng)
        return render_text_line(text, font, rng), (text,)
    scene = sample_scene(rng)
    if task == "caption":
        references = caption_references(scene)
        return render_scene(scene), (references[0] if split == "train" else "&&".join(references),)
    expressions = referring_expressions(scene)
    if not expressions:
        return None
    expression, obj = rng.choice(expressions)
    return render_scene(scene), (expression, ",".join(map(str, obj.box)))


def _draw(job: tuple[str, str, int, str, int, Path]) -> list[tuple[bytes, tuple[str, ...]]]:
    """``count`` samples of one random stream as (image digest, TSV fields from the image on).

    Args:
        job: (task, split, seed, stream, count, font); ``stream`` names an independent chunk of a
            split (its index, or a name for spares), so chunks can be drawn in any process.
    """
    task, split, seed, stream, count, font = job
    rng = random.Random(f"ofa-cn-demo/{seed}/{task}/{split}/{stream}")  # str seeds are hashed: stable
    drawn = []
    while len(drawn) < count:
        sample = _sample(task, split, rng, font)
        if sample is not None:
            image, fields = sample
            digest = hashlib.sha256(image.tobytes() + repr(image.size).encode()).digest()
            drawn.append((digest, (encode_png_base64(image), *fields)))
    return drawn


def _spares(task: str, split: str, seed: int, font: Path) -> Iterator[tuple[bytes, tuple[str, ...]]]:
    """Endless replacement samples, drawn lazily: only needed after a duplicate image, which is rare."""
    for index in itertools.count():
        yield from _draw((task, split, seed, f"spare{index}", 10, font))


def _write_split(path: Path, split: str, count: int, drawn: Iterator, seen: set[bytes]) -> None:
    """Write the first ``count`` rows of ``drawn`` whose image is not in ``seen`` (which grows)."""
    written = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for digest, fields in drawn:
            if written == count:
                break
            if digest in seen:
                continue
            seen.add(digest)
            row = (f"{split}-{written:05d}", *fields)
            assert not any(c in field for field in row for c in "\t\n"), f"tab or newline in row {row}"
            f.write("\t".join(row) + "\n")
            written += 1


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _settings(seed: int, counts: dict[str, int], font: Path) -> dict:
    return {"seed": seed, "counts": dict(counts), "version": GENERATOR_VERSION, "font": str(font)}


def _is_complete(out_dir: Path, settings: dict) -> bool:
    """True if ``out_dir`` has a manifest with these settings and every file it lists, unchanged."""
    manifest_path = Path(out_dir) / "manifest.json"
    if not manifest_path.is_file():
        return False
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("settings") != settings:
        return False
    return all(
        (Path(out_dir) / name).is_file() and _sha256(Path(out_dir) / name) == entry["sha256"]
        for name, entry in manifest["files"].items()
    )


def generate_dataset(
    out_dir: str | os.PathLike,
    seed: int = 0,
    counts: dict[str, int] | None = None,
    font: str | os.PathLike | None = None,
    force: bool = False,
    workers: int | None = None,
) -> dict:
    """Write ``{caption,grounding,ocr}_{train,valid,test}.tsv`` and ``manifest.json`` to ``out_dir``.

    Columns (tab separated, UTF-8, images as standard base64 PNG):
    caption ``image_id, image, caption`` (valid/test: references joined by ``&&``);
    grounding ``uniq_id, image, expression, "x0,y0,x1,y1"``; ocr ``uniq_id, image, text``.
    Each task and split has its own random stream, and no image appears twice within a task.

    Args:
        counts: rows per split for every task; default train 3000, valid 100, test 200.
        font: CJK font file for OCR; default ``find_font()``.
        force: regenerate even if ``out_dir`` already holds a complete dataset with these settings.
        workers: processes that draw samples; default one per CPU core.

    Returns:
        The manifest (also written to ``out_dir/manifest.json``, last, so a partial run has none).
    """
    counts = dict(counts or {"train": 3000, "valid": 100, "test": 200})
    if set(counts) != set(SPLITS) or any(n < 0 for n in counts.values()):
        raise ValueError(f"counts must give a non-negative row count for each of {SPLITS}; got {counts}")
    out_dir = Path(out_dir)
    font_path = find_font(font)
    settings = _settings(seed, counts, font_path)
    if not force and _is_complete(out_dir, settings):
        logger.info("%s already holds a complete demo dataset with these settings; nothing to do", out_dir)
        return json.loads((out_dir / "manifest.json").read_text(encoding="utf-8"))

    logger.info("writing the demo dataset to %s: %s", out_dir, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)
    # Each split is drawn as independent chunks of CHUNK_ROWS, so processes share the work evenly
    # and the output does not depend on ``workers``.
    order = [(task, split) for task in TASKS for split in ("test", "valid", "train")]
    jobs = [
        (task, split, seed, str(i), min(CHUNK_ROWS, counts[split] - start), font_path)
        for task, split in order
        for i, start in enumerate(range(0, counts[split], CHUNK_ROWS))
    ]
    workers = min(len(jobs), workers or os.cpu_count() or 1)
    if workers > 1:
        with concurrent.futures.ProcessPoolExecutor(workers) as pool:
            drawn = list(pool.map(_draw, jobs))
    else:
        drawn = [_draw(job) for job in jobs]

    files, seen = {}, {task: set() for task in TASKS}  # seen: image digests, to keep splits disjoint
    for task, split in order:  # held-out splits first, so their rows stay fixed as train grows
        chunks = [rows for job, rows in zip(jobs, drawn) if job[:2] == (task, split)]
        name = f"{task}_{split}.tsv"
        rows = itertools.chain(*chunks, _spares(task, split, seed, font_path))
        _write_split(out_dir / name, split, counts[split], rows, seen[task])
        files[name] = {"rows": counts[split], "sha256": _sha256(out_dir / name)}
        logger.info("wrote %d rows to %s", counts[split], out_dir / name)

    manifest = {
        "settings": settings,
        "files": dict(sorted(files.items())),
        "box_format": "x0,y0,x1,y1 in pixels, x1/y1 exclusive (tight box of the object)",
        "colours": {name: list(rgb) for name, rgb in COLOURS.items()},
        "shapes": list(SHAPES),
        "relations": list(RELATIONS),
        "characters": CHARACTERS,
        "scene_sizes": [list(s) for s in SCENE_SIZES],
        "ocr_size": list(OCR_SIZE),
    }
    text = json.dumps(manifest, ensure_ascii=False, indent=2) + "\n"
    (out_dir / "manifest.json").write_text(text, encoding="utf-8")
    logger.info("demo dataset complete in %s", out_dir)
    return manifest
