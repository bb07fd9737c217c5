"""Get a module ready to train, in the one order that works: fused kernels -> freeze -> PEFT -> gradient
checkpointing -> device -> compile -> wrap (DDP, or FSDP2 ``fully_shard`` per transformer block, then the root);
frozen helpers placed beside it; and a plain, gathered copy of the export model for ``save_pretrained``."""

from __future__ import annotations

import contextlib

from ptcli.errors import PtcliError
from ptcli.models.modules import hf_members, unwrap

# device.compile=auto compiles runs planned at this many steps or more. Measured on CPU (docs/benchmarks.md): a
# compiled step is about 4% faster and compiling costs about 23 s per new shape (4 s from the inductor cache), repaid
# after about 1,050 steps with a cold cache.
AUTO_COMPILE_STEPS = 1000


def compile_decision(setting, planned_steps: int | None, fixed_shapes: bool, private: bool, device: str,
                     compiler=None) -> tuple[bool, str | None]:
    """Whether to ``torch.compile`` the model, and for ``auto`` why (a line for the log). ``compiler``: whether
    inductor can build kernels on ``device`` (a C++ compiler on CPU, triton on CUDA); looked up when None."""
    if setting is not True and setting != "auto":
        return False, None
    if setting is True:
        return True, None
    if private:
        return False, "compile: auto -> off (DP-SGD's per-example gradients come from module hooks)"
    if not fixed_shapes:
        return False, "compile: auto -> off (batches change shape, and each new shape compiles again)"
    if not planned_steps or planned_steps < AUTO_COMPILE_STEPS:
        return False, (f"compile: auto -> off ({planned_steps or 'no'} planned steps; compiling repays its time from "
                       f"about {AUTO_COMPILE_STEPS:,})")
    if not (compiler if compiler is not None else can_compile(device)):
        return False, ("compile: auto -> off (no C++ compiler for inductor on this CPU)" if device == "cpu" else
                       "compile: auto -> off (triton is not installed)")
    return True, f"compile: auto -> on ({planned_steps:,} planned steps of fixed-shape batches)"


def can_compile(device: str) -> bool:
    import importlib.util
    import os
    import shutil

    if device == "cuda":
        return importlib.util.find_spec("triton") is not None
    if device == "cpu":
        return any(shutil.which(c) for c in (os.environ.get("CXX") or "", "g++", "clang++", "c++") if c)
    return False


def prepare_model(module, cfg, objective, dist, placement, log, compile_model: bool = False):
    """Apply the run's transforms to the objective's module; returns (the module, the module the loop calls).
    ``compile_model``: ``compile_decision``'s answer for this run."""
    from ptcli.training import finetune

    if cfg.device.get("fused_kernels", True):  # 0. fused kernels for written-out activations (in memory only)
        fuse_kernels(module, log)
    if cfg.get("tune") is not None:
        finetune.freeze(module, cfg.tune, log)  # 1. freeze
    if cfg.get("peft") is not None:  # 2. PEFT
        if objective.peft_config is None or "" not in hf_members(module):
            raise PtcliError(f"+peft=lora is not supported with objective {objective.name or type(objective).__name__}",
                             fix="Train without +peft, or use an objective that trains one Hugging Face model")
        module = finetune.apply_peft(module, cfg.peft, dict(objective.peft_config), log)
    if cfg.train.gradient_checkpointing:  # 3. gradient checkpointing
        for member in hf_members(module).values():
            member.gradient_checkpointing_enable()
    module.to(placement.device)
    if compile_model:  # 4. compile, in place: the wrappers below see a compiled module
        module.compile()
    return module, wrap(module, dist, placement)  # 5. wrap: DDP, or FSDP sharding in place (new parameters)


def fuse_kernels(module, log=None) -> int:
    """``device.fused_kernels``: torch's fused tanh GELU for Hugging Face's written-out forms, logged once."""
    from ptcli.models.kernels import fuse_activations

    swapped = fuse_activations(module)
    if swapped and log is not None:
        log(f"fused kernels: {swapped} tanh-GELU activations run as torch's fused kernel (device.fused_kernels)")
    return swapped


