"""Cross-entropy through a causal LM's output layer, a chunk of positions at a time (the idea of Liger's fused linear
cross-entropy and of cut-cross-entropy): the ``batch x seq x vocab`` logits are never materialised at once.

The plain path keeps the logits, their fp32 copy and the fp32 gradient of the softmax alive together: with
SmolLM2's 49,152-token vocabulary that is 3 x 200 MB per 1,024-token sequence, more than its weights. Here each
chunk's logits are computed, turned into the loss and into the gradients of the hidden states and of the output
layer's weight (the loss is a scalar, so backward only scales them), and freed. The model runs its own forward,
hooks and wrappers included (DDP, PEFT, compile), asked for its hidden states and the last position's logits only
(``logits_to_keep=1``); those logits check, once per model, that its logits really are its output layer applied
to its last hidden state (no soft-capping or scaling in between). Anything else falls back to the plain path.
"""

from __future__ import annotations

import functools
import weakref

from ptcli.config.estimate import CHUNK_LOGIT_BYTES
from ptcli.objectives.base import LossOutput, summed_cross_entropy

# Per model: its output layer where the chunked path may apply, else None (output_layer, looked up once).
_HEADS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# Per model: whether its logits are its output layer applied to its last hidden state (checked on its first batch).
_DECIDED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# Config attributes of model families that transform the logits after the output layer.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_logits_scaling")


def causal_lm_loss(model, labels, chunked: bool = True, **inputs) -> LossOutput:
    """Summed next-token cross-entropy of ``model(**inputs)`` against ``labels`` (already shifted, -100 ignored)."""
    if chunked and may_chunk(model):
        out = model(**inputs, output_hidden_states=True, logits_to_keep=1)
        head = agreeing_head(model, out)
        if head is not None:
            return linear_cross_entropy(out.hidden_states[-1], head.weight, head.bias, labels)
    return summed_cross_entropy(model(**inputs).logits, labels)


def may_chunk(model) -> bool:
    """Whether the chunked path may apply to ``model``: an output layer it can use, not yet found to disagree."""
    return chunk_head(model) is not None and _DECIDED.get(model, True)


def chunk_head(model):
    """``output_layer(model)``, looked up once per model (the loss asks every step)."""
    if model not in _HEADS:
        _HEADS[model] = output_layer(model)
    return _HEADS[model]


def output_layer(model):
    """The plain ``nn.Linear`` output layer of a causal LM that takes ``logits_to_keep``, under DDP, PEFT or
    compile; None where the chunked path does not apply (FSDP's sharded weights, adapted or quantized heads,
    models that transform their logits)."""
    import inspect

    import torch

    from ptcli.models.modules import unwrap

    outer = unwrap(model)  # compile, DDP
    inner = outer.get_base_model() if hasattr(outer, "get_base_model") else outer  # PEFT
    if any(type(m).__name__.startswith("FSDP") for m in (outer, inner)):  # FSDP2 shards in place: weights not whole
        return None
    if not hasattr(inner, "get_output_embeddings"):
        return None
    config = getattr(inner, "config", None)
    if any(getattr(config, name, None) not in (None, 1, 1.0) for name in _LOGIT_TRANSFORMS):
        return None
    head = inner.get_output_embeddings()
    if type(head) is not torch.nn.Linear or type(head.weight) is not torch.nn.Parameter:  # DTensor: sharded
        return None
    if "logits_to_keep" not in inspect.signature(inner.forward).parameters:
        return None
    return head


def _agrees(hidden, head, logits) -> bool:
    """Whether the model's last-position logits equal its output layer applied to its last hidden state."""
    import torch

    with torch.no_grad():
        mine = torch.nn.functional.linear(hidden[:, -1].to(head.weight.dtype), head.weight, head.bias).float()
        theirs = logits[:, -1].float()
        scale = 1.0 + theirs.abs().max().item()
        tolerance = 1e-4 if hidden.dtype == torch.float32 else 2e-2
        return mine.shape == theirs.shape and (mine - theirs).abs().max().item() <= tolerance * scale


def chunk_rows(rows: int, vocab: int, budget_bytes: int = CHUNK_LOGIT_BYTES) -> int:
    """Rows per chunk: the largest power of two whose fp32 logits fit ``budget_bytes`` (128 MiB: 682 rows of
    SmolLM2's 49,152-token vocabulary -> 512), at least 16, at most ``rows``. Large enough that each chunk's
    matrix products run at full speed, small enough that the chunk is a rounding error beside the full logits."""
    fit = max(16, budget_bytes // (4 * max(1, vocab)))
    return max(1, min(rows, 1 << (fit.bit_length() - 1)))


def linear_cross_entropy(hidden, weight, bias, labels, chunk: int | None = None) -> LossOutput:
    """``summed_cross_entropy(hidden @ weight.T + bias, labels)``, chunked; differentiable in hidden, weight, bias."""
    import torch

    flat = hidden.reshape(-1, hidden.size(-1))
    flat_labels = labels.reshape(-1)
    chunk = chunk or chunk_rows(flat.size(0), weight.size(0))
    grads = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (flat, weight, bias))
    if grads:
        total = _autograd_function().apply(flat, weight, bias, flat_labels, chunk)
    else:
        total, _ = _chunked(flat, weight, bias, flat_labels, chunk, need=(False, False, False))
    return LossOutput(total, (flat_labels != -100).sum())


