#!/usr/bin/env python
"""The main job on an embedded default: pretrain once, then finetune, evaluate and report.

    make demo                                   (= python scripts/demo.py)
    OFA_CN_DEMO_MINUTES=30 make demo            a longer finetuning (default 15 minutes at most)
    python scripts/demo.py --retrain            train again even if finished runs exist
    python scripts/demo.py --smoke --out DIR    a two-minute version (the test suite runs it)
    python scripts/demo.py --pretrain           remake the shipped pretrained checkpoint (~80 minutes, one thread)

As OFA-CN itself was made: a small OFA-CN (`ofa_cn_demo`) is pretrained once on a large generated
corpus (configs/demo/pretrain.yaml; the result ships in fp16 as ofa_cn/assets/demo_pretrained/,
checked by its sha256), and `make demo` finetunes it on the demo's own generated data
(configs/demo/demo.yaml, through the real `fairseq-hydra-train`), side by side with the same
finetuning from random initialisation. Both are evaluated with ofa_cn.apps.evaluate (what
scripts/evaluate.py runs) on a held-out split whose seed is disjoint from everything trained on,
with the untrained and the pretrained-only models, as the OFA-CN checkpoint page compares them.
Results: OUT/results.md, OUT/results.json and OUT/report.html.

A busy machine: every training and evaluation process runs one thread (OMP_NUM_THREADS=1). torch's
OpenMP threads wait for each other by spinning, so a 2-thread process whose second core is taken
by another program loses most of its speed (measured: 27 % of its quiet updates with one busy
loop beside it); two one-thread processes, the two runs side by side, each keep a core, and
with a third CPU-bound program each still gets two thirds of one. The data are read in the
training process itself (num_workers 0), so no loader process competes for the cores.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger("demo")

TASKS = {  # evaluation task name -> (data prefix, metric key, shown name, target)
    "caption": ("caption", "cider", "CIDEr-D", ">= 100"),
    "refcoco": ("grounding", "acc@0.5", "Acc@0.5 (%)", ">= 60"),
    "ocr": ("ocr", "accuracy", "accuracy (%)", ">= 60"),
}
# the four rows of the OFA-CN checkpoint page, as columns: model name -> what it is
MODELS = {
    "untrained": "random initialisation, no training",
    "from scratch": "finetuned on the demo data from random initialisation",
    "pretrained only": "the shipped pretrained checkpoint, not finetuned",
    "pretrained + finetuned": "the shipped pretrained checkpoint finetuned on the demo data",
}
# demo generation: captions may legitimately repeat 3-grams (一个红色的... 一个红色的...)
GENERATION = {
    "caption": {"beam": 3, "max_len_b": 40, "no_repeat_ngram_size": 0},
    "refcoco": {},
    "ocr": {"beam": 3, "max_len_b": 10},
}
DEMO_SEED = 0  # the demo's own data (train, valid and the held-out test split)
PRETRAIN_SEED = 1  # the pretraining corpus: every random stream differs from the demo's
PRETRAIN_COUNTS = {"train": 24000, "valid": 100, "test": 200}  # rows per task
# does the model look at the picture (and the expression): teacher-forced target loss on this many test rows, with each
# row's own image and with the previous row's (equal losses: the picture is ignored)
RELIANCE_ROWS = 64
RELIANCE_HEADING = (f"Target loss (nats per token, first {RELIANCE_ROWS} test rows) with each row's own image "
                    "and with another row's image (for grounding also with another row's expression); equal "
                    "losses mean the model ignores that input")
# Finetuning updates per minute of the budget: both runs side by side, one thread each, make
# about 2.2 updates a second each on a quiet 2-core machine, so 80 a minute finishes in about
# 60 % of the budget there and still within it with one other CPU-bound program running.
UPDATES_PER_MINUTE = 80
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SMOKE_COUNTS = {"train": 48, "valid": 8, "test": 12}
SMOKE_UPDATES = 4  # optimization.max_update of every --smoke run
SMOKE_OVERRIDES = ["dataset.batch_size=4", "checkpoint.save_interval_updates=2", "lr_scheduler.warmup_updates=1",
                   "common.log_interval=1"]
EXAMPLES = 8  # held-out examples per task on the report page
PROGRESS_EVERY_S = 30  # how often each run's update, loss and updates per minute are printed


def machine() -> str:
    """The CPU and the instruction set torch's kernels use here, e.g. "AMD EPYC, AVX2, torch 2.13.0+cpu, 2 cores".

    Runs on one machine give bit-identical weights; on another CPU oneDNN may pick other kernels
    (AVX2 or AVX-512) and round differently, so the results say where they were made.
    """
    import platform

    import torch

    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        name = names[0] if names else name
    return f"{name}, {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}, {os.cpu_count()} cores"


def stopped_early(done: dict[str, object], planned: int, minutes: float) -> str:
    """A warning sentence when a finetuning run stopped at the time limit before its planned
    updates (a busy or slow machine: its results are those of a shorter run), else "".

    done: run name -> updates made (an int, or "?" when its log has none).
    """
    short = {name: u for name, u in done.items() if isinstance(u, int) and u < planned}
    if not short:
        return ""
    runs = ", ".join(f"{name} after {u}" for name, u in short.items())
    return (f" Stopped by the {minutes:g}-minute limit before the {planned} planned updates: {runs}; the machine "
            f"was slower than {UPDATES_PER_MINUTE} updates a minute (busy?), so these rows are a shorter "
            "finetuning's.")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(REPO / "demo_out"), help="output folder (default demo_out/)")
    p.add_argument("--minutes", type=float, default=float(os.environ.get("OFA_CN_DEMO_MINUTES", "15")),
                   help="finetuning budget in minutes (default: $OFA_CN_DEMO_MINUTES or 15); the runs make "
                        f"{UPDATES_PER_MINUTE} updates a minute of it and stop at it in any case")
    p.add_argument("--retrain", action="store_true", help="train again even if finished runs exist")
    p.add_argument("--smoke", action="store_true", help="tiny data, 4 updates: checks the pipeline in ~2 minutes")
    p.add_argument("--pretrain", action="store_true",
                   help="make the pretrained checkpoint (configs/demo/pretrain.yaml) instead of the demo")
    p.add_argument("--pretrained", default=None,
                   help="pretrained folder to finetune (default: the shipped ofa_cn/assets/demo_pretrained, "
                        "sha256-checked); with --pretrain: where to write it")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------- data


def make_data(folder: Path, seed: int, counts: dict[str, int] | None, tasks: tuple[str, ...] | None = None) -> Path:
    """The demo's generated data in `folder` (the corpus's three tasks, or these `tasks`); -> folder."""
    from ofa_cn.demo.data import TASKS, generate_dataset

    generate_dataset(folder, seed=seed, counts=counts, tasks=tasks or TASKS)  # does nothing if already complete
    return folder


DATA_PREFIXES = ("caption", "grounding", "ocr")
TASK_FIELDS = (*DATA_PREFIXES, "matching")  # the unify_task *_data fields the demo's configs list
# The pretraining (configs/demo/pretrain.yaml) in stages: (run folder under OUT/pretrain, the data
# it reads as {unify_task field: TSV prefix under OUT/pretrain}, its updates; None: the YAML's
# max_update). Each starts from the one before's weights. data/: the generated corpus; binding/:
# the rows of ofa_cn/demo/data/binding.py. Why captions first: trained on the three objectives
# from random initialisation, the small model learns to count objects and to read, but not to see
# colours, and a caption stage afterwards does not teach them either; learned first, they are
# kept through the mixture. Why the binding stages after it: the mixture's model boxes some
# object whatever the expression says (its decoder never reads the colour from the text);
# pairs where the colour also tells the side make it read it (text alone: first-order signal),
# and pairs placed at random then bind it to what is seen (two colours: 53.5 -> 85.5 % held-out,
# where every start without the sided rows stayed at chance);
# the last mixture returns to every task with half its grounding rows such pairs (README, the demo).
PRETRAIN_STAGES = (
    ("captions", {"caption": "data/caption"}, 600),
    ("run", {t: f"data/{t}" for t in DATA_PREFIXES}, None),
    ("sided_2colours", {"grounding": "binding/sided_2colours"}, 600),
    ("grounding_2colours", {"grounding": "binding/grounding_2colours"}, 1000),
    ("sided_8colours", {"grounding": "binding/sided_8colours"}, 800),
    ("grounding_8colours", {"grounding": "binding/grounding_8colours"}, 1500),
    ("mixed", {"caption": "data/caption", "grounding": "binding/grounding_mixed", "ocr": "data/ocr"}, 1200),
)
BINDING_ROWS = 12000  # train rows of each binding task (a stage of 1,500 updates reads 24,000)


def data_args(sources: dict[str, str | Path]) -> list[str]:
    """The task.*_data overrides: each field's train,valid TSVs (`sources`: field -> path prefix),
    null for the other fields."""
    return [f"task.{t}_data='{sources[t]}_train.tsv,{sources[t]}_valid.tsv'" if t in sources else f"task.{t}_data=null"
            for t in TASK_FIELDS]


# ------------------------------------------------------------------------------------ training


def finetune_updates(minutes: float) -> int:
    """Updates of each finetuning run for a budget of `minutes` (15 minutes: 1,200)."""
    return max(1, round(UPDATES_PER_MINUTE * minutes))


def training_command(config: str, run: Path, sources: dict[str, str | Path], minutes: float, updates: int,
                     smoke: bool, start: Path | None = None) -> list[str]:
    """The fairseq-hydra-train command line of one run of configs/demo/<config>.yaml.

    Args:
        updates: optimization.max_update (the learning rate decays over them).
        minutes: optimization.stop_time_hours: the run stops there even if `updates` are not done.
        start: a `.pt` to finetune from (fairseq's --finetune-from-model: weights only, on the
            first launch; an interrupted run resumes from its own checkpoint_last.pt).
        sources: unify_task field (caption, grounding, ocr, matching) -> TSV path prefix
            (`<prefix>_train.tsv`, `<prefix>_valid.tsv`); the fields not named read nothing.
    """
    cmd = [str(Path(sys.executable).parent / "fairseq-hydra-train"), "--config-dir", str(REPO / "configs/demo"),
           "--config-name", config, f"common.user_dir={REPO / 'ofa_cn'}", *data_args(sources),
           f"checkpoint.save_dir={run}", f"++common.tensorboard_logdir={run / 'tensorboard'}",
           f"optimization.max_update={updates}", f"optimization.stop_time_hours={minutes / 60:.4f}"]
    if start is not None:
        cmd.append(f"checkpoint.finetune_from_model={start}")
    if smoke:
        cmd += ["++" + o for o in SMOKE_OVERRIDES]  # ++: set whether or not the YAML has the key
    return cmd


def _last_progress(log: Path) -> dict | None:
    """The last `train_inner` entry of a fairseq json log (update, loss, ups, ...), if any."""
    last = None
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if "train_inner" in line and "{" in line:
            try:
                last = json.loads(line[line.index("{"):])
            except json.JSONDecodeError:
                pass
    return last


def run_side_by_side(runs: dict[str, tuple[list[str], Path]]) -> dict[str, float]:
    """Run the training commands at once, one thread each; print progress; -> updates per minute.

    runs: name -> (command, run folder). A folder with a DONE file is skipped.
    """
    procs, logs, started = {}, {}, time.time()
    for name, (cmd, run) in runs.items():
        run.mkdir(parents=True, exist_ok=True)
        resuming = (run / "checkpoint_last.pt").exists()  # an interrupted run: fairseq resumes it
        logs[name] = run / "train.log"
        logger.info("training %s%s: %s", name, " (resuming)" if resuming else "", " ".join(cmd))
        with open(logs[name], "a" if resuming else "w", encoding="utf-8") as log:
            procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=run,
                                           env={**os.environ, **ONE_THREAD})
    rates: dict[str, float] = {}
    shown = started
    while procs:
        time.sleep(1)
        show = time.time() - shown >= PROGRESS_EVERY_S
        shown = time.time() if show else shown
        for name in list(procs):
            done = procs[name].poll() is not None
            if done or show:
                progress = _last_progress(logs[name])
                if progress:  # updates per minute of the run so far (its start-up included)
                    rates[name] = float(progress["num_updates"]) / max(float(progress["wall"]), 1e-9) * 60
                    logger.info("%-22s update %5s  loss %6s  %5.0f updates/min", name, progress["num_updates"],
                                progress["loss"], rates[name])
            if done:
                if procs.pop(name).returncode != 0:
                    for other in procs.values():
                        other.terminate()
                    raise SystemExit(f"training {name} failed; see {logs[name]}")
                (runs[name][1] / "DONE").write_text(time.strftime("%Y-%m-%d %H:%M:%S"))
    return rates


def untrained_checkpoint(trained: Path) -> Path:
    """The same architecture and config, freshly initialised (seeded): the 'untrained' column."""
    import torch

    from ofa_cn.checkpoints.formats import load_checkpoint_file, model_config
    from ofa_cn.model.ofa import OFAModel

    out = trained.with_name("untrained.pt")
    if out.exists():
        return out
    state = load_checkpoint_file(trained)
    torch.manual_seed(1)
    model = OFAModel.from_config(model_config(state))
    torch.save({"cfg": state["cfg"], "model": model.state_dict(), "args": None}, out)
    return out


# ---------------------------------------------------------------------------------- evaluation


def eval_dir(out: Path, model: str) -> Path:
    """Where a model's evaluations go: OUT/eval/<model name as a folder name>."""
    return out / "eval" / model.replace(" ", "_").replace("+", "and")


