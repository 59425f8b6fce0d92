"""Rows that need the text and the picture together: the demo's experiments on binding words to what is seen.

Why (README, the demo): the pretrained demo model reads the expression and sees colours, but
between two objects that differ only in colour its grounding stays at chance: neither the text
nor the picture alone tells the answer. These rows isolate that step, for anyone who wants to
repeat the experiments or try the next one (``scripts/make_demo_data.py --tasks ...`` writes them;
``task.matching_data`` / ``task.grounding_data`` of configs/demo/pretrain.yaml read them):

- ``matching_2colours``: is this colour (红色 or 蓝色) in the picture, which holds exactly one of
  the two. Learnt from the shipped checkpoint in ~400 updates (held-out 100 %).
- ``grounding_2colours`` / ``grounding_8colours``: box one of two objects of one shape that differ
  only in colour (two colours, or any two of the eight). At chance after 1,000-2,000 updates,
  even from the model that answers the matching rows.

Every sampler takes the ``random.Random`` of its stream and returns (image, TSV fields after the
image), as the corpus samplers of ``dataset.py`` do.
"""

from __future__ import annotations

import random

from PIL import Image

from ...data.matching import NO, YES
from .scenes import COLOURS, SCENE_SIZES, SHAPES, lay_out, render_scene, sample_scene

TWO_COLOURS = ("红色", "蓝色")  # the first pair: far apart in hue, and common words


def colour_matching(rng: random.Random, colours: tuple[str, ...]) -> tuple[Image.Image, tuple[str, str]]:
    """A corpus-like scene holding exactly one of ``colours``, one of them as the text, and 是 iff
    the scene's is the text's.

    Neither the text nor the picture alone tells the answer (with every scene allowed, "是 iff one
    of the colours is there" is right 90 % of the time, and the model learns that instead).
    """
    colour, answer = rng.choice(colours), rng.choice((YES, NO))
    while True:
        scene = sample_scene(rng)
        present = {o.colour for o in scene.objects} & set(colours)
        if len(present) == 1 and (colour in present) == (answer == YES):
            return render_scene(scene), (colour, answer)


def colour_grounding(rng: random.Random, colours: tuple[str, ...]) -> tuple[Image.Image, tuple[str, str]]:
    """Two objects of one shape in two of ``colours``; the expression names one by its colour.

    Fields: ``颜色的形状`` (the corpus's expression for a unique object) and its box "x0,y0,x1,y1".
    """
    pair, shape = rng.sample(colours, 2), rng.choice(SHAPES)
    scene = lay_out(rng, *rng.choice(SCENE_SIZES), [(colour, shape) for colour in pair])
    target = rng.choice(scene.objects)
    return render_scene(scene), (f"{target.colour}的{target.shape}", ",".join(map(str, target.box)))


# task name (the TSV's file prefix) -> (sampler, the unify_task field that reads it)
BINDING_TASKS = {
    "matching_2colours": (lambda rng: colour_matching(rng, TWO_COLOURS), "matching"),
    "grounding_2colours": (lambda rng: colour_grounding(rng, TWO_COLOURS), "grounding"),
    "grounding_8colours": (lambda rng: colour_grounding(rng, tuple(COLOURS)), "grounding"),
}
