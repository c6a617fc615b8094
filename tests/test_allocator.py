"""The trainer's malloc setting (llmhood/train/allocator.py), by its effect, in fresh
processes so that no earlier test's heap is in the way: after the setting, a block above the
threshold goes back to the system when freed, even after a larger block was freed first; by
glibc's default that larger free raises the threshold past the block, which then comes from
the heap and stays resident when freed."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from llmhood.train.allocator import MMAP_THRESHOLD, fix_mmap_threshold

glibc = platform.libc_ver()[0] == "glibc"

PROBE = """
import sys
from pathlib import Path
import torch
from llmhood.train.allocator import MMAP_THRESHOLD, fix_mmap_threshold

def rss_mb():
    return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024

if sys.argv[1] == "fixed":
    assert fix_mmap_threshold()
large = torch.ones(3 * MMAP_THRESHOLD, dtype=torch.uint8)  # mmapped under any threshold
del large  # by glibc's default, the threshold now rises to its size
before = rss_mb()
block = torch.ones(2 * MMAP_THRESHOLD, dtype=torch.uint8)  # touched: resident
pins = [torch.ones(100_000, dtype=torch.uint8) for _ in range(20)]  # heap blocks after it
grown = rss_mb() - before
del block
print(grown, rss_mb() - before)  # MB after allocating, after freeing
"""


def probe(mode: str) -> tuple[float, float]:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                          timeout=120, check=True)  # fmt: skip
    grown, kept = map(float, done.stdout.split())
    return grown, kept


@pytest.mark.skipif(not glibc, reason="the setting is glibc's; elsewhere it does nothing")
def test_freed_activations_leave_the_process():
    block_mb = 2 * MMAP_THRESHOLD / 2**20
    grown, kept = probe("fixed")
    assert grown >= 0.9 * block_mb and kept <= 0.25 * block_mb  # unmapped when freed
    grown, kept = probe("default")  # the control: what the setting changes
    assert grown >= 0.9 * block_mb and kept >= 0.9 * block_mb  # a resident hole in the heap


def test_it_is_harmless_to_ask_twice():
    assert fix_mmap_threshold() == fix_mmap_threshold()