def _one_thread():
    import torch

    torch.set_num_threads(1)


def _evaluate_job(job: tuple[str, str, str, str, str]) -> tuple[str, str, dict]:
    model, checkpoint, task, data, out_dir = job
    from ofa_cn.apps.evaluate import evaluate

    metrics = evaluate(checkpoint, data, out_dir, task_name=task, batch_size=32, generation=GENERATION[task],
                       device="cpu", progress=False)
    return model, task, metrics


def _reliance_job(job: tuple[str, str, dict]) -> tuple[str, dict]:
    model, checkpoint, tsvs = job
    from ofa_cn.demo.image_reliance import image_reliance_on_data

    return model, image_reliance_on_data(checkpoint, tsvs, rows=RELIANCE_ROWS)


def evaluate_models(out: Path, data: Path, checkpoints: dict[str, Path]) -> tuple[dict, dict]:
    """Metrics and image reliance of every model on every task, two one-thread processes at a time.

    Returns (metrics[model][task], reliance[model][task]); finished evaluations newer than their
    checkpoint are read back instead of recomputed.
    """
    metrics: dict[str, dict] = {m: {} for m in checkpoints}
    jobs = []
    for model, checkpoint in checkpoints.items():
        for task in TASKS:
            target = eval_dir(out, model) / task
            done = target / "metrics.json"
            if done.exists() and done.stat().st_mtime > Path(checkpoint).stat().st_mtime:
                metrics[model][task] = json.loads(done.read_text(encoding="utf-8"))
            else:
                jobs.append((model, str(checkpoint), task, str(data / f"{TASKS[task][0]}_test.tsv"), str(target)))
    tsvs = {task: str(data / f"{prefix}_test.tsv") for task, (prefix, *_rest) in TASKS.items()}
    reliance: dict[str, dict] = {}
    with concurrent.futures.ProcessPoolExecutor(2, initializer=_one_thread) as pool:
        logger.info("evaluating %d model x task pairs and the image reliance of %d models", len(jobs),
                    len(checkpoints))
        for model, task, result in pool.map(_evaluate_job, jobs):
            metrics[model][task] = result
        for model, result in pool.map(_reliance_job, [(m, str(c), tsvs) for m, c in checkpoints.items()]):
            reliance[model] = result
    return metrics, reliance


