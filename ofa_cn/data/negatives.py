"""Negatives for the image-text matching examples of pretraining ("does the image describe ...?").

The original reads them from a folder (`neg_sample_dir`) with three files, which we keep:

    all_captions.txt   one caption per line: a random one replaces a true caption
    object.txt         one object name per line: replaces an object of the caption (gt_objects)
    type2ans.json      {"answer type": [answers, ...]}: a wrong answer of the same type (VQA)
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

OBJECT_SWAP_PROBABILITY = 0.4  # the original swaps an object when random() > 0.6
OBJECT_SEPARATOR = "&&"


def _other(options: list[str], value: str, rng: random.Random) -> str:
    """A random element of ``options`` other than ``value`` (when there is one)."""
    pick = rng.choice(options[:-1]) if len(options) > 1 else options[0]
    return options[-1] if pick == value else pick


@dataclass
class Negatives:
    captions: list[str]
    objects: list[str]
    type2ans: dict[str, list[str]]

    def __post_init__(self):
        self.ans2type = {a: t for t, answers in self.type2ans.items() for a in answers}

    @classmethod
    def from_dir(cls, folder: str | Path) -> "Negatives":
        folder = Path(folder)
        missing = [n for n in ("all_captions.txt", "object.txt", "type2ans.json") if not (folder / n).is_file()]
        if missing:
            raise FileNotFoundError(
                f"neg_sample_dir {folder} lacks {', '.join(missing)}: it needs all_captions.txt (a caption per "
                f"line), object.txt (an object name per line) and type2ans.json ({{type: [answers]}})")
        lines = lambda name: [s.strip() for s in (folder / name).read_text(encoding="utf-8").splitlines() if s.strip()]
        captions, objects = lines("all_captions.txt"), lines("object.txt")
        type2ans = json.loads((folder / "type2ans.json").read_text(encoding="utf-8"))
        if not captions or not objects:
            raise ValueError(f"{folder}: all_captions.txt and object.txt must not be empty")
        return cls(captions, objects, type2ans)

    def caption(self, caption: str, gt_objects: str, rng: random.Random) -> str:
        """A caption that does not describe the image: with probability 0.4 (when the row lists its
        objects) the caption with one of its objects replaced, else a random caption."""
        if gt_objects.strip() and rng.random() > 1 - OBJECT_SWAP_PROBABILITY:
            gt_object = rng.choice(gt_objects.strip().split(OBJECT_SEPARATOR))
            return caption.replace(gt_object, _other(self.objects, gt_object, rng))
        return rng.choice(self.captions)

    def answer(self, answer: str, conf: float, rng: random.Random) -> str:
        """A wrong answer: of the same type as ``answer`` when the answer is confident enough
        (conf > p + 0.1 for a uniform p), else of type "other"; counts move by one."""
        p = rng.random()
        answer_type = self.ans2type.get(answer)
        if answer_type is not None and conf > p + 0.1:
            if answer_type == "how many" and answer.isdigit() and p > 0.5:
                count = int(answer) + rng.choice([-1, 1])
                return str(count if count >= 0 else 1)
            return _other(self.type2ans[answer_type], answer, rng)
        return _other(self.type2ans.get("other") or [answer + "?"], answer, rng)
