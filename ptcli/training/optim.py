"""The optimizer from the ``optim`` config (a ``_target_``, AdamW by default) with weight decay on weight matrices
only, and warmup + cosine/linear/constant schedules."""

from __future__ import annotations

import math


def param_groups(model, weight_decay: float, lr: float | None = None, scales: dict | None = None) -> list[dict]:
    """Decay 2-D+ weights; never biases, norms or embeddings (decaying those hurts and buys nothing).

    ``scales`` (parameter name -> learning-rate multiplier, layer-wise decay) splits the groups further.
    """
    groups: dict[tuple, list] = {}
    embedding_ids = {id(m.weight) for m in model.modules() if type(m).__name__ == "Embedding"}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decays = p.ndim >= 2 and id(p) not in embedding_ids
        groups.setdefault((decays, (scales or {}).get(name, 1.0)), []).append(p)
    if not scales:  # the two plain groups, in a fixed order (optimizer state in checkpoints relies on it)
        return [{"params": groups.get((True, 1.0), []), "weight_decay": weight_decay},
                {"params": groups.get((False, 1.0), []), "weight_decay": 0.0}]
    return [{"params": ps, "weight_decay": weight_decay if decays else 0.0, "lr": lr * scale}
            for (decays, scale), ps in sorted(groups.items(), key=lambda kv: (not kv[0][0], kv[0][1]))]


def build_optimizer(optim_cfg, model, device_type: str, layer_decay: float | None = None):
    """The ``optim`` section's optimizer (``_partial_``) over ``param_groups``; its fused kernel where
    ``fused_applies`` and the config does not say (``optim.fused=false`` opts out). ``layer_decay``: layer-wise
    learning-rate decay."""
    import inspect

    from ptcli.config.build import build

    factory = build(optim_cfg, "optim")
    settings = dict(getattr(factory, "keywords", {}) or {})
    lr, weight_decay = settings.get("lr", 1e-3), settings.get("weight_decay", 0.0)
    scales = None
    if layer_decay is not None and layer_decay != 1.0:
        from ptcli.training.finetune import layer_scales

        scales = layer_scales(model, layer_decay)
    extra = {}
    target = getattr(factory, "func", factory)
    if "fused" not in settings and "fused" in inspect.signature(target).parameters and \
            fused_applies(target, model, device_type):
        extra["fused"] = True
    return factory(param_groups(model, weight_decay, lr, scales), **extra)


def fused_applies(optimizer_class, model, device_type: str) -> bool:
    """Whether an optimizer's fused kernel is taken: on CUDA; on CPU for Adam and AdamW (4-5x faster steps than
    the per-tensor loop, scripts/bench_optimizer.py) unless parameters are sharded DTensors (FSDP)."""
    import torch

    if device_type == "cuda":
        return True
    if device_type != "cpu" or optimizer_class not in (torch.optim.Adam, torch.optim.AdamW):
        return False
    return not any(type(p).__name__ == "DTensor" for p in model.parameters())


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

    warmup = max(sched_cfg.warmup_steps, round(getattr(sched_cfg, "warmup_ratio", 0.0) * total_steps))
    fn = partial(lr_factor, name=sched_cfg.name, warmup=warmup, total=total_steps,
                 min_ratio=sched_cfg.min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
