"""Fine-tuning controls on top of the shared loop: freezing, layer-wise rates, LoRA adapters (PEFT) and the final
export (the best evaluation's weights, adapters, merging)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from ptcli.errors import PtcliError

# transformers' module names for the stack of blocks: bert.encoder.layer.3, transformer.h.3, model.layers.3,
# encoder.block.3 (T5), ...
LAYER_RE = re.compile(r"\.(?:layer|layers|h|block|blocks)\.(\d+)\.")
HEAD_MODULES = {"classifier", "score", "qa_outputs", "lm_head", "cls", "pooler"}


def layer_id(name: str, n_layers: int) -> int:
    """0 for embeddings, 1..n for transformer block i-1, n+1 for everything above (head, pooler, final norm)."""
    if "embed" in name or "wte" in name or "wpe" in name:
        return 0
    match = LAYER_RE.search(f".{name}")
    return int(match.group(1)) + 1 if match else n_layers + 1


def count_layers(model) -> int:
    ids = [int(m.group(1)) for n, _ in model.named_parameters() if (m := LAYER_RE.search(f".{n}"))]
    return max(ids) + 1 if ids else 0


def is_head(name: str) -> bool:
    """Parameters of the task head (trained even when everything else is frozen)."""
    return bool(HEAD_MODULES & set(name.split(".")))


def freeze(model, tune, log) -> None:
    """``tune.freeze_embeddings``, ``tune.freeze_layers`` (the first N blocks), ``tune.head_only`` or
    ``tune.trainable`` (only the named modules train: ``classifier``, ``bert.encoder.layer.5``)."""
    trainable = list(getattr(tune, "trainable", None) or [])
    if trainable:
        missing = [t for t in trainable if not any(f".{t}." in f".{name}" for name, _ in model.named_parameters())]
        if missing:
            tops = sorted({name.split(".")[0] for name, _ in model.named_parameters()})
            raise PtcliError(f"tune.trainable names modules the model does not have: {', '.join(missing)}",
                             fix=f"name modules by their path in the model, e.g. one of: {', '.join(tops)}")
    if not (tune.freeze_embeddings or tune.freeze_layers or tune.head_only or trainable):
        return
    n_layers = count_layers(model)
    if tune.freeze_layers > n_layers:
        raise PtcliError(f"tune.freeze_layers={tune.freeze_layers} but the model has {n_layers} layers",
                         fix=f"use a value from 0 to {n_layers}")
    frozen = 0
    for name, p in model.named_parameters():
        lid = layer_id(name, n_layers)
        off = (tune.head_only and not is_head(name)) or (tune.freeze_embeddings and lid == 0) or \
            (0 < lid <= tune.freeze_layers) or (tune.freeze_layers and lid == 0) or \
            (trainable and not any(f".{t}." in f".{name}" for t in trainable))
        if off:
            p.requires_grad_(False)
            frozen += p.numel()
    if frozen == sum(p.numel() for p in model.parameters()):
        raise PtcliError("the freezing settings leave nothing to train",
                         fix="freeze fewer layers (tune.freeze_layers) or unset tune.head_only")
    log(f"frozen: {frozen / 1e6:.2f}M parameters")


def layer_scales(model, decay: float) -> dict[str, float]:
    """Layer-wise learning-rate decay: the head gets the full rate, each block below ``decay`` times less."""
    n = count_layers(model)
    return {name: decay ** (n + 1 - layer_id(name, n)) for name, _ in model.named_parameters()}


def apply_peft(model, peft_cfg, settings: dict, log):
    """Wrap ``model`` in LoRA adapters; the task head (if any) stays fully trainable and is saved with them.
    ``settings``: the objective's LoraConfig arguments (its task type, modules to save)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise PtcliError("peft=lora needs the peft package", fix="pip install peft") from None
    if peft_cfg.method != "lora":
        raise PtcliError(f"peft.method '{peft_cfg.method}' is not supported", fix="use +peft=lora")
    kwargs = {"r": peft_cfg.r, "lora_alpha": peft_cfg.alpha, "lora_dropout": peft_cfg.dropout, **settings}
    # weights the base checkpoint lacks (a new head, BERT's pooler) are random: trained and saved in full, so that
    # the adapter and its base rebuild the same model anywhere
    new = sorted({k.rsplit(".", 1)[0] for k in getattr(model, "ptcli_new_weights", None) or ()})
    if new:
        kwargs["modules_to_save"] = sorted({*(kwargs.get("modules_to_save") or ()), *new})
        log(f"LoRA: trained in full, as the base checkpoint lacks them: {', '.join(new)}")
    if peft_cfg.target_modules:
        kwargs["target_modules"] = list(peft_cfg.target_modules)
    from ptcli.models.adapters import peft_quietly

    try:
        with peft_quietly():
            wrapped = get_peft_model(model, LoraConfig(**kwargs))
    except ValueError as e:
        raise PtcliError(f"cannot add LoRA adapters: {str(e).splitlines()[0]}",
                         fix="set peft.target_modules to the model's attention projections, e.g. [query,value] "
                             "(BERT), [c_attn] (GPT-2), [q_proj,v_proj] (Llama)") from None
    trainable, total = wrapped.get_nb_trainable_parameters()
    log(f"LoRA r={peft_cfg.r} alpha={peft_cfg.alpha}: {trainable / 1e6:.3f}M of {total / 1e6:.2f}M parameters "
        "trainable")
    return wrapped


def export_final(plain, processors, objective, run_dir: Path, cfg, log) -> Path:
    """``model/``: the best evaluation's weights (train.export=best, when there was an evaluation) or the last,
    written by the objective (``plain``: the gathered trained module).

    With LoRA, ``adapter/`` holds the adapter in PEFT's format; ``model/`` is the merged model when
    ``peft.merge`` is true, else a copy of the adapter (transformers loads it when peft is installed).
    """
    from ptcli.models.export import save_folder

    out, best = run_dir / "model", run_dir / "best"
    use_best = cfg.train.export == "best" and (best / "ptcli_best.json").is_file()
    if use_best:
        log(f"final model: the best evaluation by val_{cfg.train.best_metric}")
    if cfg.get("peft") is None:
        final = _replace(best, out) if use_best else objective.export(plain, processors, out)
    else:
        if use_best:  # the adapter weights of the best evaluation back into the model
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(plain, load_file(str(best / "adapter_model.safetensors")))
        adapter = save_folder(plain, processors, run_dir / "adapter")
        if cfg.peft.merge:
            import copy

            final = save_folder(copy.deepcopy(plain).merge_and_unload(), processors, out)
        else:
            final = _replace(adapter, out, copy=True)
    shutil.rmtree(best, ignore_errors=True)
    return final


def _replace(src: Path, dst: Path, copy: bool = False) -> Path:
    """Put ``src`` at ``dst`` (moved, or copied), through a temporary name."""
    tmp = dst.with_name(f".tmp-{dst.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp) if copy else src.rename(tmp)
    (tmp / "ptcli_best.json").unlink(missing_ok=True)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return dst
