"""End to end: a ModelScope folder finetuned by fairseq-train with the original OFA's flags.

`ofa-cn convert DIR restore.pt --format fairseq` turns the folder into a .pt that
`fairseq-train --restore-file` reads; the run passes the released scripts' model switches and
`--lr-scheduler polynomial_decay --warmup-ratio --max-epoch`, and must start from the folder's
weights and warm up over the original's share of all updates.
"""

from __future__ import annotations

import json

import pytest
import torch

from helpers import randomize_, tiny_config
from ofa_cn.apps.cli import main
from ofa_cn.model.ofa import OFAModel
from ofa_cn.checkpoints.modelscope import export_modelscope
from test_train_e2e import TINY_MODEL, data, final_state, run, train_cmd  # noqa: F401  (data: fixture)

pytestmark = pytest.mark.slow
SWITCHES = ["--encoder-normalize-before", "--decoder-normalize-before", "--share-decoder-input-output-embed",
            "--share-all-embeddings", "--layernorm-embedding", "--patch-layernorm-embedding",
            "--code-layernorm-embedding", "--add-type-embedding", "--scale-attn", "--scale-fc", "--scale-heads",
            "--disable-entangle"]


def test_finetune_a_modelscope_folder_with_the_original_flags(data, tmp_path):  # noqa: F811
    # the tiny model of train_cmd, with a stem ModelScope can build (it has no resnet10)
    cfg = tiny_config(resnet_type="resnet18", encoder_layers=2, decoder_layers=1, token_bucket_size=256,
                      image_bucket_size=42, max_source_positions=1024, max_target_positions=1024,
                      code_image_size=128)
    model = randomize_(OFAModel.from_config(cfg), seed=2)
    folder = export_modelscope(cfg, model.state_dict(), {"_name": "caption", "patch_image_size": 64},
                               tmp_path / "ms")
    assert main(["convert", str(folder), str(tmp_path / "restore.pt"), "--format", "fairseq"]) == 0

    cmd = train_cmd("caption", data, tmp_path / "ckpt", "--disable-validation")
    cut = cmd.index("--max-update")
    del cmd[cut:cut + 2]
    cmd[cmd.index("--resnet-type") + 1] = "resnet18"
    cmd[cmd.index("--lr") + 1] = "1e-9"  # weights stay within 1e-5 of the restored ones
    cmd += [*SWITCHES, "--lr-scheduler", "polynomial_decay", "--warmup-ratio", "0.5", "--max-epoch", "2",
            "--restore-file", str(tmp_path / "restore.pt"), "--reset-optimizer", "--reset-dataloader",
            "--reset-meters", "--required-batch-size-multiple", "1"]
    assert TINY_MODEL[TINY_MODEL.index("--decoder-layers") + 1] == "1"
    log = run(cmd, cwd=tmp_path)
    assert "Loaded checkpoint" in log
    # 8 rows, batch 4: 2 updates an epoch, 4 in all; warmup int(0.5 x 4) = 2, then linear decay to 0
    lrs = [float(json.loads(line[line.index("{"):])["lr"]) for line in log.splitlines()
           if "train_inner" in line and '"lr"' in line]
    assert "warmup_ratio 0.5: 2 warmup updates of 4 (2 epochs of 2 batches)" in log
    assert lrs == pytest.approx([0.5e-9, 1e-9, 0.5e-9, 0.0], abs=1e-15)
    tuned, updates = final_state(tmp_path / "ckpt" / "checkpoint_last.pt")
    assert updates == 4
    for key, value in model.state_dict().items():
        if "running_" in key or "num_batches_tracked" in key:
            continue  # BatchNorm statistics move in train mode
        torch.testing.assert_close(tuned[key], value, atol=1e-5, rtol=0, msg=key)
