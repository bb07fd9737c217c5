"""Load a model for inference: which kind it is (causal, seq2seq, fill-mask), its head, processors and context."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptcli.config import plugins
from ptcli.config.paths import is_adapter, resolve_model_dir
from ptcli.errors import PtcliError
from ptcli.models import families
from ptcli.models.families import ENCODERS, SPEECH_SEQ2SEQ

# How generate and evaluate use a model of each inference kind: the transformers auto class that loads it.
KIND_CLASSES = {"causal": "AutoModelForCausalLM", "seq2seq": "AutoModelForSeq2SeqLM",
                "fill-mask": "AutoModelForMaskedLM", "replaced": "AutoModelForPreTraining"}


@dataclass
class Loaded:
    """A model ready for inference, and what the verbs need to know about it."""

    model: Any
    processors: Any  # ptcli.processing.loading.Processors
    kind: str  # causal | seq2seq | fill-mask | classify
    context: int | None  # the most positions the model takes (None: no fixed limit)
    placement: Any  # ptcli.models.placement.Placement
    path: str

    @property
    def tokenizer(self):
        return self.processors.tokenizer


def run_config(path: str | None) -> dict | None:
    """The saved ``config.yaml`` of a ptcli run directory (``path`` is the run or its ``model/``), else None."""
    if not path:
        return None
    p = Path(path).expanduser()
    for run in (p, p.parent if p.name == "model" else None):
        if run is not None and (run / "config.yaml").is_file() and (
                (run / "model" / "config.json").is_file() or (run / "model" / "adapter_config.json").is_file()):
            import yaml

            return yaml.safe_load((run / "config.yaml").read_text()) or {}
    return None


def objective_class(objective: dict | None):
    """The registered objective class a run's saved config names (None when it names none); a saved config may
    select ptcli's registered classes (and $PTCLI_ALLOW_TARGETS packages) only."""
    target = (objective or {}).get("_target_")
    if not target:
        return None
    return plugins.resolve(target, "objective")


def objective_kind(objective: dict | None) -> str | None:
    """The inference kind the run's objective declares for its models (causal, seq2seq, fill-mask, classify)."""
    cls = objective_class(objective)
    return getattr(cls, "inference", None) if cls is not None else None


def hf_config(path: str):
    """The model's Hugging Face config (a local folder, a run directory or a Hub name)."""
    from transformers import AutoConfig

    from ptcli.config import plugins
    from ptcli.config.paths import check_hub
    from ptcli.models.build import remote_code_refused

    folder = resolve_model_dir(path)
    if folder is None:
        check_hub(path)
    if folder is not None and is_adapter(folder):  # a LoRA adapter: the task model's config saved with it
        from ptcli.models import adapters

        return adapters.task_config(folder) or hf_config(adapters.base_or_error(folder))
    trust = str(plugins.typed("model.trust_remote_code")).lower() == "true"
    try:
        return AutoConfig.from_pretrained(str(folder or path), trust_remote_code=trust)
    except ValueError as e:
        if "trust_remote_code" in str(e):
            raise remote_code_refused(path) from None
        raise PtcliError(f"cannot load a model config from '{path}': {str(e).splitlines()[0]}",
                         fix="Point model.path at a model folder, a ptcli run directory, or a Hub name") from None
    except OSError as e:
        raise PtcliError(f"cannot load a model config from '{path}': {str(e).splitlines()[0]}",
                         fix="Point model.path at a model folder, a ptcli run directory, or a Hub name "
                             "(the Hub needs network access)") from None


def is_ctc(config) -> bool:
    """A speech model with a CTC head (it transcribes frame by frame; the others generate)."""
    return families.is_ctc(getattr(config, "architectures", None))


def detect_kind(config, run_cfg: dict | None = None) -> str:
    """causal, seq2seq, fill-mask, replaced (an ELECTRA discriminator) or transcribe (speech recognition):
    from the run's objective, else the config (encoder-decoder flag, architectures, model_type). Raises
    PtcliError for heads that do not generate (classifiers)."""
    kind = objective_kind((run_cfg or {}).get("objective"))
    if kind == "classify":
        raise PtcliError("the model is a fine-tuned classifier, which does not generate text",
                         fix="Use `ptcli evaluate` for fine-tuned classifiers; generate needs a causal LM, a "
                             "seq2seq model or a masked LM")
    if kind == "contrastive" or getattr(config, "model_type", None) == "vision-text-dual-encoder":
        raise PtcliError("the model is an image-text dual encoder (objective=contrastive), which does not generate "
                         "text", fix="Use `ptcli evaluate` on it (zero-shot accuracy, recall@k), or transformers' "
                                     "zero-shot-image-classification pipeline")
    if kind:
        return kind
    if getattr(config, "model_type", None) in SPEECH_SEQ2SEQ or is_ctc(config):
        return "transcribe"  # speech recognition: audio files in, transcripts out
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    if "ElectraForPreTraining" in (getattr(config, "architectures", None) or []):
        return "replaced"  # a discriminator: per-token replaced probabilities (its generator fills masks)
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
    return "fill-mask" if getattr(config, "model_type", None) in ENCODERS else "causal"


