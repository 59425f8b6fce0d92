"""The golden tiny checkpoint, written by the original training code, reproduced exactly.

Loaded through fairseq's own loader (`load_model_ensemble_and_task`, no overrides); features and
logits within 1e-3, generated tokens exact, scores within 1e-3.
"""

from __future__ import annotations

import pytest
import torch
from fairseq import checkpoint_utils

import ofa_cn.tasks  # noqa: F401  (registers the plugin)
from ofa_cn.generate import build_generator, generate

ATOL = 1e-3


@pytest.fixture(scope="module")
def loaded(golden_checkpoint):
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(golden_checkpoint)])
    model = models[0].eval()
    return model, task


def net_input(inputs, prefix):
    return {"src_tokens": inputs[f"{prefix}_src_tokens"], "src_lengths": inputs[f"{prefix}_src_lengths"],
            "patch_images": inputs["patch_images"], "patch_masks": inputs["patch_masks"]}


def test_loads_as_the_saved_task(loaded):
    model, task = loaded
    assert type(task).__name__ == "CaptionTask" and task.cfg.patch_image_size == 256
    assert len(task.target_dictionary) == 30325
    assert model.cfg.encoder_layers == 2 and model.cfg.resnet_type == "resnet50"


@torch.no_grad()
def test_resnet_features(loaded, golden_inputs, golden_outputs):
    model, _ = loaded
    feats = model.encoder.embed_images(golden_inputs["patch_images"])
    torch.testing.assert_close(feats, golden_outputs["resnet_features"], atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("prefix", ["caption", "grounding"])
@torch.no_grad()
def test_encoder_and_logits(loaded, golden_inputs, golden_outputs, prefix):
    model, _ = loaded
    logits, extra = model(**net_input(golden_inputs, prefix),
                          prev_output_tokens=golden_inputs[f"{prefix}_prev_output_tokens"], return_all_hiddens=True)
    enc = extra["encoder_out"]
    gold = golden_outputs
    torch.testing.assert_close(enc.out.transpose(0, 1), gold[f"{prefix}_encoder_out"], atol=ATOL, rtol=1e-4)
    assert torch.equal(enc.padding_mask, gold[f"{prefix}_encoder_padding_mask"])
    torch.testing.assert_close(enc.position_embeddings.expand(2, -1, -1),
                               gold[f"{prefix}_encoder_position_embeddings"], atol=ATOL, rtol=1e-4)
    for ours, theirs in zip(enc.states, gold[f"{prefix}_encoder_states"]):
        torch.testing.assert_close(ours.transpose(0, 1), theirs, atol=ATOL, rtol=1e-4)
    for ours, theirs in zip(extra["inner_states"], gold[f"{prefix}_decoder_inner_states"]):
        torch.testing.assert_close(ours.transpose(0, 1), theirs, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(logits, gold[f"{prefix}_decoder_logits"], atol=ATOL, rtol=1e-4)


def assert_hypotheses(hyps, gold, name):
    for b in range(2):
        assert len(hyps[b]) == 5
        for k in range(5):
            length = int(gold[f"{name}_gen_lengths"][b, k])
            assert hyps[b][k]["tokens"].tolist() == gold[f"{name}_gen_tokens"][b, k, :length].tolist(), (b, k)
            assert abs(float(hyps[b][k]["score"]) - float(gold[f"{name}_gen_scores"][b, k])) < ATOL
            torch.testing.assert_close(hyps[b][k]["positional_scores"],
                                       gold[f"{name}_gen_positional_scores"][b, k, :length], atol=ATOL, rtol=0)


def test_caption_beam_search(loaded, golden_inputs, golden_outputs):
    model, task = loaded
    generator = task.build_generator([model], {"beam": 5, "max_len_b": 16, "min_len": 1, "no_repeat_ngram_size": 3})
    hyps = task.inference_step(generator, [model], {"net_input": net_input(golden_inputs, "caption")})
    assert_hypotheses(hyps, golden_outputs, "caption")
    assert task.decode_text(hyps[0][0]["tokens"]) == "损"


@pytest.mark.parametrize("name, constraint", [
    ("grounding", None),  # as the original refcoco task: any token may be generated
    ("grounding_bins_constrained", "29325,30325"),
])
def test_grounding_beam_search(loaded, golden_inputs, golden_outputs, name, constraint):
    model, task = loaded
    generator = build_generator([model], task.target_dictionary, beam=5, min_len=4, max_len_b=4,
                                no_repeat_ngram_size=3, constraint_range=constraint)
    hyps = generate(generator, {"net_input": net_input(golden_inputs, "grounding")})
    assert_hypotheses(hyps, golden_outputs, name)
    if constraint:
        bins = torch.stack([h[0]["tokens"][:4] for h in hyps]) - 29325
        assert bins.tolist() == golden_outputs[f"{name}_bins"].tolist()


def test_grounding_boxes_in_pixels(golden_checkpoint, golden_inputs, golden_outputs):
    """The refcoco task (bins-only by default) decodes boxes in the original image's pixels."""
    from ofa_cn.tasks.grounding import RefcocoConfig, RefcocoTask

    ref_task = RefcocoTask.setup_task(RefcocoConfig(max_image_size=256, patch_image_size=256))
    models, _ = checkpoint_utils.load_model_ensemble([str(golden_checkpoint)], task=ref_task)
    generator = ref_task.build_generator(models, {"beam": 5, "min_len": 4, "max_len_b": 4, "no_repeat_ngram_size": 3})
    hyps = ref_task.inference_step(generator, models, {"net_input": net_input(golden_inputs, "grounding")})
    for i in range(2):
        box = ref_task.tokens_to_box(hyps[i][0]["tokens"], float(golden_inputs["grounding_w_resize_ratios"][i]),
                                     float(golden_inputs["grounding_h_resize_ratios"][i]))
        torch.testing.assert_close(torch.tensor(box, dtype=torch.float64),
                                   golden_outputs["grounding_bins_constrained_boxes_pixels"][i], atol=1e-3, rtol=0)
