"""ModelScope's OFA model folders <-> OFA-CN: one key table, one config mapping, import and export.

ModelScope publishes the OFA-CN checkpoints (without optimizer states) as folders such as
`damo/ofa_image-caption_muge_base_zh`:

    config.json          transformers-style config of modelscope's `OFAModel` (d_model, normformer, ...)
    pytorch_model.bin    its state dict (model.safetensors in folders saved by newer transformers)
    vocab.txt            <s> <pad> </s> <unk>, the 21,128 bert-base-chinese wordpieces, <mask>
    configuration.json   ModelScope's pipeline config: task, prompt, image sizes, beam search

The weights are ours under other names for seven sub-modules of each layer (`KEY_TABLE`); ModelScope
has no fairseq `version` buffers, and its decoder's `image_position_idx` ends with 768 pad entries
where ours has 769. Both are buffers that follow from the config, so they are checked, not copied.
Its tokenizer maps unknown characters to `<unk>` (3) where ours gives BERT's `[UNK]` (104): the
embedding rows are the same, only text that holds characters outside the vocabulary encodes
differently.

    load_modelscope(DIR)                     -> (OFAModel, task config), like checkpoint.load_pretrained
    export_modelscope(CKPT, OUT)             writes a folder that modelscope's OFAModel.from_pretrained loads
    write_fairseq_checkpoint(DIR, OUT.pt)    a .pt for `fairseq-train --restore-file`
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from .formats import CheckpointError, build_loaded, derived_buffers
from ..model.config import OFAConfig
from ..model.positions import IMAGE_CODE_PAD_COUNT, decoder_image_position_table
from ..tokenizer import (DEFAULT_CODE_DICT_SIZE, DEFAULT_NUM_BINS, SPECIAL_SYMBOLS, _as_dict_symbol, read_vocab)

logger = logging.getLogger(__name__)

CONFIG = "config.json"
WEIGHTS = ("pytorch_model.bin", "model.safetensors")  # what we write first, then what we also read
VOCAB = "vocab.txt"
CONFIGURATION = "configuration.json"
MASK = "<mask>"

# Ours -> ModelScope, per layer ("{}" = layer index); a prefix maps every key below it.
# Every other parameter and buffer has the same name on both sides.
KEY_TABLE = {
    "encoder.layers.{}.attn_ln.": "encoder.layers.{}.self_attn_mid_layer_norm.",
    "encoder.layers.{}.ffn_layernorm.": "encoder.layers.{}.ffn_layer_norm.",
    "decoder.layers.{}.self_attn_ln.": "decoder.layers.{}.self_attn_mid_layer_norm.",
    "decoder.layers.{}.cross_attn_ln.": "decoder.layers.{}.cross_attn_mid_layer_norm.",
    "decoder.layers.{}.encoder_attn.": "decoder.layers.{}.cross_attn.",
    "decoder.layers.{}.encoder_attn_layer_norm.": "decoder.layers.{}.cross_attn_layer_norm.",
    "decoder.layers.{}.ffn_layernorm.": "decoder.layers.{}.ffn_layer_norm.",
}
TIED_NAMES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "decoder.output_projection.weight")
VERSION_BUFFERS = ("encoder.version", "decoder.version")  # fairseq's, ours only (value 3.0)
IMAGE_POSITION_IDX = "decoder.image_position_idx"
MODELSCOPE_IMAGE_CODE_PAD_COUNT = 768  # pad entries at the end of its image_position_idx (ours: 769)

MODELSCOPE_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")  # image stems it can build
# ModelScope task names <-> our registered tasks.
TASKS = {"image-captioning": "caption", "visual-grounding": "refcoco", "ocr-recognition": "ocr"}

# Config fields with one name on both sides, and renamed ones (ours -> ModelScope).
SAME_FIELDS = ("vocab_size", "encoder_layers", "decoder_layers", "encoder_attention_heads",
               "decoder_attention_heads", "token_bucket_size", "image_bucket_size", "attn_scale_factor",
               "code_image_size", "resnet_type", "add_type_embedding", "entangle_position_embedding", "dropout",
               "attention_dropout", "activation_dropout", "encoder_drop_path_rate", "decoder_drop_path_rate",
               "resnet_drop_path_rate")
RENAMED_FIELDS = {"encoder_ffn_embed_dim": "encoder_ffn_dim", "decoder_ffn_embed_dim": "decoder_ffn_dim",
                  "pad": "pad_token_id"}
# ModelScope options that OFA-CN always has; any other value builds a model we cannot represent.
FIXED = {"encoder_normalize_before": True, "decoder_normalize_before": True, "layernorm_embedding": True,
         "patch_layernorm_embedding": True, "code_layernorm_embedding": True,
         "share_decoder_input_output_embed": True, "scale_embedding": False, "activation_function": "gelu",
         "use_ofasys": False, "use_image_feature": True, "share_attn_bias": False, "interpolate_position": False,
         "use_gamma_feature": False, "exclude_mlp": True, "temperature_init_value": None,
         "bos_token_id": 0, "eos_token_id": 2, "decoder_start_token_id": 0}
# modelscope's OFAConfig defaults for the fields above, used where a config.json leaves one out.
MODELSCOPE_DEFAULTS = {
    "vocab_size": 59457, "max_position_embeddings": 1024, "d_model": 512, "encoder_layers": 4,
    "decoder_layers": 4, "encoder_ffn_dim": 2048, "decoder_ffn_dim": 2048, "encoder_attention_heads": 8,
    "decoder_attention_heads": 8, "pad_token_id": 1, "dropout": 0.1, "attention_dropout": 0.0,
    "activation_dropout": 0.0, "encoder_drop_path_rate": 0.0, "decoder_drop_path_rate": 0.0,
    "resnet_drop_path_rate": 0.0, "resnet_type": "resnet101", "token_bucket_size": 256, "image_bucket_size": 42,
    "add_type_embedding": True, "attn_scale_factor": 2.0, "code_image_size": 128,
    "entangle_position_embedding": False, "disable_entangle": False, "normformer": True,
    "encoder_normalize_before": True, "decoder_normalize_before": True, "layernorm_embedding": True,
    "patch_layernorm_embedding": True, "code_layernorm_embedding": True, "share_decoder_input_output_embed": True,
    "scale_embedding": False, "activation_function": "gelu", "use_ofasys": False, "use_image_feature": True,
    "share_attn_bias": False, "interpolate_position": False, "use_gamma_feature": False, "exclude_mlp": True,
    "temperature_init_value": None, "bos_token_id": 0, "eos_token_id": 2, "decoder_start_token_id": 0,
}
# ModelScope preprocessing defaults (configuration.json "model" section) where it leaves one out.
PREPROCESS_DEFAULTS = {"patch_image_size": 480, "max_image_size": 512, "imagenet_default_mean_and_std": False}
# configuration.json model.beam_search -> our generation settings (the names of `eval_args`).
BEAM_SEARCH_FIELDS = {"beam_size": "beam", "max_len_a": "max_len_a", "max_len_b": "max_len_b",
                      "min_len": "min_len", "no_repeat_ngram_size": "no_repeat_ngram_size"}


class ModelScopeError(CheckpointError):
    """A ModelScope folder (or an export to one) that OFA-CN cannot represent; says why and what to do."""


# ---- keys ------------------------------------------------------------------------------------
def _compile(table: Mapping[str, str]) -> list[tuple[re.Pattern, str]]:
    return [(re.compile(re.escape(src).replace(r"\{\}", r"(\d+)")), dst) for src, dst in table.items()]


_TO_MODELSCOPE = _compile(KEY_TABLE)
_FROM_MODELSCOPE = _compile({v: k for k, v in KEY_TABLE.items()})


def _mapped_key(key: str, rules: list[tuple[re.Pattern, str]]) -> str:
    for pattern, dst in rules:
        m = pattern.match(key)
        if m:
            return dst.format(*m.groups()) + key[m.end():]
    return key


def to_modelscope_key(key: str) -> str:
    """Our state-dict key -> ModelScope's (`decoder.layers.2.encoder_attn.q_proj.weight` -> `...cross_attn...`)."""
    return _mapped_key(key, _TO_MODELSCOPE)


