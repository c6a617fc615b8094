"""Many processes, one run: torchrun's environment, DDP or FSDP2, and what ranks share.

`torchrun --nproc-per-node N -m llmhood train ...` starts N copies of the same command with
RANK, WORLD_SIZE and LOCAL_RANK set; on several machines, the same on each with
`--nnodes`, `--node-rank` and a `--rdzv-endpoint` they all reach. Each process builds the
same model from the same seed, so nothing needs broadcasting at the start, and takes its
own share of every step's micro-batches (llmhood.train.batches).

Gradients are summed across processes: DistributedDataParallel averages them, and each
process's loss is already divided by the *global* step's trained tokens, so the loss is
multiplied by the world size before backward. The sum then equals the gradient of one
process running the whole global batch. Gloo is the backend on CPUs, NCCL on GPUs.
FSDP2 (`fully_shard`) shards the parameters, gradients and optimiser state instead of
copying them, for models that do not fit one process; each block is its own unit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


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
        """`value` summed over the processes."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item())

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def init() -> World:
    """The world torchrun describes, its process group started; one process without it."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def wrap(module: nn.Module, world: World, fsdp: bool = False) -> nn.Module:
    """`module` as the processes train it together: DDP, or FSDP2 with one unit per block."""
    if not world.distributed:
        return module
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for block in module.model.layers:
            fully_shard(block)
        fully_shard(module)
        return module
    return nn.parallel.DistributedDataParallel(module)


def finish(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
