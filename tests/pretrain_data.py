"""Small pretraining files in the original layout, built from the demo's seeded scenes (and a
caption-only set that needs no font).

    pairs.tsv       uniq_id, image, caption, question, refs, gt_objects, dataset_name, type
                    (per scene: a caption row, a qa row "how many objects", a visual_grounding row)
    text.tsv        uniq_id, text                      (the captions)
    image.tsv       image_id, image, code              (2c x 2c scenes; "codes" = the quantised mean
                                                        colour of each 8 x 8 block of the c x c centre,
                                                        a stand-in for VQGAN codes of the pixels)
    detection.tsv   image_id, image, label             (every object: box, a category id, its name)
    negatives/      all_captions.txt, object.txt, type2ans.json
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from ofa_cn.demo.data import caption_references, encode_png_base64, referring_expressions, render_scene, sample_scene

COUNTS = "一二三"


def write_caption_files(out: Path, rows: dict[str, int], seed: int = 0) -> Path:
    """caption_{split}.tsv (image_id, image, caption) from demo scenes, without the OCR font the
    full demo dataset needs (for machines without fonts-wqy-microhei)."""
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for split, count in rows.items():
        lines = []
        for i in range(count):
            scene = sample_scene(rng)
            lines.append(f"{split}{i}\t{encode_png_base64(render_scene(scene))}\t{caption_references(scene)[0]}\n")
        (out / f"caption_{split}.tsv").write_text("".join(lines), encoding="utf-8")
    return out


def block_codes(image, block: int = 8) -> list[int]:
    """An RGB image -> one code in [0, 512) per block, row-major: 3 bits per channel of its mean colour."""
    pixels = np.asarray(image, dtype=np.float64)
    h, w, _ = pixels.shape
    means = pixels.reshape(h // block, block, w // block, block, 3).mean(axis=(1, 3))  # [h/b, w/b, 3]
    levels = (means // 32).astype(int)
    return (levels[..., 0] * 64 + levels[..., 1] * 8 + levels[..., 2]).reshape(-1).tolist()


def write_pretrain_files(out: Path, scenes: int = 8, seed: int = 0, code_image_size: int = 128) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    pairs, texts, images, detections, objects = [], [], [], [], set()
    for i in range(scenes):
        scene = sample_scene(rng)
        image = render_scene(scene)
        b64 = encode_png_base64(image)
        caption = caption_references(scene)[0]
        names = [f"{o.colour}的{o.shape}" for o in scene.objects]
        objects.update(names)
        count = len(scene.objects)
        pairs.append([f"{i}c", b64, caption, "", "", "&&".join(names), "demo", "caption"])
        pairs.append([f"{i}q", b64, "", "图中有几个物体?", f"1.0|!+{COUNTS[count - 1]}个", "", "demo", "qa"])
        expression, obj = referring_expressions(scene)[0]
        box = ",".join(str(v) for v in obj.box)
        pairs.append([f"{i}g", b64, expression, "", box, "", "demo", "visual_grounding"])
        texts.append([f"{i}t", caption])
        side = 2 * code_image_size
        square = image.resize((side, side))
        c = code_image_size
        centre = square.crop((c // 2, c // 2, c // 2 + c, c // 2 + c))
        images.append([f"{i}i", encode_png_base64(square), " ".join(map(str, block_codes(centre)))])
        labels = "&&".join(f"{','.join(map(str, o.box))},{k},{n}" for k, (o, n) in enumerate(zip(scene.objects, names)))
        detections.append([f"{i}d", b64, labels])
    files = {}
    for name, rows in (("pairs", pairs), ("text", texts), ("image", images), ("detection", detections)):
        files[name] = out / f"{name}.tsv"
        files[name].write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    neg = out / "negatives"
    neg.mkdir(exist_ok=True)
    (neg / "all_captions.txt").write_text("\n".join(t for _, t in texts) + "\n", encoding="utf-8")
    (neg / "object.txt").write_text("\n".join(sorted(objects)) + "\n", encoding="utf-8")
    (neg / "type2ans.json").write_text(json.dumps({"how many": [f"{c}个" for c in COUNTS], "other": ["是", "否"]},
                                                  ensure_ascii=False), encoding="utf-8")
    files["negatives"] = neg
    return files
