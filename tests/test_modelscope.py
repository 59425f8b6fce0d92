"""ModelScope OFA folders <-> OFA-CN, checked against modelscope's own model, tokenizer and generator.

Tiny models with random weights are built by modelscope's `OFAModel` (installed from PyPI with the
dev extras; no download). Both directions: strict keys, equal logits, equal beam-search tokens,
equal grounding boxes, and an exact fairseq -> ModelScope -> fairseq round trip.

modelscope 1.40's OFA code was written for transformers 4; with transformers 5 (the only release
that installs beside this venv's tokenizers and huggingface_hub) three of its imports moved. The
fixture `ms` points them at their new homes before importing modelscope (test-side only):
    transformers.models.bert.tokenization_bert.{BasicTokenizer, WordpieceTokenizer}
        -> transformers.models.bert.tokenization_bert_legacy
    transformers.models.bart.tokenization_bart_fast.BartTokenizerFast (module gone)
        -> transformers.models.bart.tokenization_bart.BartTokenizer
    OFAConfig.forced_bos_token_id (no longer a PretrainedConfig default) -> None
"""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch
from PIL import Image

from conftest import IN_CI
from helpers import randomize_, tiny_config
from ofa_cn.checkpoints.formats import CheckpointError, convert_checkpoint, load_pretrained
from ofa_cn.model.ofa import OFAModel
from ofa_cn.checkpoints.modelscope import (KEY_TABLE, ModelScopeError, config_from_modelscope, export_modelscope,
                               from_modelscope_key, modelscope_config, modelscope_vocab, read_modelscope,
                               to_modelscope_key)
from ofa_cn.tokenizer import get_tokenizer

# every dimension different; one max length for source and target (ModelScope has one)
TINY = dict(max_source_positions=64, max_target_positions=64)
BIN_START = 30325 - 1000


def _import_modelscope():
    try:
        import transformers.models.bert.tokenization_bert as bert
        from transformers.models.bart import tokenization_bart
        from transformers.models.bert import tokenization_bert_legacy
    except ImportError as e:
        if IN_CI:
            pytest.fail(f"transformers is missing ({e}); install the dev extras (scripts/setup.sh)")
        pytest.skip(f"transformers is not installed: {e}")
    bert.BasicTokenizer = tokenization_bert_legacy.BasicTokenizer
    bert.WordpieceTokenizer = tokenization_bert_legacy.WordpieceTokenizer
    fast = types.ModuleType("transformers.models.bart.tokenization_bart_fast")
    fast.BartTokenizerFast = tokenization_bart.BartTokenizer
    sys.modules.setdefault(fast.__name__, fast)
    try:
        from modelscope.models.multi_modal.ofa import OFAModel as MSModel
        from modelscope.models.multi_modal.ofa import OFATokenizerZH
        from modelscope.models.multi_modal.ofa.configuration_ofa import OFAConfig as MSConfig
        from modelscope.models.multi_modal.ofa.generate.sequence_generator import SequenceGenerator
    except ImportError as e:
        if IN_CI:
            pytest.fail(f"modelscope is missing ({e}); install the dev extras (scripts/setup.sh)")
        pytest.skip(f"modelscope is not installed: {e}")
    MSConfig.forced_bos_token_id = None
    return types.SimpleNamespace(Model=MSModel, Config=MSConfig, Tokenizer=OFATokenizerZH,
                                 Generator=SequenceGenerator)


@pytest.fixture(scope="module")
def ms():
    return _import_modelscope()


def tiny_ours(seed=0, **overrides):
    return randomize_(OFAModel.from_config(tiny_config(**{**TINY, **overrides})), seed).eval()


def tiny_modelscope(ms, seed=1):
    """modelscope's own OFAModel, sized like `tiny_config`, random weights."""
    cfg = ms.Config(vocab_size=30325, d_model=24, encoder_layers=2, decoder_layers=3, encoder_attention_heads=3,
                    decoder_attention_heads=3, encoder_ffn_dim=40, decoder_ffn_dim=40, resnet_type="resnet18",
                    token_bucket_size=16, image_bucket_size=10, max_position_embeddings=64, code_image_size=64,
                    dropout=0.0, disable_entangle=True)
    return randomize_(ms.Model(cfg), seed).eval()


def write_configuration(folder, task="image-captioning", **model):
    conf = {"framework": "pytorch", "task": task, "model": {"type": "ofa", "language": "zh", **model}}
    (folder / "configuration.json").write_text(json.dumps(conf, ensure_ascii=False), encoding="utf-8")


