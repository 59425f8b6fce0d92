"""CUDA checks (skipped without a GPU): golden outputs in fp32, and finite bf16/fp16 training steps.

Tolerance of the bf16 path against fp32 (stated here, printed by the test): the relative L2
error of the decoder logits of the golden model under bf16 autocast is below 5e-2.
"""

from __future__ import annotations

import pytest
import torch

from helpers import randomize_, tiny_config
from ofa_cn.checkpoints.formats import load_pretrained
from ofa_cn.train.criterion import label_smoothed_nll_loss
from ofa_cn.generate import build_generator, generate
from ofa_cn.model.ofa import OFAModel
from ofa_cn.tokenizer import build_dictionary

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
BF16_REL_TOL = 5e-2


@pytest.fixture(autouse=True)
def exact_fp32():
    """TF32 would change fp32 results by ~1e-3 relative; the golden comparison needs real fp32."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def to_cuda(inputs, prefix):
    return {"src_tokens": inputs[f"{prefix}_src_tokens"].cuda(), "src_lengths": inputs[f"{prefix}_src_lengths"].cuda(),
            "patch_images": inputs["patch_images"].cuda(), "patch_masks": inputs["patch_masks"].cuda()}


@torch.no_grad()
def test_golden_on_cuda_fp32(golden_checkpoint, golden_inputs, golden_outputs):
    model, _ = load_pretrained(golden_checkpoint, device="cuda")
    if "resnet_features" in golden_outputs:  # absent from the reduced copy carried to GPU machines
        feats = model.encoder.embed_images(golden_inputs["patch_images"].cuda())
        torch.testing.assert_close(feats.cpu(), golden_outputs["resnet_features"], atol=1e-3, rtol=1e-4)
    for prefix in ("caption", "grounding"):
        net = to_cuda(golden_inputs, prefix)
        logits, extra = model(**net, prev_output_tokens=golden_inputs[f"{prefix}_prev_output_tokens"].cuda())
        torch.testing.assert_close(extra["encoder_out"].out.transpose(0, 1).cpu(), golden_outputs[f"{prefix}_encoder_out"],
                                   atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(logits.cpu(), golden_outputs[f"{prefix}_decoder_logits"], atol=1e-3, rtol=1e-4)
    dictionary = build_dictionary()
    for prefix, name, kwargs in (
        ("caption", "caption", dict(beam=5, max_len_b=16, min_len=1, no_repeat_ngram_size=3)),
        ("grounding", "grounding_bins_constrained",
         dict(beam=5, max_len_b=4, min_len=4, no_repeat_ngram_size=3, constraint_range="29325,30325")),
    ):
        hyps = generate(build_generator([model], dictionary, **kwargs), {"net_input": to_cuda(golden_inputs, prefix)})
        for b in range(2):
            for k in range(5):
                length = int(golden_outputs[f"{name}_gen_lengths"][b, k])
                assert hyps[b][k]["tokens"].cpu().tolist() == golden_outputs[f"{name}_gen_tokens"][b, k, :length].tolist()
                assert abs(float(hyps[b][k]["score"]) - float(golden_outputs[f"{name}_gen_scores"][b, k])) < 1e-3


@torch.no_grad()
def test_bf16_logits_close_to_fp32(golden_checkpoint, golden_inputs):
    model, _ = load_pretrained(golden_checkpoint, device="cuda")
    net = to_cuda(golden_inputs, "caption")
    prev = golden_inputs["caption_prev_output_tokens"].cuda()
    reference, _ = model(**net, prev_output_tokens=prev)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        low, _ = model(**net, prev_output_tokens=prev)
    rel = ((low.float() - reference).norm() / reference.norm()).item()
    print(f"bf16 autocast vs fp32: relative L2 error of the logits {rel:.2e} (tolerance {BF16_REL_TOL:g})")
    assert rel < BF16_REL_TOL


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mixed_precision_training_step_is_finite(dtype):
    """bf16: every step finite. fp16: GradScaler may skip the first steps (overflow at its initial
    scale of 2^16 is expected and lowers the scale); within a few steps it must take a finite one."""
    torch.manual_seed(0)
    model = randomize_(OFAModel.from_config(tiny_config(dropout=0.1, encoder_drop_path_rate=0.1))).cuda().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    src = torch.randint(4, 30000, (3, 9), device="cuda")
    prev = torch.randint(4, 30000, (3, 7), device="cuda")
    target = torch.randint(4, 30000, (3, 7), device="cuda")
    images = torch.randn(3, 3, 64, 64, device="cuda")
    finite_steps = 0
    for _ in range(20):
        with torch.autocast("cuda", dtype=dtype):
            logits, _ = model(src, None, prev, patch_images=images)
        lprobs = torch.log_softmax(logits.float(), -1).view(-1, logits.size(-1))
        loss, _ = label_smoothed_nll_loss(lprobs, target.view(-1), 0.1)
        loss = loss.sum()
        assert torch.isfinite(loss)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grads_finite = all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        if dtype == torch.bfloat16:
            assert grads_finite
        finite_steps += int(grads_finite)
        scaler.step(optimizer)  # skipped by the scaler when a gradient overflowed
        scaler.update()
        optimizer.zero_grad()
        if finite_steps >= 2:
            break
    assert finite_steps >= 2
    assert all(torch.isfinite(p).all() for p in model.parameters())
