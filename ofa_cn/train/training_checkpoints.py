"""Crash-safe checkpoint files for fairseq-train: the one place where the plugin changes fairseq.

fairseq 0.12 writes the first checkpoint file of a save through ``<name>.tmp`` and a rename (but
without fsync), then fills ``checkpoint_last.pt`` and ``checkpoint_best.pt`` with a plain
``PathManager.copy``: a kill during that copy leaves a truncated ``checkpoint_last.pt``, and the
next run stops on it although a complete checkpoint lies beside it. A full disk leaves the
partial ``.tmp`` behind. ``install()`` (called when ``ofa_cn`` is imported, so ``--user-dir
ofa_cn`` is enough) replaces four names in ``fairseq.checkpoint_utils``, and nothing else:

- ``torch_persistent_save`` -> ``save_atomically``: every checkpoint file is written to
  ``<name>.tmp`` in the same folder, flushed to disk (fsync), renamed over ``<name>``, and the
  folder entry is flushed too. A reader sees the old complete file or the new complete file.
- ``PathManager`` -> ``CheckpointPathManager``: the same for the copies to ``checkpoint_last``
  and ``checkpoint_best`` (every other method is fairseq's own).
- ``load_checkpoint`` -> ``load_checkpoint``: when ``checkpoint_last.pt`` exists but cannot be
  read (left by an older fairseq, a disk error, a copy made by hand), training resumes from the
  newest readable checkpoint in the folder, with a warning that names both files. Partial
  ``.tmp`` files of an interrupted save are removed first. A run whose checkpoint already holds
  ``max_update`` updates exits at once (fairseq would train one update more).
- ``verify_checkpoint_directory``: a save folder that cannot be written (read-only, no
  permission, full) is reported at start, not after the first epoch.

A failed write (no space left, read-only file system, ...) removes its partial file, keeps the
previous checkpoint as it was, and raises ``CheckpointWriteError``, whose message says what
failed while writing which file: ``no space left on device while writing .../checkpoint_last.pt``.
Remote paths (``PathManager`` handlers) and ``--write-checkpoints-asynchronously`` keep
fairseq's own behaviour.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch
from fairseq import checkpoint_utils
from fairseq.file_io import PathManager

logger = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"  # fairseq's own temporary name, so a later save of the same file replaces a leftover
_COPY_CHUNK = 16 << 20
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since torch 1.6 is a zip archive

_fairseq = {}  # the replaced fairseq functions, by name


class CheckpointWriteError(OSError):
    """A checkpoint file could not be written; the partial file was removed, older files are intact."""


class CheckpointReadError(RuntimeError):
    """No checkpoint in the save folder can be read to resume from."""


# ------------------------------------------------------------------------------------- writing


def _reason(error: BaseException) -> OSError | None:
    """The OSError behind `error` (torch.save reports a failed write as a RuntimeError whose
    __context__ is the OSError), or None."""
    seen = error
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _write_error(error: BaseException, path: str) -> CheckpointWriteError:
    cause = _reason(error)
    code = cause.errno if cause is not None else None
    what = (cause.strerror or str(cause)) if cause is not None else f"{type(error).__name__}: {error}"
    advice = {
        errno.ENOSPC: "free space there or choose another --save-dir",
        errno.EDQUOT: "free space there or choose another --save-dir",
        errno.EROFS: "choose a writable --save-dir",
        errno.EACCES: "choose a --save-dir you may write to",
    }.get(code, "check the save folder")
    message = (f"{what[:1].lower()}{what[1:]} while writing {path}; the partial file was removed and the "
               f"previous checkpoint files are unchanged. {advice.capitalize()}.")
    return CheckpointWriteError(code, message) if code is not None else CheckpointWriteError(message)


def _fsync_folder(folder: str) -> None:
    # The rename is only durable once the folder's entry is on disk too.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: str | os.PathLike, write: Callable[[Any], None]) -> None:
    """Make `path` appear complete or not at all: write(file) into `<path>.tmp`, fsync, rename.

    Raises:
        CheckpointWriteError: the write failed (e.g. no space left); `<path>.tmp` is removed and
            an existing `path` is left as it was.
    """
    path = os.fspath(path)
    tmp = path + TMP_SUFFIX
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_folder(os.path.dirname(os.path.abspath(path)))
    except Exception as e:
        _remove_quietly(tmp)
        if _reason(e) is None:
            raise  # not an I/O failure (e.g. an object torch cannot pickle): the original error
        raise _write_error(e, path) from None  # the message names the cause; torch's own is noise


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def save_atomically(obj: Any, filename: str, async_write: bool = False) -> None:
    """Replaces fairseq's ``checkpoint_utils.torch_persistent_save`` (same signature)."""
    if async_write or PathManager.path_requires_pathmanager(filename):
        return _fairseq["torch_persistent_save"](obj, filename, async_write=async_write)
    write_atomically(filename, lambda f: torch.save(obj, f))


