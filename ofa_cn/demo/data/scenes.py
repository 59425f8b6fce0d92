"""Scenes of 1-3 flat-coloured shapes: sampling, rendering, captions and referring expressions.

Boxes are ``(x0, y0, x1, y1)`` in pixels, x1/y1 exclusive: the tight box of an object's drawn pixels.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import re

import numpy as np
from PIL import Image, ImageDraw

from .background import light_background, sample_background

# Colour name -> RGB. Every colour has a channel of at most 80, so none can equal a background pixel
# (all channels >= 194, see background.light_background); tests rely on matching object pixels exactly.
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
POSITION_MARGIN = 6  # px: centres closer than this are "level", so left/right/above/below is ambiguous
SIZE_RATIO = 1.5  # "biggest" needs every other candidate's area to be at most 1/SIZE_RATIO of it

SCENE_SIZES: tuple[tuple[int, int], ...] = (
    (64, 64), (72, 64), (64, 72), (80, 64), (64, 80), (72, 72),
)  # (width, height): around 64-80 px so the demo model at patch_image_size 64 sees them nearly 1:1
OBJECT_SIZE = (18, 32)  # side of an object's square cell in px, inclusive range
OBJECT_GAP = 2  # px of background kept between object cells, so boxes never touch
DISTRACTOR_PROB = 0.5  # chance that a further object copies the colour and/or shape of an earlier one

COUNT_WORDS = ("一个", "两个", "三个")


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
    return lay_out(rng, width, height, _pick_kinds(rng, count))


def lay_out(rng: random.Random, width: int, height: int, kinds: list[tuple[str, str]]) -> Scene:
    """A width x height scene of objects of these (colour, shape) kinds at random sizes and places,
    on a random background; uses only ``rng``."""
    while True:  # a crowded draw of sizes may not fit; a few retries always suffice
        sizes = [rng.randint(*OBJECT_SIZE) for _ in kinds]
        corners = _place(rng, width, height, sizes)
        if corners is not None:
            break
    objects = tuple(
        SceneObject(colour, shape, x, y, size, _tight_box(shape_mask(shape, size), x, y))
        for (colour, shape), size, (x, y) in zip(kinds, sizes, corners)
    )
    return Scene(width, height, *sample_background(rng), objects=objects)


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


def grounding_sample(rng: random.Random) -> tuple[Image.Image, tuple[str, str]] | None:
    """A corpus grounding row: a random scene, one of its referring expressions and that object's
    box "x0,y0,x1,y1" (image, (expression, box)); None when no object can be singled out."""
    scene = sample_scene(rng)
    expressions = referring_expressions(scene)
    if not expressions:
        return None
    expression, obj = rng.choice(expressions)
    return render_scene(scene), (expression, ",".join(map(str, obj.box)))
