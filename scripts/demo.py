#!/usr/bin/env python
"""The main job on an embedded default: generate data, train a small OFA-CN, evaluate, report.

    make demo                                   (= python scripts/demo.py)
    OFA_CN_DEMO_MINUTES=5 make demo             shorter training (default 15 minutes)
    python scripts/demo.py --retrain            train again even if a finished run exists
    python scripts/demo.py --smoke --out DIR    a two-minute version (the test suite runs it)

Everything goes through the real entry points: `fairseq-hydra-train` with configs/demo/demo.yaml,
then ofa_cn.evaluate (what scripts/evaluate.py runs) on each task's held-out split, for the
trained model and for the same model untrained, plus each model's loss with the test rows' own
images against another row's (ofa_cn.image_reliance: does it look at the picture?). Results:
OUT/results.md, OUT/results.json and OUT/report.html (examples with boxes, captions, OCR, and the
loss curve). A longer run (OFA_CN_DEMO_MINUTES) also decays the learning rate over more updates.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger("demo")

TASKS = {  # evaluation task name -> (data prefix, metric key, shown name, target)
    "caption": ("caption", "cider", "CIDEr-D", ">= 100"),
    "refcoco": ("grounding", "acc@0.5", "Acc@0.5 (%)", ">= 50"),
    "ocr": ("ocr", "accuracy", "accuracy (%)", ">= 50"),
}
# demo generation: captions may legitimately repeat 3-grams (一个红色的... 一个红色的...)
GENERATION = {
    "caption": {"beam": 3, "max_len_b": 40, "no_repeat_ngram_size": 0},
    "refcoco": {},
    "ocr": {"beam": 3, "max_len_b": 10},
}
# does the model look at the picture: teacher-forced target loss on this many test rows, with each
# row's own image and with the previous row's (equal losses: the picture is ignored)
RELIANCE_ROWS = 64
RELIANCE_HEADING = (f"Target loss (nats per token, first {RELIANCE_ROWS} test rows) with each row's own image "
                    "and with another row's image; equal losses mean the model ignores the picture:")
# the learning-rate schedule's length per minute of training: about what this 2-core CPU runs
# (2,100-2,440 updates in 15 minutes), so the rate has nearly decayed when the clock stops
UPDATES_PER_MINUTE = 200
SMOKE_OVERRIDES = [
    "model.encoder_layers=1", "model.decoder_layers=1", "model.encoder_embed_dim=48", "model.decoder_embed_dim=48",
    "model.encoder_ffn_embed_dim=64", "model.decoder_ffn_embed_dim=64", "model.encoder_attention_heads=2",
    "model.decoder_attention_heads=2", "task.patch_image_size=64", "task.max_image_size=64",
    "optimization.max_update=4", "dataset.batch_size=4", "dataset.num_workers=0",
    "checkpoint.save_interval_updates=2", "lr_scheduler.warmup_updates=1", "common.log_interval=1",
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(REPO / "demo_out"), help="output folder (default demo_out/)")
    p.add_argument("--minutes", type=float, default=float(os.environ.get("OFA_CN_DEMO_MINUTES", "15")),
                   help="training time budget (default: $OFA_CN_DEMO_MINUTES or 15)")
    p.add_argument("--retrain", action="store_true", help="train again even if a finished run exists")
    p.add_argument("--smoke", action="store_true", help="tiny data and model: checks the pipeline in ~2 minutes")
    p.add_argument("--seed", type=int, default=0, help="data seed")
    return p.parse_args(argv)


def make_data(out: Path, seed: int, smoke: bool) -> Path:
    from ofa_cn.demo_data import generate_dataset

    counts = {"train": 48, "valid": 8, "test": 12} if smoke else None
    data = out / "data"
    generate_dataset(data, seed=seed, counts=counts)  # does nothing if already complete
    return data


def schedule_length(minutes: float) -> int:
    """Updates over which the learning rate decays (`lr_scheduler.total_num_update`) for a run of
    `minutes`: UPDATES_PER_MINUTE a minute, so a longer run keeps learning instead of spending its
    extra time at the final rate (15 minutes: 3,000, the YAML's value)."""
    return max(1, round(UPDATES_PER_MINUTE * minutes))


def training_command(run: Path, data: Path, minutes: float, smoke: bool) -> list[str]:
    """The fairseq-hydra-train command line of a demo run."""
    pairs = {t: f"{data}/{t}_train.tsv,{data}/{t}_valid.tsv" for t in ("caption", "grounding", "ocr")}
    cmd = [str(Path(sys.executable).parent / "fairseq-hydra-train"), "--config-dir", str(REPO / "configs/demo"),
           "--config-name", "demo", f"common.user_dir={REPO / 'ofa_cn'}",
           f"task.caption_data='{pairs['caption']}'", f"task.grounding_data='{pairs['grounding']}'",
           f"task.ocr_data='{pairs['ocr']}'", f"checkpoint.save_dir={run}",
           f"common.tensorboard_logdir={run / 'tensorboard'}", f"optimization.stop_time_hours={minutes / 60:.4f}",
           f"lr_scheduler.total_num_update={schedule_length(minutes)}"]
    if smoke:
        cmd += ["++" + o for o in SMOKE_OVERRIDES]  # ++: set whether or not the YAML has the key
    return cmd


def train(out: Path, data: Path, minutes: float, retrain: bool, smoke: bool) -> Path:
    run = out / "run"
    done = run / "DONE"
    if done.exists() and not retrain:
        logger.info("a finished training run is in %s (use --retrain to train again)", run)
        return run / "checkpoint_last.pt"
    if retrain and run.exists():
        for f in run.glob("checkpoint*.pt"):
            f.unlink()
        done.unlink(missing_ok=True)
    run.mkdir(parents=True, exist_ok=True)
    cmd = training_command(run, data, minutes, smoke)
    logger.info("training (%.1f min budget): %s", minutes, " ".join(cmd))
    resuming = (run / "checkpoint_last.pt").exists()  # an interrupted run: fairseq resumes it
    with open(run / "train.log", "a" if resuming else "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=run)
        for line in proc.stdout:  # progress on the terminal, everything in train.log
            log.write(line)
            if "train_inner" in line or "done training" in line or "Error" in line:
                sys.stderr.write(line)
        if proc.wait() != 0:
            raise SystemExit(f"training failed (exit {proc.returncode}); see {run / 'train.log'}")
    done.write_text(time.strftime("%Y-%m-%d %H:%M:%S"))
    return run / "checkpoint_last.pt"


def untrained_checkpoint(trained: Path) -> Path:
    """The same architecture and config, freshly initialised (seeded): the 'before' column."""
    from ofa_cn.checkpoint import load_checkpoint_file, model_config
    from ofa_cn.model.ofa import OFAModel

    out = trained.with_name("untrained.pt")
    if out.exists():
        return out
    state = load_checkpoint_file(trained)
    torch.manual_seed(1)
    model = OFAModel.from_config(model_config(state))
    torch.save({"cfg": state["cfg"], "model": model.state_dict(), "args": None}, out)
    return out


def evaluate_all(out: Path, data: Path, checkpoint: Path, name: str) -> dict:
    from ofa_cn.evaluate import evaluate

    results = {}
    for task, (prefix, *_rest) in TASKS.items():
        target = out / "eval" / name / task
        if (target / "metrics.json").exists() and (target / "predictions.jsonl").stat().st_mtime > checkpoint.stat().st_mtime:
            results[task] = json.loads((target / "metrics.json").read_text(encoding="utf-8"))
            continue
        logger.info("evaluating the %s model on %s_test.tsv", name, prefix)
        results[task] = evaluate(checkpoint, data / f"{prefix}_test.tsv", target, task_name=task, batch_size=16,
                                 generation=GENERATION[task], device="cpu")
    return results


def image_reliance_all(data: Path, checkpoints: dict[str, Path]) -> dict:
    """Target loss with own vs another row's image, per model and task (the first RELIANCE_ROWS test rows)."""
    from ofa_cn.image_reliance import image_reliance_on_data

    tsvs = {task: data / f"{prefix}_test.tsv" for task, (prefix, *_rest) in TASKS.items()}
    return {name: image_reliance_on_data(ckpt, tsvs, rows=RELIANCE_ROWS) for name, ckpt in checkpoints.items()}


def write_report(out: Path, data: Path, before: dict, after: dict, reliance: dict, minutes: float) -> str:
    from ofa_cn.data.image import decode_image
    from ofa_cn.report import plot_curve, read_training_losses, reliance_table, results_table, write_html

    rows = [{"task": task, "metric": shown, "untrained": float(before[task][key]), "trained": float(after[task][key]),
             "target": target} for task, (_p, key, shown, target) in TASKS.items()]
    table = results_table(rows) + "\n\n" + RELIANCE_HEADING + "\n\n" + reliance_table(reliance)
    (out / "results.md").write_text(table + "\n", encoding="utf-8")
    (out / "results.json").write_text(json.dumps({"untrained": before, "trained": after, "image_reliance": reliance},
                                                 indent=2, ensure_ascii=False), encoding="utf-8")

    def read(path, key):
        return {json.loads(line)[key]: json.loads(line) for line in open(path, encoding="utf-8")}

    captions = read(out / "eval/trained/caption/predictions.jsonl", "image_id")
    boxes = read(out / "eval/trained/refcoco/predictions.jsonl", "uniq_id")
    texts = read(out / "eval/trained/ocr/predictions.jsonl", "uniq_id")
    examples = []
    cap_rows = [line.rstrip("\n").split("\t") for line in open(data / "caption_test.tsv", encoding="utf-8")][:12]
    ref_rows = [line.rstrip("\n").split("\t") for line in open(data / "grounding_test.tsv", encoding="utf-8")][:12]
    ocr_rows = [line.rstrip("\n").split("\t") for line in open(data / "ocr_test.tsv", encoding="utf-8")][:12]
    for cap, ref, ocr in zip(cap_rows, ref_rows, ocr_rows):
        examples.append({
            "image": decode_image(ref[1], "grounding_test.tsv"), "expression": ref[2],
            "box_true": [float(v) for v in ref[3].split(",")], "box_pred": boxes.get(ref[0], {}).get("box"),
            "caption_pred": captions.get(cap[0], {}).get("caption", ""), "caption_ref": cap[2].split("&&")[0],
            "ocr_image": decode_image(ocr[1], "ocr_test.tsv"), "ocr_pred": texts.get(ocr[0], {}).get("text", ""),
            "ocr_ref": ocr[2],
        })
    curve = plot_curve(read_training_losses(out / "run" / "train.log"))
    curve.save(out / "loss_curve.png")
    write_html(out / "report.html", rows, curve, examples,
               notes=f"training budget {minutes:g} min on {torch.get_num_threads()} CPU threads; "
                     f"held-out test split of the generated data; the caption card shows the caption test "
                     f"image's prediction, the picture is the grounding test image.")
    return table


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(name)s | %(message)s", force=True)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    data = make_data(out, args.seed, args.smoke)
    trained = train(out, data, args.minutes, args.retrain, args.smoke)
    untrained = untrained_checkpoint(trained)
    before = evaluate_all(out, data, untrained, "untrained")
    after = evaluate_all(out, data, trained, "trained")
    reliance = image_reliance_all(data, {"untrained": untrained, "trained": trained})
    table = write_report(out, data, before, after, reliance, args.minutes)
    print("\n" + table)
    print(f"\nreport: {out / 'report.html'}   (total {time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
