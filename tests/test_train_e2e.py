"""End to end through the real entry points: fairseq-train and fairseq-hydra-train, tiny models.

Each task trains two updates on a small generated TSV, validates with its in-loop metric, and
generates from the saved checkpoint. Plus: resume after a kill equals an uninterrupted run, a
2-process CPU (gloo) run, and finetuning from the golden checkpoint starts from its weights.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ofa_cn.apps.evaluate import evaluate

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = ["--arch", "ofa_cn_base", "--resnet-type", "resnet10", "--encoder-embed-dim", "24",
              "--decoder-embed-dim", "24", "--encoder-ffn-embed-dim", "40", "--decoder-ffn-embed-dim", "40",
              "--encoder-attention-heads", "3", "--decoder-attention-heads", "3", "--encoder-layers", "2",
              "--decoder-layers", "1"]
TASKS = {  # task -> (data prefix, validation flags, best metric)
    "caption": ("caption", ["--eval-cider", "--eval-args", '{"beam":2,"max_len_b":6}'], "cider"),
    "refcoco": ("grounding", ["--eval-acc", "--max-image-size", "64"], "acc"),
    "ocr": ("ocr", ["--eval-acc", "--eval-args", '{"beam":2,"max_len_b":6}'], "acc"),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from ofa_cn.demo.data import generate_dataset

    out = tmp_path_factory.mktemp("data")
    generate_dataset(out, seed=3, counts={"train": 8, "valid": 4, "test": 4}, workers=1)
    return out


def run(cmd: list[str], cwd: Path, env: dict | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{log[-4000:]}"
    return log


def fairseq_train() -> list[str]:
    """The fairseq-train console script, or the module it runs where no script is installed."""
    script = BIN / "fairseq-train"
    return [str(script)] if script.exists() else [sys.executable, "-m", "fairseq_cli.train"]


def train_cmd(task: str, data: Path, save_dir: Path, *extra: str, max_update: int = 2) -> list[str]:
    prefix, valid_flags, metric = TASKS[task]
    return [*fairseq_train(), f"{data}/{prefix}_train.tsv,{data}/{prefix}_valid.tsv",
            "--user-dir", str(REPO / "ofa_cn"), "--task", task, *TINY_MODEL, "--patch-image-size", "64",
            "--criterion", "adjust_label_smoothed_cross_entropy", "--label-smoothing", "0.1",
            "--optimizer", "fused_adam", "--lr", "1e-3", "--batch-size", "4", "--max-update", str(max_update),
            "--save-dir", str(save_dir), "--cpu", "--num-workers", "0", "--seed", "5",
            "--ignore-unused-valid-subsets", "--log-format", "json", "--log-interval", "1",
            "--no-epoch-checkpoints", *valid_flags, "--best-checkpoint-metric", metric,
            "--maximize-best-checkpoint-metric", *extra]


def valid_line(log: str) -> dict:
    lines = [line for line in log.splitlines() if '"valid_loss"' in line]
    assert lines, log[-3000:]
    return json.loads(lines[-1][lines[-1].index("{"):])


@pytest.mark.parametrize("task", list(TASKS))
def test_fairseq_train_validate_generate(task, data, tmp_path):
    log = run(train_cmd(task, data, tmp_path / "ckpt"), cwd=tmp_path)
    valid = valid_line(log)
    metric = TASKS[task][2]
    assert f"valid_{metric}" in valid and 0.0 <= float(valid[f"valid_{metric}"]) <= 100.0
    assert float(valid["valid_loss"]) > 0
    state = torch.load(tmp_path / "ckpt" / "checkpoint_last.pt", weights_only=False)
    assert state["optimizer_history"][-1]["num_updates"] == 2
    assert state["cfg"]["task"]["_name"] == task
    metrics = evaluate(tmp_path / "ckpt" / "checkpoint_last.pt", data / f"{TASKS[task][0]}_test.tsv",
                       tmp_path / "eval", batch_size=4, generation={"beam": 2, "max_len_b": 6}, progress=False)
    assert metrics["count"] == 4
    rows = [json.loads(line) for line in open(tmp_path / "eval" / "predictions.jsonl", encoding="utf-8")]
    assert len(rows) == 4
    if task == "refcoco":
        assert all(len(r["box"]) == 4 for r in rows)


def hydra_cmd(prefix: str, data: Path, tmp_path: Path, *extra: str) -> list[str]:
    """fairseq-hydra-train on the demo YAML, switched to one task's TSVs with tiny sizes."""
    script = BIN / "fairseq-hydra-train"
    entry = [str(script)] if script.exists() else [sys.executable, "-m", "fairseq_cli.hydra_train"]
    pair = f"'{data}/{prefix}_train.tsv,{data}/{prefix}_valid.tsv'"
    return [*entry, "--config-dir", str(REPO / "configs/demo"), "--config-name", "demo",
            f"common.user_dir={REPO / 'ofa_cn'}", "task._name=unify_task", f"task.{prefix}_data={pair}",
            *[f"++task.{p}_data=null" for p in ("caption", "grounding", "ocr") if p != prefix],
            "task.patch_image_size=64", "task.max_image_size=64", "++model.resnet_type=resnet10",
            "++model.encoder_embed_dim=24", "++model.decoder_embed_dim=24", "++model.encoder_ffn_embed_dim=40",
            "++model.decoder_ffn_embed_dim=40", "++model.encoder_attention_heads=3", "++model.decoder_attention_heads=3",
            "++model.encoder_layers=2", "++model.decoder_layers=1", "optimization.max_update=2",
            "dataset.batch_size=4", "dataset.num_workers=0", f"checkpoint.save_dir={tmp_path / 'ckpt'}",
            "common.log_interval=1", *extra]