def from_modelscope_key(key: str) -> str:
    """ModelScope's state-dict key -> ours."""
    return _mapped_key(key, _FROM_MODELSCOPE)


# ---- config ----------------------------------------------------------------------------------
def config_from_modelscope(ms: Mapping[str, Any], source: str = CONFIG) -> OFAConfig:
    """OFAConfig of a ModelScope config.json (its defaults fill what it leaves out).

    Raises:
        ModelScopeError: an option OFA-CN does not have (e.g. use_ofasys, scale_embedding).
    """
    values = {**MODELSCOPE_DEFAULTS, **ms}
    bad = {k: values[k] for k, want in FIXED.items() if values[k] != want}
    if not values["normformer"]:
        bad["normformer"] = False
    if bad:
        raise ModelScopeError(
            f"{source}: options {bad} have no OFA-CN equivalent (OFA-CN has "
            f"{ {k: FIXED.get(k, True) for k in bad} }); this folder holds another OFA variant than OFA-CN")
    ours: dict[str, Any] = {k: values[k] for k in SAME_FIELDS}
    ours.update({o: values[m] for o, m in RENAMED_FIELDS.items()})
    ours.update(encoder_embed_dim=values["d_model"], decoder_embed_dim=values["d_model"],
                max_source_positions=values["max_position_embeddings"],
                max_target_positions=values["max_position_embeddings"],
                scale_attn=True, scale_fc=True, scale_heads=True, scale_resids=False, freeze_resnet=False,
                # ModelScope's decoder adds raw positions only when entangled and not disabled; ours
                # whenever disable_entangle is off.
                disable_entangle=not (values["entangle_position_embedding"] and not values["disable_entangle"]))
    return OFAConfig(**ours)


