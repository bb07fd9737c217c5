"""Data-parallel set-up from torchrun's (or Slurm's) environment, and the few collectives the loop needs."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from ptcli.errors import PtcliError


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


def peer_failure(error: BaseException, dist_info: Dist, run_dir):
    """A ``RunFailure`` for a collective that failed because another process of the job died, hung past
    ``device.timeout_s`` or lost its connection (None for any other error): names the last checkpoint and how to
    resume, instead of gloo's or NCCL's traceback."""
    if not dist_info.enabled:
        return None
    import torch.distributed as tdist

    from ptcli.errors import RunFailure

    text = str(error)
    markers = ("Connection closed by peer", "Connection reset by peer", "Timed out", "timed out", "Broken pipe",
               "NCCL", "Gloo", "gloo", "ProcessGroup")
    if not isinstance(error, tdist.DistError) and not any(m in text for m in markers):
        return None
    from ptcli.training.checkpoint import CheckpointManager

    last = CheckpointManager(run_dir, 0).latest()
    # "[.../gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:4018. This is typically ..."
    first = re.sub(r"^\[[^\]]*\]\s*", "", text.strip().splitlines()[0]) if text.strip() else ""
    reason = (first.split(". ")[0].rstrip(".")[:160]) or type(error).__name__
    kept = f"the last checkpoint, {last}, is intact" if last else "no checkpoint had been written yet"
    return RunFailure(f"process {dist_info.rank} of {dist_info.world}: another process of this job died, hung or "
                      f"became unreachable ({reason}); {kept}",
                      where=str(run_dir),
                      fix="Look for the first failing process's error (or its kill/OOM message) in the job's "
                          "log, then resume with train.resume=auto hydra.run.dir=" + str(run_dir)
                          + " (any number of processes)")


def expand_nodelist(nodelist: str) -> list[str]:
    """Slurm's compressed host list as host names: ``"gpu[01-03,7],login"`` -> gpu01 gpu02 gpu03 gpu7 login.
    Asks ``scontrol show hostnames`` where it is installed (it knows every form), else parses the common ones:
    comma-separated names, each with any number of ``[a-b,c]`` ranges (zero padding kept)."""
    # Without a config file scontrol looks for a "configless" controller in DNS first (a minute where DNS is
    # unreachable), so only when one is there.
    conf = os.environ.get("SLURM_CONF") or "/etc/slurm/slurm.conf"
    if shutil.which("scontrol") and os.path.isfile(conf):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                                  timeout=10, check=True)
            hosts = done.stdout.split()
            if hosts:
                return hosts
    return parse_nodelist(nodelist)


def parse_nodelist(nodelist: str) -> list[str]:
    """The pure-Python reading of a Slurm host list (see ``expand_nodelist``)."""
    hosts: list[str] = []
    for item in _split_top_level(nodelist.strip()):
        expanded = [""]
        for text, ranges in re.findall(r"([^\[\]]*)(?:\[([^\]]*)\])?", item):
            if not text and not ranges:
                continue
            options = [text]
            if ranges:
                options = [text + n for part in ranges.split(",") for n in _expand_range(part, nodelist)]
            expanded = [head + tail for head in expanded for tail in options]
        hosts.extend(h for h in expanded if h)
    return hosts


def _split_top_level(nodelist: str) -> list[str]:
    """Split at commas outside brackets: ``"a[1,2],b"`` -> ``["a[1,2]", "b"]``."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(nodelist):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            items.append(nodelist[start:i])
            start = i + 1
    items.append(nodelist[start:])
    return [item.strip() for item in items if item.strip()]


def _expand_range(part: str, nodelist: str) -> list[str]:
    lo, sep, hi = part.strip().partition("-")
    if not lo.isdigit() or (sep and not hi.isdigit()):
        raise PtcliError(f"cannot read the Slurm node list {nodelist!r}",
                         fix="Set MASTER_ADDR to the host of task 0 (the first node of the job)")
    if not sep:
        return [lo]
    width = len(lo) if lo.startswith("0") else 0
    return [str(n).zfill(width) for n in range(int(lo), int(hi) + 1)]


