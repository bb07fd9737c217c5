"""``prune``'s three methods, each turning the loaded model into the pruned one and saving it into ``out``.

- ``magnitude``: unstructured L1 pruning of the Linear weights inside the transformer layers (embeddings and the
  task head left alone), ``amount`` of each layer's weights (``scope=layer``) or of all of them ranked together
  (``scope=global``, ``torch.nn.utils.prune.global_unstructured``), made permanent. Zeros only: dense kernels do not
  get faster or smaller (pytorch/pytorch#36214); the report says so.
- ``heads``: whole attention heads removed (Michel et al. 2019): ``round(amount x heads)`` of every layer
  (``scope=layer``), or the lowest-scored across the model with at least one head kept per layer (``global``). In a
  Llama with grouped-query attention whole key/value groups go. A Llama with the same count in every layer is an
  ordinary folder (``num_attention_heads``, ``num_key_value_heads`` and ``head_dim`` in its config); a BERT-family
  model (whose head size transformers derives from the head count) or a Llama with different counts per layer is
  saved with a ``pruned-heads`` recipe that ``ptcli.models.pruned.load`` rebuilds it from.
- ``ffn``: ``round(amount x intermediate_size)`` feed-forward neurons of every layer (the same count everywhere, so
  the config's ``intermediate_size`` describes the model and plain ``from_pretrained`` loads it).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from ptcli.compression import importance
from ptcli.errors import PtcliError
from ptcli.models import pruned

SPARSITY_ONLY = ("magnitude pruning zeroes weights but keeps them dense: the model is no smaller on disk and no "
                 "faster with dense kernels (pytorch/pytorch#36214); use method=heads or method=ffn to remove them")
IN_A_LAYER = re.compile(r"\.\d+\.")  # a module inside a ModuleList of blocks (encoder.layer.3.attention...)


def half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


# ---- magnitude
def layer_linears(model) -> list[tuple[str, object]]:
    """The Linear (and GPT-2 Conv1D) layers inside the transformer blocks: not the embeddings, pooler or head."""
    import torch.nn as nn

    return [(name, m) for name, m in model.named_modules()
            if (isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D") and IN_A_LAYER.search(f".{name}.")]


def magnitude(model, amount: float, scope: str) -> dict:
    """Zero the smallest ``amount`` of the layers' weights by |w| (per layer or globally), permanently."""
    import torch
    from torch.nn.utils import prune

    linears = layer_linears(model)
    if not linears:
        raise PtcliError(f"found no Linear layers inside the transformer blocks of this {model.config.model_type} "
                         "model", fix="Magnitude pruning needs a transformer with Linear layers")
    if scope == "global":
        prune.global_unstructured([(m, "weight") for _, m in linears], pruning_method=prune.L1Unstructured,
                                  amount=amount)
    else:
        for _, m in linears:
            prune.l1_unstructured(m, "weight", amount=amount)
    for _, m in linears:
        prune.remove(m, "weight")
    total = sum(m.weight.numel() for _, m in linears)
    zeros = sum(int((m.weight == 0).sum()) for _, m in linears)
    with torch.no_grad():
        per_layer = {name: round(float((m.weight == 0).float().mean()), 4) for name, m in linears}
    return {"removed": {"weights_zeroed": zeros, "of_weights": total, "sparsity": round(zeros / total, 4),
                        "layers": len(linears), "sparsity_per_layer": per_layer},
            "note": SPARSITY_ONLY}


# ---- which units go
def choose(scores: list, amount: float, scope: str, what: str) -> list[list[int]]:
    """The units to keep in each layer (sorted), removing the lowest-scored ``amount`` per layer or globally."""
    sizes = [len(s) for s in scores]
    if scope == "layer":
        keep = []
        for size, s in zip(sizes, scores):
            n = min(half_up(amount * size), size - 1)
            order = sorted(range(size), key=lambda i: (float(s[i]), i))
            keep.append(sorted(order[n:]))
        if all(len(k) == size for k, size in zip(keep, sizes)):
            raise PtcliError(f"amount={amount:g} of {min(sizes)} {what} per layer removes none "
                             f"(round({amount:g} x {min(sizes)}) = 0)",
                             fix=f"Raise amount to at least {0.5 / min(sizes):.3g}, or use scope=global")
        return keep
    total = sum(sizes)
    n = min(half_up(amount * total), total - len(sizes))
    if n < 1:
        raise PtcliError(f"amount={amount:g} of {total} {what} removes none", fix="Raise amount")
    ranked = sorted(((float(s[i]), layer, i) for layer, s in enumerate(scores) for i in range(len(s))))
    left, removed = list(sizes), [set() for _ in sizes]
    for _, layer, i in ranked:
        if n == 0:
            break
        if left[layer] > 1:  # at least one unit stays in every layer
            removed[layer].add(i)
            left[layer] -= 1
            n -= 1
    return [[i for i in range(size) if i not in gone] for size, gone in zip(sizes, removed)]


