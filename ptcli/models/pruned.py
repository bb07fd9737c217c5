"""Structured pruning's surgery, and rebuilding a model whose layers have different attention head counts.

Attention heads and feed-forward neurons are removed by slicing the weights that produce and consume them: the
query/key/value rows of a head (and their biases) and the matching input columns of the attention's output
projection; a neuron's rows of the intermediate projection(s) and its column of the output projection. The module
attributes the forward pass reads (BERT: ``num_attention_heads``, ``all_head_size``; Llama: the projections' sizes,
``head_dim`` stays) follow.

Families: the BERT family (every attention shaped like ``BertAttention``: ``self.query/key/value`` and
``output.dense``; BERT, RoBERTa, ELECTRA, ...) and the Llama family (``q_proj/k_proj/v_proj/o_proj`` with a
``head_dim``; Llama, Mistral, Qwen2, ...). In a Llama with grouped-query attention a *unit* is one key/value head and
the query heads that share it; elsewhere a unit is one head.

transformers 5 sizes every BERT layer's attention from ``hidden_size // num_attention_heads``, so a BERT with heads
removed (and a Llama with different counts per layer) cannot be rebuilt by ``from_pretrained``: its folder holds
``ptcli_recipe.json`` ``{"kind": "pruned-heads", "heads_per_layer": [...]}`` beside ``model.safetensors``, and
``load`` builds the model from its config, slices each layer to the saved count and loads the weights strictly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptcli.errors import PtcliError

KIND = "pruned-heads"


@dataclass
class Attention:
    """One self-attention block: its projections, the module whose attributes describe it, and its shape."""

    family: str  # bert | llama
    module: Any  # BertSelfAttention / LlamaAttention
    q: Any
    k: Any
    v: Any
    o: Any  # the output projection: its input columns are the heads' outputs
    heads: int  # query heads
    kv_heads: int
    head_dim: int

    @property
    def group(self) -> int:
        """Query heads per unit (1 without grouped-query attention)."""
        return self.heads // self.kv_heads

    @property
    def units(self) -> int:
        return self.kv_heads


@dataclass
class FeedForward:
    """One feed-forward block: the projections into the intermediate width (rows) and out of it (columns)."""

    family: str
    module: Any
    into: list  # Linear layers whose output rows are the neurons (BERT: intermediate.dense; Llama: gate, up)
    out: Any  # the Linear whose input columns are the neurons

    @property
    def width(self) -> int:
        return self.out.in_features


def attention_blocks(model) -> list[Attention]:
    """The self-attention blocks of ``model`` in layer order (cross-attention left out)."""
    import torch.nn as nn

    found = []
    for module in model.modules():
        inner, output = getattr(module, "self", None), getattr(module, "output", None)
        if (inner is not None and not getattr(module, "is_cross_attention", False)
                and all(isinstance(getattr(inner, n, None), nn.Linear) for n in ("query", "key", "value"))
                and isinstance(getattr(output, "dense", None), nn.Linear)
                and hasattr(inner, "num_attention_heads")):
            size = inner.attention_head_size
            heads = inner.query.out_features // size
            found.append(Attention("bert", inner, inner.query, inner.key, inner.value, output.dense, heads, heads,
                                   size))
        elif (all(isinstance(getattr(module, n, None), nn.Linear) for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
              and isinstance(getattr(module, "head_dim", None), int)):
            size = module.head_dim
            heads, kv_heads = module.q_proj.out_features // size, module.k_proj.out_features // size
            if kv_heads and heads % kv_heads == 0:
                found.append(Attention("llama", module, module.q_proj, module.k_proj, module.v_proj, module.o_proj,
                                       heads, kv_heads, size))
    return found


def feed_forward_blocks(model) -> list[FeedForward]:
    """The feed-forward blocks of ``model`` in layer order."""
    import torch.nn as nn

    found = []
    for module in model.modules():
        inter, output = getattr(module, "intermediate", None), getattr(module, "output", None)
        if (isinstance(getattr(inter, "dense", None), nn.Linear) and isinstance(getattr(output, "dense", None),
                                                                                   nn.Linear)
                and hasattr(module, "attention")):
            found.append(FeedForward("bert", module, [inter.dense], output.dense))
        elif all(isinstance(getattr(module, n, None), nn.Linear) for n in ("gate_proj", "up_proj", "down_proj")):
            found.append(FeedForward("llama", module, [module.gate_proj, module.up_proj], module.down_proj))
    return found


def unsupported(model, what: str) -> PtcliError:
    return PtcliError(f"{what} pruning does not know the layers of this {model.config.model_type} model",
                      fix="Structured pruning supports the BERT family (bert, roberta, electra) and the Llama family "
                          "(llama, mistral, qwen2); use method=magnitude for other models")


def _rows(linear, index) -> None:
    """Keep the output rows ``index`` of ``linear`` (and its bias), in place."""
    import torch.nn as nn

    linear.weight = nn.Parameter(linear.weight.data[index].clone(), requires_grad=linear.weight.requires_grad)
    if linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias.data[index].clone(), requires_grad=linear.bias.requires_grad)
    linear.out_features = len(index)


def _columns(linear, index) -> None:
    """Keep the input columns ``index`` of ``linear``, in place (its bias is per output and stays)."""
    import torch.nn as nn

    linear.weight = nn.Parameter(linear.weight.data[:, index].clone(), requires_grad=linear.weight.requires_grad)
    linear.in_features = len(index)


def keep_units(block: Attention, keep: list[int]) -> None:
    """Slice ``block`` down to the units (heads, or key/value groups) ``keep`` (sorted indices, at least one)."""
    import torch

    if not keep:
        raise PtcliError("cannot remove every attention head of a layer", fix="Lower amount")
    keep = sorted(keep)
    d, r = block.head_dim, block.group
    q_heads = [u * r + j for u in keep for j in range(r)]
    q_index = torch.tensor([h * d + i for h in q_heads for i in range(d)], dtype=torch.long)
    kv_index = torch.tensor([u * d + i for u in keep for i in range(d)], dtype=torch.long)
    _rows(block.q, q_index)
    _rows(block.k, kv_index if block.family == "llama" else q_index)
    _rows(block.v, kv_index if block.family == "llama" else q_index)
    _columns(block.o, q_index)
    block.heads, block.kv_heads = len(q_heads), len(keep)
    if block.family == "bert":
        block.module.num_attention_heads = block.heads
        block.module.all_head_size = block.heads * d


def keep_neurons(block: FeedForward, keep: list[int]) -> None:
    """Slice ``block`` down to the intermediate neurons ``keep``."""
    import torch

    index = torch.tensor(sorted(keep), dtype=torch.long)
    for linear in block.into:
        _rows(linear, index)
    _columns(block.out, index)
    if hasattr(block.module, "intermediate_size"):
        block.module.intermediate_size = len(index)


def set_uniform_heads(config, heads: int, kv_heads: int, head_dim: int) -> None:
    """A Llama-family config for ``heads`` query and ``kv_heads`` key/value heads in every layer (``head_dim`` stated,
    so from_pretrained keeps the head size)."""
    config.num_attention_heads, config.num_key_value_heads, config.head_dim = heads, kv_heads, head_dim


def slice_to_counts(model, heads_per_layer: list[int]) -> None:
    """Slice every attention block of a freshly built model to the recipe's query-head counts (the first heads: the
    weights loaded next overwrite them)."""
    blocks = attention_blocks(model)
    if len(blocks) != len(heads_per_layer):
        raise PtcliError(f"the pruning recipe lists {len(heads_per_layer)} layers but the model has {len(blocks)} "
                         "attention blocks", fix="Re-create the model folder with ptcli prune")
    for block, heads in zip(blocks, heads_per_layer):
        if heads % block.group or not 0 < heads <= block.heads:
            raise PtcliError(f"the pruning recipe asks for {heads} heads in a layer of {block.heads}",
                             fix="Re-create the model folder with ptcli prune")
        if heads < block.heads:
            keep_units(block, list(range(heads // block.group)))


def state_dict_of(folder: Path) -> dict:
    """Every tensor in the folder's safetensors files (one file or shards)."""
    from safetensors.torch import load_file

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise PtcliError(f"{folder} holds no .safetensors weights", fix="Re-create the model folder with ptcli prune")
    out = {}
    for file in files:
        out.update(load_file(str(file)))
    return out


