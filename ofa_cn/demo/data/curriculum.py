"""The pretraining curriculum's samples: clean pairs that make the demo model bind words to what it sees.

Why a curriculum (README, the demo): trained on the mixed corpus, the small model learns to read
the expression and to see colours, but not their conjunction: in a scene of a red and a blue
circle, "红色的圆形" and "蓝色的圆形" need both at once, and neither alone predicts the box, so no
first-order gradient starts it. Its steps, each learnt from the one before (measured, 200
held-out rows): is one of two colours in the picture (matching, 是/否), then point at one of two
otherwise identical objects that differ only in colour, two colours first, then all eight.

Every sampler takes the ``random.Random`` of its stream and returns (image, TSV fields after the
image), as the corpus samplers of ``dataset.py`` do.
"""

from __future__ import annotations

import random

from PIL import Image

from ...data.matching import NO, YES
from .scenes import COLOURS, SCENE_SIZES, SHAPES, grounding_sample, lay_out, render_scene, sample_scene

TWO_COLOURS = ("红色", "蓝色")  # the first pair: far apart in hue, and common words



def colour_matching(rng: random.Random, colours: tuple[str, ...]) -> tuple[Image.Image, tuple[str, str]]:
    """A corpus-like scene holding exactly one of ``colours``, one of them as the text, and 是 iff
    the scene's is the text's.

    Neither the text nor the picture alone tells the answer (with every scene allowed, "是 iff one
    of the colours is there" is right 90 % of the time and the model learns that instead).
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


def contrast_or_corpus_grounding(rng: random.Random) -> tuple[Image.Image, tuple[str, str]]:
    """Half eight-colour ``colour_grounding``, half the corpus's grounding rows: the last stage keeps
    the colour binding in use while the model returns to every kind of scene."""
    if rng.random() < 0.5:
        return colour_grounding(rng, tuple(COLOURS))
    while (sample := grounding_sample(rng)) is None:
        pass
    return sample


# task name (the TSV's file prefix) -> (sampler, the unify_task field that reads it)
CURRICULUM = {
    "matching_2colours": (lambda rng: colour_matching(rng, TWO_COLOURS), "matching"),
    "grounding_2colours": (lambda rng: colour_grounding(rng, TWO_COLOURS), "grounding"),
    "grounding_8colours": (lambda rng: colour_grounding(rng, tuple(COLOURS)), "grounding"),
    "grounding_mixed": (contrast_or_corpus_grounding, "grounding"),
}
