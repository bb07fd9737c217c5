"""Write a model as an ordinary Hugging Face folder (config, safetensors, processors), atomically; its size."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def save_folder(model, processors, out: Path) -> Path:
    """``save_pretrained`` of the model and each processor into a new temporary sibling, then swapped in for ``out``
    (an old ``out`` is moved aside first and removed last): ``out`` is always whole, the old one or the new one."""
    import tempfile

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=out.parent))
    adapter = getattr(model, "peft_config", None) is not None
    if adapter:
        from ptcli.models import adapters

        adapters.prepare_save(model)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        if adapter:
            adapters.write_info(model, tmp)
        if processors is not None:
            processors.save_pretrained(tmp)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".old-{out.name}-", dir=out.parent))
            os.rename(out, old / out.name)
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def transformer_shape(model) -> tuple[int, int, int] | None:
    """(non-embedding parameters, layers, width) of the trained Hugging Face models in ``model``, summed over members,
    for a FLOPs estimate; None when nothing in it says its shape."""
    from ptcli.models.modules import hf_members

    members = hf_members(model)
    if not members:
        return None
    n = layers = hidden = 0
    for member in members.values():
        config = member.config
        width = next((getattr(config, k) for k in ("hidden_size", "n_embd", "d_model")
                      if isinstance(getattr(config, k, None), int)), None)
        depth = next((getattr(config, k) for k in ("num_hidden_layers", "n_layer", "num_layers")
                      if isinstance(getattr(config, k, None), int)), None)
        if width is None or depth is None:
            return None
        embeddings = {id(p) for m in member.modules() if type(m).__name__ == "Embedding" for p in m.parameters()}
        n += sum(p.numel() for p in member.parameters() if p.requires_grad and id(p) not in embeddings)
        layers += depth * (2 if getattr(config, "is_encoder_decoder", False) else 1)
        hidden = max(hidden, width)
    return n, layers, hidden