def modelscope_config(cfg: OFAConfig) -> dict[str, Any]:
    """The config.json of modelscope's OFAModel for an OFAConfig.

    Raises:
        ModelScopeError: a model ModelScope's code cannot build (separate source/target lengths,
            only one of scale_attn/scale_fc, no per-head scales, residual scales, raw decoder
            positions without encoder ones).
    """
    problems = []
    if cfg.max_source_positions != cfg.max_target_positions:
        problems.append(f"max_source_positions ({cfg.max_source_positions}) != max_target_positions "
                        f"({cfg.max_target_positions}); ModelScope has one max_position_embeddings")
    if cfg.resnet_type not in MODELSCOPE_RESNETS:
        problems.append(f"resnet_type {cfg.resnet_type!r}; ModelScope builds {', '.join(MODELSCOPE_RESNETS)}")
    if cfg.scale_attn != cfg.scale_fc:
        problems.append(f"scale_attn={cfg.scale_attn} with scale_fc={cfg.scale_fc}; ModelScope's `normformer` "
                        "switches both")
    if not cfg.scale_heads:
        problems.append("scale_heads=False; ModelScope's attention always has per-head scales (c_attn)")
    if cfg.scale_resids:
        problems.append("scale_resids=True; ModelScope has no residual scales (w_resid)")
    if not cfg.disable_entangle and not cfg.entangle_position_embedding:
        problems.append("disable_entangle=False with entangle_position_embedding=False; ModelScope adds raw "
                        "positions in the decoder only together with the encoder")
    if problems:
        raise ModelScopeError("this model cannot be written for ModelScope: " + "; ".join(problems))
    ms: dict[str, Any] = {"model_type": "ofa", "architectures": ["OFAModel"]}
    ms.update({k: getattr(cfg, k) for k in SAME_FIELDS})
    ms.update({m: getattr(cfg, o) for o, m in RENAMED_FIELDS.items()})
    ms.update(d_model=cfg.encoder_embed_dim, max_position_embeddings=cfg.max_source_positions,
              normformer=cfg.scale_attn, disable_entangle=cfg.disable_entangle, **FIXED)
    return ms


