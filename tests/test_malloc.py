"""keep_freed_memory: a freed large block is reused without page faults, and the tasks switch it on."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

import ofa_cn.tasks  # noqa: F401  (registers the tasks)
from ofa_cn.tasks import base
from ofa_cn.tasks.caption import CaptionConfig, CaptionTask

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# A fresh process allocates, touches and frees a 64 MiB buffer 8 times and prints the minor page
# faults per round after the first (a 64 MiB block is 16,384 pages of 4 KiB).
FAULTS_PER_ROUND = textwrap.dedent("""
    import ctypes, resource, sys
    from ofa_cn.train.malloc import keep_freed_memory
    if sys.argv[1] == "keep":
        assert keep_freed_memory()
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    size = 64 << 20
    def round_trip():
        p = libc.malloc(size)
        ctypes.memset(p, 1, size)
        libc.free(p)
    round_trip()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(8):
        round_trip()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 8)
""")


def faults_per_round(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", FAULTS_PER_ROUND, mode], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt only")
def test_freed_block_is_reused_without_page_faults():
    assert faults_per_round("default") > 10_000  # glibc: munmap on free, every page faults in again
    assert faults_per_round("keep") < 100


def test_tasks_keep_freed_memory_unless_asked_to_return_it(monkeypatch):
    calls = []
    monkeypatch.setattr(base, "keep_freed_memory", lambda: calls.append(1))
    CaptionTask.setup_task(CaptionConfig())
    assert calls == [1]
    CaptionTask.setup_task(CaptionConfig(return_freed_memory=True))
    assert calls == [1]