def load(auto, folder: Path, recipe: dict, log=None):
    """The model saved in ``folder`` with ``recipe["heads_per_layer"]`` query heads in each layer."""
    from transformers import AutoConfig

    heads = recipe.get("heads_per_layer")
    if not isinstance(heads, list) or not all(isinstance(h, int) for h in heads):
        raise PtcliError(f"{folder}/ptcli_recipe.json has no list of heads_per_layer",
                         fix="Re-create the model folder with ptcli prune")
    config = AutoConfig.from_pretrained(str(folder))
    model = auto.from_config(config)
    slice_to_counts(model, heads)
    state = state_dict_of(folder)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not _tied(model, k, state)]
    if missing or unexpected:
        shown = ", ".join((missing + unexpected)[:6])
        raise PtcliError(f"the weights in {folder} do not fit the pruned model ({shown})",
                         fix="Re-create the model folder with ptcli prune")
    model.tie_weights()
    model.config.ptcli_heads_per_layer = list(heads)
    if log is not None:
        log(f"pruned attention: {sum(heads)} heads in {len(heads)} layers ({', '.join(map(str, heads))})")
    return model.eval()


def _tied(model, name: str, state: dict) -> bool:
    """A parameter save_pretrained leaves out because it is another one (tied embeddings), whose tensor is saved."""
    params = dict(model.named_parameters(remove_duplicate=False))
    target = params.get(name)
    if target is None:
        return False
    return any(other in state for other, p in params.items() if p is target and other != name)