# ---- vocabulary ------------------------------------------------------------------------------
def modelscope_vocab() -> list[str]:
    """vocab.txt of a ModelScope OFA-CN folder: fairseq's specials, the wordpieces, <mask> (21,133 lines).

    modelscope's tokenizer appends <code_0..8191> and <bin_0..999> itself, so ids match ours.
    """
    return [*SPECIAL_SYMBOLS, *read_vocab(), MASK]


def check_vocab(path: Path) -> None:
    """vocab.txt must give every token our id (the <mask> line may be left out: the tokenizer adds it).

    Raises:
        ModelScopeError: another vocabulary, naming the first line that differs.
    """
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    want = modelscope_vocab()
    if len(lines) not in (len(want), len(want) - 1):
        raise ModelScopeError(f"{path} has {len(lines)} lines; an OFA-CN vocabulary has {len(want)} "
                              "(<s> <pad> </s> <unk>, the bert-base-chinese wordpieces, <mask>)")
    for i, (got, expected) in enumerate(zip(lines, want)):
        if got != expected and got != _as_dict_symbol(expected):
            raise ModelScopeError(f"{path} line {i + 1} is {got!r} where OFA-CN has {expected!r}: the token ids "
                                  "would not match the embedding rows; this is not an OFA-CN vocabulary")


# ---- task settings (configuration.json) ------------------------------------------------------
def task_config_from_configuration(conf: Mapping[str, Any]) -> dict[str, Any]:
    """Our saved task config from ModelScope's configuration.json (task, image sizes, beam search)."""
    model = dict(conf.get("model") or {})
    task = {"_name": TASKS.get(conf.get("task")), "num_bins": DEFAULT_NUM_BINS,
            "code_dict_size": DEFAULT_CODE_DICT_SIZE}
    task.update({k: model.get(k, default) for k, default in PREPROCESS_DEFAULTS.items()})
    beam = {ours: model["beam_search"][ms] for ms, ours in BEAM_SEARCH_FIELDS.items()
            if ms in (model.get("beam_search") or {})}
    if beam:
        task["eval_args"] = json.dumps(beam)
    if conf.get("task") and task["_name"] is None:
        logger.warning("configuration.json task %r is none of %s; use --any-task (or Predictor(any_task=True))",
                       conf["task"], sorted(TASKS))
    if "prompt" in model:
        _check_prompt(task["_name"], model["prompt"])
    return task


def _task_prompt(task: str | None) -> str | None:
    from ..data.caption import CaptionDataset
    from ..data.grounding import GroundingDataset
    from ..data.ocr import OCRDataset

    return {"caption": CaptionDataset.PROMPT, "ocr": OCRDataset.PROMPT,
            "refcoco": GroundingDataset.PROMPT_TEMPLATE}.get(task)


def _check_prompt(task: str | None, prompt: str) -> None:
    from ..tokenizer import get_tokenizer

    ours = _task_prompt(task)
    if ours is None:
        return
    tok = get_tokenizer()
    if tok.encode(prompt.format("")) != tok.encode(ours.format("")):
        logger.warning("configuration.json prompt %r differs from OFA-CN's %s prompt %r; OFA-CN uses its own",
                       prompt, task, ours)


def configuration_from_task_config(task: Mapping[str, Any]) -> dict[str, Any]:
    """ModelScope's configuration.json for our saved task config.

    Raises:
        ModelScopeError: bins or image codes other than ModelScope's fixed 1000 and 8192.
    """
    for key, fixed in (("num_bins", DEFAULT_NUM_BINS), ("code_dict_size", DEFAULT_CODE_DICT_SIZE)):
        if task.get(key, fixed) != fixed:
            raise ModelScopeError(f"task {key}={task[key]}: ModelScope's tokenizer always adds {fixed}")
    name = task.get("_name")
    ms_task = {v: k for k, v in TASKS.items()}.get(name)
    model: dict[str, Any] = {"type": "ofa", "language": "zh"}
    model.update({k: task[k] for k in PREPROCESS_DEFAULTS if task.get(k) is not None})
    if _task_prompt(name) is not None:
        model["prompt"] = _task_prompt(name)
    generation = json.loads(task.get("eval_args") or "{}")
    beam = {ms: generation[ours] for ms, ours in BEAM_SEARCH_FIELDS.items() if ours in generation}
    if beam:
        model["beam_search"] = beam
    conf: dict[str, Any] = {"framework": "pytorch", "model": model}
    if ms_task:
        conf.update(task=ms_task, pipeline={"type": ms_task})
    return conf