def ms_folder(ms, tmp_path, task="image-captioning", **model):
    """A folder as ModelScope publishes one: config.json, pytorch_model.bin, vocab.txt, configuration.json.

    (transformers 5's save_pretrained refuses this model: its shared embedding is not declared tied.)
    """
    theirs = tiny_modelscope(ms)
    folder = tmp_path / "ms"
    theirs.config.save_pretrained(folder)
    torch.save(theirs.state_dict(), folder / "pytorch_model.bin")
    (folder / "vocab.txt").write_text("\n".join(modelscope_vocab()) + "\n", encoding="utf-8")
    write_configuration(folder, task, patch_image_size=64, max_image_size=512, **model)
    return theirs, folder


def inputs(batch=2, seed=3):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 21000, (batch, 7), generator=g)
    src[:, 0], src[:, -1] = 0, 2
    src[1, -2:] = torch.tensor([2, 1])  # a padded row
    prev = torch.randint(4, 30000, (batch, 5), generator=g)
    prev[:, 0] = 0
    images = torch.randn(batch, 3, 64, 64, generator=g)
    return src, prev, images, torch.tensor([True, True])


def ours_logits(model, src, prev, images, masks):
    lengths = src.ne(1).sum(1)
    with torch.no_grad():
        return model(src, lengths, prev, patch_images=images, patch_masks=masks)[0]


def their_logits(model, src, prev, images, masks):
    with torch.no_grad():
        out = model(input_ids=src, patch_images=images, patch_masks=masks, decoder_input_ids=prev, return_dict=True)
    return out.logits


# ---- pure mapping ---------------------------------------------------------------------------
def test_key_table_maps_every_layer_key_both_ways():
    keys = OFAModel.from_config(tiny_config(**TINY)).state_dict().keys()
    renamed = [k for k in keys if to_modelscope_key(k) != k]
    assert all(from_modelscope_key(to_modelscope_key(k)) == k for k in keys)
    # 2 encoder layers x 2 renamed norms (weight, bias) + 3 decoder layers x (4 norms x 2 + attention 9)
    assert len(renamed) == 2 * 2 * 2 + 3 * (4 * 2 + 9)
    assert to_modelscope_key("decoder.layers.2.encoder_attn.c_attn") == "decoder.layers.2.cross_attn.c_attn"
    assert to_modelscope_key("encoder.layers.10.attn_ln.bias") == "encoder.layers.10.self_attn_mid_layer_norm.bias"
    assert len(KEY_TABLE) == 7


def test_config_round_trip_and_refusals():
    cfg = tiny_config(**TINY)
    assert config_from_modelscope(modelscope_config(cfg)) == cfg
    with pytest.raises(ModelScopeError, match="max_position_embeddings"):
        modelscope_config(tiny_config())  # 64 source vs 48 target positions
    with pytest.raises(ModelScopeError, match="resnet_type 'resnet10'"):
        modelscope_config(cfg.replace(resnet_type="resnet10"))
    with pytest.raises(ModelScopeError, match="w_resid"):
        modelscope_config(cfg.replace(scale_resids=True))
    with pytest.raises(ModelScopeError, match=r"use_ofasys.*another OFA variant"):
        config_from_modelscope({**modelscope_config(cfg), "use_ofasys": True})
    with pytest.raises(ModelScopeError, match="normformer"):
        config_from_modelscope({**modelscope_config(cfg), "normformer": False})
    # ModelScope's defaults: its decoder adds raw positions only with entangle_position_embedding
    assert config_from_modelscope({"d_model": 24, "encoder_attention_heads": 3, "decoder_attention_heads": 3}
                                  ).disable_entangle is True


def test_vocab_mismatch_names_the_line(tmp_path):
    lines = modelscope_vocab()
    lines[500] = "not-a-piece"
    (tmp_path / "vocab.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    from ofa_cn.checkpoints.modelscope import check_vocab

    with pytest.raises(ModelScopeError, match=r"line 501 is 'not-a-piece'"):
        check_vocab(tmp_path / "vocab.txt")


# ---- ModelScope -> OFA-CN ---------------------------------------------------------------------
def test_modelscope_folder_loads_strictly_with_the_same_logits(ms, tmp_path):
    theirs, folder = ms_folder(ms, tmp_path, prompt="图片描述了什么内容?",
                               beam_search={"beam_size": 5, "max_len_b": 16, "no_repeat_ngram_size": 3})
    ours, task = load_pretrained(folder)
    assert task["_name"] == "caption" and task["patch_image_size"] == 64
    assert json.loads(task["eval_args"]) == {"beam": 5, "max_len_b": 16, "no_repeat_ngram_size": 3}
    x = inputs()
    torch.testing.assert_close(ours_logits(ours, *x), their_logits(theirs, *x), atol=1e-4, rtol=0)
    # the same weights as model.safetensors with the shared embedding stored once (as safetensors must)
    from safetensors.torch import save_file

    st_folder = tmp_path / "st"
    st_folder.mkdir()
    sd = {k: v.contiguous() for k, v in theirs.state_dict().items()
          if k not in ("decoder.embed_tokens.weight", "decoder.output_projection.weight")}
    save_file(sd, str(st_folder / "model.safetensors"))
    for name in ("config.json", "vocab.txt", "configuration.json"):
        (st_folder / name).write_bytes((folder / name).read_bytes())
    again, _ = load_pretrained(st_folder)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), ours.state_dict().values()))


