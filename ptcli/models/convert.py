"""Loading a checkpoint as a model transformers has no auto mapping for: a masked autoencoder's encoder (vit_mae)
as a ViT image classifier with a new head, the fine-tuning half of the MAE recipe."""

from __future__ import annotations

from ptcli.errors import PtcliError

# The ViTMAEConfig keys that describe its encoder (the same keys, meaning the same, in ViTConfig).
ENCODER_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
                "hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range", "layer_norm_eps",
                "image_size", "patch_size", "num_channels", "qkv_bias")
LOAD_ONLY = ("ignore_mismatched_sizes",)  # from_pretrained arguments, not config values


def load_converted(auto_class: str, path: str, log=None, **kwargs):
    """The model at ``path`` as ``auto_class`` when ptcli converts its family to that class; None otherwise (load
    it as usual). ``kwargs``: config values for the new model (num_labels, id2label, dropout, ...)."""
    from ptcli.config.paths import read_model_config

    saved = read_model_config(path) or {}
    convert = CONVERSIONS.get((saved.get("model_type"), auto_class))
    return None if convert is None else convert(path, log or print, **kwargs)


def vit_classifier_from_mae(path: str, log, **kwargs):
    """A ``ViTForImageClassification`` whose encoder (patch and position embeddings, [CLS], every layer, the final
    layer norm) is the masked autoencoder's at ``path``; only the classifier is new. The decoder is dropped."""
    import transformers
    from transformers.utils import logging as hf_logging

    from ptcli.config.paths import resolve_model_dir

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # transformers' load report: this function says what it did in one line
    try:
        mae = transformers.ViTMAEForPreTraining.from_pretrained(str(resolve_model_dir(path) or path))
    except OSError as e:
        raise PtcliError(f"cannot load the masked autoencoder at '{path}': {str(e).splitlines()[0]}",
                         fix="Point model.path at a ptcli mae run or its model/ folder") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    values = {k: getattr(mae.config, k) for k in ENCODER_KEYS} | {k: v for k, v in kwargs.items()
                                                                  if k not in LOAD_ONLY}
    model = transformers.ViTForImageClassification(transformers.ViTConfig(**values))
    ours = model.state_dict()
    encoder = {k: v for k, v in mae.state_dict().items() if k.startswith("vit.")}
    copied = {k: v for k, v in encoder.items() if k in ours and ours[k].shape == v.shape}
    uncopied = sorted(k for k in ours if k.startswith("vit.") and k not in copied)
    if uncopied:
        raise PtcliError(f"the encoder of the masked autoencoder at '{path}' does not fit a ViT of its sizes: "
                         f"{', '.join(uncopied[:4])}{' ...' if len(uncopied) > 4 else ''} "
                         f"{'differ' if any(k in encoder for k in uncopied) else 'are missing'}",
                         fix="Fine-tune with the pretraining run's sizes (model.extra.image_size, patch_size and "
                             "num_channels as it had them)")
    model.load_state_dict(copied, strict=False)
    new = sorted(set(ours) - set(copied))
    log(f"model: a ViT classifier from the masked autoencoder at '{path}': its encoder ({len(copied)} tensors) "
        f"copied, the decoder dropped; newly initialised: {', '.join(new)}")
    return model


CONVERSIONS = {("vit_mae", "AutoModelForImageClassification"): vit_classifier_from_mae}