# -------------------------------------------------------------------------------------- report


def _examples(out: Path, data: Path, model: str) -> dict[str, list[dict]]:
    """The first EXAMPLES held-out rows of each task with `model`'s predictions, for the page."""
    from ofa_cn.data.image import decode_image
    from ofa_cn.metrics.grounding import box_iou

    folder = eval_dir(out, model)

    def predictions(task, key):
        return {json.loads(line)[key]: json.loads(line) for line in open(folder / task / "predictions.jsonl",
                                                                         encoding="utf-8")}

    def rows(prefix):
        with open(data / f"{prefix}_test.tsv", encoding="utf-8") as f:
            return [line.rstrip("\n").split("\t") for _, line in zip(range(EXAMPLES), f)]

    captions, boxes, texts = predictions("caption", "image_id"), predictions("refcoco", "uniq_id"), \
        predictions("ocr", "uniq_id")
    sections = {"caption": [], "grounding": [], "ocr": []}
    for row in rows("caption"):
        refs = row[2].split("&&")
        pred = captions.get(row[0], {}).get("caption", "")
        sections["caption"].append({"image": decode_image(row[1], "caption_test.tsv"), "title": "图片描述",
                                    "prediction": pred, "truth": refs[0], "correct": pred in refs})
    for row in rows("grounding"):
        truth = [float(v) for v in row[3].split(",")]
        pred = boxes.get(row[0], {}).get("box")
        sections["grounding"].append({"image": decode_image(row[1], "grounding_test.tsv"), "title": row[2],
                                      "box_true": truth, "box_pred": pred,
                                      "prediction": ", ".join(f"{v:.0f}" for v in pred) if pred else "(none)",
                                      "truth": ", ".join(f"{v:.0f}" for v in truth),
                                      "correct": pred is not None and box_iou(pred, truth) >= 0.5})
    for row in rows("ocr"):
        pred = texts.get(row[0], {}).get("text", "")
        sections["ocr"].append({"image": decode_image(row[1], "ocr_test.tsv"), "title": "图片上的文字",
                                "prediction": pred, "truth": row[2], "correct": pred.replace(" ", "") == row[2]})
    return sections