def context_length(config) -> int | None:
    """The most positions the model was built for (None for relative-position models such as T5)."""
    for key in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def load_tokenizer_for(path: str, kind: str, log, tokenizer=None):
    """The model's tokenizer, set up for batched inference (a pad token; left padding for decoder-only)."""
    from ptcli.processing.loading import load_tokenizer

    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(path)
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


def input_embeddings(model):
    """The token embeddings the tokenizer indexes: the model's own, or its text tower's (a dual encoder has no
    single input embedding); None when it has none."""
    for module in (model, getattr(model, "text_model", None)):
        try:
            return module.get_input_embeddings() if hasattr(module, "get_input_embeddings") else None
        except NotImplementedError:
            continue
    return None


def load_for_inference(model_cfg, device_cfg, kind: str = "auto", log=print, auto_class: str | None = None) -> Loaded:
    """Model (with the head its kind needs, or ``auto_class``), processors and placement, in eval mode on the chosen
    device."""
    import transformers

    from ptcli.models.build import load_pretrained
    from ptcli.models.placement import Placement, resolve
    from ptcli.processing.loading import Processors, load_processors

    if not model_cfg.path:
        raise PtcliError("model.path is not set", fix="Set model.path=<run dir, model folder or Hub name>")
    path = str(model_cfg.path)
    config = hf_config(path)
    if kind == "auto":
        kind = detect_kind(config, run_config(path)) if auto_class is None else "classify"
    if kind == "transcribe" and auto_class is None:
        auto_class = "AutoModelForCTC" if is_ctc(config) else "AutoModelForSpeechSeq2Seq"
    if kind in KIND_CLASSES:  # text generation: the tokenizer, set up for batches
        processors = Processors(tokenizer=load_tokenizer_for(path, kind, log))
    else:  # whatever the model was saved with: a tokenizer, an image processor, ...
        processors = load_processors(path)
        if processors.tokenizer is not None:
            processors["tokenizer"] = load_tokenizer_for(path, kind, log, processors.tokenizer)
    placement = resolve(device_cfg)
    auto = getattr(transformers, auto_class or KIND_CLASSES[kind])
    try:
        model = load_pretrained(auto, path, log=log, trust_remote_code=bool(model_cfg.get("trust_remote_code")))
    except ValueError as e:  # the architecture has no such head
        raise PtcliError(f"the model at '{path}' cannot be loaded as a {kind} model: {str(e).splitlines()[0]}",
                         fix="Set kind=causal, seq2seq or fill-mask to match the model") from None
    if getattr(model, "ptcli_quantized", None) and (placement.device.type != "cpu" or placement.precision != "fp32"):
        import torch

        log(f"the model is quantized to int8 ({model.ptcli_quantized}, ptcli quantize), which ptcli runs on the CPU "
            f"only: loading it on the CPU in fp32 instead of {placement.device} in {placement.precision}")
        placement = Placement(torch.device("cpu"), "fp32")
    if device_cfg.get("fused_kernels", True):  # GPT-2's gelu_new as torch's fused kernel (in memory only)
        from ptcli.models.kernels import fuse_activations

        fuse_activations(model)
    model.to(placement.device).eval()
    tokenizer = processors.tokenizer
    embeddings = input_embeddings(model)
    if tokenizer is not None and embeddings is not None and len(tokenizer) > embeddings.num_embeddings:
        raise PtcliError(f"the tokenizer at '{path}' has {len(tokenizer)} tokens but the model has only "
                         f"{embeddings.num_embeddings} embeddings: they were not saved together",
                         fix="Use the tokenizer the model was trained with (a ptcli run directory keeps it in "
                             "tokenizer/), or resize the model's embeddings")
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {config.model_type} ({kind}), {n_params / 1e6:.2f}M parameters, on {placement.device} "
        f"in {placement.precision}")
    return Loaded(model, processors, kind, context_length(config), placement, path)