def slurm_env(environ=None) -> dict[str, str]:
    """torch.distributed's variables for a task that ``srun`` started without torchrun, derived from Slurm's:
    RANK=SLURM_PROCID, WORLD_SIZE=SLURM_STEP_NUM_TASKS (or SLURM_NTASKS), LOCAL_RANK=SLURM_LOCALID (the GPU
    index: modulo the visible GPUs when Slurm gave each task its own),
    MASTER_ADDR=the first host of the step's node list, MASTER_PORT=10000 + job id % 20000 (both kept when set).

    Empty (nothing to add) when torchrun or the user already set RANK/WORLD_SIZE, outside a job step (the
    batch script itself has SLURM_PROCID=0 and SLURM_NTASKS=N but is one process: only srun sets
    SLURM_STEP_ID), and for one-task steps."""
    env = os.environ if environ is None else environ
    if "RANK" in env or "WORLD_SIZE" in env or "SLURM_PROCID" not in env or "SLURM_STEP_ID" not in env:
        return {}
    world = int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or 1)
    if world <= 1:
        return {}
    local = int(env.get("SLURM_LOCALID") or 0)
    visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if visible and local >= len(visible):  # Slurm bound this task's own GPUs (--gpus-per-task): index among them
        local %= len(visible)
    out = {"RANK": env["SLURM_PROCID"], "WORLD_SIZE": str(world), "LOCAL_RANK": str(local)}
    if not env.get("MASTER_ADDR"):
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        if not nodelist:
            raise PtcliError("srun started this task but Slurm gave no node list (SLURM_STEP_NODELIST)",
                             fix="Set MASTER_ADDR to the host of task 0")
        out["MASTER_ADDR"] = expand_nodelist(nodelist)[0]
    if not env.get("MASTER_PORT"):
        out["MASTER_PORT"] = str(10000 + int(env.get("SLURM_JOB_ID") or 0) % 20000)
    return out


def apply_slurm_env() -> dict[str, str]:
    """Put ``slurm_env()`` into this process's environment (once; later calls find RANK set and add nothing),
    so that everything after it (run-dir agreement, rank checks, ``init_process_group``) sees one world."""
    found = slurm_env()
    os.environ.update(found)
    return found


def env_world_size() -> int:
    """The number of processes in this job: torchrun's WORLD_SIZE, or srun's task count (see ``slurm_env``)."""
    apply_slurm_env()
    return int(os.environ.get("WORLD_SIZE", "1"))


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
    apply_slurm_env()
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s or DEFAULT_TIMEOUT_S))


def init_from_env(strategy: str, timeout_s: float | None = None) -> Dist:
    """A ``Dist`` for this process: data-parallel (DDP, or FSDP with ``strategy=fsdp``) when started by torchrun
    with WORLD_SIZE > 1, or by srun with more than one task."""
    world = env_world_size()
    if world == 1 or strategy == "single":
        return Dist()
    init_process_group(timeout_s)
    return Dist(rank=int(os.environ["RANK"]), world=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                enabled=True, strategy="fsdp" if strategy == "fsdp" else "ddp")


def agree_on_run_stamp(stamp: str) -> str:
    """Every process takes rank 0's timestamp, so a torchrun (or srun) job writes one run directory, not one per rank
    (Hydra resolves ${now:} in each process separately: hydra#2070)."""
    import torch.distributed as dist

    init_process_group()
    holder = [stamp]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def unwrap(model):
    """The model inside torch.compile and DDP wrappers (what checkpoints and exports must save). FSDP shards a
    model in place, so an FSDP model unwraps to itself (its weights are shards: see ``plain_copy``)."""
    while True:
        inner = getattr(model, "_orig_mod", None) or (model.module if hasattr(model, "no_sync") else None)
        if inner is None:
            return model
        model = inner


