"""Rows that tie a colour word to what is seen: the binding stages of the demo's pretraining.

Why (README, the demo): pretrained on the corpus mixture, the small model reads the expression
and sees colours, but between two objects that differ only in colour it boxes one whatever it is
asked: its decoder never reads the colour from the text (a linear probe at the first box token
finds it at chance), and nothing rewards reading it while nothing downstream uses it. In the
order of ``scripts/demo.py`` PRETRAIN_STAGES (held-out rates measured from the pretrained model):

- ``sided_2colours``: box one of two objects of one shape, 红 always left of 蓝: the text alone
  says where, so the decoder learns to read the colour (99.5 % in 600 updates).
- ``grounding_2colours``: the same pairs placed at random: now bound to what is seen (85.5 %
  after 1,000 updates; at chance from every start without the sided rows).
- ``sided_8colours`` and ``grounding_8colours``: the same for any two of the eight colours.
- ``grounding_mixed``: half eight-colour pairs, half the corpus's grounding rows (the last stage).

And one experiment's rows, not a stage: ``matching_2colours``, is 红色 / 蓝色 in the picture, which
holds exactly one of the two (matching rows, 是/否): learnt in ~400 updates from the shipped
checkpoint (100 %; then two-colour grounding after the sided rows 98.5 %), at chance after 1,000
from a rerun of its pretraining: not reliable enough to be a stage.

``scripts/make_demo_data.py --tasks ...`` writes any of them. Every sampler takes the
``random.Random`` of its stream and returns (image, TSV fields after the image), as the corpus
samplers of ``dataset.py`` do.
"""

from __future__ import annotations

import random

from PIL import Image

from ...data.matching import NO, YES
from .scenes import COLOURS, SCENE_SIZES, SHAPES, grounding_sample, lay_out, render_scene, sample_scene

TWO_COLOURS = ("红色", "蓝色")  # the first pair: far apart in hue, and common words
SIDE_GAP = 8  # px between the centres of a sided pair, so that left and right are clear


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


def sided_grounding(rng: random.Random, colours: tuple[str, ...]) -> tuple[Image.Image, tuple[str, str]]:
    """As ``colour_grounding``, but of the two colours the one earlier in ``colours`` is always on
    the left (centres at least SIDE_GAP px apart): the expression alone says which side to box.

    That first-order signal makes the decoder read the colour from the text at the first box
    token (a linear probe there: 50 % before, 100 % after); ``colour_grounding`` then binds it.
    """
    pair, shape = sorted(rng.sample(colours, 2), key=colours.index), rng.choice(SHAPES)
    while True:
        scene = lay_out(rng, *rng.choice(SCENE_SIZES), [(colour, shape) for colour in pair])
        left, right = scene.objects
        if right.cx - left.cx >= SIDE_GAP:
            break
    target = rng.choice(scene.objects)
    return render_scene(scene), (f"{target.colour}的{target.shape}", ",".join(map(str, target.box)))


def pairs_or_corpus_grounding(rng: random.Random) -> tuple[Image.Image, tuple[str, str]]:
    """Half eight-colour ``colour_grounding``, half the corpus's grounding rows: the last stage keeps
    the binding in use while the model returns to every kind of scene."""
    if rng.random() < 0.5:
        return colour_grounding(rng, tuple(COLOURS))
    while (sample := grounding_sample(rng)) is None:
        pass
    return sample


# task name (the TSV's file prefix) -> (sampler, the unify_task field that reads it)
BINDING_TASKS = {
    "matching_2colours": (lambda rng: colour_matching(rng, TWO_COLOURS), "matching"),
    "sided_2colours": (lambda rng: sided_grounding(rng, TWO_COLOURS), "grounding"),
    "grounding_2colours": (lambda rng: colour_grounding(rng, TWO_COLOURS), "grounding"),
    "sided_8colours": (lambda rng: sided_grounding(rng, tuple(COLOURS)), "grounding"),
    "grounding_8colours": (lambda rng: colour_grounding(rng, tuple(COLOURS)), "grounding"),
    "grounding_mixed": (pairs_or_corpus_grounding, "grounding"),
}
