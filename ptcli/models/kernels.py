"""Fused kernels for the element-wise layers Hugging Face writes as chains of operators (``device.fused_kernels``).

GPT-2's ``gelu_new`` (and ``gelu_fast``, ``gelu_accurate``, ``gelu_python_tanh``) is the tanh approximation of GELU
written out in Python: a cube, three products, a sum, a tanh and more, each a full pass over the MLP's widest
tensor forward and again backward. ``torch.nn.functional.gelu(approximate="tanh")`` computes the same function in
one fused kernel (transformers' own ``gelu_pytorch_tanh``, ``GELUTanh``): on this CPU its forward and backward take a
third of the time or less, and it equals the written-out form to within fp32 rounding. The swap happens in memory
only: activation modules hold no weights, the saved ``config.json`` still names the model's own activation, and the
folder stays an ordinary Hugging Face model.

RMSNorm is not swapped: torch's ``rms_norm`` is slower than Hugging Face's on CPU (docs/benchmarks.md).
"""

from __future__ import annotations

import torch


def _written_out(child: torch.nn.Module) -> bool:
    """Whether ``child`` is one of Hugging Face's written-out forms of the tanh GELU."""
    from transformers import activations

    slow = tuple(getattr(activations, n) for n in ("NewGELUActivation", "FastGELUActivation", "AccurateGELUActivation")
                 if hasattr(activations, n))
    if isinstance(child, slow):
        return True
    fused = getattr(activations, "GELUTanh", None)  # gelu_python_tanh: the fused class running the Python form
    return fused is not None and isinstance(child, fused) and \
        getattr(getattr(child, "act", None), "__name__", "") == "_gelu_tanh_python"


def fuse_activations(module: torch.nn.Module) -> int:
    """Swap every written-out tanh-GELU module inside ``module`` for torch's fused kernel, in place; returns how
    many were swapped (0 where transformers has no fused class)."""
    from transformers import activations

    if not hasattr(activations, "GELUTanh"):
        return 0
    swaps = [(parent, name) for parent in module.modules() for name, child in parent.named_children()
             if _written_out(child)]
    for parent, name in swaps:
        setattr(parent, name, activations.GELUTanh())
    return len(swaps)