def write_report(out: Path, data: Path, metrics: dict, reliance: dict, curves: dict, notes: str) -> str:
    from ofa_cn.demo.report import plot_curves, reliance_table, results_table, write_html

    rows = [{"task": task, "metric": shown, "target": target,
             "values": {m: float(metrics[m][task][key]) for m in MODELS}}
            for task, (_p, key, shown, target) in TASKS.items()]
    table = results_table(rows, list(MODELS))
    reliance_md = reliance_table({m: reliance[m] for m in MODELS})
    (out / "results.md").write_text(f"{table}\n\n{RELIANCE_HEADING}:\n\n{reliance_md}\n\n{notes}\n", encoding="utf-8")
    (out / "results.json").write_text(json.dumps({"metrics": metrics, "image_reliance": reliance, "notes": notes},
                                                 indent=2, ensure_ascii=False), encoding="utf-8")
    curve = plot_curves(curves)
    curve.save(out / "loss_curve.png")
    sections = _examples(out, data, "pretrained + finetuned")
    write_html(out / "report.html", "OFA-CN demo: pretrained, then finetuned, on a 2-core CPU",
               {"Held-out results": table, RELIANCE_HEADING: reliance_md}, curve,
               {"Caption (pretrained + finetuned)": sections["caption"],
                "Grounding (pretrained + finetuned; green: truth, red: prediction)": sections["grounding"],
                "OCR (pretrained + finetuned)": sections["ocr"]}, notes=notes)
    return f"{table}\n\n{RELIANCE_HEADING}:\n\n{reliance_md}"


