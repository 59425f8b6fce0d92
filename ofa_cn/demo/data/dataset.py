"""Drawing the demo samples in parallel and writing them as the TSV files the tasks read, with a manifest."""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import io
import itertools
import json
import logging
import os
import random
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from .binding import BINDING_TASKS
from .scenes import (
    COLOURS,
    RELATIONS,
    SCENE_SIZES,
    SHAPES,
    caption_references,
    grounding_sample,
    render_scene,
    sample_scene,
)
from .text_lines import CHARACTERS, OCR_SIZE, find_font, render_text_line, sample_ocr_text

logger = logging.getLogger(__name__)

# Bump when the generated content changes, so an old directory is not taken as complete.
GENERATOR_VERSION = 2  # 2: 64-80 px scenes, 64 x 64 OCR cards of 2-3 characters on a 21 px pitch

TASKS = ("caption", "grounding", "ocr")
SPLITS = ("train", "valid", "test")
CHUNK_ROWS = 500  # rows per independently seeded chunk of a split; the unit of parallel work


def encode_png_base64(image: Image.Image) -> str:
    """Standard base64 of the image's PNG bytes, as stored in the TSV image column."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _sample(
    task: str, split: str, rng: random.Random, font: Path
) -> tuple[Image.Image, tuple[str, ...]] | None:
    """One sample of ``task``: its image and the TSV fields after the image, or None to draw again."""
    if task in BINDING_TASKS:
        return BINDING_TASKS[task][0](rng)
    if task == "ocr":
        text = sample_ocr_text(rng)
        return render_text_line(text, font, rng), (text,)
    if task == "grounding":
        return grounding_sample(rng)
    scene = sample_scene(rng)
    references = caption_references(scene)
    return render_scene(scene), (references[0] if split == "train" else "&&".join(references),)


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


def _settings(seed: int, counts: dict[str, int], font: Path, tasks: tuple[str, ...]) -> dict:
    return {"seed": seed, "counts": dict(counts), "version": GENERATOR_VERSION, "font": str(font), "tasks": list(tasks)}


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
    tasks: tuple[str, ...] = TASKS,
) -> dict:
    """Write ``{task}_{train,valid,test}.tsv`` for each of ``tasks`` and ``manifest.json`` to ``out_dir``.

    Columns (tab separated, UTF-8, images as standard base64 PNG):
    caption ``image_id, image, caption`` (valid/test: references joined by ``&&``);
    grounding ``uniq_id, image, expression, "x0,y0,x1,y1"``; ocr ``uniq_id, image, text``; the
    binding experiments' (``binding.BINDING_TASKS``) as the task that reads them: matching
    ``uniq_id, image, text, answer``, grounding as above.
    Each task and split has its own random stream, and no image appears twice within a task.

    Args:
        counts: rows per split for every task; default train 3000, valid 100, test 200.
        font: CJK font file for OCR; default ``find_font()``.
        force: regenerate even if ``out_dir`` already holds a complete dataset with these settings.
        workers: processes that draw samples; default one per CPU core.
        tasks: which to write: the corpus ``TASKS`` (default) or any of ``binding.BINDING_TASKS``.

    Returns:
        The manifest (also written to ``out_dir/manifest.json``, last, so a partial run has none).
    """
    counts = dict(counts or {"train": 3000, "valid": 100, "test": 200})
    if set(counts) != set(SPLITS) or any(n < 0 for n in counts.values()):
        raise ValueError(f"counts must give a non-negative row count for each of {SPLITS}; got {counts}")
    unknown = set(tasks) - set(TASKS) - set(BINDING_TASKS)
    if unknown:
        raise ValueError(f"unknown demo data tasks {sorted(unknown)}; expected some of {TASKS + tuple(BINDING_TASKS)}")
    out_dir = Path(out_dir)
    font_path = find_font(font)
    settings = _settings(seed, counts, font_path, tasks)
    if not force and _is_complete(out_dir, settings):
        logger.info("%s already holds a complete demo dataset with these settings; nothing to do", out_dir)
        return json.loads((out_dir / "manifest.json").read_text(encoding="utf-8"))

    logger.info("writing the demo dataset to %s: %s", out_dir, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)
    # Each split is drawn as independent chunks of CHUNK_ROWS, so processes share the work evenly
    # and the output does not depend on ``workers``.
    order = [(task, split) for task in tasks for split in ("test", "valid", "train")]
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

    files, seen = {}, {task: set() for task in tasks}  # seen: image digests, to keep splits disjoint
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