# ---- heads
def prune_heads(model, scores: list, amount: float, scope: str, out: Path) -> dict:
    """Remove the chosen heads from ``model`` and save it into ``out`` (with a recipe where from_pretrained cannot
    rebuild it). ``scores``: per attention block, one score per unit."""
    from ptcli.models.restore import write_recipe

    blocks = pruned.attention_blocks(model)
    before = [b.heads for b in blocks]
    keep = choose(scores, amount, scope, "heads" if all(b.group == 1 for b in blocks) else "key/value groups")
    for block, units in zip(blocks, keep):
        if len(units) < block.units:
            pruned.keep_units(block, units)
    after = [b.heads for b in blocks]
    families = {b.family for b in blocks}
    uniform = len(set(after)) == 1 and len({b.kv_heads for b in blocks}) == 1
    if families == {"llama"} and uniform:
        pruned.set_uniform_heads(model.config, after[0], blocks[0].kv_heads, blocks[0].head_dim)
        recipe = None
        if hasattr(model.config, "ptcli_heads_per_layer"):  # loaded from a recipe, now uniform again
            del model.config.ptcli_heads_per_layer
    else:  # the config keeps the original counts (and so the head size); the recipe holds each layer's
        recipe = {"kind": pruned.KIND, "heads_per_layer": after, "heads_before": before}
        model.config.ptcli_heads_per_layer = after
    model.save_pretrained(out)
    if recipe is not None:
        write_recipe(out, recipe)
    removed = {"heads": sum(before) - sum(after), "of_heads": sum(before), "heads_per_layer": after,
               "removed_per_layer": [b - a for b, a in zip(before, after)],
               "kept": [[int(u) for u in units] for units in keep]}
    return {"removed": removed, "loads_with": "ptcli (pruned-heads recipe)" if recipe else "from_pretrained"}


# ---- feed-forward neurons
def prune_ffn(model, scores: list, amount: float, out: Path) -> dict:
    """Remove the same number of lowest-scored intermediate neurons from every layer, update the config, save."""
    blocks = pruned.feed_forward_blocks(model)
    widths = [b.width for b in blocks]
    if len(set(widths)) != 1:
        raise PtcliError(f"the feed-forward widths differ between layers ({widths})",
                         fix="ffn pruning needs one intermediate_size for every layer")
    keep = choose(scores, amount, "layer", "feed-forward neurons")
    for block, neurons in zip(blocks, keep):
        pruned.keep_neurons(block, neurons)
    model.config.intermediate_size = len(keep[0])
    model.save_pretrained(out)
    return {"removed": {"neurons": sum(widths) - sum(len(k) for k in keep), "of_neurons": sum(widths),
                        "per_layer": widths[0] - len(keep[0]), "intermediate_size": len(keep[0])},
            "loads_with": "from_pretrained"}


# ---- the verb's compress step
def scores_for(task, loaded, method: str, blocks, cache, dist) -> list:
    """Per block, one importance score per unit (heads) or neuron (ffn), as ``importance`` says."""
    cfg = task.cfg
    if cfg.importance == "norm":
        scores = importance.head_norms(blocks) if method == "heads" else importance.neuron_norms(blocks)
    else:
        batches, objective = importance.training_batches(task, loaded, cfg.importance_batches, cfg.batch_size,
                                                         cfg.seed, cache, dist, task.log)
        grads = importance.head_gradients if method == "heads" else importance.neuron_gradients
        scores = grads(loaded.model, objective, batches, blocks)
    return importance.normalise_per_layer(scores) if method == "heads" else scores


def prune(task, loaded, out: Path, cache: Path, dist) -> dict:
    """Prune ``loaded.model`` as ``task.cfg`` says and save it into ``out``; returns the report's details."""
    import torch

    cfg = task.cfg
    torch.manual_seed(cfg.seed)
    model = loaded.model
    details = {"method": cfg.method, "amount": cfg.amount}
    if cfg.method == "magnitude":
        details |= {"scope": cfg.scope, **magnitude(model, cfg.amount, cfg.scope)}
        model.save_pretrained(out)
        return details
    blocks = pruned.attention_blocks(model) if cfg.method == "heads" else pruned.feed_forward_blocks(model)
    if not blocks:
        raise pruned.unsupported(model, "head" if cfg.method == "heads" else "feed-forward")
    scope = cfg.scope if cfg.method == "heads" else "layer"
    if cfg.method == "ffn" and cfg.scope == "global":
        task.log("ffn pruning removes the same count from every layer (scope=layer), so the config's "
                 "intermediate_size describes the model")
    task.log(f"scoring {'attention heads' if cfg.method == 'heads' else 'feed-forward neurons'} by {cfg.importance}")
    scores = scores_for(task, loaded, cfg.method, blocks, cache, dist)
    details |= {"scope": scope, "importance": cfg.importance}
    if cfg.method == "ffn":
        return details | prune_ffn(model, scores, cfg.amount, out)
    details["scores"] = [[round(float(x), 6) for x in s] for s in scores]  # per layer, per head (or kv group)
    return details | prune_heads(model, scores, cfg.amount, scope, out)