@pytest.mark.parametrize("task", list(TASKS))
def test_fairseq_hydra_train(task, data, tmp_path):
    """fairseq-hydra-train on the demo YAML, switched to one task with tiny sizes."""
    prefix, _, _ = TASKS[task]
    cmd = hydra_cmd(prefix, data, tmp_path, f"common.tensorboard_logdir={tmp_path / 'tb'}")
    log = run(cmd, cwd=tmp_path)
    assert '"num_updates": "2"' in log
    assert any((tmp_path / "tb").rglob("events.out.tfevents.*")), "no tensorboard log written"
    task_name = {"grounding": "refcoco"}.get(prefix, prefix)
    metrics = evaluate(tmp_path / "ckpt" / "checkpoint_last.pt", data / f"{prefix}_test.tsv", tmp_path / "eval",
                       task_name=task_name, batch_size=4, generation={"beam": 2, "max_len_b": 6}, progress=False)
    assert metrics["count"] == 4


def test_fairseq_train_pretraining(tmp_path):
    """unify_task with every original objective: image-text rows plus text, image and detection
    files; the second batch's image-code rows train the decoder's image-code parameters."""
    log = run(pretrain_cmd(tmp_path), cwd=tmp_path)
    epochs = [json.loads(line[line.index("{"):]) for line in log.splitlines() if '"train_loss"' in line]
    assert len(epochs) == 2, log[-3000:]
    assert all(float(e["train_loss_v1"]) > 0 and float(e["train_loss_v2"]) > 0 for e in epochs)
    # loss = per-token loss of the pairs + that of the extras (both logged in bits)
    assert abs(float(epochs[0]["train_loss"]) - float(epochs[0]["train_loss_v1"]) - float(epochs[0]["train_loss_v2"])) < 0.01
    valid = valid_line(log)
    assert float(valid["valid_loss"]) > 0 and "valid_loss_v1" not in valid  # validation: one batch
    state, steps = final_state(tmp_path / "ckpt" / "checkpoint_last.pt")
    assert steps == 2
    # image infilling is the only objective that reaches these: they moved from their initial values
    assert not torch.equal(state["decoder.code_layernorm_embedding.weight"], torch.ones(24))
    assert state["decoder.image_rel_pos_table_list.0.weight"].abs().sum() > 0


