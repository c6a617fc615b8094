"""The python tool's limits hold against the issue's list, each in a second or two: reading
outside its directory, a fork bomb, 10 GB of memory, 1 GB of output, an infinite loop, a
sleep past the deadline, inherited secrets; and ordinary code still works."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from llmhood.agent.sandbox import Limits, Sandbox, run_python
from llmhood.agent.tools import Tool
from llmhood.errors import LLMHoodError

# Small limits keep every test short; each is far above what its legitimate code needs.
LIMITS = Limits(cpu_seconds=1, memory_bytes=512 << 20, file_bytes=1 << 20, wall_seconds=3,
                output_bytes=64 << 10)  # fmt: skip


def run(code: str):
    start = time.monotonic()
    result = run_python(code, LIMITS)
    assert time.monotonic() - start < LIMITS.wall_seconds + 2  # the parent is never held up
    return result


def test_normal_code_works_and_files_persist_within_a_sandbox():
    result = run("import json, math\nprint(json.dumps({'root': math.sqrt(16)}))")
    assert (result.stdout, result.stderr, result.exit_code, result.limit) == (
        '{"root": 4.0}\n', "", 0, None)  # fmt: skip
    with Sandbox(LIMITS) as box:
        assert box.run("open('data.txt', 'w').write('kept')").exit_code == 0
        assert box.run("print(open('data.txt').read())").stdout == "kept\n"
        workdir = box.workdir
    assert not workdir.exists()  # deleted on close


def test_errors_come_back_as_a_traceback_of_the_code():
    result = run("def f():\n    raise ValueError('boom')\nf()")
    assert result.exit_code == 1 and result.limit is None
    assert 'File "main.py", line 2, in f' in result.stderr
    assert result.stderr.rstrip().endswith("ValueError: boom")


@pytest.mark.parametrize(
    "code",
    [
        "print(open('{secret}').read())",
        "print(open('../' * 20 + '{secret}'[1:]).read())",
        "import os; os.symlink('{secret}', 'link'); print(open('link').read())",
        "import os; os.chdir('/'); print(open('{secret}'[1:]).read())",
        "import os; print(os.open('{secret}', os.O_RDONLY))",
        "import os; print(os.listdir('{folder}'))",
        "import pathlib; print(pathlib.Path('{secret}').read_text())",
        "open('{folder}/written.txt', 'w').write('x')",
    ],
)
def test_reading_or_writing_outside_its_directory_is_refused(code, tmp_path: Path):
    secret = tmp_path / "secret.txt"
    secret.write_text("the secret", encoding="utf-8")
    result = run(code.format(secret=secret, folder=tmp_path))
    assert result.limit == "refused", result
    assert "the secret" not in result.stdout and "secret.txt" not in result.stdout
    assert not (tmp_path / "written.txt").exists()


@pytest.mark.parametrize(
    "code",
    [
        "import os\nwhile True:\n    os.fork()",
        "import subprocess\nsubprocess.run(['sh', '-c', ':(){ :|:& };:'])",
        "import os\nos.system('echo escaped')",
        "import multiprocessing\nmultiprocessing.Process(target=print).start()",
        "import ctypes\nctypes.CDLL(None).fork()",
        "import os\nos.kill(os.getppid(), 9)",
        "import resource\nresource.setrlimit(resource.RLIMIT_CPU, (100, 100))",
    ],
)
def test_fork_bombs_and_escapes_are_refused(code):
    result = run(code)
    assert result.limit == "refused" and result.exit_code == 1, result
    assert "escaped" not in result.stdout


def test_allocating_10_gb_fails_inside_the_child():
    result = run("block = bytearray(10 * 1024**3)\nprint('allocated')")
    assert result.limit == "memory" and "allocated" not in result.stdout
    assert result.stderr.rstrip().endswith("MemoryError")


def test_printing_1_gb_is_cut_at_the_cap_and_killed():
    result = run("import sys\nfor _ in range(16384):\n    sys.stdout.write('x' * 65536)")
    assert result.limit == "output" and result.exit_code < 0  # killed by a signal
    assert len(result.stdout) + len(result.stderr) <= LIMITS.output_bytes
    assert set(result.stdout) == {"x"}


def test_infinite_loop_hits_the_cpu_limit_and_sleep_the_wall_clock():
    loop = run("while True:\n    pass")
    assert loop.limit == "cpu" and loop.exit_code < 0
    start = time.monotonic()
    sleep = run("import time\ntime.sleep(60)")
    assert sleep.limit == "wall" and sleep.exit_code < 0
    # killed at the deadline: not before it, and within a second of it (process start-up)
    assert LIMITS.wall_seconds <= time.monotonic() - start < LIMITS.wall_seconds + 1


def test_large_files_hit_the_file_size_limit():
    result = run("open('big', 'wb').write(b'x' * (2 << 20))")
    assert result.limit == "file_size" and "File too large" in result.stderr


def test_inherited_secrets_are_not_visible(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LLMHOOD_FAKE_API_KEY", "sk-not-a-real-key")
    result = run("import json, os\nprint(json.dumps(dict(os.environ)))")
    assert result.exit_code == 0 and "sk-not-a-real-key" not in result.stdout
    names = set(json.loads(result.stdout))
    allowed = {"PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "HOME", "TMPDIR", "OMP_NUM_THREADS",
               "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"}  # fmt: skip
    assert names <= allowed, names - allowed
    assert os.environ["LLMHOOD_FAKE_API_KEY"] == "sk-not-a-real-key"


def test_the_python_tool_reports_to_the_model():
    with Sandbox(LIMITS) as box:
        tool = Tool.from_function(box.python)
        assert tool.name == "python" and tool.parameters["required"] == ["code"]
        answer = tool.run({"code": "print(6 * 7)"})
        assert answer.ok and answer.content == "exit status 0\nstdout:\n42"
        loop = tool.run({"code": "while True: pass"})
        assert loop.ok and "CPU time limit reached" in loop.content
    with pytest.raises(LLMHoodError, match="closed"):
        box.run("print(1)")