# ---- weights ---------------------------------------------------------------------------------
def state_dict_from_modelscope(sd: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor],
                               source: str) -> dict[str, torch.Tensor]:
    """ModelScope weights under our names; buffers checked against `reference` (a fresh model's).

    Raises:
        ModelScopeError: a position buffer that differs from the one the config builds.
    """
    if sd and all(k.startswith("model.") for k in sd):  # saved from a wrapper (transformers accepts it too)
        sd = {k[len("model."):]: v for k, v in sd.items()}
    ours = {from_modelscope_key(k): v for k, v in sd.items()}
    # One shared embedding under three names; save_pretrained may store it under one of them only.
    tied = [k for k in TIED_NAMES if k in ours]
    if tied:
        for key in tied[1:]:
            if not torch.equal(ours[key], ours[tied[0]]):
                raise ModelScopeError(f"{source}: {key} differs from {tied[0]}; OFA-CN ties them (one embedding)")
        ours.update({k: ours[tied[0]] for k in TIED_NAMES if k not in ours})
    for key in VERSION_BUFFERS:
        if key not in ours and key in reference:
            ours[key] = reference[key].clone()
    if IMAGE_POSITION_IDX in ours and IMAGE_POSITION_IDX in reference:
        theirs, fresh = ours[IMAGE_POSITION_IDX], reference[IMAGE_POSITION_IDX]
        n = min(len(theirs), len(fresh))
        if not torch.equal(theirs[:n].long(), fresh[:n]):
            raise ModelScopeError(f"{source}: {IMAGE_POSITION_IDX} differs from the one its config builds "
                                  "(code_image_size / image_bucket_size do not match the weights)")
        ours[IMAGE_POSITION_IDX] = fresh.clone()
    for key in ("encoder.token_rp_bucket", "encoder.image_rp_bucket", "decoder.token_rp_bucket",
                "decoder.image_rp_bucket"):
        if key in ours and key in reference and not torch.equal(ours[key].long(), reference[key]):
            raise ModelScopeError(f"{source}: buffer {key} differs from the one its config builds "
                                  "(token_bucket_size / image_bucket_size do not match the weights)")
    return ours


def state_dict_to_modelscope(sd: Mapping[str, torch.Tensor], cfg: OFAConfig) -> dict[str, torch.Tensor]:
    """Our weights under ModelScope's names (no version buffers, its image_position_idx, BN counters)."""
    out = {to_modelscope_key(k): v for k, v in sd.items() if k not in VERSION_BUFFERS}
    idx = out[IMAGE_POSITION_IDX]
    out[IMAGE_POSITION_IDX] = idx[: len(idx) - (IMAGE_CODE_PAD_COUNT - MODELSCOPE_IMAGE_CODE_PAD_COUNT)].clone()
    if cfg.freeze_resnet:  # FrozenBatchNorm2d has no step counter; ModelScope's BatchNorm2d does (unused in eval)
        from ..model.ofa import OFAModel

        with torch.device("meta"):
            keys = OFAModel.from_config(cfg.replace(freeze_resnet=False)).state_dict().keys()
        out.update({k: torch.zeros((), dtype=torch.long) for k in keys if k.endswith("num_batches_tracked")})
    return out