# ---------------------------------------------------------------------------------------- modes


def stage_grounding(checkpoint: Path, test: Path, run: Path) -> float:
    """Acc@0.5 (%) of a pretraining stage's checkpoint on its grounding rows' held-out split,
    through ofa_cn.apps.evaluate in one one-thread process; kept in run/eval_grounding."""
    done = run / "eval_grounding" / "metrics.json"
    if not (done.exists() and done.stat().st_mtime > checkpoint.stat().st_mtime):
        with concurrent.futures.ProcessPoolExecutor(1, initializer=_one_thread) as pool:
            pool.submit(_evaluate_job, ("", str(checkpoint), "refcoco", str(test), str(done.parent))).result()
    return float(json.loads(done.read_text(encoding="utf-8"))["acc@0.5"])


def pretrain(args, out: Path) -> int:
    """Make the pretrained checkpoint: the fixed updates of each PRETRAIN_STAGES config in turn,
    each stage starting from the last one's weights; the result is exported in fp16."""
    from omegaconf import OmegaConf

    from ofa_cn.demo.pretrained import PRETRAINED_DIR, export_fp16
    from ofa_cn.demo.report import read_training_losses

    counts = SMOKE_COUNTS if args.smoke else PRETRAIN_COUNTS
    make_data(out / "pretrain" / "data", PRETRAIN_SEED, counts)
    binding = tuple(dict.fromkeys(p.split("/")[1] for _f, sources, _u in PRETRAIN_STAGES for p in sources.values()
                                  if p.startswith("binding/")))  # only the rows a stage reads, in stage order
    make_data(out / "pretrain" / "binding", PRETRAIN_SEED, counts if args.smoke else {**counts, "train": BINDING_ROWS},
              tasks=binding)
    started = time.time()
    start, losses, stage_updates, grounding = None, [], {}, {}
    yaml_updates = OmegaConf.load(REPO / "configs/demo/pretrain.yaml")["optimization"]["max_update"]
    for folder, sources, stage_max in PRETRAIN_STAGES:
        run = out / "pretrain" / folder
        updates = SMOKE_UPDATES if args.smoke else stage_max or yaml_updates
        if args.retrain and run.exists():
            for f in run.glob("checkpoint*.pt"):
                f.unlink()
            (run / "DONE").unlink(missing_ok=True)
        if not (run / "DONE").exists():
            # no time limit: the checkpoint is the same whatever the machine's speed
            cmd = training_command("pretrain", run, {t: out / "pretrain" / p for t, p in sources.items()},
                                   minutes=24 * 60, updates=updates, smoke=args.smoke, start=start)
            run_side_by_side({f"pretraining ({folder})": (cmd, run)})
        offset = sum(stage_updates.values())  # one loss curve over the stages
        losses += [(offset + u, loss) for u, loss in read_training_losses(run / "train.log")]
        stage_updates[folder] = updates
        start = run / "checkpoint_last.pt"
        if "grounding" in sources:  # how far the stage got, on its own held-out rows
            grounding[folder] = stage_grounding(start, out / "pretrain" / f"{sources['grounding']}_test.tsv", run)
            logger.info("after %s: grounding Acc@0.5 %.1f %% on its held-out rows", folder, grounding[folder])
    minutes = (time.time() - started) / 60
    target = Path(args.pretrained) if args.pretrained else PRETRAINED_DIR
    made_by = {"command": "python scripts/demo.py --pretrain",
               "config": "configs/demo/pretrain.yaml",
               "data_seed": PRETRAIN_SEED, "rows_per_task": counts, "updates": sum(stage_updates.values()),
               "updates_per_stage": stage_updates, "grounding_acc_per_stage": grounding,
               "minutes_this_run": round(minutes, 1), "machine": machine(), "loss_curve": losses}
    sha = export_fp16(start, target, made_by)
    print(f"\npretrained checkpoint: {target}\nsha256 of model.safetensors: {sha}\n"
          "put it in ofa_cn/demo/pretrained.py (PRETRAINED_SHA256) and the README if this is the shipped one")
    return 0


