"""Every bad input and fault we know of, one table row each, with what the user must see.

A row is ``Case(id, run, must_see)``: ``run(tmp_path, env)`` feeds the input through the real
path (the task's dataset as fairseq-train and evaluation build it, ``scripts/evaluate.py``'s
``main``, the checkpoint writer, ``ofa-cn convert``) and returns what the user saw: an
``Outcome`` with the error message, or the result. ``must_see`` lists the pieces of that
message (the file, ``row N (line N+1)``, the field or option), or says that the result must equal
a hand computation. A new case is one row in ``CASES``.

The outcome of every row is one of: a clear error (every piece named), a correct result, a
silent result (a bad input accepted, or a wrong result: must be 0), or an error without the
named location (must be 0). ``test_summary`` prints the counts quoted in the README.
"""

from __future__ import annotations

import base64
import errno
import io
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from PIL import Image

import ofa_cn.tasks  # noqa: F401  (registers the tasks that fairseq's setup_task looks up below)
from ofa_cn.data.errors import DataError
from ofa_cn.data.image import MEAN_STD, resize_square

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SIZE = 32  # patch_image_size of the task configs below


@dataclass
class Outcome:
    error: str | None = None  # what the user read (a message, or a command's stderr)
    result: Any = None
    one_line: bool = True  # the command printed one line, no traceback


@dataclass
class Case:
    id: str
    run: Callable[[Path, dict], Outcome]
    must_see: list[str] = field(default_factory=list)  # pieces of the error; "{path}" = the input file
    expected: Callable[[dict], Any] | None = None  # for valid inputs: the hand-computed result

    @property
    def wants_error(self) -> bool:
        return self.expected is None


# ------------------------------------------------------------------ inputs