# ---- folders ---------------------------------------------------------------------------------
def is_modelscope_folder(path: str | Path) -> bool:
    """A folder with a transformers-style OFA config.json (not one written by `export_checkpoint`)."""
    config = Path(path) / CONFIG
    if not Path(path).is_dir() or not config.is_file():
        return False
    try:
        values = json.loads(config.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    return isinstance(values, dict) and "model" not in values and ("d_model" in values or values.get("model_type") == "ofa")


def _weights_file(folder: Path) -> Path:
    for name in WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder} has none of {', '.join(WEIGHTS)}; a ModelScope OFA folder holds its weights there")


def _load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError or a damaged file: say which file
        raise ModelScopeError(f"{path} could not be read as a weights-only state dict: {e}") from None


def read_modelscope(folder: str | Path) -> tuple[OFAConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """(our config, our-named state dict, our task config) of a ModelScope OFA folder; nothing is built."""
    folder = Path(folder)
    cfg = config_from_modelscope(json.loads((folder / CONFIG).read_text(encoding="utf-8")), str(folder / CONFIG))
    if (folder / VOCAB).is_file():
        check_vocab(folder / VOCAB)
    else:
        logger.warning("%s has no %s; assuming the OFA-CN vocabulary", folder, VOCAB)
    conf_path = folder / CONFIGURATION
    task = task_config_from_configuration(json.loads(conf_path.read_text(encoding="utf-8"))
                                          if conf_path.is_file() else {})
    weights = _weights_file(folder)
    return cfg, state_dict_from_modelscope(_load_weights_file(weights), config_buffers(cfg), str(weights)), task


def config_buffers(cfg: OFAConfig) -> dict[str, torch.Tensor]:
    """Our model's buffers, as its config builds them (the same functions the modules call)."""
    out = {**derived_buffers(cfg), **{f"{side}.version": torch.tensor([3.0]) for side in ("encoder", "decoder")}}
    out[IMAGE_POSITION_IDX] = decoder_image_position_table(cfg.code_image_size, cfg.image_bucket_size)
    return out


def load_modelscope(folder: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """A ModelScope OFA folder as an `OFAModel`, strictly, in eval mode. -> (model, task config)"""
    cfg, state_dict, task = read_modelscope(folder)
    return build_loaded(cfg, state_dict, str(folder), dtype, device), task


def export_modelscope(cfg: OFAConfig, state_dict: Mapping[str, torch.Tensor], task: Mapping[str, Any],
                      out_dir: str | Path) -> Path:
    """Write config.json, pytorch_model.bin, vocab.txt and configuration.json for ModelScope."""
    ms_config = modelscope_config(cfg)
    configuration = configuration_from_task_config(task)
    weights = {k: v.detach().clone().contiguous() for k, v in state_dict_to_modelscope(state_dict, cfg).items()}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(weights, out_dir / WEIGHTS[0])
    (out_dir / CONFIG).write_text(json.dumps(ms_config, indent=2), encoding="utf-8")
    (out_dir / VOCAB).write_text("\n".join(modelscope_vocab()) + "\n", encoding="utf-8")
    (out_dir / CONFIGURATION).write_text(json.dumps(configuration, indent=2, ensure_ascii=False), encoding="utf-8")
    return out_dir


def write_fairseq_checkpoint(cfg: OFAConfig, state_dict: Mapping[str, torch.Tensor], task: Mapping[str, Any],
                             out: str | Path) -> Path:
    """A .pt in the released layout (no optimizer state) for `fairseq-train --restore-file ... --reset-optimizer`."""
    args = argparse.Namespace(_name="ofa", arch="ofa", **dataclasses.asdict(cfg))
    state = {"args": None, "cfg": {"model": args, "task": {k: v for k, v in task.items() if v is not None}},
             "model": dict(state_dict),
             "optimizer_history": [{"criterion_name": "AdjustLabelSmoothedCrossEntropyCriterion",
                                    "optimizer_name": "FairseqAdam", "lr_scheduler_state": {"best": None},
                                    "num_updates": 0}],
             "extra_state": {"train_iterator": {"epoch": 1, "iterations_in_epoch": 0}},
             "last_optimizer_state": None}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    return out