def test_modelscope_folder_with_a_missing_or_foreign_key_is_refused(ms, tmp_path):
    theirs = tiny_modelscope(ms)
    _, folder = ms_folder(ms, tmp_path)
    sd = theirs.state_dict()
    sd.pop("encoder.layers.1.self_attn_mid_layer_norm.weight")
    sd["encoder.extra.weight"] = torch.zeros(3)
    torch.save(sd, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"missing: encoder\.layers\.1\.attn_ln\.weight.*unexpected: "
                                              r"encoder\.extra\.weight"):
        load_pretrained(folder)


def test_convert_takes_a_modelscope_folder(ms, tmp_path):
    _, folder = ms_folder(ms, tmp_path, task="ocr-recognition")
    cfg, sd, task = read_modelscope(folder)
    pt = convert_checkpoint(folder, tmp_path / "restore.pt", "fairseq")
    model, saved = load_pretrained(pt)
    assert saved["_name"] == "ocr"
    assert all(torch.equal(model.state_dict()[k], v.float()) for k, v in sd.items())
    exported = convert_checkpoint(folder, tmp_path / "ours", "safetensors")
    assert load_pretrained(exported)[1]["_name"] == "ocr"


# ---- OFA-CN -> ModelScope ---------------------------------------------------------------------
def save_ours(path, model, task):
    import argparse
    import dataclasses

    args = argparse.Namespace(arch="ofa_base", **dataclasses.asdict(model.cfg))
    torch.save({"args": None, "cfg": {"model": args, "task": task}, "model": model.state_dict()}, path)


def test_export_loads_strictly_in_modelscope_with_the_same_logits(ms, tmp_path):
    ours = tiny_ours()
    save_ours(tmp_path / "c.pt", ours, {"_name": "caption", "patch_image_size": 64, "num_bins": 1000,
                                        "eval_args": '{"beam": 5, "max_len_b": 16}'})
    out = convert_checkpoint(tmp_path / "c.pt", tmp_path / "ms", "modelscope")
    theirs, info = ms.Model.from_pretrained(str(out), output_loading_info=True, use_kernels=False)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    theirs.eval()
    assert set(theirs.state_dict()) == {to_modelscope_key(k) for k in ours.state_dict() if not k.endswith("version")}
    x = inputs()
    torch.testing.assert_close(their_logits(theirs, *x), ours_logits(ours, *x), atol=1e-4, rtol=0)
    conf = json.loads((out / "configuration.json").read_text(encoding="utf-8"))
    assert conf["task"] == "image-captioning" and conf["model"]["beam_search"] == {"beam_size": 5, "max_len_b": 16}
    # modelscope's tokenizer reads the exported vocab.txt: same ids as ours for the prompt
    tok = ms.Tokenizer.from_pretrained(str(out))
    assert tok.encode(conf["model"]["prompt"], add_special_tokens=False) == get_tokenizer().encode("图片描述了什么内容?")
    assert tok.unk_token_id == 3 and get_tokenizer().encode("\U0001F600") == [104]  # the one known difference


def test_round_trip_gives_the_original_state_dict_exactly(tmp_path):
    ours = tiny_ours()
    sd = ours.state_dict()
    cfg = ours.cfg
    export_modelscope(cfg, sd, {"_name": "refcoco", "patch_image_size": 64}, tmp_path / "ms")
    cfg2, sd2, task = read_modelscope(tmp_path / "ms")
    assert cfg2 == cfg and task["_name"] == "refcoco"
    assert set(sd2) == set(sd)
    assert all(torch.equal(sd2[k], v) and sd2[k].dtype == v.dtype for k, v in sd.items())


