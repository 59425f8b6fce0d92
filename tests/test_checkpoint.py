"""Safe, strict checkpoint loading; fp16 weights; export to safetensors and back."""

from __future__ import annotations

import argparse
import os
import pickle

import pytest
import torch

from helpers import randomize_, tiny_config
from ofa_cn.checkpoints.formats import (DERIVED_BUFFERS, CheckpointError, export_checkpoint, load_checkpoint_file, load_exported,
                               load_pretrained)
from ofa_cn.model.ofa import OFAModel


def save_tiny(path, dtype=torch.float32, drop=(), extra=None, **overrides):
    cfg = tiny_config(**overrides)
    model = randomize_(OFAModel.from_config(cfg))
    sd = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in model.state_dict().items() if k not in drop}
    sd.update(extra or {})
    args = argparse.Namespace(arch="ofa_base", _name="ofa_base", **{
        k: getattr(cfg, k) for k in ("resnet_type", "encoder_embed_dim", "decoder_embed_dim", "encoder_ffn_embed_dim",
                                     "decoder_ffn_embed_dim", "encoder_attention_heads", "decoder_attention_heads",
                                     "encoder_layers", "decoder_layers", "token_bucket_size", "image_bucket_size",
                                     "max_source_positions", "max_target_positions",
                                     "code_image_size")})
    torch.save({"args": None, "cfg": {"model": args, "task": {"_name": "caption", "patch_image_size": 64}},
                "model": sd}, path)
    return model


class Boom:
    def __reduce__(self):
        return (os.system, ("touch " + os.environ["OFA_CN_BOOM"],))


def test_code_in_a_pickle_is_refused_and_never_runs(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    monkeypatch.setenv("OFA_CN_BOOM", str(marker))
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": {}, "payload": Boom()}, f)
    with pytest.raises(CheckpointError, match="refused to load .*nothing from it was executed"):
        load_checkpoint_file(path)
    assert not marker.exists()


def test_missing_file_and_garbage(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint_file(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_checkpoint_file(tmp_path / "junk.pt")


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    save_tiny(tmp_path / "a.pt", drop=("encoder.layers.1.attn_ln.weight",), extra={"encoder.bogus": torch.zeros(2)})
    with pytest.raises(CheckpointError, match=r"1 missing: encoder\.layers\.1\.attn_ln\.weight.*1 unexpected: encoder\.bogus"):
        load_pretrained(tmp_path / "a.pt")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fp16_weights_load(tmp_path, dtype):
    original = save_tiny(tmp_path / "h.pt", dtype=torch.float16)
    model, task = load_pretrained(tmp_path / "h.pt", dtype=dtype)
    assert task["patch_image_size"] == 64
    w = model.encoder.layers[0].fc1.weight
    assert w.dtype == dtype
    ref = original.encoder.layers[0].fc1.weight.detach().half().to(dtype)
    assert torch.equal(w.detach(), ref)
    assert model.decoder.output_projection.weight.data_ptr() == model.encoder.embed_tokens.weight.data_ptr()


@torch.no_grad()
def test_export_round_trip(tmp_path):
    save_tiny(tmp_path / "c.pt")
    model, _ = load_pretrained(tmp_path / "c.pt")
    out = export_checkpoint(tmp_path / "c.pt", tmp_path / "exported")
    again, task = load_exported(out)
    assert task["_name"] == "caption"
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    src = torch.tensor([[0, 5, 6, 2]])
    images = torch.randn(1, 3, 32, 32)
    prev = torch.tensor([[0, 9]])
    torch.testing.assert_close(model(src, None, prev, patch_images=images)[0],
                               again(src, None, prev, patch_images=images)[0], atol=0, rtol=0)


def test_convert_into_a_non_empty_folder_refuses_without_overwrite(tmp_path, capsys):
    from ofa_cn.apps.cli import main

    save_tiny(tmp_path / "c.pt")
    out = tmp_path / "exported"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    assert main(["convert", str(tmp_path / "c.pt"), str(out)]) == 2
    assert capsys.readouterr().err == (f"ofa-cn convert: error: {out} is not empty (notes.txt); refusing to overwrite "
                                       "it. Choose an empty or new folder, or pass --overwrite (overwrite=True) to "
                                       "replace its files.\n")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert main(["convert", str(tmp_path / "c.pt"), str(out), "--overwrite"]) == 0
    assert (out / "model.safetensors").is_file()
    assert main(["convert", str(tmp_path / "c.pt"), str(tmp_path / "new" / "folder")]) == 0  # a new folder is fine


def test_unsupported_architecture_is_named(tmp_path):
    save_tiny(tmp_path / "d.pt")
    state = torch.load(tmp_path / "d.pt", weights_only=False)
    state["cfg"]["model"].share_all_embeddings = False
    torch.save(state, tmp_path / "d.pt")
    with pytest.raises(CheckpointError, match="share_all_embeddings"):
        load_pretrained(tmp_path / "d.pt")


def test_loading_keeps_fairseq_able_to_load(tmp_path):
    """Reading a checkpoint leaves argparse.Namespace allowed for later torch.load calls (fairseq's
    loader): torch 2.13's safe_globals context manager would remove it on exit."""
    save_tiny(tmp_path / "a.pt")
    load_checkpoint_file(tmp_path / "a.pt")
    assert argparse.Namespace in torch.serialization.get_safe_globals()
    assert isinstance(torch.load(tmp_path / "a.pt", weights_only=True)["cfg"]["model"], argparse.Namespace)


@torch.no_grad()
def test_fp16_export_without_derived_buffers_round_trips(tmp_path):
    save_tiny(tmp_path / "c.pt")
    model, _ = load_pretrained(tmp_path / "c.pt")
    out = export_checkpoint(tmp_path / "c.pt", tmp_path / "fp16", dtype=torch.float16, drop_derived=True)
    from safetensors.torch import load_file

    stored = load_file(str(out / "model.safetensors"))
    assert not set(DERIVED_BUFFERS) & set(stored)
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    again, _ = load_exported(out)
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2
        assert torch.equal(a.half().float() if a.is_floating_point() else a, b), k  # fp16 rounding only


def test_export_refuses_to_drop_a_bucket_table_its_config_does_not_build(tmp_path):
    save_tiny(tmp_path / "c.pt")
    state = torch.load(tmp_path / "c.pt", weights_only=False)
    state["model"]["encoder.image_rp_bucket"][0, 0] += 1
    torch.save(state, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="encoder.image_rp_bucket differs"):
        export_checkpoint(tmp_path / "c.pt", tmp_path / "fp16", drop_derived=True)
