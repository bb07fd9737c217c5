"""Back-of-the-envelope parameter count and memory for a config, without building the model (no torch)."""

from __future__ import annotations

from ptcli.config.paths import read_model_config

# Hugging Face config.json spellings of the sizes, by our names.
_HF_KEYS = {
    "layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "heads": ("num_attention_heads", "n_head", "num_heads"),
    "kv_heads": ("num_key_value_heads",),
    "hidden": ("hidden_size", "n_embd", "d_model"),
    "intermediate": ("intermediate_size", "n_inner", "d_ff"),
    "max_positions": ("max_position_embeddings", "n_positions"),
    "vocab_size": ("vocab_size",),
}


def model_sizes(model: dict) -> dict | None:
    """The model's sizes by our names, from the config or from a local model folder's config.json."""
    if not model.get("path"):
        return dict(model)
    loaded = read_model_config(model["path"])
    if loaded is None:
        return None
    sizes = {"arch": loaded.get("model_type"), "tie_embeddings": loaded.get("tie_word_embeddings", True)}
    for ours, theirs in _HF_KEYS.items():
        sizes[ours] = next((loaded[k] for k in theirs if loaded.get(k) is not None), None)
    return sizes


def count_parameters(s: dict) -> int:
    """Approximate trainable parameters (exact to within norms and biases for gpt2, llama and bert)."""
    h, n, v = s["hidden"], s["layers"], s["vocab_size"]
    inter = s.get("intermediate") or 4 * h
    heads = s.get("heads") or 1
    kv = s.get("kv_heads") or heads
    llama_like = s.get("arch") in ("llama", "mistral", "qwen2", "qwen3", "gemma")
    attention = 2 * h * h + 2 * h * (h * kv // heads)
    mlp = (3 if llama_like else 2) * h * inter
    embeddings = v * h + (0 if llama_like else (s.get("max_positions") or 0) * h)
    head = 0 if s.get("tie_embeddings", True) else v * h
    return n * (attention + mlp + 4 * h) + embeddings + head


# LoRA: the (input, output) widths of the projections a target module name stands for, in units of (hidden,
# intermediate, kv width); peft's default targets per architecture are the query and value projections.
_LORA_SHAPES = {
    **dict.fromkeys(("q", "query", "q_proj", "o", "o_proj", "out_proj", "dense", "c_proj"), ("h", "h")),
    **dict.fromkeys(("k", "key", "k_proj", "v", "value", "v_proj"), ("h", "kv")),
    **dict.fromkeys(("c_attn",), ("h", "3h")),
    **dict.fromkeys(("up_proj", "gate_proj", "fc1", "c_fc", "wi", "wi_0", "wi_1", "lin1"), ("h", "i")),
    **dict.fromkeys(("down_proj", "fc2", "wo", "lin2"), ("i", "h")),
}
_LORA_DEFAULTS = {"gpt2": ("c_attn",)}


def lora_parameters(s: dict, peft: dict) -> int:
    """Approximate LoRA parameters: r x (in + out) for every targeted projection of every layer."""
    h, heads = s["hidden"], s.get("heads") or 1
    width = {"h": h, "3h": 3 * h, "i": s.get("intermediate") or 4 * h, "kv": h * (s.get("kv_heads") or heads) // heads}
    targets = peft.get("target_modules") or _LORA_DEFAULTS.get(s.get("arch"), ("q", "v"))
    per_layer = sum(width[a] + width[b] for a, b in (_LORA_SHAPES.get(t.rsplit(".", 1)[-1], ("h", "h"))
                                                     for t in targets))
    return s["layers"] * peft.get("r", 8) * per_layer


HUGE_GIB = 4096  # an estimate above this is a typo (a hidden size of 10^6), not a plan


def warnings_for(verb: str, cfg: dict) -> list[str]:
    """The plan's warnings alone (printed before a real run too)."""
    try:
        return [line for line in plan(verb, cfg) if line.startswith("warning:")]
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return []


# The most fp32 logits one chunk of the chunked causal-LM loss holds (linear_ce.chunk_rows), here at the bottom
# of the layers so that the loss and both memory estimates (this one, models/memory.py) read the same number.
CHUNK_LOGIT_BYTES = 128 * 2**20


def plan(verb: str, cfg: dict) -> list[str]:
    """Lines describing model size, batch shape and memory, for ``--dry-run``."""
    if "model" not in cfg:
        tok = cfg["tokenizer"]
        return [f"tokenizer: {tok['kind']}, {tok['vocab_size']} tokens, "
                f"trained on {cfg['dataset']['_target_'].rsplit('.', 1)[-1]}"]
    sizes = model_sizes(cfg["model"])
    if sizes is None or sizes.get("hidden") is None or sizes.get("vocab_size") is None:
        return [f"model: {cfg['model'].get('path')} (loaded at run time; size unknown before loading)"]
    params = count_parameters(sizes)
    lines = [f"model: {sizes.get('arch')}, {sizes['layers']} layers, {sizes['hidden']} wide, "
             f"about {params / 1e6:.2f}M parameters"]
    train, data = cfg.get("train"), cfg.get("dataset")
    if train and data:
        from ptcli.config.validate import world_size

        micro = max(1, train["batch_size"] // (train["grad_accum"] * world_size()))
        seq = data["seq_len"]
        # fp32 weights + grads + two AdamW moments = 16 bytes per trained parameter; a frozen one (LoRA's base)
        # keeps only its 4 bytes of weight.
        peft = cfg.get("peft")
        trained = lora_parameters(sizes, peft) if peft else params
        state_gb = ((params + (trained if peft else 0)) * 4 + trained * 12) / 2**30
        # Activations kept for backward, per layer ~ seq*micro*hidden*(34 + 5*heads*seq/hidden) bytes at 16 bit
        # (Korthikanti et al. 2022); doubled for fp32.
        h, heads = sizes["hidden"], sizes.get("heads") or 1
        act_gb = 2 * sizes["layers"] * seq * micro * h * (34 + 5 * heads * seq / h) / 2**30
        logits_gb = 3 * micro * seq * sizes["vocab_size"] * 4 / 2**30
        if (cfg.get("objective") or {}).get("chunked_loss") and (cfg.get("device") or {}).get("strategy") != "fsdp":
            logits_gb = min(logits_gb, 2 * CHUNK_LOGIT_BYTES / 2**30)  # one chunk of logits and its gradient
        lines += [
            f"batch: {train['batch_size']} sequences x {seq} tokens = {train['batch_size'] * seq} tokens per step "
            f"({micro} per micro-batch, {train['grad_accum']} accumulation steps, {world_size()} process(es))",
            f"memory (fp32 + AdamW): about {state_gb:.2f} GiB for weights, gradients and optimizer state "
            f"+ {act_gb + logits_gb:.2f} GiB of activations per micro-batch",
        ]
        if peft:
            lines.insert(-1, f"LoRA r={peft.get('r', 8)}: about {trained / 1e6:.2f}M trained parameters "
                             f"({100 * trained / params:.2f}%); gradients and AdamW state for those alone, the base "
                             f"frozen")
        total = state_gb + act_gb + logits_gb
        if total > HUGE_GIB:
            lines.append(f"warning: about {total:,.0f} GiB is far beyond any single machine; check the model's sizes "
                         f"(model.hidden={h}, model.layers={sizes['layers']}, model.vocab_size={sizes['vocab_size']}) "
                         f"and train.batch_size / dataset.seq_len")
        teacher = teacher_parameters(cfg)
        if teacher:
            lines.append(f"distill: the teacher has about {teacher / 1e6:.2f}M parameters: +{teacher * 4 / 2**30:.2f} "
                         f"GiB of weights and a forward pass (2N FLOPs per token) every micro-batch")
        scheduler = cfg.get("scheduler") or {}
        warmup = max(scheduler.get("warmup_steps") or 0,
                     int((scheduler.get("warmup_ratio") or 0) * (train.get("max_steps") or 0)))
        if train.get("max_steps") and warmup >= train["max_steps"]:
            lines.append(f"warning: the warmup ({warmup} steps) is as long as the run (train.max_steps="
                         f"{train['max_steps']}): the learning rate never reaches optim.lr; lower "
                         "scheduler.warmup_steps or use scheduler.warmup_ratio")
        if train.get("max_steps"):
            flops = (6 * params + 2 * teacher) * train["max_steps"] * train["batch_size"] * seq
            lines.append(f"work: {train['max_steps']} steps = {train['max_steps'] * train['batch_size'] * seq:,} "
                         f"tokens, about {flops:.2e} FLOPs" + (" (the teacher's included)" if teacher else ""))
    return lines


def teacher_parameters(cfg: dict) -> int:
    """The distillation teacher's approximate parameters (0: no teacher, or one not on this machine)."""
    teacher = (cfg.get("distill") or {}).get("teacher")
    sizes = model_sizes({"path": teacher}) if teacher else None
    if not sizes or sizes.get("hidden") is None or sizes.get("vocab_size") is None or sizes.get("layers") is None:
        return 0
    return count_parameters(sizes)
