"""The CPU llmhood runs on: the instruction sets that decide which speed modes pay off.

x86-64 CPUs differ in what the fast modes need. bf16 matmuls run on AVX512-BF16 or AMX
instructions where a CPU has them; elsewhere torch emulates them, slower than float32.
torch's own kernels come in AVX2 and AVX-512 builds (`torch.backends.cpu
.get_cpu_capability()`), and the fused decode step is compiled for the machine at hand.
The automatic mode (llmhood.speed.modes) is chosen from these facts, read here at run time,
never from what some other machine had.

`LLMHOOD_CPU=avx2` makes llmhood treat the CPU as one with AVX2 and FMA only: no AVX-512,
no bf16 instructions, no AMX, and the decode step compiled for x86-64-v3. With
`ATEN_CPU_CAPABILITY=avx2` (torch's kernels) and `ONEDNN_MAX_CPU_ISA=AVX2` (oneDNN's), an
AVX-512 machine then runs as an AVX2 one would: `make test-avx2`.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

from llmhood.errors import LLMHoodError

ENV = "LLMHOOD_CPU"
LIMITS = ("native", "avx2")  # LLMHOOD_CPU's values: the CPU as it is, or as an AVX2 one
# The flags the speed modes care about, as Linux names them in /proc/cpuinfo.
FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


@dataclass(frozen=True)
class CPU:
    name: str
    flags: tuple[str, ...]  # those of FLAGS this CPU has, less any LLMHOOD_CPU hides
    kernels: str  # the instruction set of torch's CPU kernels: "AVX512", "AVX2", ...
    bf16: bool  # bf16 instructions that torch's matmuls use
    limit: str  # LLMHOOD_CPU: "native", or "avx2" when llmhood acts as on an AVX2 CPU

    def describe(self) -> str:
        """One line for `llmhood info` and `llmhood bench`."""
        flags = " ".join(self.flags) or "none of " + " ".join(FLAGS)
        bf16 = "bf16 matmuls native" if self.bf16 else "bf16 matmuls emulated (slow)"
        limit = f"; {ENV}={self.limit}" if self.limit != "native" else ""
        if self.limit == "avx2" and self.kernels not in ("AVX2", "DEFAULT"):
            limit += " (set ATEN_CPU_CAPABILITY=avx2 too, for torch's kernels)"
        return f"{self.name}: {flags}; torch kernels {self.kernels}; {bf16}{limit}"

    def as_dict(self) -> dict:
        return {"name": self.name, "flags": list(self.flags), "kernels": self.kernels,
                "bf16": self.bf16, "limit": self.limit}  # fmt: skip


def limit() -> str:
    """LLMHOOD_CPU's value, checked: a typo must not silently measure the wrong machine."""
    value = os.environ.get(ENV, "").strip().lower() or "native"
    if value not in LIMITS:
        raise LLMHoodError(
            f"{ENV}={os.environ[ENV]!r} is not understood. Use {ENV}=avx2 to run as a CPU "
            f"without AVX-512 and bf16 instructions would, or unset it ({', '.join(LIMITS)})."
        )
    return value


@cache
def cpuinfo() -> tuple[str, frozenset[str]]:
    """The model name and every feature flag Linux reports (none elsewhere, where the name
    is what platform says). Unfiltered: a C++ kernel built with -march=native depends on
    all of them."""
    name, flags = platform.processor() or platform.machine(), frozenset()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return name, flags
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            name = value.strip()
        if key.strip() in ("flags", "Features") and not flags:
            flags = frozenset(value.split())
    return name, flags


@cache
def _detect(limit: str) -> CPU:
    name, flags = cpuinfo()
    kernels = torch.backends.cpu.get_cpu_capability()
    bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if not flags:  # no /proc/cpuinfo: what torch's kernel choice implies
        flags = {"avx2", "fma"} if kernels.startswith("AVX") else set()
        flags |= {"avx512f"} if kernels.startswith("AVX512") else set()
    if limit == "avx2":
        flags = {f for f in flags if not f.startswith(("avx512", "amx"))}
        bf16 = False
    return CPU(name, tuple(f for f in FLAGS if f in flags), kernels, bf16, limit)


def cpu() -> CPU:
    return _detect(limit())


def bf16_supported() -> bool:
    """Whether bf16 matmuls run on bf16 instructions here (AVX512-BF16 or AMX); without them
    torch emulates bf16, slower than float32."""
    return cpu().bf16
