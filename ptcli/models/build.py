"""Build a model from the ``model`` config (random init) or load it from a path; the objective names the auto class."""

from __future__ import annotations

from pathlib import Path

from ptcli.config.paths import is_adapter, resolve_model_dir
from ptcli.errors import PtcliError
from ptcli.models.convert import load_converted
from ptcli.models.families import is_ctc, size_keys


def hf_config_kwargs(model_cfg, vocab_size: int | None, tokenizer=None) -> dict:
    """The Hugging Face config keyword arguments for a from-scratch model (``vocab_size`` None: not a text model)."""
    keys = size_keys(model_cfg.arch)
    kwargs: dict = {} if vocab_size is None else {"vocab_size": vocab_size}
    if model_cfg.tie_embeddings is not None:
        kwargs["tie_word_embeddings"] = bool(model_cfg.tie_embeddings)
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
    kwargs.update(plain_extra(model_cfg))
    return kwargs


def plain_extra(model_cfg) -> dict:
    """``model.extra`` as plain Python values (transformers' typed configs refuse OmegaConf lists: conv_dim)."""
    extra = model_cfg.extra or {}
    if not isinstance(extra, dict):
        from omegaconf import OmegaConf

        extra = OmegaConf.to_container(extra, resolve=True)
    return dict(extra)


def build_model(model_cfg, auto_class: str, tokenizer=None, log=None, **head_kwargs):
    """A model of the objective's ``auto_class`` (``AutoModelForCausalLM``, ...): from ``model.path`` if set, else
    random init from the sizes (a masked autoencoder at ``model.path`` becomes a ViT classifier: ``models.convert``).
    ``tokenizer`` None: a model without token embeddings (vision, speech)."""
    import transformers

    auto = getattr(transformers, auto_class)
    if model_cfg.path:
        head_kwargs |= pretrained_overrides(model_cfg, head_kwargs, log or print)
        model = load_converted(auto_class, model_cfg.path, log, **head_kwargs)  # a family transformers cannot map
        if model is None:
            model = load_pretrained(auto, model_cfg.path, log=log,
                                    trust_remote_code=bool(model_cfg.trust_remote_code), **head_kwargs)
        if tokenizer is not None:
            check_vocab(len(tokenizer), model.get_input_embeddings().num_embeddings, "the model at model.path")
        return model
    if tokenizer is not None:
        check_vocab(len(tokenizer), model_cfg.vocab_size, "model.vocab_size")
    # Exactly model.vocab_size rows, even when a tokenizer trained on a small corpus came out smaller:
    # the model is the size the config says (and the dry-run estimate), and checkpoints stay compatible.
    vocab = model_cfg.vocab_size if tokenizer is not None else None
    try:
        config = transformers.AutoConfig.for_model(
            model_cfg.arch, **hf_config_kwargs(model_cfg, vocab, tokenizer), **head_kwargs)
    except (ValueError, KeyError) as e:
        raise PtcliError(f"cannot build model.arch '{model_cfg.arch}': {e}",
                         fix="Use a Hugging Face model_type such as gpt2, llama or bert") from None
    if tokenizer is not None and getattr(config, "is_encoder_decoder", False) \
            and getattr(config, "decoder_start_token_id", None) is None:
        # T5 starts decoding from the pad token; a config built from scratch does not say so by itself
        config.decoder_start_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    try:
        return auto.from_config(config)
    except ValueError as e:
        raise PtcliError(f"model.arch '{model_cfg.arch}' cannot be built as {auto_class}: {e}",
                         fix="Pick an architecture that fits the objective (gpt2/llama for clm, bert for mlm)",
                         ) from None


# Config keys that fix the shape of a trained model's input weights (patch and position embeddings, convolutions).
SHAPE_KEYS = ("image_size", "patch_size", "num_channels", "conv_dim", "conv_kernel", "conv_stride")


