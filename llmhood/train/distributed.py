"""Many processes, one run: torchrun's environment, DDP or FSDP2, and what ranks share.

`torchrun --nproc-per-node N -m llmhood train ...` starts N copies of the same command with
RANK, WORLD_SIZE and LOCAL_RANK set; on several machines, the same on each with
`--nnodes`, `--node-rank` and a `--rdzv-endpoint` they all reach. Each process builds the
same model from the same seed, so nothing needs broadcasting at the start, and takes its
own share of every step's micro-batches (llmhood.train.batches).

Gradients are summed across processes: DistributedDataParallel averages them, and each
process's loss is already divided by the *global* step's trained tokens, so the loss is
multiplied by the world size before backward. The sum then equals the gradient of one
process running the whole global batch. Gloo carries CPU tensors, NCCL CUDA ones.
FSDP2 (`fully_shard`) shards the parameters, gradients and optimiser state instead of
copying them, for models that do not fit one process; each block is its own unit.

What the processes must agree on, and how they do:
* Every collective runs on every rank, in the same order, the same number of times. So a
  step's micro-batches are padded to the same count on every rank (`micro_batches`), and
  gathering FSDP's shards for a checkpoint runs on every rank although only rank 0 writes.
* Only rank 0 reads checkpoints (`World.from_main`) and writes the run's files: on several
  machines the others need the model and the data, not the run directory.
* The data and the step count are compared at the start (`World.agree`): a node with
  another copy of the data would otherwise train on other batches, or hang a step early.
* Checkpoints hold whole tensors in the one-process layout (`full_tensors`,
  `optimizer_state`), whatever wrote them, and each rank's random state (`rank_rng`).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from llmhood.errors import LLMHoodError

T = TypeVar("T")
# A micro-batch as llmhood.train.step.optimizer_step calls it: (summed loss, its weight).
MicroBatchCall = Callable[[], tuple[torch.Tensor, int]]


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The process that prints, plots and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def sum(self, value: float) -> float:
        """`value` summed over the processes (in float64, so token counts stay exact)."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item())

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value` (any picklable object), in rank order, on every rank."""
        if not self.distributed:
            return [value]
        values: list[Any] = [None] * self.size
        dist.all_gather_object(values, value)
        return values

    def from_main(self, compute: Callable[[], T]) -> T:
        """`compute()` run on rank 0 alone, its result (or its LLMHoodError) on every rank.

        For what lives in the run directory (a checkpoint to resume): on several machines
        it exists only where rank 0 writes, and an error raised on rank 0 alone would leave
        the others waiting in their next collective instead of stopping."""
        if not self.distributed:
            return compute()
        box: list[Any] = [None]
        if self.main:
            try:
                box[0] = (compute(), None)
            except LLMHoodError as e:
                box[0] = (None, str(e))
        dist.broadcast_object_list(box, src=0)
        result, error = box[0]
        if error is not None:
            raise LLMHoodError(error)
        return result

    def agree(self, facts: dict[str, Any]) -> None:
        """LLMHoodError on every rank unless every rank has the same `facts`.

        Each process reads the data and counts the steps itself; with another copy of
        the data on one node, ranks would train on different batches or wait forever
        in a step the others never take."""
        if not self.distributed:
            return
        every = self.gather(facts)
        names = dict.fromkeys(name for seen in every for name in seen)
        differ = [n for n in names if any(seen.get(n) != every[0].get(n) for seen in every)]
        if differ:
            lines = [
                f"{n}: " + ", ".join(f"rank {r} {seen.get(n)!r}" for r, seen in enumerate(every))
                for n in differ
            ]
            raise LLMHoodError(
                "The processes of this run disagree:\n  " + "\n  ".join(lines) + "\nEvery node "
                "must see the same model, data and options (the same files at the same paths)."
            )


def init() -> World:
    """The world torchrun describes, its process group started; one process without it.

    The group has a gloo backend for CPU tensors and, where there is a GPU, NCCL for CUDA
    ones: collectives then run wherever the tensors are (the trainer computes on the CPU;
    NCCL alone cannot reduce a CPU tensor)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_available():
        raise LLMHoodError("This PyTorch build has no torch.distributed; run in one process.")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank % torch.cuda.device_count())
            backend = "cpu:gloo,cuda:nccl"
        dist.init_process_group(backend)
    return World(dist.get_rank(), dist.get_world_size(), local_rank)


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def wrap(module: nn.Module, world: World, fsdp: bool = False) -> nn.Module:
    """`module` as the processes train it together: DDP, or FSDP2 with one unit per block.

    `module` is the trainer's Objective: its `model` (and a frozen DPO `reference`, if any)
    have `layers`. FSDP2 shards in place and returns the same module; DDP wraps it. The
    mesh and DDP's device follow the parameters' device, not the machine's: a CPU model
    on a GPU machine is still trained on the CPU."""
    if not world.distributed:
        return module
    device = _device(module)
    if fsdp:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(device.type, (world.size,))
        for part in (module.model, getattr(module, "reference", None)):
            for block in getattr(part, "layers", ()):
                fully_shard(block, mesh=mesh)
        fully_shard(module, mesh=mesh)  # the rest: embeddings (tied to the head), norm
        return module
    # Buffers are RoPE tables, equal everywhere: broadcasting them at every forward
    # would cost a collective per micro-batch for nothing (newer torch names the flag anew).
    ddp = nn.parallel.DistributedDataParallel
    quiet = "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters
    buffers = {"forward_sync_buffers": False} if quiet else {"broadcast_buffers": False}
    return ddp(module, device_ids=[device.index] if device.type == "cuda" else None, **buffers)


def _set_sync(trained: nn.Module, sync: bool) -> None:
    """Whether the next backward reduces gradients across processes (DDP, FSDP2) or only
    accumulates them here. DDP reads its flag in the forward, FSDP2 in the backward, so
    the flag is set before the forward and stays until the next micro-batch sets it."""
    if isinstance(trained, nn.parallel.DistributedDataParallel):
        trained.require_backward_grad_sync = sync
    elif hasattr(trained, "set_requires_gradient_sync"):
        trained.set_requires_gradient_sync(sync)


def _run(trained: nn.Module, batch: Any, sync: bool, count: bool) -> tuple[torch.Tensor, int]:
    _set_sync(trained, sync)
    loss, n = trained(batch)
    return (loss, n) if count else (loss * 0.0, 0)


def micro_batches(
    trained: nn.Module, per_rank: Sequence[Sequence[Any]], rank: int
) -> list[MicroBatchCall]:
    """This rank's micro-batches of a step, as optimizer_step calls them.

    Every rank gets as many calls as the rank with the most micro-batches: each forward
    of a DDP or FSDP2 module takes part in collectives (FSDP2 all-gathers the weights,
    DDP reduces the gradients), so a rank with one micro-batch fewer than another would
    leave it waiting forever. The extra calls rerun one of the rank's own micro-batches
    with weight zero, adding nothing to the gradient or to the counts. Gradients are
    reduced once, in the last backward, instead of after each micro-batch."""
    mine = list(per_rank[rank]) or [per_rank[0][0]]
    count = max(len(batches) for batches in per_rank)
    distributed = len(per_rank) > 1
    calls: list[MicroBatchCall] = []
    for i in range(count):
        real = i < len(per_rank[rank])
        batch = mine[i] if real else mine[-1]
        sync = i == count - 1 or not distributed

        def call(batch: Any = batch, sync: bool = sync, real: bool = real):
            return _run(trained, batch, sync, real)

        calls.append(call)
    return calls


# ---- whole tensors for checkpoints, FSDP's shards for training ------------------------------


def _is_dtensor(t: Any) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor that `t` is a shard of (FSDP2's DTensor), or `t`. A collective for
    a DTensor: every rank calls it, in the same order."""
    return t.full_tensor() if _is_dtensor(t) else t


def full_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`tensors` whole, as one process would hold them (collective under FSDP2)."""
    return {name: full_tensor(t.detach()) for name, t in tensors.items()}


def shard_like(param: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
    """`whole` cut as `param` is sharded, ready for `param.copy_`; `whole` itself for a
    plain parameter. Each rank keeps its own slice: no communication."""
    if not _is_dtensor(param):
        return whole
    from torch.distributed.tensor import distribute_tensor

    if tuple(whole.shape) != tuple(param.shape):
        raise LLMHoodError(
            f"A checkpoint tensor of shape {tuple(whole.shape)} cannot "
            f"replace one of shape {tuple(param.shape)}."
        )
    whole = whole.to(device=param.device, dtype=param.dtype)
    return distribute_tensor(whole, param.device_mesh, param.placements, src_data_rank=None)


def load_tensors(params: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]) -> None:
    """Copy whole `tensors` into the parameters of the same names, sharded or not."""
    with torch.no_grad():
        for name, t in tensors.items():
            params[name].copy_(shard_like(params[name], t))


def _params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimiser's state dict with whole moments, as one process would save it: a
    checkpoint of a sharded run then reads like any other (collective under FSDP2)."""
    state = optimizer.state_dict()
    whole = {
        i: {k: full_tensor(v) if torch.is_tensor(v) else v for k, v in s.items()}
        for i, s in state["state"].items()
    }
    return {**state, "state": whole}


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a state dict of whole tensors (`optimizer_state`'s) into an optimiser whose
    parameters may be sharded: each moment is cut as its parameter is."""
    params = _params(optimizer)
    shaped = {}
    for i, s in state["state"].items():
        p = params[int(i)]
        shaped[i] = {
            k: shard_like(p, v) if torch.is_tensor(v) and v.shape == p.shape else v
            for k, v in s.items()
        }
    optimizer.load_state_dict({**state, "state": shaped})


def gather_weights(module: nn.Module) -> None:
    """Whole, plain parameters in place of FSDP2's shards in `module`, for writing the final
    adapter or model as one process would; nothing for DDP. A collective: every rank calls
    it, after the last step (the module is not trained after it).

    Not FSDPModule.unshard: FSDP2 reshards before every state_dict(), and writing a whole
    model reads one. Its units are left "sharded" here, so its hooks leave these be.
    A tied head stays tied: each shared shard is gathered once."""
    from torch.distributed.fsdp import FSDPModule

    for m in module.modules():  # a forward without backward (evaluation) leaves units whole
        if isinstance(m, FSDPModule):
            m.reshard()
    whole: dict[int, nn.Parameter] = {}
    with torch.no_grad():
        for m in module.modules():
            for name, p in list(m._parameters.items()):
                if p is None or not _is_dtensor(p):
                    continue
                if id(p) not in whole:
                    whole[id(p)] = nn.Parameter(p.full_tensor(), requires_grad=p.requires_grad)
                m._parameters[name] = whole[id(p)]


# ---- checkpoints across ranks ---------------------------------------------------------------


def rank_rng(state: dict[str, Any], world: World) -> dict[str, Any]:
    """This rank's random state from a checkpoint's trainer state: its own where the
    checkpoint has every rank's (`rank_rng`), else the one it has (rank 0's)."""
    every = state.get("rank_rng")
    if every and len(every) == world.size:
        return every[world.rank]
    return state["rng"]


def check_world(info: dict[str, Any], world: World, checkpoint: Any) -> None:
    """LLMHoodError if a checkpoint was written by another number of processes: a global
    step is batch size × accumulation × processes, so the data order would change."""
    saved = int(info.get("world", 1))
    if saved != world.size:
        raise LLMHoodError(
            f"--resume: the checkpoint {checkpoint} was written by {saved} process(es), and this "
            f"run has {world.size}. Resume with as many (torchrun --nproc-per-node / --nnodes): "
            "a step's batch is --batch-size × --grad-accum × the processes."
        )


def finish(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
