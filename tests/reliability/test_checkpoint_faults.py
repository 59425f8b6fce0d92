"""Crash safety through the real fairseq-train: kill -9 at many steps of its checkpoint saves,
resume every time, and reach the weights of a run that was never interrupted. Plus resuming when
checkpoint_last.pt is unreadable, a full disk and a read-only save folder."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train_e2e import fairseq_train, final_state, run, train_cmd

from ofa_cn.train.training_checkpoints import unreadable_reason

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc")]
HERE = Path(__file__).resolve().parent
# four updates in one epoch (batches of 2 of the 8 rows), a checkpoint after each
SAVE_EVERY_UPDATE = ("--disable-validation", "--save-interval-updates", "1", "--batch-size", "2",
                     "--required-batch-size-multiple", "1")
# Kill step per launch, counted from the launch's start (kill_during_save.py): each of the four
# steps of a file (half written, fsynced, renamed, folder fsynced), for the update's own file and
# for its copy to checkpoint_last.pt, at the first, a middle and the last save.
KILL_SCHEDULE = (5, 7, 2, 8, 3, 6, 1, 4, 11)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from ofa_cn.demo.data import generate_dataset

    out = tmp_path_factory.mktemp("data")
    generate_dataset(out, seed=3, counts={"train": 8, "valid": 4, "test": 4}, workers=1)
    return out


def assert_same_weights(a_path: Path, b_path: Path, updates: int) -> None:
    a, steps_a = final_state(a_path)
    b, steps_b = final_state(b_path)
    assert steps_a == steps_b == updates
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=1e-5, msg=key)


def test_kill_9_during_saves_then_resume_reaches_the_uninterrupted_weights(data, tmp_path):
    straight = tmp_path / "straight"
    run(train_cmd("caption", data, straight, *SAVE_EVERY_UPDATE, max_update=4), cwd=tmp_path)

    save_dir = tmp_path / "killed"
    args = train_cmd("caption", data, save_dir, *SAVE_EVERY_UPDATE, max_update=4)[len(fairseq_train()):]
    killed_at = []
    for at in KILL_SCHEDULE:
        proc = subprocess.run([sys.executable, str(HERE / "kill_during_save.py"), *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=600,
                              env={**os.environ, "OFA_CN_KILL_AT": str(at)})
        assert proc.returncode in (0, -signal.SIGKILL), proc.stderr[-3000:]
        if proc.returncode == -signal.SIGKILL:
            killed_at.append(proc.stderr.splitlines()[-1].split(": ", 1)[1])
        # the invariant: whatever the kill point, every file under a checkpoint name is complete
        for path in save_dir.glob("checkpoint*.pt"):
            assert unreadable_reason(path) is None, f"{path.name} after {killed_at[-1:]}: {unreadable_reason(path)}"
    log = run(train_cmd("caption", data, save_dir, *SAVE_EVERY_UPDATE, max_update=4), cwd=tmp_path)
    print("\n".join(killed_at))
    assert len(killed_at) >= 8, killed_at  # the schedule really killed mid-save, not after training
    assert {k.split(" (")[1].split(" ")[0] for k in killed_at} >= {"half", "fsync", "renamed"}
    assert not list(save_dir.glob("*.tmp")), "a partial file was left behind"
    assert "Traceback" not in log
    assert_same_weights(straight / "checkpoint_last.pt", save_dir / "checkpoint_last.pt", updates=4)


def test_unreadable_checkpoint_last_resumes_from_the_newest_readable_one(data, tmp_path):
    """The issue's case: checkpoint_last.pt cut short beside a complete checkpoint_1_3.pt."""
    straight = tmp_path / "straight"
    run(train_cmd("caption", data, straight, *SAVE_EVERY_UPDATE, max_update=4), cwd=tmp_path)
    save_dir = tmp_path / "cut"
    run(train_cmd("caption", data, save_dir, *SAVE_EVERY_UPDATE, max_update=3), cwd=tmp_path)
    last = save_dir / "checkpoint_last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 90])  # 1.1 of 101.8 MB, as in the report
    log = run(train_cmd("caption", data, save_dir, *SAVE_EVERY_UPDATE, max_update=4), cwd=tmp_path)
    warning = next(line for line in log.splitlines() if "cannot be read" in line)
    assert f"{last} cannot be read (it is truncated or damaged" in warning
    assert f"resuming from {save_dir / 'checkpoint_1_3.pt'} instead" in warning
    assert_same_weights(straight / "checkpoint_last.pt", last, updates=4)


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str, read_only: bool = False):
    """A tmpfs of `size` mounted at `path` (needs root); skips the test where mounting is refused.
    tests/reliability/test_bad_inputs.py covers the same faults by simulating the failing write."""
    path.mkdir()
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def train_and_fail(cmd: list[str], cwd: Path) -> list[str]:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0, proc.stderr[-3000:]
    return proc.stderr.strip().splitlines()


def test_full_disk_removes_the_partial_file_and_says_so(data, tmp_path):
    """150 MB: checkpoint_1_1.pt (~100 MB) fits, its copy to checkpoint_last.pt does not."""
    with small_tmpfs(tmp_path / "disk", "150m") as save_dir:
        lines = train_and_fail(train_cmd("caption", data, save_dir, *SAVE_EVERY_UPDATE, max_update=2), tmp_path)
        assert lines[-1].startswith("ofa_cn.train.training_checkpoints.CheckpointWriteError: [Errno 28] no space left "
                                    f"on device while writing {save_dir / 'checkpoint_last.pt'}; the partial file "
                                    "was removed"), lines[-1]
        assert sum("Traceback" in line for line in lines) == 1  # fairseq's three retries are gone
        assert sorted(p.name for p in save_dir.iterdir()) == ["checkpoint_1_1.pt"]
        assert unreadable_reason(save_dir / "checkpoint_1_1.pt") is None


def test_read_only_save_dir_is_reported_before_training(data, tmp_path):
    with small_tmpfs(tmp_path / "ro", "1m", read_only=True) as save_dir:
        lines = train_and_fail(train_cmd("caption", data, save_dir, *SAVE_EVERY_UPDATE, max_update=2), tmp_path)
        assert lines[-1] == (f"ofa_cn.train.training_checkpoints.CheckpointWriteError: [Errno 30] cannot write checkpoints "
                             f"to --save-dir {save_dir}: Read-only file system. Choose a folder you can write to "
                             "(checkpoint.save_dir)."), lines[-1]
        assert not any("begin training" in line for line in lines)


def test_bad_row_under_fairseq_train_ends_with_its_one_line_message(data, tmp_path):
    """fairseq owns the process, so a traceback comes first; the last line names file, row and field."""
    rows = (data / "caption_train.tsv").read_text(encoding="utf-8").splitlines()
    fields = rows[2].split("\t")
    fields[1] = "@@not base64@@"
    rows[2] = "\t".join(fields)
    bad = tmp_path / "bad_train.tsv"
    bad.write_text("\n".join(rows) + "\n", encoding="utf-8")
    cmd = train_cmd("caption", data, tmp_path / "ckpt", "--disable-validation", "--num-workers", "1")
    cmd[len(fairseq_train())] = f"{bad},{data}/caption_valid.tsv"
    lines = train_and_fail(cmd, tmp_path)
    assert lines[-1].startswith(f"ofa_cn.data.errors.DataError: {bad}: row 2 (line 3), field 'image': expected "
                                "base64 of an image file"), lines[-1]
    assert lines[-1].endswith("(--skip-bad-rows for fairseq-train, task.skip_bad_rows=true in a YAML).")
