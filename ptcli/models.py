"""Build a model from the ``model`` config (random init) or load it from a path; the objective picks the head."""

from __future__ import annotations

from ptcli.config.paths import resolve_model_dir
from ptcli.errors import PtcliError

HEADS = {
    "causal_lm": "AutoModelForCausalLM",
    "masked_lm": "AutoModelForMaskedLM",
    "sequence_classification": "AutoModelForSequenceClassification",
    "token_classification": "AutoModelForTokenClassification",
    "seq2seq_lm": "AutoModelForSeq2SeqLM",
}

# Our size names -> each architecture's Hugging Face config keys (a tuple sets several keys to one value).
ARCH_KEYS = {
    "gpt2": {"layers": "n_layer", "heads": "n_head", "hidden": "n_embd", "intermediate": "n_inner",
             "max_positions": "n_positions", "dropout": ("resid_pdrop", "embd_pdrop", "attn_pdrop")},
    "bert": {"layers": "num_hidden_layers", "heads": "num_attention_heads", "hidden": "hidden_size",
             "intermediate": "intermediate_size", "max_positions": "max_position_embeddings",
             "dropout": ("hidden_dropout_prob", "attention_probs_dropout_prob")},
}
GENERIC_KEYS = {"layers": "num_hidden_layers", "heads": "num_attention_heads", "kv_heads": "num_key_value_heads",
                "hidden": "hidden_size", "intermediate": "intermediate_size",
                "max_positions": "max_position_embeddings", "dropout": "attention_dropout"}


def hf_config_kwargs(model_cfg, vocab_size: int, tokenizer=None) -> dict:
    """The Hugging Face config keyword arguments for a from-scratch model."""
    keys = ARCH_KEYS.get(model_cfg.arch, GENERIC_KEYS)
    kwargs: dict = {"vocab_size": vocab_size, "tie_word_embeddings": bool(model_cfg.tie_embeddings)}
    for ours, theirs in keys.items():
        value = getattr(model_cfg, ours, None)
        if ours == "intermediate" and value is None:
            value = 4 * model_cfg.hidden
        if value is None:
            continue
        for key in theirs if isinstance(theirs, tuple) else (theirs,):
            kwargs[key] = value
    if tokenizer is not None:
        for name in ("bos", "eos", "pad"):
            token_id = getattr(tokenizer, f"{name}_token_id", None)
            if token_id is not None:
                kwargs[f"{name}_token_id"] = token_id
    kwargs.update(dict(model_cfg.extra or {}))
    return kwargs


def build_model(model_cfg, head: str, tokenizer, **head_kwargs):
    """A model with the objective's ``head``: from ``model.path`` if set, else random init from the sizes."""
    import transformers

    auto = getattr(transformers, HEADS[head])
    if model_cfg.path:
        model = load_pretrained(auto, model_cfg.path, **head_kwargs)
        check_vocab(len(tokenizer), model.get_input_embeddings().num_embeddings, "the model at model.path")
        return model
    check_vocab(len(tokenizer), model_cfg.vocab_size, "model.vocab_size")
    # Exactly model.vocab_size rows, even when a tokenizer trained on a small corpus came out smaller:
    # the model is the size the config says (and the dry-run estimate), and checkpoints stay compatible.
    vocab = model_cfg.vocab_size
    try:
        config = transformers.AutoConfig.for_model(
            model_cfg.arch, **hf_config_kwargs(model_cfg, vocab, tokenizer), **head_kwargs)
    except (ValueError, KeyError) as e:
        raise PtcliError(f"cannot build model.arch '{model_cfg.arch}': {e}",
                         fix="Use a Hugging Face model_type such as gpt2, llama or bert") from None
    try:
        return auto.from_config(config)
    except ValueError as e:
        raise PtcliError(f"model.arch '{model_cfg.arch}' has no {head.replace('_', ' ')} head: {e}",
                         fix="Pick an architecture that fits the objective (gpt2/llama for clm, bert for mlm)",
                         ) from None


def load_pretrained(auto, path: str, **kwargs):
    """``from_pretrained`` on a local folder or run dir, or a Hub name (needs network), with friendly errors."""
    folder = resolve_model_dir(path)
    try:
        return auto.from_pretrained(str(folder or path), **kwargs)
    except OSError as e:
        raise PtcliError(f"cannot load a model from '{path}': {str(e).splitlines()[0]}",
                         fix="Point model.path at a model folder, a ptcli run directory, or a Hub name "
                             "(the Hub needs network access)") from None


def load_tokenizer(path: str):
    """The tokenizer saved in a folder or run dir (or a Hub name), with a clear error when there is none."""
    from transformers import AutoTokenizer

    folder = resolve_model_dir(path)
    try:
        return AutoTokenizer.from_pretrained(str(folder or path))
    except (OSError, ValueError, TypeError) as e:
        raise PtcliError(f"no usable tokenizer at '{path}': {str(e).splitlines()[0]}",
                         fix="Save a tokenizer in that folder, or set tokenizer.path") from None


def check_vocab(tokenizer_size: int, model_size: int, what: str) -> None:
    """Every token id must have an embedding row."""
    if tokenizer_size > model_size:
        raise PtcliError(f"the tokenizer has {tokenizer_size} tokens but {what} has only {model_size} embeddings",
                         fix="Raise model.vocab_size, or use a tokenizer that matches the model")