def png_b64(img: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def noise(width: int = 20, height: int = 16) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


GOOD_IMAGE = png_b64(noise())
GOOD = {  # one good row per task, by field
    "caption": {"image_id": "c0", "image": GOOD_IMAGE, "caption": "一只猫在睡觉"},
    "refcoco": {"uniq_id": "g0", "image": GOOD_IMAGE, "text": "左边的猫", "box": "2,3,12,10"},
    "ocr": {"uniq_id": "o0", "image": GOOD_IMAGE, "text": "中国银行"},
}
FIELDS = {task: list(row) for task, row in GOOD.items()}


def setup(task: str):
    """The registered task with tiny sizes, as fairseq-train and evaluate set it up."""
    from fairseq import tasks
    from omegaconf import OmegaConf

    import ofa_cn  # noqa: F401

    extra = {"refcoco": {"max_image_size": 64}, "ocr": {"patch_image_size": 64}}.get(task, {})  # OCR: >= 64
    return tasks.setup_task(OmegaConf.create({"_name": task, "patch_image_size": SIZE, **extra}))


def write_rows(path: Path, lines: list[str]) -> Path:
    # surrogateescape: "\udce9" in a line is the single byte 0xE9 (not UTF-8) in the file
    path.write_bytes("".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape"))
    return path


def dataset_case(task: str, bad: dict[str, str] | None = None, raw: str | None = None) -> Callable:
    """Rows 0 and 2 good, row 1 bad (`bad` replaces fields; `raw` replaces the whole line); every
    row is read through the task's dataset."""

    def run(tmp_path: Path, env: dict) -> Outcome:
        good = "\t".join(GOOD[task].values())
        line = raw if raw is not None else "\t".join({**GOOD[task], **(bad or {})}.values())
        path = env["path"] = write_rows(tmp_path / f"{task}.tsv", [good, line, good])
        t = setup(task)
        try:
            dataset = t.build_dataset(t.open_tsv(str(path)), "valid", 1)
            return Outcome(result=[dataset[i] for i in range(len(dataset))])
        except DataError as e:
            return Outcome(error=str(e))

    return run


def row_error(field_name: str | None, *pieces: str) -> list[str]:
    where = "{path}: row 1 (line 2)" + (f", field '{field_name}'" if field_name else "")
    return [where, *pieces]


def data_rows() -> list[Case]:
    cases = []
    not_an_image = base64.b64encode(b"GIF89a not really").decode()
    truncated = base64.b64encode(base64.b64decode(GOOD_IMAGE)[:100]).decode()
    for task in GOOD:
        cases += [
            Case(f"{task}/image/not-base64", dataset_case(task, {"image": "@@not base64@@"}),
                 row_error("image", "not base64")),
            Case(f"{task}/image/not-an-image", dataset_case(task, {"image": not_an_image}),
                 row_error("image", "PIL cannot read")),
            Case(f"{task}/image/truncated", dataset_case(task, {"image": truncated}),
                 row_error("image", "PIL cannot read")),
            Case(f"{task}/image/empty", dataset_case(task, {"image": ""}), row_error("image", "found 0 bytes")),
            Case(f"{task}/row/column-missing", dataset_case(task, raw="\t".join(list(GOOD[task].values())[:-1])),
                 row_error(None, f"expected {len(GOOD[task])} tab-separated fields", f"found {len(GOOD[task]) - 1}")),
            Case(f"{task}/row/column-too-many", dataset_case(task, raw="\t".join(GOOD[task].values()) + "\textra"),
                 row_error(None, f"expected {len(GOOD[task])} tab-separated fields", f"found {len(GOOD[task]) + 1}")),
            Case(f"{task}/row/blank-line", dataset_case(task, raw=""),
                 row_error(None, f"expected {len(GOOD[task])} tab-separated fields", "found 1")),
            Case(f"{task}/row/not-utf8", dataset_case(task, raw="x\t" * (len(GOOD[task]) - 1) + "caf\udce9"),
                 row_error(FIELDS[task][-1], "not valid UTF-8")),
        ]
    text_field = {"caption": "caption", "refcoco": "text", "ocr": "text"}
    for task, name in text_field.items():
        cases += [
            Case(f"{task}/{name}/tab-inside", dataset_case(task, {name: "一只\t猫"}),
                 row_error(None, f"expected {len(GOOD[task])} tab-separated fields", f"found {len(GOOD[task]) + 1}")),
            Case(f"{task}/{name}/empty", dataset_case(task, {name: ""}), row_error(name, "empty")),
        ]
        if task != "ocr":  # OCR keeps punctuation: "?!." is text an image can show
            cases.append(Case(f"{task}/{name}/only-punctuation", dataset_case(task, {name: "?!. "}),
                              row_error(name, "empty")))
    boxes = {  # the 20 x 16 image
        "three-values": ("1,2,3", "found 3 values"),
        "five-values": ("1,2,3,4,5", "found 5 values"),
        "not-a-number": ("1,2,x,4", "not a number"),
        "nan": ("1,2,nan,4", "not finite"),
        "inverted-x": ("12,3,2,10", "expected x0 <= x1 and y0 <= y1"),
        "inverted-y": ("2,10,12,3", "expected x0 <= x1 and y0 <= y1"),
        "zero-width": ("5,3,5,10", "positive width and height"),
        "zero-height": ("2,7,12,7", "positive width and height"),
        "negative": ("-1,3,12,10", "outside the 20x16 (w x h) image"),
        "past-right-edge": ("2,3,21,10", "outside the 20x16 (w x h) image"),
        "past-bottom-edge": ("2,3,12,16.5", "outside the 20x16 (w x h) image"),
        "empty": ("", "found 1 values"),
    }
    for name, (box, piece) in boxes.items():
        cases.append(Case(f"refcoco/box/{name}", dataset_case("refcoco", {"box": box}), row_error("box", piece)))
    return cases


# ------------------------------------------------------------------ image modes (valid inputs, exact results)


def mode_case(name: str, make: Callable[[], tuple[Image.Image, str]], rgb: list) -> Case:
    """A 2 x 1 image of a mode through the caption dataset; must equal the hand-computed RGB."""

    def run(tmp_path: Path, env: dict) -> Outcome:
        img, fmt = make()
        good = "\t".join(GOOD["caption"].values())
        line = "\t".join({**GOOD["caption"], "image": png_b64(img, fmt)}.values())
        path = env["path"] = write_rows(tmp_path / "caption.tsv", [good, line])
        t = setup("caption")
        try:
            return Outcome(result=t.build_dataset(t.open_tsv(str(path)), "valid", 1)[1]["patch_image"])
        except DataError as e:
            return Outcome(error=str(e))

    def expected(env: dict) -> torch.Tensor:
        pixels = Image.fromarray(np.array([rgb], dtype=np.uint8), "RGB")
        return resize_square(pixels, SIZE, *MEAN_STD[False])

    return Case(f"image-mode/{name}", run, expected=expected)


def palette() -> Image.Image:
    img = Image.frombytes("P", (2, 1), bytes([0, 1]))
    img.putpalette([10, 20, 30, 200, 100, 50])
    return img


def transparent_palette() -> tuple[Image.Image, str]:
    img = palette()
    img.info["transparency"] = 0  # PNG writes it as a tRNS chunk
    return img, "PNG"


def image_mode_rows() -> list[Case]:
    sixteen = np.array([[1000, 65535]], dtype=np.uint16)  # -> round(v * 255 / 65535): 4, 255
    return [
        mode_case("RGB", lambda: (Image.frombytes("RGB", (2, 1), bytes([1, 2, 3, 250, 251, 252])), "PNG"),
                  [[1, 2, 3], [250, 251, 252]]),
        mode_case("1", lambda: (Image.frombytes("L", (2, 1), bytes([0, 255])).convert("1"), "PNG"),
                  [[0, 0, 0], [255, 255, 255]]),
        mode_case("L", lambda: (Image.frombytes("L", (2, 1), bytes([7, 200])), "PNG"), [[7, 7, 7], [200, 200, 200]]),
        mode_case("P", lambda: (palette(), "PNG"), [[10, 20, 30], [200, 100, 50]]),
        mode_case("P-transparent", transparent_palette, [[255, 255, 255], [200, 100, 50]]),
        # L=100 at alpha 128: (100 * 128 + 255 * 127) / 255 = 177.2 -> 177; alpha 0 -> white
        mode_case("LA", lambda: (Image.frombytes("LA", (2, 1), bytes([100, 128, 100, 0])), "PNG"),
                  [[177, 177, 177], [255, 255, 255]]),
        # (200, 0, 40) at alpha 64: 241, 191, 201
        mode_case("RGBA", lambda: (Image.frombytes("RGBA", (2, 1), bytes([200, 0, 40, 64, 9, 9, 9, 255])), "PNG"),
                  [[241, 191, 201], [9, 9, 9]]),
        # (255 - C) * (255 - K) / 255, no profile (TIFF keeps CMYK as written)
        mode_case("CMYK", lambda: (Image.frombytes("CMYK", (2, 1), bytes([0, 255, 0, 51, 51, 0, 255, 51])), "TIFF"),
                  [[204, 0, 204], [163, 204, 0]]),
        mode_case("I;16", lambda: (Image.fromarray(sixteen), "PNG"), [[4, 4, 4], [255, 255, 255]]),
        mode_case("I", lambda: (Image.fromarray(sixteen.astype(np.int32), "I"), "TIFF"), [[4, 4, 4], [255, 255, 255]]),
        mode_case("F", lambda: (Image.fromarray(np.array([[127.5, 3.2]], dtype=np.float32), "F"), "TIFF"),
                  [[128, 128, 128], [3, 3, 3]]),
    ] + [
        Case("image-mode/F-outside-0-255",
             mode_case("_", lambda: (Image.fromarray(np.array([[1.0, 300.0]], dtype=np.float32), "F"), "TIFF"),
                       []).run, row_error("image", "values in [0, 255]", "found 300.0")),
        Case("image-mode/I-outside-16-bits",
             mode_case("_", lambda: (Image.fromarray(np.array([[1, 70000]], dtype=np.int32), "I"), "TIFF"), []).run,
             row_error("image", "values in [0, 65535]", "found 70000")),
    ]


# ------------------------------------------------------------------ scripts/evaluate.py


def evaluate_case(argv: Callable[[Path, dict], list[str]], lines: list[str] | None = None) -> Callable:
    """scripts/evaluate.py main(argv) in this process; -> its stderr and whether it was one line."""

    def run(tmp_path: Path, env: dict) -> Outcome:
        sys.path.insert(0, str(REPO / "scripts"))
        try:
            import evaluate as script
        finally:
            sys.path.pop(0)
        if lines is not None:
            env["path"] = write_rows(tmp_path / "data.tsv", lines)
        err = io.StringIO()
        real_stderr, sys.stderr = sys.stderr, err
        try:
            status = script.main(argv(tmp_path, env) + ["--no-progress", "--device", "cpu"])
        except BaseException as e:  # noqa: BLE001 - a traceback is what the user would have seen
            return Outcome(error=f"{type(e).__name__}: {e}", one_line=False)
        finally:
            sys.stderr = real_stderr
        text = err.getvalue().strip()
        if status == 0:
            return Outcome(result=(tmp_path / "out" / "predictions.jsonl").read_text(encoding="utf-8"))
        return Outcome(error=text, one_line=len(text.splitlines()) == 1 and "Traceback" not in text)

    return run


def grounding_line(box: str) -> str:
    return "\t".join({**GOOD["refcoco"], "box": box}.values())


def eval_args(*extra: str) -> Callable[[Path, dict], list[str]]:
    return lambda tmp_path, env: ["--checkpoint", str(env["checkpoint"]), "--data", str(env.get("path", "absent.tsv")),
                                  "--out-dir", str(tmp_path / "out"), "--task", "refcoco", "--any-task",
                                  "--task-arg", "max_image_size=256", *extra]


def scoring_fails(tmp_path: Path, env: dict) -> Outcome:
    from ofa_cn.tasks.grounding import RefcocoTask

    def broken(self, rows):
        raise ZeroDivisionError("a metric bug")

    original = RefcocoTask.corpus_metrics
    RefcocoTask.corpus_metrics = broken
    try:
        outcome = evaluate_case(eval_args(), [grounding_line("2,3,12,10")])(tmp_path, env)
    finally:
        RefcocoTask.corpus_metrics = original
    saved = (tmp_path / "out" / "predictions.jsonl").read_text(encoding="utf-8")
    assert '"uniq_id": "g0"' in saved, "the predictions were not written before scoring"
    return outcome


def evaluate_rows() -> list[Case]:
    option = "evaluate.py: error: generation option"
    return [
        Case("evaluate.py/--beam 0", evaluate_case(eval_args("--beam", "0")), [f"{option} beam = 0"]),
        Case("evaluate.py/--beam -1", evaluate_case(eval_args("--beam", "-1")), [f"{option} beam = -1"]),
        Case("evaluate.py/--max-len-b 0", evaluate_case(eval_args("--max-len-b", "0")), [f"{option} max_len_b = 0"]),
        Case("evaluate.py/--min-len -1", evaluate_case(eval_args("--min-len", "-1")), [f"{option} min_len = -1"]),
        Case("evaluate.py/--no-repeat-ngram-size -2", evaluate_case(eval_args("--no-repeat-ngram-size", "-2")),
             [f"{option} no_repeat_ngram_size = -2"]),
        Case("evaluate.py/--min-len 4 --max-len-b 3", evaluate_case(eval_args("--max-len-b", "3", "--min-len", "4")),
             ["evaluate.py: error: generation options min_len = 4 > max_len_b = 3: no length is allowed"]),
        Case("evaluate.py/grounding --min-len 1 --max-len-b 3",
             evaluate_case(eval_args("--max-len-b", "3", "--min-len", "1"), [grounding_line("2,3,12,10")]),
             ["evaluate.py: error: generation option max_len_b = 3: this task's answer is exactly 4 tokens"]),
        Case("evaluate.py/zero-area reference box", evaluate_case(eval_args(), [grounding_line("2,3,12,10"),
                                                                                grounding_line("5,3,5,10")]),
             ["evaluate.py: error: {path}: row 1 (line 2), field 'box'", "positive width and height"]),
        Case("evaluate.py/tab inside the expression",
             evaluate_case(eval_args(), [grounding_line("2,3,12,10"), "g1\t" + GOOD_IMAGE + "\t左边\t的猫\t2,3,12,10"]),
             ["evaluate.py: error: {path}: row 1 (line 2): expected 4 tab-separated fields", "found 5"]),
        Case("evaluate.py/missing data file", evaluate_case(eval_args()),
             ["evaluate.py: error: TSV file absent.tsv does not exist"]),
        Case("evaluate.py/scoring fails after generation", scoring_fails,
             ["evaluate.py: error: scoring failed (ZeroDivisionError: a metric bug)", "predictions are saved in"]),
    ]


# ------------------------------------------------------------------ faults while writing checkpoints


def write_fault(code: int) -> Callable:
    """save_atomically over an existing complete file while the write fails with `code`."""

    def run(tmp_path: Path, env: dict) -> Outcome:
        from ofa_cn.train import training_checkpoints as tc

        target = env["path"] = tmp_path / "checkpoint_last.pt"
        torch.save({"model": torch.ones(3)}, target)

        def failing_save(obj, f):
            f.write(b"PK\x03\x04 partial")
            raise OSError(code, os.strerror(code))

        real = tc.torch.save
        tc.torch.save = failing_save  # simulated, as the real tmpfs runs in test_checkpoint_faults.py need root
        try:
            tc.save_atomically({"model": torch.zeros(3)}, str(target))
            return Outcome(result="saved")
        except tc.CheckpointWriteError as e:
            assert not list(tmp_path.glob("*.tmp")), "the partial file was left behind"
            assert torch.equal(torch.load(target)["model"], torch.ones(3)), "the previous checkpoint changed"
            return Outcome(error=str(e))
        finally:
            tc.torch.save = real

    return run


def read_only_save_dir(tmp_path: Path, env: dict) -> Outcome:
    from ofa_cn.train import training_checkpoints as tc

    env["path"] = tmp_path
    real = tc.write_atomically

    def refused(path, write):
        raise tc._write_error(OSError(errno.EROFS, os.strerror(errno.EROFS)), str(path))

    tc.write_atomically = refused  # simulated EROFS (root ignores chmod; the real read-only mount needs root)
    try:
        tc.verify_checkpoint_directory(str(tmp_path))
        return Outcome(result="writable")
    except OSError as e:
        return Outcome(error=str(e))
    finally:
        tc.write_atomically = real


def kill_during_save(step: int) -> Callable:
    """A process saving over a complete checkpoint kills itself (SIGKILL) at `step` of the write."""

    def run(tmp_path: Path, env: dict) -> Outcome:
        from ofa_cn.train.training_checkpoints import unreadable_reason

        target = env["path"] = tmp_path / "checkpoint_last.pt"
        torch.save({"model": torch.ones(3)}, target)
        code = ("import sys; sys.path.insert(0, sys.argv[1]); import kill_during_save, torch; "
                "from ofa_cn.train.training_checkpoints import save_atomically; "
                "save_atomically({'model': torch.zeros(100000)}, sys.argv[2])")
        proc = subprocess.run([sys.executable, "-c", code, str(HERE), str(target)], capture_output=True, text=True,
                              env={**os.environ, "OFA_CN_KILL_AT": str(step)}, timeout=120)
        assert proc.returncode == -9, proc.stderr[-2000:]
        reason = unreadable_reason(target)
        if reason is not None:
            return Outcome(result=f"checkpoint_last.pt damaged: {reason}")
        values = torch.load(target)["model"]
        return Outcome(result="old" if torch.equal(values, torch.ones(3)) else "new")

    return run


def truncated_checkpoint(tmp_path: Path, env: dict) -> Outcome:
    from ofa_cn.train.training_checkpoints import unreadable_reason

    path = env["path"] = tmp_path / "checkpoint_last.pt"
    torch.save({"model": torch.zeros(10000)}, path)
    path.write_bytes(path.read_bytes()[:5000])
    return Outcome(error=f"{path}: {unreadable_reason(path)}")


def convert_into_non_empty(tmp_path: Path, env: dict) -> Outcome:
    from ofa_cn.apps.cli import main

    out = env["path"] = tmp_path / "exported"
    out.mkdir()
    (out / "config.json").write_text("{}", encoding="utf-8")
    err = io.StringIO()
    real_stderr, sys.stderr = sys.stderr, err
    try:
        status = main(["convert", str(env["checkpoint"]), str(out)])
    finally:
        sys.stderr = real_stderr
    text = err.getvalue().strip()
    assert (out / "config.json").read_text(encoding="utf-8") == "{}", "the folder's file was overwritten"
    return Outcome(result="converted") if status == 0 else Outcome(error=text, one_line=len(text.splitlines()) == 1)


def fault_rows() -> list[Case]:
    return [
        Case("checkpoint/full disk while writing", write_fault(errno.ENOSPC),
             ["no space left on device while writing {path}", "the partial file was removed",
              "Free space there or choose another --save-dir"]),
        Case("checkpoint/quota exceeded while writing", write_fault(errno.EDQUOT),
             ["while writing {path}", "the partial file was removed"]),
        Case("checkpoint/read-only save folder", read_only_save_dir,
             ["cannot write checkpoints to --save-dir {path}: read-only file system"]),
        Case("checkpoint/truncated checkpoint_last.pt", truncated_checkpoint,
             ["{path}: it is truncated or damaged"]),
        Case("checkpoint/kill -9 with half the file written", kill_during_save(1), expected=lambda env: "old"),
        Case("checkpoint/kill -9 after the rename", kill_during_save(3), expected=lambda env: "new"),
        Case("convert/into a non-empty folder", convert_into_non_empty,
             ["ofa-cn convert: error: {path} is not empty (config.json); refusing to overwrite it", "--overwrite"]),
    ]


CASES = data_rows() + image_mode_rows() + evaluate_rows() + fault_rows()
OUTCOMES: dict[str, str] = {}


def judge(case: Case, outcome: Outcome, env: dict) -> tuple[str, str]:
    """-> (kind, explanation); kind: clear error | correct result | silent result | unnamed error."""
    if case.wants_error:
        if outcome.error is None:
            return "silent result", f"no error; the input was accepted ({str(outcome.result)[:200]})"
        pieces = [p.replace("{path}", str(env.get("path"))) for p in case.must_see]
        missing = [p for p in pieces if p not in outcome.error]
        if missing or not outcome.one_line:
            return "unnamed error", f"missing {missing} (one line: {outcome.one_line}) in: {outcome.error}"
        return "clear error", outcome.error
    expected = case.expected(env)
    if outcome.error is not None:
        return "unnamed error", f"a valid input failed: {outcome.error}"
    same = torch.equal(outcome.result, expected) if isinstance(expected, torch.Tensor) else outcome.result == expected
    return ("correct result", "") if same else ("silent result", f"got {outcome.result!r}, expected {expected!r}")


@pytest.fixture
def env(request, tmp_path) -> dict:
    values = {}
    if request.node.callspec.params["case"].id.startswith(("evaluate.py", "convert")):
        values["checkpoint"] = request.getfixturevalue("golden_checkpoint")
    return values


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case: Case, env: dict, tmp_path: Path):
    kind, why = judge(case, case.run(tmp_path, env), env)
    OUTCOMES[case.id] = kind
    assert kind in ("clear error", "correct result"), f"{case.id}: {kind}: {why}"


def test_summary():
    """The counts for the README (complete when the whole file runs)."""
    if len(OUTCOMES) < len(CASES):
        pytest.skip("run the whole file for the counts")
    counts = {kind: sum(k == kind for k in OUTCOMES.values())
              for kind in ("clear error", "correct result", "silent result", "unnamed error")}
    print(f"\nreliability: {len(CASES)} cases; " + "; ".join(f"{k}: {v}" for k, v in counts.items()))
    assert counts["silent result"] == 0 and counts["unnamed error"] == 0