def test_export_refuses_what_modelscope_cannot_build(tmp_path):
    ours = tiny_ours(scale_heads=False)
    with pytest.raises(ModelScopeError, match="c_attn"):
        export_modelscope(ours.cfg, ours.state_dict(), {"_name": "caption"}, tmp_path / "x")
    ours = tiny_ours()
    with pytest.raises(ModelScopeError, match="num_bins=512"):
        export_modelscope(ours.cfg, ours.state_dict(), {"_name": "caption", "num_bins": 512}, tmp_path / "y")


# ---- generation -----------------------------------------------------------------------------
def _ours_generate(model, task_name, src, images, masks, **gen):
    from ofa_cn.checkpoints.loading import setup_task

    # max_image_size as ModelScope's default (a config without it now falls back to patch_image_size)
    task = setup_task({"_name": task_name, "patch_image_size": 64, "max_image_size": 512}, task_name)
    generator = task.build_generator([model], gen)
    sample = {"net_input": {"src_tokens": src, "src_lengths": src.ne(1).sum(1), "patch_images": images,
                            "patch_masks": masks}}
    return task, [h[0]["tokens"] for h in task.inference_step(generator, [model], sample)]


def _their_generate(ms, model, folder, src, images, masks, **gen):
    tok = ms.Tokenizer.from_pretrained(str(folder))
    tok.add_tokens([f"<code_{i}>" for i in range(8192)])
    tok.add_tokens([f"<bin_{i}>" for i in range(1000)])
    assert len(tok) == 30325
    generator = ms.Generator(tok, **gen)
    sample = {"net_input": {"input_ids": src, "patch_images": images, "patch_masks": masks}}
    with torch.no_grad():
        return [h[0]["tokens"] for h in generator.generate([model], sample)]


def test_beam_search_tokens_and_boxes_equal(ms, tmp_path):
    ours = tiny_ours(seed=4)  # a seed whose outputs differ between rows and between steps
    out = export_modelscope(ours.cfg, ours.state_dict(), {"_name": "caption"}, tmp_path / "ms")
    theirs = ms.Model.from_pretrained(str(out), use_kernels=False).eval()
    src, _, images, masks = inputs()
    # captions: beam 3, up to 6 tokens, no repeated trigram
    _, mine = _ours_generate(ours, "caption", src, images, masks, beam=3, max_len_b=6, min_len=1,
                             no_repeat_ngram_size=3)
    other = _their_generate(ms, theirs, out, src, images, masks, beam_size=3, max_len_b=6, min_len=1,
                            no_repeat_ngram_size=3)
    assert [t.tolist() for t in mine] == [t.tolist() for t in other]
    assert mine[0].tolist() != mine[1].tolist()
    # grounding: exactly four bin tokens
    task, mine = _ours_generate(ours, "refcoco", src, images, masks, beam=3, max_len_b=4, min_len=4)
    other = _their_generate(ms, theirs, out, src, images, masks, beam_size=3, max_len_b=4, min_len=4,
                            constraint_range=f"{BIN_START},30325")
    assert [t.tolist() for t in mine] == [t.tolist() for t in other]
    assert len(set(mine[0].tolist())) > 2
    ratio = 64 / 100  # a 100 x 100 image resized to 64
    ours_boxes = [task.tokens_to_box(t, ratio, ratio) for t in mine]
    # ModelScope's decoding of box tokens: (id - bin start) / (bins - 1) * max_image_size / resize ratio
    # ... and ours clips to the image (issue 17), which ModelScope's does not: compare within the image
    their_boxes = [((t[:-1] - BIN_START) / 999 * 512).clamp(0, 64) / ratio for t in other]
    their_boxes = [b.tolist() for b in their_boxes]
    torch.testing.assert_close(torch.tensor(ours_boxes), torch.tensor(their_boxes), atol=1e-3, rtol=0)


def test_predictor_and_cli_take_a_modelscope_folder(ms, tmp_path, capsys):
    from ofa_cn.apps.cli import main
    from ofa_cn.apps.inference import Predictor

    _, folder = ms_folder(ms, tmp_path, beam_search={"beam_size": 2, "max_len_b": 3})
    image = tmp_path / "a.png"
    Image.new("RGB", (50, 40), (200, 30, 30)).save(image)
    captions = Predictor(folder, device="cpu").caption([image], beam=2, max_len_b=3)
    assert len(captions) == 1 and isinstance(captions[0], str)
    assert main(["caption", str(image), "--checkpoint", str(folder), "--device", "cpu", "--beam", "2",
                 "--max-len-b", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["caption"] == captions[0]
    assert main(["convert", str(folder), str(tmp_path / "back"), "--format", "modelscope"]) == 0
    assert (tmp_path / "back" / "pytorch_model.bin").is_file()