def pretrained_overrides(model_cfg, head_kwargs: dict, log) -> dict:
    """Config overrides for a pretrained model: ``model.dropout`` (and ``model.extra``), and a re-initialised
    classification head (with a warning) when the checkpoint's label count differs from the data's."""
    from ptcli.config.paths import read_model_config

    saved = read_model_config(model_cfg.path) or {}
    out: dict = {}
    if model_cfg.dropout is not None:
        keys = size_keys(saved.get("model_type")).get("dropout", "attention_dropout")
        for key in keys if isinstance(keys, tuple) else (keys,):
            out[key] = model_cfg.dropout
    extra = plain_extra(model_cfg)
    family, preset = saved.get("model_type"), getattr(model_cfg, "arch", None)
    if extra and preset and family and family.replace("_", "-") != str(preset).replace("_", "-"):
        log(f"model.extra left out: its settings are for model.arch {preset} (the preset's), and the model "
            f"at model.path is a {family}")
        extra = {}
    fixed = {k: v for k, v in extra.items() if k in SHAPE_KEYS and k in saved and saved[k] != v}
    if fixed:  # a preset's input shape (vit-tiny's 16x16 images) must not reshape a trained model's weights
        log("model.extra " + ", ".join(f"{k}={v}" for k, v in fixed.items()) + " left out: the model at model.path "
            "was trained with " + ", ".join(f"{k}={saved[k]}" for k in fixed) + ", which its weights fix")
    out |= {k: v for k, v in extra.items() if k not in fixed}
    wanted = head_kwargs.get("num_labels")
    has_head = any(a.endswith(("ForSequenceClassification", "ForTokenClassification", "ForImageClassification",
                               "ForAudioClassification"))
                   for a in saved.get("architectures") or [])
    old = len(saved.get("id2label") or {}) or saved.get("num_labels")
    if wanted is not None and has_head and old and old != wanted:
        log(f"warning: the checkpoint's head has {old} labels but the data has {wanted}: "
            "re-initialising the classification head")
        out["ignore_mismatched_sizes"] = True
    vocab = head_kwargs.get("vocab_size")  # a CTC head over a new character vocabulary
    if vocab is not None and saved.get("vocab_size") not in (None, vocab) and is_ctc(saved.get("architectures")):
        log(f"warning: the checkpoint's CTC head spells {saved['vocab_size']} tokens but the vocabulary has {vocab}: "
            "re-initialising the CTC head")
        out["ignore_mismatched_sizes"] = True
    return out


def load_pretrained(auto, path: str, log=None, trust_remote_code: bool = False, **kwargs):
    """``from_pretrained`` on a local folder or run dir, or a Hub name (needs network), with friendly errors.
    A folder's own Python code (``auto_map``) runs only with ``trust_remote_code`` (typed on the command line),
    after a warning naming its files.

    transformers' own load report (a table on stdout) is replaced by one line naming new weights."""
    from transformers.utils import logging as hf_logging

    from ptcli.config.paths import check_hub

    kwargs.pop("trust_remote_code", None)  # model.extra cannot switch it on (validation says so too)
    folder = resolve_model_dir(path)
    if folder is None:
        check_hub(path)
    if trust_remote_code:
        files = sorted(p.name for p in (folder or Path(".")).glob("*.py")) if folder else ["(the Hub repository's)"]
        (log or print)(f"warning: model.trust_remote_code=true: transformers will run the Python code of '{path}' "
                       f"({', '.join(files) or 'none found'})")
    from ptcli.models import adapters, restore

    if folder is not None and is_adapter(folder):  # a LoRA run's model/: its base with the adapter merged in
        return adapters.load(auto, folder, load_pretrained, log, **kwargs)  # never a folder's code
    recipe = restore.recipe_of(folder)
    if recipe is not None:  # quantized or head-pruned: rebuilt from the recipe beside the weights
        return restore.load(auto, folder, recipe, log)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = auto.from_pretrained(str(folder or path), output_loading_info=True,
                                           trust_remote_code=trust_remote_code, **kwargs)
        new = sorted(set(info.get("missing_keys") or []) | {k for k, *_ in info.get("mismatched_keys") or []})
        model.ptcli_new_weights = new  # LoRA trains and saves these in full (the adapter alone would lose them)
        if new and log is not None:
            shown = ", ".join(new[:6]) + (f" and {len(new) - 6} more" if len(new) > 6 else "")
            log(f"newly initialised (not in the checkpoint): {shown}")
        return model
    except OSError as e:
        raise PtcliError(f"cannot load a model from '{path}': {str(e).splitlines()[0]}",
                         fix="Point model.path at a model folder, a ptcli run directory, or a Hub name "
                             "(the Hub needs network access)") from None
    except ValueError as e:
        if "trust_remote_code" in str(e):
            raise remote_code_refused(path) from None
        raise
    finally:
        hf_logging.set_verbosity(verbosity)


def remote_code_refused(path: str) -> PtcliError:
    """A model folder that needs its own Python code, which ptcli does not run unless asked on the command line."""
    return PtcliError(f"the model at '{path}' needs its own Python code (its config names classes in .py files), "
                      "which ptcli does not run", where="model.path",
                      fix="Use a model transformers supports natively; to run that code anyway, read it first and "
                          "type model.trust_remote_code=true on the command line")


def check_vocab(tokenizer_size: int, model_size: int, what: str) -> None:
    """Every token id must have an embedding row."""
    if tokenizer_size > model_size:
        raise PtcliError(f"the tokenizer has {tokenizer_size} tokens but {what} has only {model_size} embeddings",
                         fix="Raise model.vocab_size, or use a tokenizer that matches the model")
