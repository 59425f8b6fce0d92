"""Released OFA-CN checkpoints: safe loading, the saved config, strict weight loading, export.

A released `.pt` is a pickle written by the original fairseq trainer: `{"cfg": {"model":
argparse.Namespace, "task": dict, ...}, "model": state_dict, ...}`. We load it with
`weights_only=True` and an explicit allow-list; a file that tries to run anything else is refused
and nothing in it runs. There is no automatic fallback to unsafe unpickling.

Export (`export_checkpoint`) writes the weights as safetensors plus the configs as JSON, through
the declarative table of tied-weight aliases below; `load_exported` reads them back.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pickle
from pathlib import Path
from typing import Any, Mapping

import torch

from ..model.config import MAX_POSITION_BUCKETS, OFAConfig, check_saved_options, config_from_options

logger = logging.getLogger(__name__)

# The only classes a released checkpoint pickles besides tensors and builtin containers.
SAFE_GLOBALS = [argparse.Namespace]
# One storage, three names: encoder/decoder token embedding and the output projection.
TIED_ALIASES = {
    "decoder.embed_tokens.weight": "encoder.embed_tokens.weight",
    "decoder.output_projection.weight": "encoder.embed_tokens.weight",
}
# Buffers that are a pure function of the config (relative-position bucket tables): 8.3 M int64
# entries for any model size, which `export_checkpoint(drop_derived=True)` leaves out after checking
# them and `load_exported` rebuilds from the config.
DERIVED_BUFFERS = ("encoder.token_rp_bucket", "encoder.image_rp_bucket",
                   "decoder.token_rp_bucket", "decoder.image_rp_bucket")
EXPORT_WEIGHTS = "model.safetensors"
EXPORT_CONFIG = "config.json"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded as asked; the message says why and what to do."""


def allow_checkpoint_globals() -> None:
    """Let `torch.load(weights_only=True)` (fairseq's loader too) read released checkpoints."""
    torch.serialization.add_safe_globals(SAFE_GLOBALS)


def load_checkpoint_file(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint file safely (tensors, containers and argparse.Namespace only).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is not a checkpoint, or it holds other objects (code).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    _check_torch_file(path)
    try:
        # Not the safe_globals context manager: torch 2.13's removes its globals on exit, even ones
        # that were allowed before, which would break fairseq's own loader afterwards.
        allow_checkpoint_globals()
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refused to load {path}: it contains objects outside the allow-list "
            f"({', '.join(c.__module__ + '.' + c.__qualname__ for c in SAFE_GLOBALS)}); nothing from it was "
            f"executed. Details: {str(e).splitlines()[-1] if str(e) else e!r}. Only if you trust the file, "
            "load it yourself with torch.load(path, weights_only=False) and save its 'model' and 'cfg' again."
        ) from None
    except (RuntimeError, EOFError) as e:
        raise CheckpointError(f"{path} is not a readable torch checkpoint: {e}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} has no 'model' entry; expected a fairseq/OFA checkpoint")
    return state


# How files start: torch.save's zip archive, a legacy torch pickle (protocol 2+), gzip.
_ZIP_MAGIC, _PICKLE_MAGIC, _GZIP_MAGIC = b"PK\x03\x04", b"\x80", b"\x1f\x8b"


def _check_torch_file(path: Path) -> None:
    """Raises CheckpointError for a file that torch.save did not write (text, an image, a gzip), so
    that it is not reported as a refused pickle."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(_GZIP_MAGIC):
        raise CheckpointError(f"{path} is gzip-compressed; decompress it first (gunzip -k {path})")
    if not (head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_MAGIC)):
        raise CheckpointError(f"{path} is not a checkpoint: torch checkpoints start with a zip or pickle header, "
                              f"this file starts with {head!r}; give a .pt file saved by torch.save (fairseq, OFA)")


def _as_dict(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    if isinstance(obj, argparse.Namespace):
        return dict(vars(obj))
    if isinstance(obj, Mapping):
        return dict(obj)
    try:  # an OmegaConf DictConfig
        from omegaconf import OmegaConf

        return dict(OmegaConf.to_container(obj, resolve=True))
    except Exception as e:  # noqa: BLE001 - report what the object was
        raise CheckpointError(f"cannot read a config of type {type(obj).__name__}: {e}") from None


def saved_model_args(state: Mapping[str, Any]) -> dict[str, Any]:
    """The model's saved arguments: cfg['model'] (current layout) or args (legacy layout)."""
    cfg = state.get("cfg") or {}
    if cfg and cfg.get("model") is not None:
        return _as_dict(cfg["model"])
    if state.get("args") is not None:
        return _as_dict(state["args"])
    raise CheckpointError("checkpoint has neither cfg['model'] nor args; cannot tell its architecture")


