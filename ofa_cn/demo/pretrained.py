"""The demo's pretrained checkpoint: shipped in fp16, checked by its sha256, handed to fairseq.

`python scripts/demo.py --pretrain` makes it once (configs/demo/pretrain.yaml) and `export_fp16`
writes it to `ofa_cn/assets/demo_pretrained/`: `model.safetensors` (fp16 weights, tied aliases
stored once) and `config.json` (model and task config, as `checkpoint.export_checkpoint` writes
them, plus how it was made). `make demo` checks the weights against `PRETRAINED_SHA256` (also
quoted in the README) and finetunes them through `fairseq-hydra-train`, which reads a `.pt`:
`write_finetune_start` writes one that fairseq's `--finetune-from-model` loads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from ..checkpoints.formats import EXPORT_CONFIG, EXPORT_WEIGHTS, CheckpointError, export_checkpoint, read_exported

PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "assets" / "demo_pretrained"
# sha256 of PRETRAINED_DIR/model.safetensors; README.md quotes it (a test keeps the two equal)
PRETRAINED_SHA256 = "2e583937a63e7d2a694f4f2b7ccb52cb52034b7ef4708e6d69fbd2dd8d03e167"
MAX_SHIPPED_BYTES = 25 * 1024 * 1024  # what the repository is willing to carry


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_fp16(checkpoint: str | Path, out_dir: str | Path, made_by: dict[str, Any]) -> str:
    """Export a trained `.pt` as fp16 safetensors + config.json in `out_dir`; returns the sha256.

    Args:
        made_by: how the checkpoint was made (command, data seed and rows, updates, minutes);
            stored in config.json under "made_by".
    Raises:
        CheckpointError: the weights file would exceed MAX_SHIPPED_BYTES.
    """
    out_dir = Path(out_dir)
    export_checkpoint(checkpoint, out_dir, dtype=torch.float16, drop_derived=True, overwrite=True)
    config_path = out_dir / EXPORT_CONFIG
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["made_by"] = made_by
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    size = (out_dir / EXPORT_WEIGHTS).stat().st_size
    if size > MAX_SHIPPED_BYTES:
        raise CheckpointError(f"{out_dir / EXPORT_WEIGHTS} is {size / 2**20:.1f} MiB; the repository ships at most "
                              f"{MAX_SHIPPED_BYTES / 2**20:.0f} MiB. Use a smaller demo model.")
    return sha256_of(out_dir / EXPORT_WEIGHTS)


def verify(folder: str | Path = PRETRAINED_DIR, expected: str = PRETRAINED_SHA256) -> Path:
    """The pretrained folder, after checking its weights' sha256; raises CheckpointError otherwise."""
    folder = Path(folder)
    weights = folder / EXPORT_WEIGHTS
    if not weights.is_file() or not (folder / EXPORT_CONFIG).is_file():
        raise CheckpointError(f"the demo's pretrained checkpoint is missing: expected {weights} and "
                              f"{folder / EXPORT_CONFIG}. Restore them with `git checkout -- {folder}` or "
                              "make them with `python scripts/demo.py --pretrain`.")
    found = sha256_of(weights)
    if found != expected:
        raise CheckpointError(f"{weights} has sha256 {found}, expected {expected} (ofa_cn/demo/pretrained.py "
                              "PRETRAINED_SHA256 and the README). The file was changed or only partly written; "
                              f"restore it with `git checkout -- {folder}`, or after `scripts/demo.py --pretrain` "
                              "put the new sha256 in both places.")
    return folder


def write_finetune_start(folder: str | Path, out: str | Path) -> Path:
    """A `.pt` holding the folder's weights (fp32) that fairseq's `--finetune-from-model` accepts.

    fairseq resets the optimizer, scheduler, meters and data iterator for such a start, so only
    the weights and the saved config matter; the optimizer history and the data iterator hold
    the entries of an update-0 checkpoint because fairseq's loader reads them.
    """
    cfg, weights, task = read_exported(folder)
    fp32: dict[int, torch.Tensor] = {}  # one copy per stored tensor: the tied aliases keep sharing it
    state = {
        "cfg": {"model": {**dataclasses.asdict(cfg), "_name": "ofa"}, "task": task},
        "model": {k: fp32.setdefault(id(v), v.float()) if v.is_floating_point() else v for k, v in weights.items()},
        "args": None,
        "optimizer_history": [{"criterion_name": None, "optimizer_name": None, "lr_scheduler_state": {},
                               "num_updates": 0}],
        "extra_state": {"train_iterator": {"epoch": 1, "iterations_in_epoch": 0, "version": 2}},
        "last_optimizer_state": None,
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    torch.save(state, partial)
    partial.replace(out)  # never a half-written start file under the final name
    return out
