"""What an objective trains: one Hugging Face model, or a ``ModelSet`` of several; seeing through wrappers."""

from __future__ import annotations

import torch


class ModelSet(torch.nn.ModuleDict):
    """Several models trained together as one module (one optimizer, one checkpoint, one DDP/FSDP wrap), e.g.
    ELECTRA's generator and discriminator. ``export`` names the member that becomes the run's ``model/``.

    Call it with a function: ``model(step, batch)`` runs ``step(members, batch)`` inside one forward pass, so that
    DDP (which arms its gradient reduction in forward) and FSDP (which gathers the root's weights in forward) see
    all the computation. Members are ``model["generator"]`` inside that function."""

    def __init__(self, members: dict, export: str):
        super().__init__(members)
        if export not in members:
            raise ValueError(f"export member {export!r} is not one of {sorted(members)}")
        self.export = export

    def forward(self, fn, *args, **kwargs):
        return fn(self, *args, **kwargs)


def unwrap(model):
    """The module inside torch.compile, DDP and Opacus wrappers (what checkpoints and exports save). FSDP shards a
    module in place, so an FSDP module unwraps to itself (its weights are shards)."""
    while True:
        inner = getattr(model, "_orig_mod", None) or (model.module if hasattr(model, "no_sync") else None) \
            or (model._module if type(model).__name__ == "GradSampleModule" else None)  # Opacus (+privacy=dp)
        if inner is None:
            return model
        model = inner


def hf_members(module) -> dict:
    """The Hugging Face models a trained module holds, by member name ('' for a module that is one itself)."""
    from transformers import PreTrainedModel

    module = unwrap(module)
    base = getattr(module, "base_model", None)  # a PEFT model counts as the model it adapts
    if isinstance(module, PreTrainedModel) or (getattr(module, "peft_config", None) is not None and base is not None):
        return {"": module}
    if isinstance(module, torch.nn.ModuleDict):
        return {name: m for name, m in module.items() if isinstance(m, PreTrainedModel)}
    return {}


def export_model_of(module):
    """The model that becomes ``model/``: the module itself, or the ``ModelSet`` member it names."""
    module = unwrap(module)
    return module[module.export] if isinstance(module, ModelSet) else module


def is_fsdp(model) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(unwrap(model), FSDPModule)