def _chunked(hidden, weight, bias, labels, chunk: int, need: tuple[bool, bool, bool]):
    """The summed loss and, where ``need`` says, the gradients of hidden, weight and bias (fp32 accumulators)."""
    import torch

    dtype = hidden.dtype
    w = weight.to(dtype)
    b = bias.to(dtype) if bias is not None else None
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    grad_hidden = torch.empty_like(hidden) if need[0] else None
    grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need[1] else None
    grad_bias = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need[2] else None
    for start in range(0, hidden.size(0), chunk):
        h = hidden[start:start + chunk]
        y = labels[start:start + chunk]
        # log_softmax in one fused pass (logsumexp would take two more over the chunk: x - max, then exp)
        log_probs = torch.log_softmax(torch.nn.functional.linear(h, w, b).float(), dim=-1)
        valid = y != -100
        safe = torch.where(valid, y, 0)
        total -= torch.where(valid, log_probs.gather(1, safe[:, None])[:, 0], 0.0).sum()
        if not any(need):
            continue
        # d(loss)/d(logits) = softmax - one_hot(label), zero on ignored positions; in place over the log-probabilities
        probs = log_probs.exp_()
        probs[torch.arange(probs.size(0), device=probs.device), safe] -= 1.0
        probs *= valid[:, None]
        _accumulate(probs, h, w, start, (grad_hidden, grad_weight, grad_bias))
    return total, (grad_hidden, grad_weight, grad_bias)


def _accumulate(g, h, w, start: int, grads) -> None:
    """Add a chunk's share to the gradients, given d(loss)/d(logits) ``g`` (fp32) for its rows ``h`` from ``start``:
    the hidden states' rows (written), the output layer's weight and bias (accumulated in fp32); None: not needed."""
    import torch

    grad_hidden, grad_weight, grad_bias = grads
    if grad_bias is not None:
        grad_bias += g.sum(0)
    g = g.to(h.dtype)
    if grad_hidden is not None:
        torch.mm(g, w, out=grad_hidden[start:start + g.size(0)])
    if grad_weight is not None:
        if h.dtype == torch.float32:
            grad_weight.addmm_(g.T, h)
        else:
            grad_weight += (g.T @ h).float()


def _save_grads(ctx, grads, hidden, weight, bias) -> None:
    """Keep the forward's gradients (None where not needed) for ``_scaled_grads``."""
    import torch

    ctx.grad_dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
    ctx.save_for_backward(*(g if g is not None else torch.empty(0) for g in grads))
    ctx.present = tuple(g is not None for g in grads)


def _scaled_grads(ctx, grad_total) -> list:
    """The saved gradients of hidden, weight and bias times the incoming gradient of the loss (a scalar)."""
    return [(g * grad_total).to(dtype) if present else None
            for g, present, dtype in zip(ctx.saved_tensors, ctx.present, ctx.grad_dtypes)]


@functools.cache
def _autograd_function():
    """The autograd function, defined on first use (torch is imported lazily)."""
    import torch

    class LinearCrossEntropy(torch.autograd.Function):
        """Forward computes the loss and its gradients chunk by chunk; backward scales them by the incoming one."""

        @staticmethod
        def forward(ctx, hidden, weight, bias, labels, chunk):
            need = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], bias is not None and ctx.needs_input_grad[2])
            with torch.autocast(hidden.device.type, enabled=False):
                total, grads = _chunked(hidden, weight, bias, labels, chunk, need)
            _save_grads(ctx, grads, hidden, weight, bias)
            return total

        @staticmethod
        def backward(ctx, grad_total):
            return *_scaled_grads(ctx, grad_total), None, None

    return LinearCrossEntropy


def agreeing_head(model, out):
    """``model``'s output layer when ``out`` (its outputs with hidden states and ``logits_to_keep=1``) shows that its
    logits are that layer applied to its last hidden state (checked once per model); else None."""
    head = chunk_head(model)
    if head is None:
        return None
    if model not in _DECIDED:
        _DECIDED[model] = _agrees(out.hidden_states[-1], head, out.logits)
    return head if _DECIDED[model] else None