def wrap(model, dist_info: Dist, placement):
    """Wrap the model for data parallelism: DDP (gradients averaged across processes) or FSDP2 (``fully_shard``
    on every transformer block, then on the root, which holds the embeddings and heads)."""
    if not dist_info.enabled:
        return model
    if dist_info.strategy == "fsdp":
        return apply_fsdp(model, dist_info, placement)
    from torch.nn.parallel import DistributedDataParallel

    device = placement.device
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def shard_units(model) -> list:
    """The transformer blocks FSDP shards one by one: members of a ``ModuleList`` whose class is one of the
    model's ``_no_split_modules`` (Hugging Face's list of blocks that must stay whole), else the members of the
    longest ``ModuleList``. Embeddings stay with the root: heads tie their weights to them."""
    import torch.nn as nn

    block_names = set(getattr(model, "_no_split_modules", None) or [])
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    units = [b for lst in lists for b in lst if type(b).__name__ in block_names]
    if not units and lists:
        units = list(max(lists, key=len))
    return units


def apply_fsdp(model, dist_info: Dist, placement):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if placement.precision == "fp16":
        raise PtcliError("device.strategy=fsdp does not support fp16 loss scaling",
                         fix="Use device.precision=bf16 (or fp32) with FSDP")
    if getattr(model, "peft_config", None) is not None:
        raise PtcliError("LoRA (+peft) with device.strategy=fsdp is not supported",
                         fix="Use device.strategy=ddp for LoRA runs: the adapter is small")
    mesh = init_device_mesh(placement.device.type, (dist_info.world,))
    kwargs = {"mesh": mesh}
    if placement.precision == "bf16":  # gather weights in bf16 (half the traffic), reduce gradients in fp32
        import torch
        from torch.distributed.fsdp import MixedPrecisionPolicy

        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for block in shard_units(model):
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return model


def is_fsdp(model) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(unwrap(model), FSDPModule)


@contextlib.contextmanager
def no_sync(model, dist_info: Dist):
    """Skip the gradient all-reduce (DDP) or reduce-scatter (FSDP) of a backward pass: for all micro-steps of
    gradient accumulation but the last."""
    if not dist_info.enabled:
        yield
    elif dist_info.strategy == "fsdp":
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        with model.no_sync():
            yield


def local_value(tensor) -> float:
    """A scalar as a Python float, also when it is a DTensor (FSDP's gradient norm): a device read."""
    full = getattr(tensor, "full_tensor", None)
    return float(full() if full is not None else tensor)


def plain_copy(model, dist_info: Dist):
    """A model with ordinary full weights, for ``save_pretrained``: the model itself unless FSDP sharded it;
    then every process takes part in gathering the weights, and rank 0 gets an unsharded copy (built on the meta
    device, so without a second initialisation), the others None."""
    model = unwrap(model)
    if not dist_info.sharded:
        return model
    import torch
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import FSDPModule

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not dist_info.is_rank0:
        return None
    cls = next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))
    with torch.device("meta"):
        plain = cls(model.config)
    plain.load_state_dict(full, assign=True, strict=False)
    plain.tie_weights()
    for name, buffer in model.named_buffers():  # FSDP leaves buffers whole; non-persistent ones are not in `full`
        owner, _, attr = name.rpartition(".")
        module = plain.get_submodule(owner)
        if module._buffers.get(attr) is not None and module._buffers[attr].is_meta:
            module._buffers[attr] = buffer.detach().to("cpu", copy=True)
    missing = [n for n, p in plain.named_parameters() if p.is_meta]
    if missing:
        raise RuntimeError(f"gathering the FSDP model left weights unset: {', '.join(missing[:5])}")
    if getattr(model, "generation_config", None) is not None:
        plain.generation_config = model.generation_config
    return plain.eval()
