"""Data-parallel set-up from torchrun's (or Slurm's) environment, and the few collectives the loop needs."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ptcli.errors import PtcliError


@dataclass
class Dist:
    """This process's place in the job; every collective is a no-op when ``enabled`` is False."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    enabled: bool = False

    @property
    def is_rank0(self) -> bool:
        return self.rank == 0

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


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_process_group() -> None:
    """Join the process group torchrun described (gloo for CPU tensors, nccl for CUDA ones)."""
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)


def init_from_env(strategy: str) -> Dist:
    """A ``Dist`` for this process: data-parallel when started by torchrun with WORLD_SIZE > 1."""
    world = env_world_size()
    if world == 1 or strategy == "single":
        return Dist()
    if strategy == "fsdp":
        raise PtcliError("device.strategy=fsdp is not built yet (issue #6)", fix="Use device.strategy=ddp")
    init_process_group()
    return Dist(rank=int(os.environ["RANK"]), world=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                enabled=True)


def agree_on_run_stamp(stamp: str) -> str:
    """Every process takes rank 0's timestamp, so a torchrun job writes one run directory, not one per rank
    (Hydra resolves ${now:} in each process separately: hydra#2070)."""
    import torch.distributed as dist

    init_process_group()
    holder = [stamp]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def unwrap(model):
    """The plain model inside torch.compile and DDP wrappers (what checkpoints and exports must save)."""
    while True:
        inner = getattr(model, "_orig_mod", None) or (model.module if hasattr(model, "no_sync") else None)
        if inner is None:
            return model
        model = inner


def apply_ddp(model, dist_info: Dist, device):
    """Wrap the model for data parallelism (gradients averaged across processes)."""
    if not dist_info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)