def test_pretrain_yaml_trains_with_every_objective(tmp_path):
    """configs/pretrain/ofa_cn_base.yaml through fairseq-hydra-train (CPU, fp32, tiny model): its task
    section reads the original's files and trains both batches."""
    from pretrain_data import write_pretrain_files

    files = write_pretrain_files(tmp_path / "data", scenes=4, seed=5)
    script = BIN / "fairseq-hydra-train"
    entry = [str(script)] if script.exists() else [sys.executable, "-m", "fairseq_cli.hydra_train"]
    cmd = [*entry, "--config-dir", str(REPO / "configs/pretrain"), "--config-name", "ofa_cn_base",
           f"common.user_dir={REPO / 'ofa_cn'}", "common.cpu=true", "common.fp16=false", "common.log_format=json",
           "common.log_interval=1", f"task.data={files['pairs']}", f"task.text_data={files['text']}",
           f"task.image_data={files['image']}", f"task.detection_data={files['detection']}",
           f"task.neg_sample_dir={files['negatives']}", "task.patch_image_size=64", "criterion.sample_patch_num=9",
           "++model.resnet_type=resnet10", "++model.encoder_embed_dim=24", "++model.decoder_embed_dim=24",
           "++model.encoder_ffn_embed_dim=40", "++model.decoder_ffn_embed_dim=40",
           "++model.encoder_attention_heads=3", "++model.decoder_attention_heads=3", "++model.encoder_layers=2",
           "++model.decoder_layers=1", "optimization.max_update=2", "lr_scheduler.warmup_updates=1",
           "dataset.batch_size=12", "dataset.num_workers=0", f"checkpoint.save_dir={tmp_path / 'ckpt'}"]
    log = run(cmd, cwd=tmp_path)
    epochs = [json.loads(line[line.index("{"):]) for line in log.splitlines() if '"train_loss"' in line]
    assert len(epochs) == 2 and all(float(e["train_loss_v2"]) > 0 for e in epochs), log[-3000:]
    state, steps = final_state(tmp_path / "ckpt" / "checkpoint_last.pt")
    assert steps == 2 and not torch.equal(state["decoder.code_layernorm_embedding.weight"], torch.ones(24))


def pretrain_cmd(tmp_path: Path) -> list[str]:
    from pretrain_data import write_pretrain_files

    files = write_pretrain_files(tmp_path / "data", scenes=4, seed=2)
    cmd = train_cmd("caption", tmp_path, tmp_path / "ckpt", max_update=2)
    cmd[len(fairseq_train())] = f"{files['pairs']},{files['pairs']}"
    cmd[cmd.index("--task") + 1] = "unify_task"
    cmd[cmd.index("--batch-size") + 1] = "12"  # one batch per epoch: rows 0 and 8 bring the second batch
    cut = cmd.index("--eval-cider")
    cmd = cmd[:cut] + ["--text-data", str(files["text"]), "--image-data", str(files["image"]),
                       "--detection-data", str(files["detection"]), "--neg-sample-dir", str(files["negatives"]),
                       "--sample-patch-num", "9", "--report-accuracy"]
    return cmd


def final_state(path: Path):
    state = torch.load(path, weights_only=False)
    return state["model"], state["optimizer_history"][-1]["num_updates"]


def test_resume_equals_uninterrupted(data, tmp_path):
    straight = tmp_path / "straight"
    run(train_cmd("caption", data, straight, "--disable-validation", max_update=4), cwd=tmp_path)
    resumed = tmp_path / "resumed"
    run(train_cmd("caption", data, resumed, "--disable-validation", max_update=2), cwd=tmp_path)
    log = run(train_cmd("caption", data, resumed, "--disable-validation", max_update=4), cwd=tmp_path)
    assert "Loaded checkpoint" in log
    a, steps_a = final_state(straight / "checkpoint_last.pt")
    b, steps_b = final_state(resumed / "checkpoint_last.pt")
    assert steps_a == steps_b == 4
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=1e-5, msg=key)


def test_two_process_cpu_gloo(data, tmp_path):
    """Two CPU processes with explicit ranks (fairseq's torchrun path needs CUDA to pick a device)."""
    port = 29500 + os.getpid() % 400
    base = train_cmd("caption", data, tmp_path / "ckpt", "--disable-validation")
    procs = []
    for rank in range(2):
        cmd = base + ["--distributed-world-size", "2", "--distributed-rank", str(rank), "--distributed-no-spawn",
                      "--distributed-init-method", f"tcp://127.0.0.1:{port}", "--ddp-backend", "legacy_ddp",
                      "--distributed-backend", "gloo", "--device-id", "0"]
        procs.append(subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      env={**os.environ, "OMP_NUM_THREADS": "1"}))
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs[0][-3000:] + logs[1][-3000:]
    assert "distributed init (rank 1)" in logs[0] + logs[1]
    _, steps = final_state(tmp_path / "ckpt" / "checkpoint_last.pt")
    assert steps == 2


