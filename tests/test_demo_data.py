"""Tests of ofa_cn/demo/data/: the seeded demo dataset and the scene/OCR functions behind it."""

import base64
import hashlib
import io
import json
import logging
import random
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import load_script
from PIL import Image

from ofa_cn.demo import data as demo_data
from ofa_cn.demo.data.binding import BINDING_TASKS, SIDE_GAP, TWO_COLOURS
from ofa_cn.demo.data.scenes import OBJECT_SIZE
from ofa_cn.demo.data import (
    CHARACTERS,
    COLOURS,
    OCR_SIZE,
    SCENE_SIZES,
    SHAPES,
    Scene,
    SceneObject,
    caption_references,
    generate_dataset,
    referring_expressions,
    render_scene,
    resolve_expression,
    sample_scene,
    shape_mask,
    text_lines,
)

REPO = Path(__file__).resolve().parents[1]
COUNTS = {"train": 40, "valid": 8, "test": 12}
COLUMNS = {"caption": 3, "grounding": 4, "ocr": 3}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    generate_dataset(out, seed=3, counts=COUNTS, workers=1)
    return out


def read_rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]


def decode(image_b64: str) -> Image.Image:
    data = base64.b64decode(image_b64, validate=True)
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "image column is not a PNG"
    return Image.open(io.BytesIO(data))


def sample_scenes(n: int, seed: int = 0) -> list[Scene]:
    rng = random.Random(seed)
    return [sample_scene(rng) for _ in range(n)]


def make_scene(*objects: tuple[str, str, int, int, int]) -> Scene:
    """A 160x144 plain scene from (colour, shape, x, y, size) tuples."""
    placed = []
    for colour, shape, x, y, size in objects:
        rows, cols = np.nonzero(shape_mask(shape, size))
        box = (x + int(cols.min()), y + int(rows.min()), x + int(cols.max()) + 1, y + int(rows.max()) + 1)
        placed.append(SceneObject(colour, shape, x, y, size, box))
    return Scene(160, 144, (250, 250, 250), (0, 0), 0.0, 0, tuple(placed))


# ---------------------------------------------------------------- files


