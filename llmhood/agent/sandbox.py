"""The `python` tool: a model's code run in a separate, limited, disposable process.

    with Sandbox() as box:
        box.run("print(6 * 7)")          # RunResult(stdout="42\\n", exit_code=0, limit=None)
        Tool.from_function(box.python)   # the tool: its text result is what the model reads

What holds, and is the actual boundary (the kernel enforces it whatever the code does):
* a separate interpreter (`sys.executable -I`: no user site, no PYTHON* variables), in its own
  session and process group, which is killed whole (SIGKILL) when it overruns, and once more
  when it exits, for anything it left running;
* an environment built from an allow-list (PATH, the locale, HOME and TMPDIR pointing at the
  working directory): no inherited API keys or tokens;
* resource limits set in the child before the code runs: RLIMIT_CPU (the kernel sends SIGXCPU),
  RLIMIT_AS (allocation fails with MemoryError), RLIMIT_FSIZE (writes fail with EFBIG),
  RLIMIT_NPROC, RLIMIT_CORE = 0; the hard limits are set too (CPU's a second above the soft
  one, a SIGKILL for code that ignores SIGXCPU), so the code cannot raise them (except as
  root, which the audit hook below also refuses);
* a wall-clock deadline, and stdout/stderr read incrementally with a total cap: past it the
  process group is killed, so printing a gigabyte costs the parent only the cap;
* a fresh temporary directory as the working directory, deleted afterwards.

Defense in depth, not a security boundary: an audit hook (PEP 578, `sys.addaudithook`) in the
child refuses opening files outside the working directory and the Python installation's
import paths (and writing anywhere but the working directory), listing other directories,
starting processes (fork, exec, spawn, system, subprocess), loading libraries, looking up
symbols, calling functions or reading memory through ctypes (numpy still imports it), signals,
sockets, and changing resource limits. PEP 578 itself says audit hooks are not a
sandbox: C extensions act without raising events, so code that gets native access around the
hook also gets whatever the process's user may do. Two more honest limits: RLIMIT_NPROC
counts all processes and threads of the user, and the kernel does not apply it to root; so
as root a fork bomb is stopped by the hook and the group kill, not by the kernel. For code
from someone hostile, run this inside a container or VM (gVisor, Firecracker, bubblewrap)
under a user that owns nothing.

The limits are set by a small launcher in the child rather than in `preexec_fn`, which the
subprocess docs call unsafe in a process with threads (the agent runs tools in threads).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from llmhood.errors import LLMHoodError

ENVIRONMENT = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")  # copied when set; nothing else
SINGLE_THREADED = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
CODE_FILE = "main.py"
REFUSED = "[sandbox]"  # starts every message of the audit hook, so its refusals are recognised
CHUNK = 1 << 16

# The launcher: limits, then the hook, then the code. It imports what it needs first, since
# after the hook only the import paths are readable.
LAUNCHER = r"""
import json, os, resource, sys, traceback
limits = json.loads(sys.argv[1])
for name, value in limits["rlimits"].items():
    soft = value
    hard = value + 1 if name == "RLIMIT_CPU" else value
    resource.setrlimit(getattr(resource, name), (soft, hard))
sys.dont_write_bytecode = True
work = os.path.realpath(os.getcwd())
readable = [work] + [os.path.realpath(p) for p in sys.path if os.path.isdir(p)]
source = open("main.py", encoding="utf-8").read()
MARK = limits["mark"]
PROCESSES = {"os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty",
             "subprocess.Popen", "ctypes.dlsym", "ctypes.call_function", "ctypes.cdata",
             "ctypes.string_at", "ctypes.wstring_at", "os.kill",
             "os.killpg", "signal.pthread_kill", "socket.connect", "socket.bind",
             "socket.sendto", "socket.getaddrinfo", "resource.setrlimit", "resource.prlimit"}
MODULES = {"_posixsubprocess", "subprocess"}
WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
WRITING = {"os.remove", "os.rename", "os.replace", "os.rmdir", "os.mkdir", "os.chmod",
           "os.chown", "os.symlink", "os.link", "os.truncate", "os.utime"}

def inside(path, roots):
    if isinstance(path, int):
        return True
    real = os.path.realpath(os.fsdecode(os.fspath(path)))
    return any(real == r or real.startswith(r.rstrip("/") + "/") for r in roots)

def hook(event, args):
    if event in PROCESSES or event == "ctypes.dlopen" and args[0] is not None:
        raise PermissionError(f"{MARK} {event} is not allowed in the python tool")
    if event == "import" and args[0].split(".")[0] in MODULES:
        raise PermissionError(f"{MARK} the module {args[0]} is not available in the python tool")
    if event == "open":
        path, mode, flags = args
        writing = any(c in (mode or "") for c in "wax+") or bool((flags or 0) & WRITES)
        if path is not None and not inside(path, [work] if writing else readable):
            raise PermissionError(f"{MARK} the python tool may only "
                                  f"{'write' if writing else 'read'} files in its working "
                                  f"directory, not {path!r}")
    if event in ("os.listdir", "os.scandir") and not inside(args[0] or ".", readable):
        raise PermissionError(f"{MARK} the python tool may only list its working directory")
    if event in WRITING and not all(inside(a, [work]) for a in args[:2]
                                    if isinstance(a, (str, bytes, os.PathLike))):
        raise PermissionError(f"{MARK} {event} is only allowed in the working directory")

sys.addaudithook(hook)
sys.argv = ["main.py"]
try:
    exec(compile(source, "main.py", "exec"), {"__name__": "__main__"})
except SystemExit:
    raise
