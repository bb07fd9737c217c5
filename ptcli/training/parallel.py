"""This process's place in a data-parallel job (torchrun's or srun's environment) and the few collectives the loop
needs; every collective is a no-op in a single process."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class Dist:
    """This process's place in the job; every collective is a no-op when ``enabled`` is False."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    enabled: bool = False
    strategy: str = "single"  # single | ddp | fsdp
    broken: bool = False  # a collective failed (a process died): the group cannot be torn down cleanly

    @property
    def is_rank0(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        """FSDP: each process holds a shard of the weights and optimizer state (collective saves and exports)."""
        return self.enabled and self.strategy == "fsdp"

    def reduce_sum(self, tensor):
        """Sum a tensor over all processes (in place), return it."""
        if self.enabled:
            import torch.distributed as dist

            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all_true(self, flag: bool) -> bool:
        """True only if every process says True (used to agree on stopping)."""
        if not self.enabled:
            return flag
        import torch
        import torch.distributed as dist

        t = torch.tensor([0.0 if flag else 1.0])
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.item() == 0

    def gather_objects(self, obj) -> list:
        """Every process's ``obj`` (small, picklable: metric states), in rank order."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()


DEFAULT_TIMEOUT_S = 1800  # torch's own default for gloo and nccl collectives


def init_process_group(timeout_s: float | None = None) -> None:
    """Join the process group torchrun (or srun, see ``slurm_env``) described (gloo for CPU tensors, nccl
    for CUDA ones). ``timeout_s`` bounds every collective: a process whose peer died without closing its
    connection fails after that long instead of waiting forever (``device.timeout_s``)."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s or DEFAULT_TIMEOUT_S))


def init_from_env(strategy: str, timeout_s: float | None = None) -> Dist:
    """A ``Dist`` for this process: data-parallel (DDP, or FSDP with ``strategy=fsdp``) when started by torchrun
    with WORLD_SIZE > 1, or by srun with more than one task (the launch layer has mapped Slurm's variables)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1 or strategy == "single":
        return Dist()
    init_process_group(timeout_s)
    return Dist(rank=int(os.environ["RANK"]), world=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                enabled=True, strategy="fsdp" if strategy == "fsdp" else "ddp")
