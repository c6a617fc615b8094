"""The trainer's malloc setting (llmhood/train/allocator.py), by its effect: after it, a block
above the threshold goes back to the system when freed, even after a larger block was freed
first, which by glibc's default would have raised the threshold past it and kept it in the
heap."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest
import torch

from llmhood.train.allocator import MMAP_THRESHOLD, fix_mmap_threshold

glibc = platform.libc_ver()[0] == "glibc"


def rss_mb() -> float:
    text = Path("/proc/self/status").read_text()
    return int(text.split("VmRSS:")[1].split()[0]) / 1024


@pytest.mark.skipif(not glibc, reason="the setting is glibc's; elsewhere it does nothing")
def test_freed_activations_leave_the_process():
    """Without the setting the last check fails: the 16 MB stay resident (checked by hand,
    2026-12-02, glibc 2.36), because freeing the 24 MB block raised the threshold to 24 MB."""
    assert fix_mmap_threshold()
    large = torch.ones(24 << 20, dtype=torch.uint8)  # mmapped: above any threshold so far
    del large  # by default glibc's threshold now rises to 24 MB
    size = 2 * MMAP_THRESHOLD
    before = rss_mb()
    block = torch.ones(size, dtype=torch.uint8)  # touched: resident
    pins = [torch.ones(100_000, dtype=torch.uint8) for _ in range(20)]  # heap blocks after it
    assert rss_mb() - before >= 0.9 * size / 2**20
    del block
    assert rss_mb() - before <= 0.25 * size / 2**20  # unmapped, not a hole in the heap
    del pins


def test_it_is_harmless_to_ask_twice():
    assert fix_mmap_threshold() == fix_mmap_threshold()
