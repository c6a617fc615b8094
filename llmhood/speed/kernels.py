"""llmhood's C++ kernels: compiled on first use against the installed torch, cached, loaded.

A kernel is one .cpp file that registers torch operators (`TORCH_LIBRARY`). It is compiled
with the machine's C++ compiler, with no build system between (no ninja, no
`torch.utils.cpp_extension`): one command, about 5-10 s, printed once. The library is kept
in llmhood's cache directory (llmhood.speed.cache), under a name that hashes the source,
torch's version, the compiler, the flags and the CPU, and loaded with
`torch.ops.load_library`. A changed source, torch, compiler or CPU gets a library of its own.

Code is compiled for the CPU at hand (`-march=native`), or for x86-64-v3 (AVX2, FMA)
when LLMHOOD_CPU=avx2 asks to run as such a CPU would (llmhood.speed.cpu).

No compiler, a failed build or an unwritable cache are reasons, never crashes: `load`
returns the sentence that says why, and its callers keep the plain Python path.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from llmhood.speed import cpu
from llmhood.speed.cache import cache_dir

BASE_FLAGS = ["-O3", "-fopenmp-simd", "-fno-math-errno", "-std=c++17", "-shared", "-fPIC"]


def flags() -> list[str]:
    """The compiler flags, the target CPU among them."""
    march = "-march=x86-64-v3" if cpu.limit() == "avx2" else "-march=native"
    return [*BASE_FLAGS, march]


def _torch_dir() -> Path:
    return Path(torch.__file__).parent


def _command(compiler: str, source: Path, output: Path) -> list[str]:
    include, lib = _torch_dir() / "include", _torch_dir() / "lib"
    abi = int(torch.compiled_with_cxx11_abi())
    return [
        compiler,
        *flags(),
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        f"-isystem{include}",
        f"-isystem{include / 'torch' / 'csrc' / 'api' / 'include'}",
        str(source),
        "-o",
        str(output),
        f"-L{lib}",
        "-lc10",
        "-ltorch_cpu",
        f"-Wl,-rpath,{lib}",
    ]


def library_path(source: Path, compiler: str) -> Path:
    """Where the library built from `source` for this torch, compiler and CPU is cached."""
    key = hashlib.sha256()
    name, cpu_flags = cpu.cpuinfo()
    parts = (source.read_bytes(), torch.__version__, compiler, " ".join(flags()), name,
             " ".join(sorted(cpu_flags)))  # fmt: skip
    for part in parts:
        key.update(part if isinstance(part, bytes) else part.encode())
    return cache_dir() / "kernels" / f"{source.stem}-{key.hexdigest()[:20]}.so"


def _compile(source: Path, compiler: str, target: Path) -> str | None:
    """Build the library at `target`; None on success, else what went wrong."""
    print(f"llmhood: compiling {source.name}, once (~10 s) -> {target}", file=sys.stderr)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            built = Path(tmp) / target.name
            done = subprocess.run(
                _command(compiler, source, built), capture_output=True, text=True, timeout=600
            )
            if done.returncode != 0:
                return f"{compiler} failed: {done.stderr.strip()[-2000:]}"
            os.replace(built, target)  # atomic: a concurrent load sees all of it or nothing
    except subprocess.TimeoutExpired:
        return f"{compiler} took more than 10 minutes"
    except OSError as e:  # no such program, or a cache directory that cannot be written
        return f"it could not be built in {target.parent}: {e}"
    return None


def load(source: Path) -> str | None:
    """Compile `source` unless its library is cached, and load it into torch.ops; None on
    success, else why not."""
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    if compiler is None:
        return "no C++ compiler was found (install g++ or clang, or set CXX)"
    target = library_path(source, compiler)
    if not target.exists():
        problem = _compile(source, compiler, target)
        if problem is not None:
            return problem
    try:
        torch.ops.load_library(str(target))
    except (OSError, RuntimeError) as e:
        return f"the compiled library {target} does not load: {e}"
    return None
