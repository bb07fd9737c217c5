"""LoRA adapters as models: saving one so that ptcli (and peft) can find its base again, and loading one anywhere a
model is accepted, merged into its base.

An adapter folder (``model/`` of a ``+peft=lora`` run, or its ``adapter/``) holds PEFT's ``adapter_config.json``
and ``adapter_model.safetensors``, the tokenizer and ``ptcli_adapter.json``: the task model's config (head, labels,
dropout), which the base's own config.json lacks. Loading reads safetensors only and never runs a folder's code.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

from ptcli.config.paths import ADAPTER_CONFIG, ADAPTER_INFO, adapter_base, looks_local, missing_base, resolve_model_dir
from ptcli.errors import PtcliError

WEIGHTS = "adapter_model.safetensors"



@contextlib.contextmanager
def peft_quietly():
    """peft reads ``model.is_gradient_checkpointing``, which transformers 5 deprecates with a FutureWarning on every
    wrap: news for peft's authors, not for a ptcli user."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.* is deprecated",
                                category=FutureWarning)
        yield

def prepare_save(model) -> None:
    """Before ``save_pretrained``: record the base as an absolute, resolved folder (``outputs/x/latest`` moves; a
    relative path depends on the directory a later command runs in), or as the Hub name it was loaded by."""
    for config in model.peft_config.values():
        name = config.base_model_name_or_path
        if name and looks_local(str(name)):
            folder = resolve_model_dir(str(name))
            config.base_model_name_or_path = str((folder or Path(name)).expanduser().resolve())


def write_info(model, folder: Path) -> None:
    """``ptcli_adapter.json``: the task model's config, with its class in ``architectures``."""
    base = model.get_base_model()
    config = base.config.to_dict()
    config["architectures"] = [type(base).__name__]
    (Path(folder) / ADAPTER_INFO).write_text(json.dumps({"config": config}, indent=1, default=str) + "\n")


def base_or_error(folder: Path) -> str:
    """The base model's path or Hub name, or an error naming what was tried and how to fix it."""
    base, tried = adapter_base(folder)
    if base is None:
        what, fix = missing_base(folder, tried)
        raise PtcliError(what, where="model.path", fix=fix)
    return base


def task_config(folder: Path):
    """The task model's config saved with the adapter (None for adapters saved without it: the base's is used)."""
    info = Path(folder) / ADAPTER_INFO
    if not info.is_file():
        return None
    import transformers

    try:
        saved = dict(json.loads(info.read_text())["config"])
        cls = transformers.CONFIG_MAPPING[saved.pop("model_type")]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PtcliError(f"cannot read the model config in {info}: {type(e).__name__} {e}",
                         fix="Delete that file to use the base model's own config, or re-create the adapter") from None
    return cls.from_dict(saved)


def load(auto, folder: Path, load_base, log=None, **kwargs):
    """The base (through ``load_base``, ptcli's ``load_pretrained``, with the task config) with the adapter in
    ``folder`` merged into it: an ordinary transformers model every verb uses as it is."""
    folder = Path(folder)
    peft_config = json.loads((folder / ADAPTER_CONFIG).read_text())
    if peft_config.get("peft_type") != "LORA" or peft_config.get("megatron_config"):
        raise PtcliError(f"'{folder}' holds a {peft_config.get('peft_type')} adapter"
                         f"{' for Megatron' if peft_config.get('megatron_config') else ''}, which ptcli does not load",
                         fix="Use a LoRA adapter (ptcli finetune +peft=lora)")
    if not (folder / WEIGHTS).is_file():
        raise PtcliError(f"'{folder}' has no {WEIGHTS}; ptcli loads adapter weights from safetensors only (a pickled "
                         "adapter_model.bin could run code)", fix="Save the adapter with safe_serialization=True")
    try:
        from peft import PeftModel
    except ImportError:
        raise PtcliError("loading a LoRA adapter needs the peft package", fix="pip install peft") from None
    base_name = base_or_error(folder)
    config = task_config(folder)
    if config is not None:  # what the caller sets (labels, dropout) goes into the saved config
        for key in [k for k in kwargs if hasattr(config, k)]:
            setattr(config, key, kwargs.pop(key))
        kwargs["config"] = config
    base = load_base(auto, base_name, log=None, **kwargs)  # its new head is no news: the adapter holds the trained one
    with peft_quietly():
        model = PeftModel.from_pretrained(base, str(folder), is_trainable=False)
    missing = _missing_adapter_weights(model, folder)
    if missing:
        raise PtcliError(f"the adapter in '{folder}' does not fit its base '{base_name}': no weights for "
                         f"{', '.join(missing[:4])}", fix="Load the adapter with the base model it was trained on")
    merged = model.merge_and_unload()
    merged.ptcli_new_weights = []  # the adapter held them
    merged.name_or_path = merged.config._name_or_path = str(folder)  # a new adapter on it names this one as its base
    if log is not None:
        log(f"LoRA adapter {folder} merged into its base model {base_name}")
    return merged


def _missing_adapter_weights(model, folder: Path) -> list[str]:
    from peft import get_peft_model_state_dict
    from safetensors import safe_open

    with safe_open(str(folder / WEIGHTS), "pt") as f:
        saved = set(f.keys())
    wanted = set(get_peft_model_state_dict(model))
    return sorted(wanted - saved)