def place_helpers(helpers: dict, dist, placement, fused: bool = True) -> dict:
    """Frozen helper models: no gradients, eval mode, on the model's device in the run's precision; sharded like the
    model under FSDP (gathered in forward), replicated otherwise. They are never checkpointed. ``fused``:
    ``device.fused_kernels``."""
    placed = {}
    for name, helper in helpers.items():
        if fused:
            fuse_kernels(helper)
        helper.requires_grad_(False)
        helper.eval()
        helper.to(placement.device, dtype=placement.autocast_dtype or None)
        if dist.sharded:
            helper = apply_fsdp(helper, dist, placement, frozen=True)
        placed[name] = helper
    return placed


def wrap(model, dist_info, placement):
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
    """The transformer blocks FSDP shards one by one: members of a ``ModuleList`` whose class is one of a model's
    ``_no_split_modules`` (Hugging Face's list of blocks that must stay whole), else the members of the longest
    ``ModuleList``. Embeddings stay with the root: heads tie their weights to them."""
    import torch.nn as nn

    block_names = set()
    for module in model.modules():
        block_names |= set(getattr(module, "_no_split_modules", None) or [])
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    units = [b for lst in lists for b in lst if type(b).__name__ in block_names]
    if not units and lists:
        units = list(max(lists, key=len))
    return units


def apply_fsdp(model, dist_info, placement, frozen: bool = False):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if placement.precision == "fp16" and not frozen:
        raise PtcliError("device.strategy=fsdp does not support fp16 loss scaling",
                         fix="Use device.precision=bf16 (or fp32) with FSDP")
    if getattr(model, "peft_config", None) is not None:
        raise PtcliError("LoRA (+peft) with device.strategy=fsdp is not supported",
                         fix="Use device.strategy=ddp for LoRA runs: the adapter is small")
    mesh = init_device_mesh(placement.device.type, (dist_info.world,))
    kwargs = {"mesh": mesh}
    if placement.precision == "bf16" and not frozen:  # gather weights in bf16, reduce gradients in fp32
        import torch
        from torch.distributed.fsdp import MixedPrecisionPolicy

        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for block in shard_units(model):
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return model


@contextlib.contextmanager
def no_sync(model, dist_info):
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


def gathered(model, dist_info):
    """The trained module with ordinary full weights, for ``save_pretrained``: itself unless FSDP sharded it; then
    every process takes part in gathering the weights, and rank 0 gets an unsharded copy of each Hugging Face model
    in it (built on the meta device, so without a second initialisation), the others None."""
    from ptcli.models.modules import ModelSet

    module = unwrap(model)
    if not dist_info.sharded:
        return module
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not dist_info.is_rank0:
        return None
    if not isinstance(module, ModelSet):
        return _plain_copy(module, full)
    members = {name: _plain_copy(member, {k[len(name) + 1:]: v for k, v in full.items() if k.startswith(name + ".")})
               for name, member in hf_members(module).items()}
    return ModelSet(members, module.export)


def _plain_copy(source, full: dict):
    import torch
    from torch.distributed.fsdp import FSDPModule

    cls = next(c for c in type(source).__mro__ if not issubclass(c, FSDPModule))
    with torch.device("meta"):
        plain = cls(source.config)
    plain.load_state_dict(full, assign=True, strict=False)
    plain.tie_weights()
    for name, buffer in source.named_buffers():  # FSDP leaves buffers whole; non-persistent ones are not in `full`
        owner, _, attr = name.rpartition(".")
        holder = plain.get_submodule(owner)
        if holder._buffers.get(attr) is not None and holder._buffers[attr].is_meta:
            holder._buffers[attr] = buffer.detach().to("cpu", copy=True)
    missing = [n for n, p in plain.named_parameters() if p.is_meta]
    if missing:
        raise RuntimeError(f"gathering the FSDP model left weights unset: {', '.join(missing[:5])}")
    if getattr(source, "generation_config", None) is not None:
        plain.generation_config = source.generation_config
    return plain.eval()