def saved_task_config(state: Mapping[str, Any]) -> dict[str, Any]:
    """The task's saved config (patch_image_size, num_bins, max_image_size, ... and `_name`)."""
    cfg = state.get("cfg") or {}
    if cfg and cfg.get("task") is not None:
        return _as_dict(cfg["task"])
    if state.get("args") is not None:
        args = _as_dict(state["args"])
        return {**args, "_name": args.get("task")}
    return {}


def model_config(state: Mapping[str, Any]) -> OFAConfig:
    """OFAConfig of a loaded checkpoint (`config_from_options`: saved values win over the architecture preset)."""
    args = saved_model_args(state)
    try:
        check_saved_options(args)
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    vocab = state["model"]["encoder.embed_tokens.weight"].shape[0]
    return config_from_options(args, vocab_size=vocab)


def check_state_dict(state_dict: Mapping[str, torch.Tensor], model: torch.nn.Module, source: str) -> None:
    """Strict comparison of keys and shapes, with every difference listed.

    Raises:
        CheckpointError: missing or unexpected keys, or a shape that differs.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]
    if missing or unexpected or shapes:
        def show(items):
            return ", ".join(items[:20]) + (f" ... (+{len(items) - 20} more)" if len(items) > 20 else "")
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {show(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {show(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} with another shape: {show(shapes)}")
        raise CheckpointError(
            f"{source} does not match the model built from its own config ({'; '.join(parts)}). "
            "Nothing is filled in from fresh initialisation; check that the file is an OFA-CN checkpoint "
            "and that its saved model options are complete."
        )


def load_weights(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Strictly load `state_dict` into `model`, casting floating tensors (fp16 -> model dtype)."""
    check_state_dict(state_dict, model, source)
    model.load_state_dict(dict(state_dict), strict=True)  # load_state_dict copies with a cast


