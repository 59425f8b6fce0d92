"""fairseq-train's real entry point, killed (SIGKILL) by itself at one step of its checkpoint saves.

    OFA_CN_KILL_AT=N python kill_during_save.py <fairseq-train arguments>

Every checkpoint file is written in four steps, each of which is a kill point: half of the bytes
written to ``<name>.tmp``; the temporary file flushed (fsync); renamed over ``<name>``; the folder
flushed. Steps are counted over the whole run (a save of ``checkpoint_1_3.pt`` plus its copy to
``checkpoint_last.pt`` is eight), and the process kills itself with SIGKILL, as ``kill -9`` would,
right after step N. Nothing of the plugin is changed: the hooks wrap ``torch.save``,
``shutil.copyfileobj``, ``os.fsync`` and ``os.replace`` in this process only.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import sys

import torch

KILL_AT = int(os.environ["OFA_CN_KILL_AT"])
steps = 0


def step(what: str) -> None:
    global steps
    steps += 1
    if steps == KILL_AT:
        sys.stderr.write(f"kill_during_save: SIGKILL at step {steps} ({what})\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def is_checkpoint(path: str) -> bool:
    return os.path.basename(path).startswith("checkpoint")


def half_then_rest(data: bytes, f, what: str) -> None:
    f.write(data[: len(data) // 2])
    f.flush()
    step(f"half of {what} written")
    f.write(data[len(data) // 2:])


torch_save, copyfileobj, fsync, replace = torch.save, shutil.copyfileobj, os.fsync, os.replace


def save(obj, f, *args, **kwargs):
    if not hasattr(f, "name") or not is_checkpoint(f.name):
        return torch_save(obj, f, *args, **kwargs)
    buffer = io.BytesIO()
    torch_save(obj, buffer, *args, **kwargs)
    half_then_rest(buffer.getvalue(), f, f.name)


def copy(src, dst, length=0):
    if not is_checkpoint(getattr(dst, "name", "")):
        return copyfileobj(src, dst, length)
    half_then_rest(src.read(), dst, dst.name)


renamed_checkpoint = False  # the folder's fsync after a checkpoint's rename is a step too


def sync(fd):
    global renamed_checkpoint
    fsync(fd)
    path = os.readlink(f"/proc/self/fd/{fd}")
    if is_checkpoint(path) or (renamed_checkpoint and os.path.isdir(path)):
        renamed_checkpoint = False
        step(f"fsync {path}")


def rename(src, dst, *args, **kwargs):
    global renamed_checkpoint
    replace(src, dst, *args, **kwargs)
    if is_checkpoint(dst):
        renamed_checkpoint = True
        step(f"renamed to {dst}")


torch.save, shutil.copyfileobj, os.fsync, os.replace = save, copy, sync, rename

if __name__ == "__main__":
    from fairseq_cli.train import cli_main

    sys.argv[0] = "fairseq-train"
    cli_main()
