"""Load a model for inference: which kind it is (causal, seq2seq, fill-mask), its head, tokenizer and context."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptcli.config.paths import resolve_model_dir
from ptcli.errors import PtcliError

KINDS = ("causal", "seq2seq", "fill-mask")
KIND_HEADS = {"causal": "causal_lm", "seq2seq": "seq2seq_lm", "fill-mask": "masked_lm"}
ENCODER_TYPES = {"bert", "roberta", "distilbert", "electra", "deberta", "deberta-v2", "albert", "xlm-roberta",
                 "modernbert", "camembert", "mpnet", "megatron-bert", "ernie"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "spiece.model",
                   "tokenizer.model", "sentencepiece.bpe.model")


@dataclass
class Loaded:
    """A model ready for inference, and what the verbs need to know about it."""

    model: Any
    tokenizer: Any
    kind: str  # causal | seq2seq | fill-mask
    context: int | None  # the most positions the model takes (None: no fixed limit)
    placement: Any  # ptcli.training.device.Placement
    path: str


def run_config(path: str | None) -> dict | None:
    """The saved ``config.yaml`` of a ptcli run directory (``path`` is the run or its ``model/``), else None."""
    if not path:
        return None
    p = Path(path).expanduser()
    for run in (p, p.parent if p.name == "model" else None):
        if run is not None and (run / "config.yaml").is_file() and (run / "model" / "config.json").is_file():
            import yaml

            return yaml.safe_load((run / "config.yaml").read_text()) or {}
    return None


def objective_kind(objective: dict | None) -> str | None:
    """The inference kind a training objective implies (clm -> causal, mlm -> fill-mask, seq2seq), else None."""
    target = (objective or {}).get("_target_", "")
    if target.endswith("clm.CausalLM") or ".sft." in target:
        return "causal"
    if target.endswith("mlm.MaskedLM"):
        return "fill-mask"
    if "seq2seq" in target.lower():
        return "seq2seq"
    return None


def hf_config(path: str):
    """The model's Hugging Face config (a local folder, a run directory or a Hub name)."""
    from transformers import AutoConfig

    folder = resolve_model_dir(path)
    try:
        return AutoConfig.from_pretrained(str(folder or path))
    except (OSError, ValueError) as e:
        raise PtcliError(f"cannot load a model config from '{path}': {str(e).splitlines()[0]}",
                         fix="Point model.path at a model folder, a ptcli run directory, or a Hub name "
                             "(the Hub needs network access)") from None


def detect_kind(config, run_cfg: dict | None = None) -> str:
    """causal, seq2seq or fill-mask: from the run's objective, else the config (encoder-decoder flag,
    architectures, model_type). Raises PtcliError for heads that do not generate (classifiers)."""
    kind = objective_kind((run_cfg or {}).get("objective"))
    if kind:
        return kind
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    for arch in getattr(config, "architectures", None) or []:
        if arch.endswith("ForMaskedLM") or arch.endswith("ForPreTraining"):
            return "fill-mask"
        if arch.endswith(("ForConditionalGeneration", "Seq2SeqLM")):
            return "seq2seq"
        if arch.endswith(("ForCausalLM", "LMHeadModel")):
            return "causal"
    archs = getattr(config, "architectures", None) or []
    if archs and all(a.endswith(("ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering"))
                     for a in archs):
        raise PtcliError(f"the model is a {archs[0]}, which does not generate text",
                         fix="Use `ptcli evaluate` for fine-tuned classifiers; generate needs a causal LM, a "
                             "seq2seq model or a masked LM")
    return "fill-mask" if getattr(config, "model_type", None) in ENCODER_TYPES else "causal"


def context_length(config) -> int | None:
    """The most positions the model was built for (None for relative-position models such as T5)."""
    for key in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def tokenizer_folder(path: str) -> str:
    """Where the tokenizer is: the model folder, or a run directory's ``tokenizer/``; a Hub name as is.

    transformers 5 quietly builds an empty tokenizer for a local folder that has none, so look for the files.
    """
    folder = resolve_model_dir(path)
    if folder is None:
        return path
    candidates = [folder]
    if folder.name == "model":
        candidates.append(folder.parent / "tokenizer")
    for candidate in candidates:
        if any((candidate / name).is_file() for name in TOKENIZER_FILES):
            return str(candidate)
    raise PtcliError(f"no tokenizer in the model folder '{folder}'",
                     fix=f"Save one there (tokenizer.save_pretrained('{folder}')) or copy its tokenizer files "
                         "(tokenizer.json, tokenizer_config.json) into it")


def load_tokenizer_for(path: str, kind: str, log):
    """The model's tokenizer, set up for batched inference (a pad token; left padding for decoder-only)."""
    from ptcli.models import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_folder(path))
    if len(tokenizer) <= 1:
        raise PtcliError(f"the tokenizer at '{path}' is empty", fix="Save the model's tokenizer in its folder")
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise PtcliError("the tokenizer has neither a pad nor an end-of-text token, which batching needs",
                             fix="Use batch_size=1, or add a pad token to the tokenizer")
        tokenizer.pad_token = tokenizer.eos_token
        log(f"the tokenizer has no pad token; padding with its end-of-text token {tokenizer.eos_token!r}")
    tokenizer.padding_side = "left" if kind == "causal" else "right"
    if kind == "fill-mask" and tokenizer.mask_token_id is None:
        raise PtcliError(f"the tokenizer at '{path}' has no mask token, which filling masks needs",
                         fix="Use a masked LM's tokenizer (WordPiece/BERT), or kind=causal")
    return tokenizer


def load_for_inference(model_cfg, device_cfg, kind: str = "auto", log=print) -> Loaded:
    """Model (with the head its kind needs), tokenizer and placement, in eval mode on the chosen device."""
    import transformers

    from ptcli.models import HEADS, load_pretrained
    from ptcli.training.device import resolve

    if not model_cfg.path:
        raise PtcliError("model.path is not set", fix="Set model.path=<run dir, model folder or Hub name>")
    path = str(model_cfg.path)
    config = hf_config(path)
    if kind == "auto":
        kind = detect_kind(config, run_config(path))
    tokenizer = load_tokenizer_for(path, kind, log)
    placement = resolve(device_cfg)
    auto = getattr(transformers, HEADS[KIND_HEADS[kind]])
    try:
        model = load_pretrained(auto, path)
    except ValueError as e:  # the architecture has no such head
        raise PtcliError(f"the model at '{path}' cannot be loaded as a {kind} model: {str(e).splitlines()[0]}",
                         fix="Set kind=causal, seq2seq or fill-mask to match the model") from None
    model.to(placement.device).eval()
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {config.model_type} ({kind}), {n_params / 1e6:.2f}M parameters, on {placement.device} "
        f"in {placement.precision}")
    return Loaded(model, tokenizer, kind, context_length(config), placement, path)
