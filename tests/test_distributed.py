"""Many processes, one run: 2 CPU processes (gloo) give the same losses, gradient norms and
final weights as one process with the same global batch, under DDP and under FSDP2; a
sharded run's checkpoint resumes to the same end; only rank 0 reads and writes the run's
files; and the pieces that keep ranks in step (padded micro-batches, agreement checks)
do what they say.

The runs are the tiny model of tests/tiny_run.py on SmolLM2's tokenizer, 24 unpacked rows
(one held out) of one sequence per micro-batch. One process accumulates 4 micro-batches a
step; two accumulate 2 each: the same 4 rows a step, in the same order (batches.py). 23
micro-batches make 5 full steps and a short sixth of 3, which two processes split 2 + 1:
the uneven case, where the rank with more backward passes used to reduce gradients while
the other summed a loss (gloo aborted: "collective mismatch"). Step 7 starts epoch 2.
Dropout is off: each process draws its own masks.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_run import smollm2_tokenizer, write_rows, write_tiny_base

from llmhood.errors import LLMHoodError
from llmhood.train import distributed
from llmhood.train.config import TrainConfig
from llmhood.train.distributed import World
from llmhood.train.trainer import train

STEPS = 7
OPTIONS = {
    "batch_size": 1,
    "lr": 1e-2,
    "dtype": "float32",
    "seq_len": 128,
    "max_steps": STEPS,
    "save_every": 4,
    "eval_split": 1.0,
    "pack": False,
    "dropout": 0.0,
}
# float32 tolerances. The processes add the same per-token gradients in another order
# (each rank its own micro-batches, then the all-reduce), so their sums differ in the last
# bits (float32 rounds to 6e-8 relative). Measured here: losses 1e-7 apart (of 12),
# held-out losses 0 to 9e-7, gradient norms 6e-8 to 6e-7 relative. Weights differ more,
# 5e-7 (2.4e-6 with the one process on 2 threads, another summation order): AdamW
# moves a weight by up to lr a step whatever its gradient's size, and where a gradient
# nearly cancels, rounding turns a part of that step. So weights are held to a thousandth
# of the most lr × steps could move them (7e-5), losses to 1e-5 (10 ulps of 12), norms to
# 1e-5 relative: 12 to 30 times what was measured. A real mistake is far larger: a
# micro-batch lost or counted twice moves a step's loss by percents, and a gradient off by
# a constant factor (a missing world-size scale) shows in its norm, though AdamW's update
# would hide it (it divides the factor out).
LOSS_ATOL, NORM_RTOL = 1e-5, 1e-5
WEIGHT_ATOL = OPTIONS["lr"] * STEPS / 1000
TIMEOUT = 150  # seconds per launch; a rank left waiting in a collective fails, never hangs


@pytest.fixture(scope="module")
def files(tmp_path_factory, smollm2_gguf) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("distributed")
    tokenizer = smollm2_tokenizer(smollm2_gguf)
    return {
        "base": write_tiny_base(folder / "base", tokenizer),
        "data": write_rows(folder / "rows.jsonl"),
        "dir": folder,
    }


def flags(files, out: Path, **changes) -> list[str]:
    """The command line of OPTIONS and `changes`, as `llmhood train` takes it."""
    given = {**OPTIONS, "model": files["base"], "data": files["data"], "out": out, **changes}
    argv = []
    for name, value in given.items():
        option = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(option if value else "--no-" + name.replace("_", "-"))
        else:
            argv += [option, str(value)]
    return argv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(**extra: str) -> dict[str, str]:
    launcher = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in launcher}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def finish(process: subprocess.Popen) -> tuple[int, str]:
    """(exit status, stderr) of a launch, its whole process group killed if it runs too long."""
    try:
        _, err = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, err = process.communicate()
        pytest.fail(f"a launch ran past {TIMEOUT} s (a rank waiting forever?):\n{err[-3000:]}")
    return process.returncode, err


def launch(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    """Started in `cwd`, not the checkout: `-m llmhood` then imports the installed package."""
    return subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def torchrun(files, out: Path, *extra: str, grad_accum: int = 2) -> str:
    """A 2-process run through torch.distributed.run; its stderr."""
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(free_port()),
        "-m",
        "llmhood",
        "train",
        *flags(files, out, grad_accum=grad_accum),
        *extra,
    ]
    status, err = finish(launch(argv, environment(), files["dir"]))
    assert status == 0, first_failure(err)
    return err


def first_failure(err: str) -> str:
    """Rank 0's traceback where there is one (the other rank's is its echo), else the end."""
    lines = [line for line in err.splitlines() if line.startswith("[rank0]")]
    return "\n".join(lines[-60:]) or err[-4000:]


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").open()]


def adapter(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "adapter" / "adapter.safetensors")


@pytest.fixture(scope="module")
def one(files) -> Path:
    """The reference: one process, 4 micro-batches a step."""
    out = files["dir"] / "one"
    config = TrainConfig(
        model=str(files["base"]), data=str(files["data"]), out=str(out), grad_accum=4, **OPTIONS
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the two processes runs; 2 threads on 2 busy
    try:  # cores take several times as long
        train(config, progress=False)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def fsdp_run(files) -> tuple[Path, str]:
    out = files["dir"] / "fsdp"
    return out, torchrun(files, out, "--fsdp")


def assert_same_run(one: Path, other: Path) -> dict[str, float]:
    a, b = history(one), history(other)
    assert [h["step"] for h in b] == list(range(1, STEPS + 1))
    assert [h["tokens"] for h in a] == [h["tokens"] for h in b]  # the same global batches
    diffs = {"loss": max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b, strict=True))}
    diffs["eval_loss"] = max(
        abs(x["eval_loss"] - y["eval_loss"]) for x, y in zip(a, b, strict=True) if "eval_loss" in x
    )
    assert [("eval_loss" in h) for h in a] == [("eval_loss" in h) for h in b]
    diffs["grad_norm"] = max(
        abs(y["grad_norm"] / x["grad_norm"] - 1) for x, y in zip(a, b, strict=True)
    )
    assert diffs["grad_norm"] <= NORM_RTOL, diffs
    assert diffs["loss"] <= LOSS_ATOL and diffs["eval_loss"] <= LOSS_ATOL, diffs
    wa, wb = adapter(one), adapter(other)
    assert wa.keys() == wb.keys()
    diffs["weights"] = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert diffs["weights"] <= WEIGHT_ATOL, diffs
    moved = max(float(wa[k].abs().max()) for k in wa if k.endswith("lora_B"))
    assert moved > 100 * WEIGHT_ATOL  # B starts at zero: the runs really trained
    return diffs


def test_two_ddp_processes_train_as_one(files, one):
    out = files["dir"] / "ddp"
    err = torchrun(files, out)
    print("DDP vs one process, max abs diff:", assert_same_run(one, out))
    # Rank 1 prints nothing: one data report, one progress bar's end, one "saved".
    assert err.count("24 rows: 24 kept") == 1 and err.count("llmhood: saved") == 1


def test_two_fsdp_processes_train_as_one(one, fsdp_run):
    out, err = fsdp_run
    print("FSDP vs one process, max abs diff:", assert_same_run(one, out))
    assert err.count("llmhood: saved") == 1


def test_a_sharded_run_resumes_on_a_node_without_the_run_directory(files, fsdp_run):
    """Resumed from its step-4 checkpoint (whole tensors gathered from FSDP2's shards,
    cut again on loading), the run ends bit for bit where the uninterrupted one did. The
    ranks are started by hand, as on two machines: rank 1's --out and --resume name
    directories that do not exist, since only rank 0 reads and writes the run's files."""
    whole, _ = fsdp_run
    resumed, elsewhere = files["dir"] / "resumed", files["dir"] / "node-1"
    ckpt = whole / "checkpoints" / "step-000004"
    port = str(free_port())
    ranks = []
    for rank, (out, source) in enumerate([(resumed, ckpt), (elsewhere / "out", elsewhere)]):
        env = environment(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE="2",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
        )
        argv = [
            sys.executable,
            "-m",
            "llmhood",
            "train",
            *flags(files, out, grad_accum=2, fsdp=True, resume=source),
        ]
        ranks.append(launch(argv, env, files["dir"]))
    (status0, err0), (status1, err1) = finish(ranks[0]), finish(ranks[1])
    assert status0 == 0 and status1 == 0, err0[-3000:] + err1[-3000:]
    assert "resuming" in err0 and "llmhood:" not in err1 and "step/s" not in err1
    assert not elsewhere.exists()
    a, b = adapter(whole), adapter(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert history(resumed) == history(whole)


# ---- the pieces, in one process ------------------------------------------------------------


class Recorder(torch.nn.Module):
    """A stand-in for a wrapped Objective: records each forward and the sync flag it ran with."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, bool]] = []
        self.sync = True

    def set_requires_gradient_sync(self, sync: bool) -> None:  # as FSDP2's modules have
        self.sync = sync

    def forward(self, batch: str) -> tuple[torch.Tensor, int]:
        self.calls.append((batch, self.sync))
        return torch.tensor(3.0), 5


def test_ranks_run_as_many_micro_batches_and_reduce_once():
    per_rank = [["a", "c"], ["b"]]  # a short step: rank 1 has one micro-batch fewer
    for rank, want in ((0, [(3.0, 5), (3.0, 5)]), (1, [(3.0, 5), (0.0, 0)])):
        trained = Recorder()
        got = [
            (float(loss), n)
            for loss, n in (call() for call in distributed.micro_batches(trained, per_rank, rank))
        ]
        assert got == want  # the extra one reruns a batch with weight zero
        mine = per_rank[rank]
        assert trained.calls == [(mine[0], False), (mine[-1], True)]  # sync in the last only
    alone = Recorder()
    assert [c()[1] for c in distributed.micro_batches(alone, [["a", "b"]], 0)] == [5, 5]
    assert alone.calls == [("a", True), ("b", True)]


class TwoRanks(World):
    """Rank 0 of a world whose rank 1 reports `other`."""

    def __init__(self, other: dict) -> None:
        super().__init__(0, 2, 0)
        self.other = other

    def gather(self, value):
        return [value, self.other]


def test_ranks_that_disagree_stop_with_the_difference_named():
    facts = {"data": "abc", "steps": 7}
    TwoRanks(dict(facts)).agree(facts)
    with pytest.raises(LLMHoodError, match=r"steps: rank 0 7, rank 1 6\n.*same model, data"):
        TwoRanks({"data": "abc", "steps": 6}).agree(facts)


def test_a_checkpoint_resumes_with_as_many_processes_and_each_rank_its_own_random_state():
    distributed.check_world({"world": 2}, World(1, 2, 1), "ckpt")
    distributed.check_world({}, World(), "ckpt")  # older checkpoints: one process
    with pytest.raises(LLMHoodError, match=r"written by 2 process.*this run has 1"):
        distributed.check_world({"world": 2}, World(), "ckpt")
    state = {"rng": "rank 0's", "rank_rng": ["r0", "r1"]}
    assert distributed.rank_rng(state, World(1, 2, 1)) == "r1"
    assert distributed.rank_rng({"rng": "rank 0's"}, World(1, 2, 1)) == "rank 0's"


def test_optimizer_state_round_trips_in_the_one_process_layout():
    p = torch.nn.Parameter(torch.randn(4, 3))
    optimizer = torch.optim.AdamW([p], lr=0.1)
    p.grad = torch.randn(4, 3)
    optimizer.step()
    saved = distributed.optimizer_state(optimizer)
    fresh = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(4, 3))], lr=0.1)
    distributed.load_optimizer_state(fresh, saved)
    want, got = optimizer.state_dict()["state"][0], fresh.state_dict()["state"][0]
    assert all(torch.equal(want[k], got[k]) for k in ("step", "exp_avg", "exp_avg_sq"))