def linear_distillation(hidden, head, labels, teacher_hidden, teacher_head, temperature: float, task_weight: float,
                        soft_weight: float, cut: int | None = None, chunk: int | None = None):
    """Token-level distillation of a causal LM through both output layers, a chunk of positions at a time:

        total = task_weight * CE(student, labels) + soft_weight * KL(teacher_T || student_T)

    summed over the labelled positions (labels already shifted, -100 ignored), the soft term over the first ``cut``
    vocabulary ids. Returns (total, task sum, soft sum, count); only ``total`` is differentiable (in the student's
    hidden states and output layer). Neither model's ``batch x seq x vocab`` logits exist at once, and each chunk's
    student logits are computed once for both terms."""
    import torch

    flat = hidden.reshape(-1, hidden.size(-1))
    teacher_flat = teacher_hidden.reshape(-1, teacher_hidden.size(-1))
    flat_labels = labels.reshape(-1)
    vocab = min(head.weight.size(0), teacher_head.weight.size(0))
    cut = min(cut or vocab, vocab)
    chunk = chunk or chunk_rows(flat.size(0), 2 * head.weight.size(0))  # two vocab-wide tensors per chunk
    teacher = (teacher_flat.detach(), teacher_head.weight.detach(),
               teacher_head.bias.detach() if teacher_head.bias is not None else None)
    weights = (task_weight, soft_weight, float(temperature), cut)
    grads = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (flat, head.weight, head.bias))
    if grads:
        total, task, soft = _distill_function().apply(flat, head.weight, head.bias, flat_labels, teacher, weights,
                                                      chunk)
    else:
        (total, task, soft), _ = _chunked_distill(flat, head.weight, head.bias, flat_labels, teacher, weights, chunk,
                                                  need=(False, False, False))
    return total, task, soft, (flat_labels != -100).sum()


def _chunked_distill(hidden, weight, bias, labels, teacher, weights, chunk: int, need: tuple[bool, bool, bool]):
    """(total, task, soft) sums and, where ``need`` says, the gradients of ``total`` in hidden, weight and bias."""
    import torch

    task_weight, soft_weight, T, cut = weights
    t_hidden, t_weight, t_bias = teacher
    dtype = hidden.dtype
    w = weight.to(dtype)
    b = bias.to(dtype) if bias is not None else None
    tw = t_weight.to(t_hidden.dtype)
    tb = t_bias.to(t_hidden.dtype) if t_bias is not None else None
    sums = torch.zeros(2, dtype=torch.float32, device=hidden.device)  # task, soft
    grad_hidden = torch.empty_like(hidden) if need[0] else None
    grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need[1] else None
    grad_bias = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need[2] else None
    for start in range(0, hidden.size(0), chunk):
        h = hidden[start:start + chunk]
        y = labels[start:start + chunk]
        valid = y != -100
        safe = torch.where(valid, y, 0)
        logits = torch.nn.functional.linear(h, w, b).float()
        lse = torch.logsumexp(logits, dim=-1)
        sums[0] += torch.where(valid, lse - logits.gather(1, safe[:, None])[:, 0], 0.0).sum()
        log_pt = torch.log_softmax(torch.nn.functional.linear(t_hidden[start:start + chunk], tw, tb)[:, :cut].float()
                                   / T, dim=-1)
        log_ps = torch.log_softmax(logits[:, :cut] / T, dim=-1)
        p_t = log_pt.exp()
        sums[1] += torch.where(valid, (p_t * (log_pt - log_ps)).sum(-1), 0.0).sum()
        if not any(need):
            continue
        # d(total)/d(logits): task_weight * (softmax - one_hot) + soft_weight * (softmax_T - p_teacher) / T on the
        # first `cut` ids, zero on ignored positions; in place over the logits
        g = logits.sub_(lse[:, None]).exp_().mul_(task_weight)
        g[torch.arange(g.size(0), device=g.device), safe] -= task_weight
        g[:, :cut] += log_ps.exp_().sub_(p_t).mul_(soft_weight / T)
        g *= valid[:, None]
        _accumulate(g, h, w, start, (grad_hidden, grad_weight, grad_bias))
    task, soft = sums[0], sums[1]
    return (task_weight * task + soft_weight * soft, task, soft), (grad_hidden, grad_weight, grad_bias)


@functools.cache
def _distill_function():
    import torch

    class LinearDistillation(torch.autograd.Function):
        """Forward computes the sums and the gradients of the total chunk by chunk; backward scales them."""

        @staticmethod
        def forward(ctx, hidden, weight, bias, labels, teacher, weights, chunk):
            need = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], bias is not None and ctx.needs_input_grad[2])
            with torch.autocast(hidden.device.type, enabled=False):
                (total, task, soft), grads = _chunked_distill(hidden, weight, bias, labels, teacher, weights, chunk,
                                                              need)
            _save_grads(ctx, grads, hidden, weight, bias)
            ctx.mark_non_differentiable(task, soft)
            return total, task, soft

        @staticmethod
        def backward(ctx, grad_total, _task, _soft):
            return *_scaled_grads(ctx, grad_total), None, None, None, None

    return LinearDistillation