except BaseException as error:
    traceback.print_exception(type(error), error, error.__traceback__.tb_next)
    sys.exit(1)
"""


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int = 10
    memory_bytes: int = 1 << 30  # address space: Python and numpy start well inside 1 GiB
    file_bytes: int = 16 << 20  # the largest file the code may write
    processes: int = 64  # RLIMIT_NPROC, see the module docstring
    wall_seconds: float = 20.0
    output_bytes: int = 64 << 10  # stdout and stderr together: more than a model can read


@dataclass(frozen=True)
class RunResult:
    """`exit_code` is negative for a signal (-9: killed); `limit` says which limit stopped the
    code: "cpu", "memory", "file_size", "wall", "output", or "refused" (the audit hook), or
    None. "memory" and "file_size" are read from the error the code died of."""

    stdout: str
    stderr: str
    exit_code: int
    limit: str | None
    seconds: float

    def text(self) -> str:
        """The result as the model reads it."""
        parts = [f"exit status {self.exit_code}"]
        if self.limit:
            parts.append(f"stopped by the sandbox: {LIMIT_TEXT[self.limit]}")
        if self.stdout:
            parts.append(f"stdout:\n{self.stdout.rstrip()}")
        if self.stderr:
            parts.append(f"stderr:\n{self.stderr.rstrip()}")
        return "\n".join(parts)


LIMIT_TEXT = {
    "cpu": "CPU time limit reached",
    "memory": "memory limit reached",
    "file_size": "file size limit reached",
    "wall": "time limit reached, the process was killed",
    "output": "output limit reached, the process was killed",
    "refused": "an operation the python tool does not allow",
}


class Sandbox:
    """One working directory, kept across calls (so a file one call writes the next can read),
    deleted by close()."""

    def __init__(self, limits: Limits | None = None):
        self.limits = limits or Limits()
        self.workdir = Path(tempfile.mkdtemp(prefix="llmhood-python-"))

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def python(self, code: str) -> str:
        """Run Python code in a sandbox and return its exit status, stdout and stderr.

        Args:
            code: A complete Python program. Print what you want to see. Files can be
                written and read in the current directory only; no network, no subprocesses.
        """
        return self.run(code).text()

    def run(self, code: str) -> RunResult:
        if not isinstance(code, str):
            raise LLMHoodError(f"The code must be a string, not {type(code).__name__}.")
        if not self.workdir.is_dir():
            raise LLMHoodError("This sandbox was closed; make a new Sandbox().")
        (self.workdir / CODE_FILE).write_text(code, encoding="utf-8")
        limits = self.limits
        settings = {"mark": REFUSED, "rlimits": {
            "RLIMIT_CPU": limits.cpu_seconds, "RLIMIT_AS": limits.memory_bytes,
            "RLIMIT_FSIZE": limits.file_bytes, "RLIMIT_NPROC": limits.processes,
            "RLIMIT_CORE": 0}}  # fmt: skip
        command = [sys.executable, "-I", "-X", "utf8", "-c", LAUNCHER, json.dumps(settings)]
        start = time.monotonic()
        process = subprocess.Popen(
            command, cwd=self.workdir, env=environment(self.workdir), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        streams, stopped = read_capped(process, start + limits.wall_seconds, limits.output_bytes)
        exit_code = process.wait()
        kill_group(process.pid)  # anything the code left running in its group
        stdout, stderr = (streams[k].decode("utf-8", "replace") for k in ("stdout", "stderr"))
        limit = stopped or limit_from(exit_code, stderr)
        return RunResult(stdout, stderr, exit_code, limit, time.monotonic() - start)


def run_python(code: str, limits: Limits | None = None) -> RunResult:
    """Run `code` once in a fresh sandbox."""
    with Sandbox(limits) as box:
        return box.run(code)


def environment(workdir: Path) -> dict[str, str]:
    kept = {name: os.environ[name] for name in ENVIRONMENT if name in os.environ}
    return {**kept, **SINGLE_THREADED, "HOME": str(workdir), "TMPDIR": str(workdir)}


def read_capped(
    process: subprocess.Popen, deadline: float, cap: int
) -> tuple[dict[str, bytes], str | None]:
    """Both pipes read as they fill, until they close; the group is killed at the deadline or
    past `cap` bytes in all, returning what was read (at most `cap`) and why it stopped."""
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ, "stdout")
    selector.register(process.stderr, selectors.EVENT_READ, "stderr")
    buffers = {"stdout": bytearray(), "stderr": bytearray()}
    stopped = None
    while selector.get_map() and stopped is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            stopped = "wall"
            break
        for key, _ in selector.select(remaining):
            data = os.read(key.fd, CHUNK)
            if not data:
                selector.unregister(key.fileobj)
                continue
            room = cap - len(buffers["stdout"]) - len(buffers["stderr"])
            buffers[key.data] += data[:room]
            if len(data) > room:
                stopped = "output"
    selector.close()
    if stopped is None:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            stopped = "wall"
    if stopped is not None:
        kill_group(process.pid)
    process.stdout.close()
    process.stderr.close()
    return {k: bytes(v) for k, v in buffers.items()}, stopped


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def limit_from(exit_code: int, stderr: str) -> str | None:
    """The limit a process died of, where it did not die of ours."""
    if exit_code in (-signal.SIGXCPU, -signal.SIGKILL):
        return "cpu"  # the soft limit's SIGXCPU, or the hard limit's SIGKILL a second later
    last = stderr.rstrip().rsplit("\n", 1)[-1]
    if last.startswith("MemoryError"):
        return "memory"
    if "File too large" in last:
        return "file_size"
    if REFUSED in last:
        return "refused"
    return None