def demo(args, out: Path) -> int:
    from ofa_cn.demo.pretrained import PRETRAINED_DIR, verify, write_finetune_start

    started = time.time()
    data = make_data(out / "data", DEMO_SEED, SMOKE_COUNTS if args.smoke else None)
    pretrained = Path(args.pretrained) if args.pretrained else verify(PRETRAINED_DIR)
    made_by = json.loads((pretrained / "config.json").read_text(encoding="utf-8")).get("made_by", {})
    if made_by.get("data_seed") == DEMO_SEED:
        raise SystemExit(f"{pretrained} was pretrained on data of seed {DEMO_SEED}, the demo's own: "
                         "its held-out split would not be held out")
    start = write_finetune_start(pretrained, out / "runs" / "pretrained_start.pt")

    updates = SMOKE_UPDATES if args.smoke else finetune_updates(args.minutes)
    runs = {"from scratch": out / "runs" / "from_scratch", "pretrained + finetuned": out / "runs" / "finetuned"}
    sources = {t: data / t for t in DATA_PREFIXES}
    commands = {name: (training_command("demo", run, sources, args.minutes, updates, args.smoke,
                                        start=start if name != "from scratch" else None), run)
                for name, run in runs.items()}
    for name, (_cmd, run) in commands.items():
        if args.retrain and run.exists():
            for f in run.glob("checkpoint*.pt"):
                f.unlink()
            (run / "DONE").unlink(missing_ok=True)
    todo = {name: job for name, job in commands.items() if not (job[1] / "DONE").exists()}
    for name in set(commands) - set(todo):
        logger.info("a finished training run is in %s (use --retrain to train again)", commands[name][1])
    rates = run_side_by_side(todo) if todo else {}
    trained_at = time.time()

    checkpoints = {"untrained": untrained_checkpoint(runs["from scratch"] / "checkpoint_last.pt"),
                   "from scratch": runs["from scratch"] / "checkpoint_last.pt",
                   "pretrained only": pretrained,
                   "pretrained + finetuned": runs["pretrained + finetuned"] / "checkpoint_last.pt"}
    metrics, reliance = evaluate_models(out, data, checkpoints)

    from ofa_cn.demo.report import read_training_losses

    curves = {name: read_training_losses(run / "train.log") for name, run in runs.items()}
    if made_by.get("loss_curve"):
        curves = {"pretraining": made_by["loss_curve"], **curves}
    done = {name: (_last_progress(run / "train.log") or {}).get("num_updates", "?") for name, run in runs.items()}
    notes = (f"Finetuning: {updates} updates planned, at most {args.minutes:g} min, both runs side by side with "
             f"one CPU thread each; done: " + ", ".join(f"{n} {u} updates" for n, u in done.items())
             + (", " + ", ".join(f"{n} {r:.0f} updates/min" for n, r in rates.items()) if rates else "")
             + f". Pretraining: {made_by.get('updates', '?')} updates on {made_by.get('rows_per_task', '?')} "
             f"rows per task of seed {made_by.get('data_seed', '?')}; held-out test split of seed {DEMO_SEED}. "
             f"Machine: {machine()}." + stopped_early(done, updates, args.minutes))
    table = write_report(out, data, metrics, reliance, curves, notes)
    print("\n" + table + "\n\n" + notes)
    print(f"\nreport: {out / 'report.html'}   (training {(trained_at - started) / 60:.1f} min, "
          f"total {time.time() - started:.0f} s)")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(name)s | %(message)s", force=True)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    return pretrain(args, out) if args.pretrain else demo(args, out)


if __name__ == "__main__":
    sys.exit(main())