def load_pretrained(path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """Load a released (or our own) checkpoint into an `OFAModel`, strictly, in eval mode.

    Args:
        path: a `.pt` in the original layout, a folder written by `export_checkpoint`, or a
            ModelScope OFA-CN folder (config.json, pytorch_model.bin, vocab.txt, configuration.json).
        dtype: float32 or bfloat16 (fp16 weights are cast).
    Returns:
        (model, task_config dict)
    """
    cfg, state_dict, task = read_checkpoint(path)
    return build_loaded(cfg, state_dict, str(path), dtype, device), task


def build_loaded(cfg: OFAConfig, state_dict: Mapping[str, torch.Tensor], source: str,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """An `OFAModel` of `cfg` with `state_dict` loaded strictly, on `device` in `dtype`, in eval mode."""
    from ..model.ofa import OFAModel  # the fairseq-facing class; imported here to keep this module light

    model = OFAModel.from_config(cfg)
    load_weights(model, state_dict, source)
    return model.to(device=device, dtype=dtype).eval()


def export_checkpoint(path: str | Path, out_dir: str | Path, dtype: torch.dtype | None = None,
                      drop_derived: bool = False, overwrite: bool = False) -> Path:
    """Write a checkpoint's weights (safetensors, tied aliases stored once) and configs (JSON).

    Args:
        dtype: cast floating-point weights to this type (e.g. torch.float16); None keeps them.
        drop_derived: leave out DERIVED_BUFFERS, after checking that they equal what the config
            builds (`read_exported` rebuilds them).
        overwrite: replace the files of a non-empty `out_dir`.
    Raises:
        ValueError: `out_dir` exists and is not empty, and `overwrite` is False (checked
            before the checkpoint is read).
        CheckpointError: with drop_derived, a saved bucket table differs from the config's.
    """
    refuse_non_empty(out_dir, overwrite)
    cfg, state_dict, task = read_checkpoint(path)
    return write_exported(cfg, state_dict, task, out_dir, source=Path(path).name, dtype=dtype,
                          drop_derived=drop_derived)


def refuse_non_empty(out_dir: str | Path, overwrite: bool) -> None:
    """Raise ValueError if `out_dir` exists and holds files, unless `overwrite`."""
    out_dir = Path(out_dir)
    if not overwrite and out_dir.is_dir() and any(out_dir.iterdir()):
        shown = ", ".join(sorted(p.name for p in out_dir.iterdir())[:5])
        raise ValueError(f"{out_dir} is not empty ({shown}); refusing to overwrite it. Choose an empty or new "
                         "folder, or pass --overwrite (overwrite=True) to replace its files.")


def read_checkpoint(path: str | Path) -> tuple[OFAConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """(config, state dict, task config) of a .pt, an exported folder or a ModelScope folder; no model built."""
    path = Path(path)
    if path.is_dir():
        from .modelscope import is_modelscope_folder, read_modelscope

        if is_modelscope_folder(path):
            return read_modelscope(path)
        return read_exported(path)
    state = load_checkpoint_file(path)
    return model_config(state), dict(state["model"]), saved_task_config(state)


# Formats of `ofa-cn convert CKPT OUT --format F`.
CONVERT_FORMATS = ("safetensors", "modelscope", "fairseq")


def convert_checkpoint(path: str | Path, out: str | Path, fmt: str = "safetensors", overwrite: bool = False) -> Path:
    """Rewrite a checkpoint (.pt, exported folder or ModelScope folder) in another format.

    safetensors: our folder (model.safetensors + config.json); modelscope: a folder for
    modelscope's OFAModel.from_pretrained; fairseq: a .pt for `fairseq-train --restore-file`.
    A non-empty output folder (or an existing .pt) is refused unless `overwrite`.
    """
    from . import modelscope

    if fmt not in CONVERT_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {CONVERT_FORMATS}")
    if fmt == "fairseq" and Path(out).is_file() and not overwrite:
        raise ValueError(f"{out} exists; refusing to overwrite it. Choose another name, or pass --overwrite.")
    if fmt != "fairseq":
        refuse_non_empty(out, overwrite)
    cfg, state_dict, task = read_checkpoint(path)
    if fmt == "safetensors":
        return write_exported(cfg, state_dict, task, out, source=Path(path).name)
    if fmt == "modelscope":
        return modelscope.export_modelscope(cfg, state_dict, task, out)
    return modelscope.write_fairseq_checkpoint(cfg, state_dict, task, out)


def derived_buffers(cfg: OFAConfig) -> dict[str, torch.Tensor]:
    """DERIVED_BUFFERS as the config builds them (the model's own tables, without building it)."""
    from ..model.positions import image_bucket_table, token_bucket_table

    token = token_bucket_table(cfg.token_bucket_size, MAX_POSITION_BUCKETS)
    image = image_bucket_table(cfg.image_bucket_size)
    return {f"{side}.{name}": table for side in ("encoder", "decoder")
            for name, table in (("token_rp_bucket", token), ("image_rp_bucket", image))}


def write_exported(cfg: OFAConfig, state_dict: Mapping[str, torch.Tensor], task: Mapping[str, Any],
                   out_dir: str | Path, source: str, dtype: torch.dtype | None = None,
                   drop_derived: bool = False) -> Path:
    """Our exported folder: model.safetensors (tied aliases stored once) and config.json.

    dtype and drop_derived: as `export_checkpoint`'s.
    """
    from safetensors.torch import save_file

    skip = set(TIED_ALIASES)
    if drop_derived:
        for name, table in derived_buffers(cfg).items():
            if not torch.equal(state_dict[name], table):
                raise CheckpointError(f"{source}: {name} differs from the table its config builds; export it with "
                                      "drop_derived=False")
        skip.update(DERIVED_BUFFERS)
    weights = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
               for k, v in state_dict.items() if k not in skip}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out_dir / EXPORT_WEIGHTS), metadata={"format": "ofa-cn"})
    task = {k: v for k, v in task.items() if _json_safe(v)}
    config = {"model": dataclasses.asdict(cfg), "task": task, "source": source}
    (out_dir / EXPORT_CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    return out_dir


def _json_safe(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except TypeError:
        return False


def load_exported(folder: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """Read a folder written by `export_checkpoint`. -> (model, task_config dict)"""
    cfg, weights, task = read_exported(folder)
    return build_loaded(cfg, weights, str(folder), dtype, device), task


def read_exported(folder: str | Path) -> tuple[OFAConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """(config, state dict with the tied aliases, task config) of a folder written by `export_checkpoint`."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config = json.loads((folder / EXPORT_CONFIG).read_text(encoding="utf-8"))
    weights = load_file(str(folder / EXPORT_WEIGHTS))
    for alias, target in TIED_ALIASES.items():
        weights[alias] = weights[target]
    cfg = OFAConfig(**config["model"])
    for name, table in derived_buffers(cfg).items():  # left out by export_checkpoint(drop_derived=True)
        weights.setdefault(name, table)
    return cfg, weights, config["task"]