def test_finetune_from_golden_starts_from_its_weights(data, golden_checkpoint, tmp_path):
    golden = torch.load(golden_checkpoint, weights_only=False)
    args = golden["cfg"]["model"]
    model_flags = ["--arch", "ofa_base", "--resnet-type", args.resnet_type]
    for name in ("encoder_embed_dim", "decoder_embed_dim", "encoder_ffn_embed_dim", "decoder_ffn_embed_dim",
                 "encoder_attention_heads", "decoder_attention_heads", "encoder_layers", "decoder_layers"):
        model_flags += ["--" + name.replace("_", "-"), str(getattr(args, name))]
    cmd = train_cmd("caption", data, tmp_path / "ckpt", "--disable-validation", max_update=1)
    cmd[cmd.index("--arch"):cmd.index("--arch") + len(TINY_MODEL)] = model_flags
    cmd[cmd.index("--lr") + 1] = "1e-12"
    cmd += ["--restore-file", str(golden_checkpoint), "--reset-optimizer", "--reset-dataloader",
            "--reset-meters", "--reset-lr-scheduler", "--batch-size", "2"]
    log = run(cmd, cwd=tmp_path)
    assert "Loaded checkpoint" in log
    tuned, _ = final_state(tmp_path / "ckpt" / "checkpoint_last.pt")
    for key, value in golden["model"].items():
        if "running_" in key or "num_batches_tracked" in key:
            continue  # BatchNorm statistics move in train mode
        torch.testing.assert_close(tuned[key], value, atol=1e-5, rtol=0, msg=key)


def first_update_loss(log: str) -> float:
    # fairseq-train: "... | INFO | train_inner | {...}"; fairseq-hydra-train: "[...][train_inner][INFO] - {...}"
    lines = [json.loads(line[line.index("{"):]) for line in log.splitlines()
             if "train_inner" in line and '"loss"' in line]
    assert lines, log[-3000:]
    return float(lines[0]["loss"])


def mixed_precision_runs(precision: str, device: str, tmp_path: Path) -> dict[str, float]:
    """Train 2 updates in fp32 and in `precision` with fairseq's own trainer paths (same seed and
    batches): --fp16 through fairseq-train; common.bf16 through fairseq-hydra-train, because
    fairseq 0.12's fairseq-train turns --bf16 into TPU mode. -> first-update loss per run."""
    from pretrain_data import write_caption_files

    data = write_caption_files(tmp_path / "data", {"train": 8, "valid": 4}, seed=4)
    losses = {}
    for name in ("fp32", precision):
        out = tmp_path / name
        if precision == "fp16":
            cmd = train_cmd("caption", data, out / "ckpt", "--disable-validation", *(["--fp16"] if name == "fp16" else []))
            cmd = [a for a in cmd if a != "--cpu"] if device == "cuda" else cmd
        else:
            cmd = hydra_cmd("caption", data, out, f"common.cpu={str(device == 'cpu').lower()}",
                            f"common.bf16={str(name == 'bf16').lower()}", "dataset.disable_validation=true")
        losses[name] = first_update_loss(run(cmd, cwd=tmp_path))
        state = torch.load(out / "ckpt" / "checkpoint_last.pt", weights_only=False)
        assert state["optimizer_history"][-1]["num_updates"] == 2
        assert state["cfg"]["common"][precision] == (name == precision)
    print(f"{device}: first-update loss fp32 {losses['fp32']:.4f}, {precision} {losses[precision]:.4f}")
    assert all(map(math.isfinite, losses.values()))
    assert abs(losses[precision] - losses["fp32"]) < 0.02 * losses["fp32"]
    return losses


def test_fairseq_bf16_training_on_cpu(tmp_path):
    """fairseq's bf16 trainer path (bf16 model, fp32 master weights) runs and trains on the CPU."""
    mixed_precision_runs("bf16", "cpu", tmp_path)
    weights = [torch.load(tmp_path / n / "ckpt" / "checkpoint_last.pt", weights_only=False)["model"]
               for n in ("fp32", "bf16")]
    key = "decoder.layers.0.fc1.weight"
    assert not torch.equal(weights[0][key], weights[1][key])  # bf16 arithmetic, not a copy of fp32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_fairseq_mixed_precision_on_cuda(precision, tmp_path):
    mixed_precision_runs(precision, "cuda", tmp_path)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pretraining_fp16_on_cuda(tmp_path):
    """The pretraining configs train in fp16: both batches, image-code rows included, on a GPU."""
    cmd = [a for a in pretrain_cmd(tmp_path) if a != "--cpu"] + ["--fp16"]
    log = run(cmd, cwd=tmp_path)
    epochs = [json.loads(line[line.index("{"):]) for line in log.splitlines() if '"train_loss"' in line]
    assert epochs and all(math.isfinite(float(e["train_loss_v2"])) for e in epochs), log[-3000:]
    _, steps = final_state(tmp_path / "ckpt" / "checkpoint_last.pt")
    assert steps == 2
