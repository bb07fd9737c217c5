"""How much each attention head (or key/value group) and each feed-forward neuron matters.

``gradient`` (Michel, Levy and Neubig 2019, "Are Sixteen Heads Really Better than One?"): a mask of ones multiplies
each head's output (each neuron's activation) on its way into the output projection, through a forward pre-hook;
the importance is the sum over batches of |d loss / d mask| with the objective's own mean loss, on the task's
training data (never its validation part, which measures the result). ``norm``: the L2 norm of the weights that
make and use a unit (its query/key/value rows and output-projection columns; a neuron's rows and column), no data.
Head scores are L2-normalised per layer, as Michel et al. do, so they can be ranked across layers.
"""

from __future__ import annotations

from contextlib import contextmanager


def head_norms(blocks) -> list:
    """Per block, one score per unit: the norm of its query/key/value rows and output columns."""
    import torch

    out = []
    for b in blocks:
        d, r = b.head_dim, b.group
        q = b.q.weight.detach().float().reshape(b.heads, d, -1).pow(2).sum((1, 2)).reshape(b.units, r).sum(1)
        o = b.o.weight.detach().float().reshape(b.o.out_features, b.heads, d).pow(2).sum((0, 2))
        o = o.reshape(b.units, r).sum(1)
        kv_rows = b.units if b.family == "llama" else b.heads
        k = b.k.weight.detach().float().reshape(kv_rows, d, -1).pow(2).sum((1, 2))
        v = b.v.weight.detach().float().reshape(kv_rows, d, -1).pow(2).sum((1, 2))
        out.append(torch.sqrt(q + o + k.reshape(b.units, -1).sum(1) + v.reshape(b.units, -1).sum(1)))
    return out


def neuron_norms(blocks) -> list:
    """Per feed-forward block, one score per neuron: the norm of its rows in and its column out."""
    import torch

    out = []
    for b in blocks:
        total = b.out.weight.detach().float().pow(2).sum(0)
        for linear in b.into:
            total = total + linear.weight.detach().float().pow(2).sum(1)
        out.append(torch.sqrt(total))
    return out


def normalise_per_layer(scores: list) -> list:
    """Each layer's scores divided by their L2 norm (Michel et al.'s per-layer normalisation)."""
    return [s / s.norm().clamp_min(1e-20) for s in scores]


@contextmanager
def masks_on(linears, sizes, group_dims):
    """A mask of ones (requires_grad) per Linear, multiplied into its input through a forward pre-hook: the input's
    last dimension viewed as (size, group_dim). Yields the masks; the hooks are removed on exit."""
    import torch

    masks, handles = [], []
    for linear, size, dim in zip(linears, sizes, group_dims):
        mask = torch.ones(size, requires_grad=True, device=linear.weight.device)

        def hook(module, args, mask=mask, size=size, dim=dim):
            x = args[0]
            shaped = x.reshape(*x.shape[:-1], size, dim) * mask.to(x.dtype)[:, None]
            return (shaped.reshape(x.shape), *args[1:])

        handles.append(linear.register_forward_pre_hook(hook))
        masks.append(mask)
    try:
        yield masks
    finally:
        for handle in handles:
            handle.remove()


def gradient_scores(model, objective, batches, linears, sizes, group_dims) -> list:
    """sum over ``batches`` of |d mean loss / d mask| for each hooked Linear's input units."""
    import torch

    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)  # only the masks need gradients
    model.eval()  # no dropout: the scores are a function of the weights and the data
    totals = [torch.zeros(size) for size in sizes]
    try:
        with masks_on(linears, sizes, group_dims) as masks, torch.enable_grad():
            for batch in batches:
                out = objective.loss(model, batch)
                loss = out.sum / out.count.clamp_min(1) if hasattr(out.count, "clamp_min") else out.sum / out.count
                grads = torch.autograd.grad(loss, masks, allow_unused=True)
                for total, grad in zip(totals, grads):
                    if grad is not None:
                        total += grad.detach().abs().float().cpu()
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)
    return totals


def head_gradients(model, objective, batches, blocks) -> list:
    """Per block, one gradient score per unit (the query heads of a key/value group summed)."""
    scores = gradient_scores(model, objective, batches, [b.o for b in blocks], [b.heads for b in blocks],
                             [b.head_dim for b in blocks])
    return [s.reshape(b.units, b.group).sum(1) for s, b in zip(scores, blocks)]


def neuron_gradients(model, objective, batches, blocks) -> list:
    """Per feed-forward block, one gradient score per intermediate neuron (|gradient x activation| summed)."""
    return gradient_scores(model, objective, batches, [b.out for b in blocks], [b.width for b in blocks],
                           [1] * len(blocks))


def training_batches(task, loaded, count: int, batch_size: int, seed: int, cache, dist, log) -> tuple[list, object]:
    """(batches, the objective): ``count`` batches of ``batch_size`` examples drawn (seeded) from the task's
    training data, collated by the objective as training collates them (masks and noise from a seeded generator)."""
    import numpy as np
    import torch
    from omegaconf import OmegaConf

    from ptcli.config.build import build
    from ptcli.data.loader import step_generator
    from ptcli.objectives.base import Context

    objective = task.objective()
    source = build(task.cfg.dataset, "dataset")
    cfg = OmegaConf.merge(task.cfg, {"train": {"batch_size": batch_size, "seed": seed}})
    ctx = Context(cfg, source, cache, dist, log, split="train")
    bind = getattr(objective, "bind", None)
    if bind is not None and loaded.processors.tokenizer is not None:
        bind(loaded.processors.tokenizer)
    data = objective.prepare(ctx, loaded.processors).train
    order = np.random.default_rng(seed).permutation(len(data))
    n = min(len(data), count * batch_size)
    chosen = [int(order[i % len(order)]) for i in range(n)]
    fetch = getattr(data, "fetch", None)
    batches = []
    for step, start in enumerate(range(0, n, batch_size)):
        indices = chosen[start:start + batch_size]
        examples = fetch(indices) if fetch is not None else [data[i] for i in indices]
        batch = objective.collate(examples, step_generator(seed, step, 0, 0))
        batches.append({k: v.to(loaded.placement.device) if isinstance(v, torch.Tensor) else v
                        for k, v in batch.items()})
    log(f"importance: {len(batches)} batches of {batch_size} training examples ({len(data)} in the training data)")
    return batches, objective

