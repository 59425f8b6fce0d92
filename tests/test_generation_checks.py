"""Generation options checked up front (each error names its option), and grounding answers that
are always four bins then </s>, decoded to boxes inside the image."""

from __future__ import annotations

import pytest
import torch
from fairseq import checkpoint_utils

import ofa_cn  # noqa: F401  (registers the plugin)
from ofa_cn.generate import GENERATION_DEFAULTS, build_generator, check_generation_options, fixed_shape, generate


@pytest.mark.parametrize(
    "options, message",
    [
        ({"beam": 0}, "generation option beam = 0: expected an integer >= 1"),
        ({"beam": -1}, "generation option beam = -1: expected an integer >= 1"),
        ({"beam": 2.5}, "generation option beam = 2.5: expected an integer >= 1"),
        ({"beam": True}, "generation option beam = True: expected an integer >= 1"),
        ({"max_len_b": 0}, "generation option max_len_b = 0: expected an integer >= 1"),
        ({"max_len_a": -0.5}, "generation option max_len_a = -0.5: expected a number >= 0"),
        ({"min_len": 0}, "generation option min_len = 0: expected an integer >= 1"),
        ({"min_len": -2}, "generation option min_len = -2: expected an integer >= 1"),
        ({"no_repeat_ngram_size": -1}, "generation option no_repeat_ngram_size = -1: expected an integer >= 0"),
        ({"temperature": 0}, "generation option temperature = 0: expected a number > 0"),
        ({"lenpen": float("nan")}, "generation option lenpen = nan: expected a finite number"),
        ({"min_len": 9, "max_len_b": 4}, "generation options min_len = 9 > max_len_b = 4: no length is allowed"),
    ],
)
def test_bad_generation_options_name_the_option(options, message):
    with pytest.raises(ValueError) as err:
        check_generation_options(options)
    assert str(err.value).startswith(message), str(err.value)


def test_generation_defaults_are_fairseqs():
    from fairseq.dataclass.configs import GenerationConfig

    assert GENERATION_DEFAULTS == {name: getattr(GenerationConfig(), name) for name in GENERATION_DEFAULTS}


def test_answer_length_needs_room():
    check_generation_options({"beam": 5, "min_len": 4, "max_len_b": 4}, answer_length=4)
    check_generation_options({"min_len": 1, "max_len_b": 10}, answer_length=4)
    with pytest.raises(ValueError, match="max_len_b = 3: this task's answer is exactly 4 tokens"):
        check_generation_options({"max_len_b": 3}, answer_length=4)
    with pytest.raises(ValueError, match="min_len = 5: this task's answer is exactly 4 tokens and then </s>"):
        check_generation_options({"min_len": 5, "max_len_b": 9}, answer_length=4)


def test_fixed_shape_allows_the_ids_then_only_eos():
    allowed = fixed_shape(range(10, 13), 2, eos=2)
    assert list(allowed(0, torch.tensor([0]))) == [10, 11, 12]  # bos only: step 0
    assert list(allowed(0, torch.tensor([0, 11]))) == [10, 11, 12]
    assert allowed(0, torch.tensor([0, 11, 12])) == [2]


@pytest.fixture(scope="module")
def refcoco(golden_checkpoint):
    from ofa_cn.tasks.grounding import RefcocoConfig, RefcocoTask

    task = RefcocoTask.setup_task(RefcocoConfig(max_image_size=512, patch_image_size=256))
    models, _ = checkpoint_utils.load_model_ensemble([str(golden_checkpoint)], task=task)
    return models[0].eval(), task


def favour_unk(model, monkeypatch):
    """The model's logits with +50 on <unk> (id 3): it prefers a token that is not a bin."""
    original = model.get_normalized_probs

    def biased(net_output, log_probs, sample=None):
        logits = net_output[0].clone()
        logits[..., 3] += 50.0
        return original((logits, *net_output[1:]), log_probs, sample)

    monkeypatch.setattr(model, "get_normalized_probs", biased)


def grounding_input(golden_inputs):
    return {"net_input": {"src_tokens": golden_inputs["grounding_src_tokens"],
                          "src_lengths": golden_inputs["grounding_src_lengths"],
                          "patch_images": golden_inputs["patch_images"], "patch_masks": golden_inputs["patch_masks"]}}


def test_grounding_answers_are_four_bins_then_eos(refcoco, golden_inputs, monkeypatch):
    model, task = refcoco
    favour_unk(model, monkeypatch)
    first_bin = len(task.dictionary) - task.cfg.num_bins
    # the range mask alone (the old path) lets <unk> through: the bug this replaces
    plain = build_generator([model], task.target_dictionary, beam=5, min_len=4, max_len_b=4,
                            constraint_range=task.generation_constraint())
    assert any(3 in h[0]["tokens"][:4].tolist() for h in generate(plain, grounding_input(golden_inputs)))
    for options in ({"beam": 5, "min_len": 4, "max_len_b": 4}, {"beam": 3, "min_len": 1, "max_len_b": 12}):
        generator = task.build_generator([model], options)
        for hyps in task.inference_step(generator, [model], grounding_input(golden_inputs)):
            for hyp in hyps:
                tokens = hyp["tokens"].tolist()
                assert len(tokens) == 5 and tokens[4] == task.dictionary.eos(), tokens
                assert all(first_bin <= t < len(task.dictionary) for t in tokens[:4]), tokens


def test_grounding_generator_refuses_options_without_room_for_a_box(refcoco):
    model, task = refcoco
    with pytest.raises(ValueError, match="max_len_b = 2: this task's answer is exactly 4 tokens"):
        task.build_generator([model], {"beam": 5, "min_len": 1, "max_len_b": 2})
    with pytest.raises(ValueError, match="generation option beam = 0"):
        task.build_generator([model], {"beam": 0})


def test_tokens_to_box_clips_to_the_image_and_refuses_non_bins(refcoco):
    _, task = refcoco
    first_bin = len(task.dictionary) - task.cfg.num_bins
    # 320 x 160 image resized to 256: ratios 0.8 and 1.6; the last bin is max_image_size 512 px
    # resized = 640 x 320 original pixels, beyond the image, so it is clipped to 320 and 160
    box = task.tokens_to_box(torch.tensor([first_bin, first_bin, first_bin + 999, first_bin + 999, 2]), 0.8, 1.6)
    assert box == [0.0, 0.0, 320.0, 160.0]
    mid = task.tokens_to_box(torch.tensor([first_bin + 333] * 4), 0.8, 1.6)  # 333 / 999 * 512 = 170.67 px resized
    assert mid == pytest.approx([213.33, 106.67, 213.33, 106.67], abs=0.01)
    with pytest.raises(ValueError, match=r"generated \['<s>', '<bin_0>', '<bin_1>', '<bin_2>'\] where a box needs 4"):
        task.tokens_to_box(torch.tensor([0, first_bin, first_bin + 1, first_bin + 2]), 1.0, 1.0)
