"""bf16 autocast on the CPU against fp32, with the tolerance stated here (as tests/model/test_gpu.py
does on CUDA): the relative L2 error of the golden model's decoder logits is below 5e-2, and the
greedy next token agrees at nearly every position."""

from __future__ import annotations

import torch

from ofa_cn.checkpoints.formats import load_pretrained

BF16_REL_TOL = 5e-2


@torch.no_grad()
def test_bf16_autocast_logits_close_to_fp32(golden_checkpoint, golden_inputs):
    model, _ = load_pretrained(golden_checkpoint)
    net = {"src_tokens": golden_inputs["caption_src_tokens"], "src_lengths": golden_inputs["caption_src_lengths"],
           "patch_images": golden_inputs["patch_images"], "patch_masks": golden_inputs["patch_masks"],
           "prev_output_tokens": golden_inputs["caption_prev_output_tokens"]}
    reference, _ = model(**net)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, _ = model(**net)
    rel = ((low.float() - reference).norm() / reference.norm()).item()
    agree = (low.argmax(-1) == reference.argmax(-1)).float().mean().item()
    print(f"CPU bf16 autocast vs fp32: relative L2 error {rel:.2e} (tolerance {BF16_REL_TOL:g}), argmax agreement {agree:.2f}")
    assert low.dtype == torch.bfloat16 and 1e-4 < rel < BF16_REL_TOL  # really bf16, and close
    assert agree >= 0.9