class CheckpointPathManager(PathManager):
    """fairseq's PathManager, except that ``copy`` of local files is atomic (checkpoint_last/best)."""

    @staticmethod
    def copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
        if PathManager.path_requires_pathmanager(src_path) or PathManager.path_requires_pathmanager(dst_path):
            return PathManager.copy(src_path, dst_path, overwrite)
        if not overwrite and os.path.exists(dst_path):
            return False
        with open(src_path, "rb") as src:
            write_atomically(dst_path, lambda f: shutil.copyfileobj(src, f, _COPY_CHUNK))
        return True


def verify_checkpoint_directory(save_dir: str) -> None:
    """Replaces fairseq's check at start of training: a clear error if `save_dir` cannot be written."""
    probe = os.path.join(save_dir, ".write_test")
    try:
        os.makedirs(save_dir, exist_ok=True)
        write_atomically(probe, lambda f: f.write(b"ok"))
        os.remove(probe)
    except OSError as e:
        cause = _reason(e) or e
        raise CheckpointWriteError(
            cause.errno, f"cannot write checkpoints to --save-dir {save_dir}: {cause.strerror or cause}. "
            "Choose a folder you can write to (checkpoint.save_dir)."
        ) from None


# ------------------------------------------------------------------------------------- resuming


def unreadable_reason(path: str | os.PathLike) -> str | None:
    """Why `path` is not a complete torch checkpoint, or None when it looks complete.

    A zip-format checkpoint (torch >= 1.6) is read through its central directory and every
    record's CRC, which is what a truncated or damaged file fails; the tensors are not
    unpickled. A file in torch's legacy (non-zip) format is left to fairseq's loader.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        if not head:
            return "the file is empty"
        if head != _ZIP_MAGIC:
            return None  # legacy format: fairseq decides
        with zipfile.ZipFile(path) as archive:
            if not any(name.endswith("/data.pkl") or name == "data.pkl" for name in archive.namelist()):
                return "it has no data.pkl record, so it is not a torch checkpoint"
            bad = archive.testzip()
            if bad is not None:
                return f"record {bad} is damaged (CRC mismatch)"
    except zipfile.BadZipFile as e:
        return f"it is truncated or damaged ({e})"
    except OSError as e:
        return f"it cannot be read ({e.strerror or e})"
    return None


def _checkpoint_files(save_dir: str, suffix: str) -> list[Path]:
    pattern = re.compile(r"checkpoint.*" + re.escape(suffix) + r"\.pt")
    return [p for p in Path(save_dir).iterdir() if p.is_file() and pattern.fullmatch(p.name)]


def newest_readable(save_dir: str, suffix: str, exclude: str) -> Path | None:
    """The most recently written readable checkpoint file in `save_dir`, other than `exclude`."""
    candidates = [p for p in _checkpoint_files(save_dir, suffix) if os.path.abspath(p) != os.path.abspath(exclude)]
    for path in sorted(candidates, key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True):
        if unreadable_reason(path) is None:
            return path
    return None


def remove_partial_files(save_dir: str) -> list[str]:
    """Remove ``checkpoint*.pt.tmp`` files left by a save that was killed; -> their names."""
    removed = []
    for path in Path(save_dir).glob(f"checkpoint*.pt{TMP_SUFFIX}"):
        path.unlink()
        removed.append(path.name)
    return sorted(removed)


def load_checkpoint(cfg, trainer, **passthrough_args):
    """Replaces fairseq's ``checkpoint_utils.load_checkpoint``: the same, except for the file it
    resumes from when ``checkpoint_last.pt`` exists but cannot be read, and a clean exit when the
    checkpoint already holds ``max_update`` updates (see the module docstring)."""
    extra_state, epoch_itr = _resume(cfg, trainer, **passthrough_args)
    max_update = trainer.cfg.optimization.max_update
    if extra_state is not None and max_update and trainer.get_num_updates() >= max_update:
        # fairseq would train one more update before it checks max_update, so a run killed after
        # its last save would end with different weights than one that was not.
        logger.info("the checkpoint already holds %d updates (max_update %d): training is complete",
                    trainer.get_num_updates(), max_update)
        raise SystemExit(0)
    return extra_state, epoch_itr


def _resume(cfg, trainer, **passthrough_args):
    if cfg.restore_file != "checkpoint_last.pt" or not os.path.isdir(cfg.save_dir):
        return _fairseq["load_checkpoint"](cfg, trainer, **passthrough_args)
    suffix = trainer.checkpoint_suffix
    if trainer.data_parallel_rank == 0:
        removed = remove_partial_files(cfg.save_dir)
        if removed:
            logger.info("removed %d partial file(s) of an interrupted save from %s: %s",
                        len(removed), cfg.save_dir, ", ".join(removed))
    last = os.path.join(cfg.save_dir, f"checkpoint_last{suffix}.pt")
    reason = unreadable_reason(last) if os.path.exists(last) else None
    if reason is None:
        return _fairseq["load_checkpoint"](cfg, trainer, **passthrough_args)
    fallback = newest_readable(cfg.save_dir, suffix, exclude=last)
    if fallback is None:
        raise CheckpointReadError(
            f"cannot resume: {last} cannot be read ({reason}) and {cfg.save_dir} holds no other readable "
            "checkpoint. Remove it to start from scratch, or pass --restore-file with a checkpoint to resume from."
        )
    logger.warning("%s cannot be read (%s); resuming from %s instead, the newest readable checkpoint in %s",
                   last, reason, fallback, cfg.save_dir)
    # fairseq appends the suffix to an explicit restore_file itself
    restore = str(fallback)[: -len(f"{suffix}.pt")] + ".pt" if suffix else str(fallback)
    asked = cfg.restore_file, cfg.finetune_from_model
    # resuming this run's own checkpoint, not starting a finetuning (fairseq refuses both together)
    cfg.restore_file, cfg.finetune_from_model = restore, None
    try:
        return _fairseq["load_checkpoint"](cfg, trainer, **passthrough_args)
    finally:
        cfg.restore_file, cfg.finetune_from_model = asked  # later saves record what the user asked for


# ------------------------------------------------------------------------------------- installing

REPLACEMENTS = {
    "torch_persistent_save": save_atomically,
    "PathManager": CheckpointPathManager,
    "load_checkpoint": load_checkpoint,
    "verify_checkpoint_directory": verify_checkpoint_directory,
}


def install() -> None:
    """Replace the four names in ``fairseq.checkpoint_utils`` (idempotent)."""
    for name, replacement in REPLACEMENTS.items():
        current = getattr(checkpoint_utils, name)
        if current is replacement:
            continue
        _fairseq[name] = current
        setattr(checkpoint_utils, name, replacement)
