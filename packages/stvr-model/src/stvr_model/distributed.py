"""Several processes under `torchrun` (one per GPU, on one node or several): the process
group, the ranks, and how work is split between them and brought back together.

Training and evaluation use the same helpers: `init_distributed` reads torchrun's
environment (`WORLD_SIZE`, `RANK`, `LOCAL_RANK`) and starts NCCL on CUDA, gloo on the
CPU; without torchrun it is one process of rank 0 and nothing is started.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Ranks:
    """This process's place: `rank` of `world` processes, `local_rank` on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes what all of them share."""
        return self.rank == 0


def init_distributed(device: torch.device) -> Ranks:
    """This process's ranks, initialising the process group under torchrun: NCCL with one
    GPU per process (`LOCAL_RANK`) on CUDA, gloo on the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)  # before NCCL starts, or every process uses GPU 0
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Ranks(torch.distributed.get_rank(), world, local_rank)


def process_device(device: torch.device, ranks: Ranks) -> torch.device:
    """The device of this process: its own GPU (`cuda:<local rank>`) under torchrun."""
    if device.type == "cuda" and ranks.world > 1:
        return torch.device("cuda", ranks.local_rank)
    return device


def shard(count: int, ranks: Ranks) -> range:
    """The indices of `count` items this rank takes: every `world`-th from `rank`
    (deterministic; shards differ by at most one item; a rank may get none)."""
    return range(ranks.rank, count, ranks.world)


def gather_to_main(value, ranks: Ranks) -> list | None:
    """Every rank's `value` (any picklable object), in rank order, on rank 0; None on the
    others. A collective: every rank must call it."""
    if ranks.world == 1:
        return [value]
    gathered = [None] * ranks.world if ranks.main else None
    torch.distributed.gather_object(value, gathered, dst=0)
    return gathered
