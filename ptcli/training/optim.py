"""AdamW with weight decay on weight matrices only, and warmup + cosine/linear/constant schedules."""

from __future__ import annotations

import math


def param_groups(model, weight_decay: float) -> list[dict]:
    """Decay 2-D+ weights; never biases, norms or embeddings (decaying those hurts and buys nothing)."""
    decay, no_decay = [], []
    embedding_ids = {id(m.weight) for m in model.modules() if type(m).__name__ == "Embedding"}
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and id(p) not in embedding_ids else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(optim_cfg, model, device_type: str):
    """AdamW over ``param_groups``; the fused kernel on CUDA."""
    import torch

    kwargs = {"fused": True} if device_type == "cuda" else {}
    return torch.optim.AdamW(param_groups(model, optim_cfg.weight_decay), lr=optim_cfg.lr,
                             betas=tuple(optim_cfg.betas), eps=optim_cfg.eps, **kwargs)


def lr_factor(step: int, name: str, warmup: int, total: int, min_ratio: float) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based): linear warmup, then decay to ``min_ratio``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if name == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if name == "linear":
        return 1.0 - (1.0 - min_ratio) * progress
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(sched_cfg, optimizer, total_steps: int):
    """A LambdaLR over ``lr_factor``; its state (the step) is saved in checkpoints."""
    from functools import partial

    import torch

    fn = partial(lr_factor, name=sched_cfg.name, warmup=sched_cfg.warmup_steps, total=total_steps,
                 min_ratio=sched_cfg.min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