def test_same_seed_gives_byte_identical_files(dataset, tmp_path):
    # Also with another worker count: chunks are seeded independently of the process that draws them.
    generate_dataset(tmp_path, seed=3, counts=COUNTS, workers=2)
    names = sorted(p.name for p in dataset.iterdir())
    assert names == sorted(p.name for p in tmp_path.iterdir())
    for name in names:
        assert (dataset / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_other_seed_gives_other_data(dataset, tmp_path):
    generate_dataset(tmp_path, seed=4, counts=COUNTS, workers=1)
    assert (dataset / "ocr_train.tsv").read_bytes() != (tmp_path / "ocr_train.tsv").read_bytes()


def test_counts_and_manifest(dataset):
    manifest = json.loads((dataset / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["settings"]["seed"] == 3
    assert manifest["settings"]["counts"] == COUNTS
    assert Path(manifest["settings"]["font"]).is_file()
    assert len(manifest["colours"]) >= 6 and len(manifest["shapes"]) >= 4
    rgbs = [tuple(rgb) for rgb in manifest["colours"].values()]
    assert len(set(rgbs)) == len(rgbs), f"colours share an RGB value: {rgbs}"
    assert len(set(manifest["characters"])) >= 20
    assert len(manifest["files"]) == 9
    for task in COLUMNS:
        for split, count in COUNTS.items():
            name = f"{task}_{split}.tsv"
            assert len(read_rows(dataset / name)) == count == manifest["files"][name]["rows"]
            digest = hashlib.sha256((dataset / name).read_bytes()).hexdigest()
            assert manifest["files"][name]["sha256"] == digest, name


def test_rows_parse(dataset):
    for task, columns in COLUMNS.items():
        for split in COUNTS:
            rows = read_rows(dataset / f"{task}_{split}.tsv")
            assert len({row[0] for row in rows}) == len(rows), f"{task}_{split}: ids repeat"
            for row in rows:
                assert len(row) == columns and all(row), f"{task}_{split} row {row[0]}: {len(row)} fields"
                image = decode(row[1])
                assert image.mode == "RGB"
                sizes = [OCR_SIZE] if task == "ocr" else SCENE_SIZES
                assert image.size in sizes, f"{task}_{split} row {row[0]}: size {image.size}"


def test_splits_share_no_image(dataset):
    for task in COLUMNS:
        digests = {}
        for split in COUNTS:
            for row in read_rows(dataset / f"{task}_{split}.tsv"):
                digest = hashlib.sha256(decode(row[1]).tobytes()).hexdigest()
                where = f"{split}/{row[0]}"
                assert digest not in digests, f"{task}: image of {where} is also {digests.get(digest)}"
                digests[digest] = f"{split}/{row[0]}"


def test_write_split_skips_images_already_seen(tmp_path):
    seen = {b"a"}
    drawn = iter([(b"a", ("x",)), (b"b", ("y",)), (b"b", ("z",)), (b"c", ("w",)), (b"d", ("v",))])
    demo_data._write_split(tmp_path / "t.tsv", "test", 2, drawn, seen)
    assert (tmp_path / "t.tsv").read_text(encoding="utf-8") == "test-00000\ty\ntest-00001\tw\n"
    assert seen == {b"a", b"b", b"c"}


def test_complete_dataset_is_not_rewritten(dataset, caplog):
    before = {p.name: p.stat().st_mtime_ns for p in dataset.iterdir()}
    with caplog.at_level(logging.INFO, logger="ofa_cn.demo.data"):
        generate_dataset(dataset, seed=3, counts=COUNTS, workers=1)
    assert "already holds a complete demo dataset" in caplog.text
    assert before == {p.name: p.stat().st_mtime_ns for p in dataset.iterdir()}


def test_changed_settings_or_damaged_files_regenerate(tmp_path):
    small = {"train": 3, "valid": 2, "test": 2}
    generate_dataset(tmp_path, seed=0, counts=small, workers=1)
    original = (tmp_path / "caption_test.tsv").read_bytes()
    (tmp_path / "caption_test.tsv").write_text("damaged\n", encoding="utf-8")
    generate_dataset(tmp_path, seed=0, counts=small, workers=1)
    assert (tmp_path / "caption_test.tsv").read_bytes() == original
    generate_dataset(tmp_path, seed=0, counts={**small, "train": 4}, workers=1)
    assert len(read_rows(tmp_path / "caption_train.tsv")) == 4
    # Held-out rows do not depend on the train size.
    assert (tmp_path / "caption_test.tsv").read_bytes() == original


def test_bad_counts_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="counts must give"):
        generate_dataset(tmp_path, counts={"train": 3, "test": 1})


def test_script_writes_a_dataset(tmp_path):
    script = load_script("make_demo_data")
    args = ["--seed", "1", "--train", "3", "--valid", "1", "--test", "2", "--workers", "1"]
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        script.main(["--out", str(tmp_path), *args])
    finally:  # the script configures logging for its whole process; give pytest's setup back
        root.handlers[:] = handlers
        root.setLevel(level)
    manifest = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["settings"]["counts"] == {"train": 3, "valid": 1, "test": 2}
    assert len(read_rows(tmp_path / "grounding_test.tsv")) == 2


# ---------------------------------------------------------------- scenes and boxes


def colour_mask(image: Image.Image, colour: str) -> np.ndarray:
    """(H, W) bool: pixels exactly of the named colour."""
    return (np.asarray(image.convert("RGB")) == COLOURS[colour]).all(axis=-1)


def assert_tight(mask: np.ndarray, box: tuple[int, int, int, int], where: str) -> None:
    """The box lies inside the image, every edge row/column of it holds object pixels, and the
    one-pixel ring around it holds none (boxes are kept at least OBJECT_GAP apart)."""
    x0, y0, x1, y1 = box
    height, width = mask.shape
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, f"{where}: box {box} outside {width}x{height}"
    inside = mask[y0:y1, x0:x1]
    edges = (inside[0], inside[-1], inside[:, 0], inside[:, -1])
    assert all(edge.any() for edge in edges), f"{where}: box {box} is loose"
    ring = np.pad(mask, 1)[y0 : y1 + 2, x0 : x1 + 2].copy()  # padded, so the ring exists at image edges
    ring[1:-1, 1:-1] = False
    assert not ring.any(), f"{where}: object pixels just outside box {box}"


def test_grounding_boxes_are_tight_around_the_object(dataset):
    colour_names = "|".join(COLOURS)
    for split in COUNTS:
        for row in read_rows(dataset / f"grounding_{split}.tsv"):
            colour = re.search(colour_names, row[2]).group(0)
            box = tuple(int(v) for v in row[3].split(","))
            assert_tight(colour_mask(decode(row[1]), colour), box, f"grounding_{split} {row[0]} {row[2]}")


def test_scene_objects_are_drawn_in_their_boxes():
    for scene in sample_scenes(200):
        image = render_scene(scene)
        assert (scene.width, scene.height) == image.size
        for obj in scene.objects:
            assert_tight(colour_mask(image, obj.colour), obj.box, f"{obj}")
            cell = colour_mask(image, obj.colour)[obj.y : obj.y + obj.size, obj.x : obj.x + obj.size]
            assert (cell == shape_mask(obj.shape, obj.size)).all(), f"{obj}: pixels differ from its shape"
        boxes = [o.box for o in scene.objects]
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                apart = a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
                assert apart, f"boxes {a} and {b} overlap"


def test_scenes_vary_and_include_distractors():
    scenes = sample_scenes(300)
    assert {len(s.objects) for s in scenes} == {1, 2, 3}
    assert {o.colour for s in scenes for o in s.objects} == set(COLOURS)
    assert {o.shape for s in scenes for o in s.objects} == set(SHAPES)
    assert {o.size for s in scenes for o in s.objects} == set(range(OBJECT_SIZE[0], OBJECT_SIZE[1] + 1))
    kinds = [[(o.colour, o.shape) for o in s.objects] for s in scenes]
    same_colour = sum(any(a[0] == b[0] and a[1] != b[1] for a in k for b in k) for k in kinds)
    same_shape = sum(any(a[1] == b[1] and a[0] != b[0] for a in k for b in k) for k in kinds)
    identical = sum(len(set(k)) < len(k) for k in kinds)
    assert min(same_colour, same_shape, identical) >= 10, (same_colour, same_shape, identical)


# ---------------------------------------------------------------- referring expressions


def test_every_referring_expression_identifies_exactly_its_object():
    relations = 0
    for scene in sample_scenes(600, seed=1):
        expressions = referring_expressions(scene)
        assert len(expressions) >= 1 or len(scene.objects) > 1
        for expression, obj in expressions:
            assert resolve_expression(scene, expression) == [obj], f"{expression!r} in {scene}"
            relations += not expression.startswith(obj.colour)
    assert relations >= 20, "too few scenes needed a relation to tell identical objects apart"


def test_relations_pick_the_extreme_object():
    left, right = ("红色", "圆形", 10, 50, 30), ("红色", "圆形", 100, 60, 30)
    scene = make_scene(left, right, ("蓝色", "圆形", 55, 10, 20))
    assert len(resolve_expression(scene, "红色的圆形")) == 2
    assert [o.x for o in resolve_expression(scene, "左边的红色圆形")] == [10]
    assert [o.x for o in resolve_expression(scene, "右边的红色圆形")] == [100]
    assert dict((o.x, e) for e, o in referring_expressions(scene)) == {
        10: "左边的红色圆形", 100: "右边的红色圆形", 55: "蓝色的圆形"
    }
    # Stacked vertically: left/right is ambiguous, above/below is not.
    scene = make_scene(("绿色", "三角形", 50, 10, 30), ("绿色", "三角形", 54, 90, 30))
    assert len(resolve_expression(scene, "左边的绿色三角形")) == 2
    assert dict((o.y, e) for e, o in referring_expressions(scene)) == {10: "上面的绿色三角形", 90: "下面的绿色三角形"}
    # Only the size differs enough.
    scene = make_scene(("黄色", "星形", 10, 10, 40), ("黄色", "星形", 45, 55, 20))
    assert [o.size for o in resolve_expression(scene, "最大的黄色星形")] == [40]


def test_unparseable_expression_is_an_error():
    with pytest.raises(ValueError, match="cannot parse referring expression"):
        resolve_expression(make_scene(("红色", "圆形", 10, 10, 20)), "红色的汽车")


# ---------------------------------------------------------------- captions


CAPTION_PHRASE = re.compile(f"(一个|两个|三个)({'|'.join(COLOURS)})的({'|'.join(SHAPES)})")


def test_caption_lists_objects_left_to_right():
    for scene in sample_scenes(300, seed=2):
        canonical, *variants = caption_references(scene)
        phrases = CAPTION_PHRASE.findall(canonical)
        assert "".join(f"{n}{c}的{s}" for n, c, s in phrases) == re.sub("[、和]", "", canonical)
        expected = []  # (colour, shape) groups in order of their leftmost member
        for obj in sorted(scene.objects, key=lambda o: (o.cx, o.cy)):
            if (obj.colour, obj.shape) not in expected:
                expected.append((obj.colour, obj.shape))
        assert [(c, s) for _, c, s in phrases] == expected, canonical
        counts = [sum((o.colour, o.shape) == k for o in scene.objects) for k in expected]
        assert [("一个", "两个", "三个").index(n) + 1 for n, _, _ in phrases] == counts
        assert variants == ["图中有" + canonical, canonical.replace("色的", "色")]


def test_caption_joins_three_groups_naturally():
    scene = make_scene(("红色", "圆形", 5, 5, 20), ("蓝色", "正方形", 50, 5, 20), ("绿色", "星形", 100, 5, 20))
    assert caption_references(scene)[0] == "一个红色的圆形、一个蓝色的正方形和一个绿色的星形"


def test_caption_rows_name_the_colours_drawn(dataset):
    for split in COUNTS:
        for row in read_rows(dataset / f"caption_{split}.tsv"):
            references = row[2].split("&&")
            assert len(references) == (1 if split == "train" else 3)
            image = decode(row[1])
            drawn = {c for c in COLOURS if colour_mask(image, c).any()}
            for reference in references:
                named = {c for c in COLOURS if c in reference}
                assert named == drawn, f"caption_{split} {row[0]}: {reference!r} but drew {drawn}"


# ---------------------------------------------------------------- OCR and vocabulary


def test_ocr_text_uses_the_inventory_and_is_drawn(dataset):
    for split in COUNTS:
        for row in read_rows(dataset / f"ocr_{split}.tsv"):
            text = row[2]
            assert 2 <= len(text) <= 6 and set(text) <= set(CHARACTERS), f"ocr_{split} {row[0]}: {text!r}"
            pixels = np.asarray(decode(row[1]).convert("L"))
            dark = pixels < 120
            assert dark.sum() >= 40 * len(text), f"ocr_{split} {row[0]}: image looks blank"
            assert pixels.mean() > 180, f"ocr_{split} {row[0]}: background not light"


def test_all_text_is_in_the_tokenizer_vocabulary():
    vocab = set((REPO / "ofa_cn" / "assets" / "vocab.txt").read_text(encoding="utf-8").split("\n"))
    words = "".join(COLOURS) + "".join(SHAPES) + "".join(demo_data.RELATIONS) + CHARACTERS + "一两三个的和、图中有"
    assert set(words) <= vocab, f"characters missing from vocab.txt: {sorted(set(words) - vocab)}"


def test_missing_font_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.delenv(demo_data.FONT_ENV, raising=False)
    monkeypatch.setattr(text_lines, "FONT_CANDIDATES", (tmp_path / "none.ttc",))
    with pytest.raises(FileNotFoundError, match="apt-get install -y fonts-wqy-microhei"):
        demo_data.find_font()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        demo_data.find_font(tmp_path / "missing.ttf")


def test_font_without_chinese_is_rejected():
    latin = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    if not latin.is_file():
        pytest.skip(f"{latin} (fonts-dejavu-core) not installed")
    with pytest.raises(ValueError, match="no Chinese glyphs"):
        demo_data.find_font(latin)


# ---------------------------------------------------------------- the binding experiments' rows


@pytest.fixture(scope="module")
def binding_rows(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("binding")
    generate_dataset(out, seed=3, counts=COUNTS, workers=1, tasks=tuple(BINDING_TASKS))
    return out


def test_binding_files_are_written_alone_and_unknown_tasks_named(binding_rows, tmp_path):
    names = {p.name for p in binding_rows.iterdir()}
    assert names == {"manifest.json"} | {f"{t}_{s}.tsv" for t in BINDING_TASKS for s in COUNTS}
    manifest = json.loads((binding_rows / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["settings"]["tasks"] == list(BINDING_TASKS)
    with pytest.raises(ValueError, match=r"unknown demo data tasks \['matching_8colours'\]"):
        generate_dataset(tmp_path, seed=3, counts=COUNTS, workers=1, tasks=("caption", "matching_8colours"))


def test_matching_answers_need_the_text_and_the_picture(binding_rows):
    answers = []
    for split in COUNTS:
        for row in read_rows(binding_rows / f"matching_2colours_{split}.tsv"):
            _id, image, text, answer = row
            assert text in TWO_COLOURS, row[0]
            # exactly one of the two colours is drawn, so the text and the picture are both needed
            assert sum(colour_mask(decode(image), c).any() for c in TWO_COLOURS) == 1, row[0]
            drawn = colour_mask(decode(image), text).any()
            assert answer == ("是" if drawn else "否"), f"matching_2colours_{split} {row[0]}: {text} {answer}"
            answers.append(answer)
    assert 0.3 < answers.count("是") / len(answers) < 0.7  # drawn 50/50: 60 rows


def is_contrast_pair(image: Image.Image, expression: str) -> bool:
    """The picture holds two objects of the expression's shape, one in its colour and one in
    another: the other colour's pixels, cut to their box, are that shape's mask at some size."""
    match = re.fullmatch(f"({'|'.join(COLOURS)})的({'|'.join(SHAPES)})", expression)
    present = [c for c in COLOURS if colour_mask(image, c).any()]
    if match is None or len(present) != 2 or match[1] not in present:
        return False
    (other,) = set(present) - {match[1]}
    ys, xs = np.nonzero(colour_mask(image, other))
    drawn = colour_mask(image, other)[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    return any(np.array_equal(tight(shape_mask(match[2], size)), drawn)
               for size in range(OBJECT_SIZE[0], OBJECT_SIZE[1] + 1))


def tight(mask: np.ndarray) -> np.ndarray:
    """The mask cut to the box of its set pixels."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


@pytest.mark.parametrize("task, colours", [("grounding_2colours", TWO_COLOURS), ("grounding_8colours", tuple(COLOURS))])
def test_contrast_grounding_names_one_of_two_same_shape_objects_by_colour(binding_rows, task, colours):
    used = set()
    for split in COUNTS:
        for row in read_rows(binding_rows / f"{task}_{split}.tsv"):
            image, colour = decode(row[1]), row[2].split("的")[0]
            assert is_contrast_pair(image, row[2]), f"{task}_{split} {row[0]} {row[2]}"
            assert {c for c in COLOURS if colour_mask(image, c).any()} <= set(colours)
            assert_tight(colour_mask(image, colour), tuple(int(v) for v in row[3].split(",")), f"{task} {row[0]}")
            assert image.size in SCENE_SIZES
            used.add(colour)
    assert used == set(colours)



@pytest.mark.parametrize("task, colours", [("sided_2colours", TWO_COLOURS), ("sided_8colours", tuple(COLOURS))])
def test_sided_pairs_put_the_earlier_colour_on_the_left(binding_rows, task, colours):
    for split in COUNTS:
        for row in read_rows(binding_rows / f"{task}_{split}.tsv"):
            image = decode(row[1])
            assert is_contrast_pair(image, row[2]), f"{task}_{split} {row[0]} {row[2]}"
            centres = {}
            for colour in (c for c in colours if colour_mask(image, c).any()):
                ys, xs = np.nonzero(colour_mask(image, colour))
                centres[colour] = (xs.min() + xs.max() + 1) / 2
            left, right = sorted(centres, key=colours.index)
            assert centres[right] - centres[left] >= SIDE_GAP, f"{task}_{split} {row[0]}: {centres}"
            colour = row[2].split("的")[0]
            assert_tight(colour_mask(image, colour), tuple(int(v) for v in row[3].split(",")), f"{task} {row[0]}")


def test_the_last_stage_mixes_pairs_with_corpus_rows(binding_rows, dataset):
    def pairs(path):
        rows = read_rows(path)
        for row in rows:  # every row's expression names its object, with a tight box
            colour = re.search("|".join(COLOURS), row[2]).group(0)
            assert_tight(colour_mask(decode(row[1]), colour), tuple(int(v) for v in row[3].split(",")), row[0])
        return sum(is_contrast_pair(decode(row[1]), row[2]) for row in rows) / len(rows)

    assert pairs(dataset / "grounding_train.tsv") < 0.15  # the corpus alone: few such pairs
    assert 0.3 < pairs(binding_rows / "grounding_mixed_train.tsv") < 0.75  # half drawn as pairs
