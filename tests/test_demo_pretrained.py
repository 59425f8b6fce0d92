"""The demo's shipped pretrained checkpoint: its hash, size and provenance, and the fairseq start file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import load_script
from omegaconf import OmegaConf

from ofa_cn.checkpoints.formats import CheckpointError, load_exported
from ofa_cn.demo.pretrained import (MAX_SHIPPED_BYTES, PRETRAINED_DIR, PRETRAINED_SHA256, sha256_of, verify,
                                    write_finetune_start)

REPO = Path(__file__).resolve().parents[1]


def test_shipped_checkpoint_matches_its_hash_size_and_readme():
    weights = PRETRAINED_DIR / "model.safetensors"
    assert sha256_of(weights) == PRETRAINED_SHA256
    assert weights.stat().st_size <= MAX_SHIPPED_BYTES
    assert PRETRAINED_SHA256 in (REPO / "README.md").read_text(encoding="utf-8")
    assert verify() == PRETRAINED_DIR


def test_shipped_checkpoint_was_pretrained_on_data_disjoint_from_the_demo():
    demo = load_script("demo")
    made_by = json.loads((PRETRAINED_DIR / "config.json").read_text(encoding="utf-8"))["made_by"]
    assert made_by["data_seed"] == demo.PRETRAIN_SEED != demo.DEMO_SEED
    assert made_by["config"] == "configs/demo/pretrain.yaml" and made_by["updates"] > 0
    # made by today's stages: each stage's folder and updates (None: the YAML's max_update)
    yaml_updates = OmegaConf.load(REPO / "configs/demo/pretrain.yaml")["optimization"]["max_update"]
    assert made_by["updates_per_stage"] == {folder: updates or yaml_updates
                                            for folder, _sources, updates in demo.PRETRAIN_STAGES}


def test_a_changed_weights_file_is_refused_with_both_hashes(tmp_path):
    copy = tmp_path / "pretrained"
    shutil.copytree(PRETRAINED_DIR, copy)
    with open(copy / "model.safetensors", "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(CheckpointError, match=f"expected {PRETRAINED_SHA256}.*git checkout"):
        verify(copy)
    (copy / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="is missing"):
        verify(copy)


@torch.no_grad()
def test_finetune_start_file_loads_through_fairseq_with_the_same_weights(tmp_path):
    from fairseq import checkpoint_utils

    start = write_finetune_start(PRETRAINED_DIR, tmp_path / "start.pt")
    state = checkpoint_utils.load_checkpoint_to_cpu(str(start))  # what fairseq-train's loader calls
    model, _ = load_exported(PRETRAINED_DIR)
    expected = model.state_dict()
    assert set(state["model"]) == set(expected)
    for name, value in expected.items():
        assert torch.equal(state["model"][name], value), name
    assert state["optimizer_history"][-1]["num_updates"] == 0
    assert not list(tmp_path.glob("*.partial"))
