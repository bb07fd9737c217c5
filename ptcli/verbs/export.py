"""``ptcli export``: a checkpoint (whole, or FSDP's shards from any number of processes) as an ordinary Hugging
Face model folder, in one process and without a process group."""

from __future__ import annotations

import json
from pathlib import Path

from ptcli.errors import PtcliError
from ptcli.processing.loading import RUN_FOLDERS


def export_checkpoint(source: str, out: str, log=print, force: bool = False) -> Path:
    """Rebuild the model from the checkpoint's ``model_config/``, load its weights, add the run's tokenizer and
    write ``out`` (atomically). ``source``: a ``checkpoints/step-N`` folder or a run directory (its newest intact
    one). An existing non-empty ``out`` is replaced only with ``force``; never a folder that holds the checkpoint or
    the current directory."""
    from ptcli.training import checkpoint

    if not Path(source).exists():
        raise PtcliError(f"'{source}' does not exist", fix="Give a run directory or one of its checkpoints/step-N")
    path = Path(source)
    found = checkpoint.find_checkpoint(str(path), path, log, key="ptcli export")
    check_target(Path(out), found, force)
    run_dir = found.parent.parent
    config_dir = found / checkpoint.MODEL_CONFIG
    if not (config_dir / "config.json").is_file() and not (config_dir / "members.json").is_file():
        raise PtcliError(f"checkpoint {found} records no model config ({checkpoint.MODEL_CONFIG}/)",
                         fix="A LoRA run's checkpoints hold only the adapter: `ptcli export --merge <run> <folder>` "
                             "writes its final model merged; older checkpoints: resume the run with "
                             "train.resume=<checkpoint> and use its model/ folder")
    processor_dir = next((run_dir / n for n in RUN_FOLDERS if (run_dir / n).is_dir()), None)
    if processor_dir is None:
        raise PtcliError(f"no tokenizer/ in the run directory {run_dir}",
                         fix="Export from a checkpoint inside its run directory (<run>/checkpoints/step-N)")
    import torch
    import transformers

    from ptcli.models.export import save_folder
    from ptcli.models.modules import ModelSet, export_model_of
    from ptcli.processing.loading import load_processors

    transformers.utils.logging.disable_progress_bar()
    members_file = config_dir / "members.json"
    if members_file.is_file():  # a ModelSet: each member from its own config
        layout = json.loads(members_file.read_text())
        model = ModelSet({name: _from_config(config_dir / name) for name in layout["members"]}, layout["export"])
    else:
        layout, model = {}, _from_config(config_dir)
    if (found / checkpoint.SHARDED).is_dir():
        load_sharded_weights(found / checkpoint.SHARDED, model)
    elif layout:
        from safetensors.torch import load_file

        state = load_file(str(found / "model.safetensors"))
        for names in layout.get("shared", []):  # one tensor, stored once under one of its names
            stored = next(state[n] for n in names if n in state)
            state.update({n: stored for n in names})
        model.load_state_dict(state)
    else:
        from safetensors.torch import load_model

        load_model(model, str(found / "model.safetensors"))
    processors = load_processors(str(processor_dir))
    with torch.no_grad():
        written = save_folder(export_model_of(model).eval(), processors, Path(out))
    log(f"exported {found} to {written}")
    return written


def export_merged(source: str, out: str, log=print, force: bool = False) -> Path:
    """``ptcli export --merge``: a LoRA run's adapter (``source``: the run directory, its ``model/`` or ``adapter/``,
    or an adapter folder) folded into its base's weights, written to ``out`` as an ordinary Hugging Face folder
    with the tokenizer."""
    from ptcli.config.paths import adapter_folder, read_model_config

    path = Path(source)
    if not path.exists():
        raise PtcliError(f"'{source}' does not exist", fix="Give a LoRA run directory (ptcli finetune +peft=lora)")
    folder = adapter_folder(source) or adapter_folder(str(path / "adapter"))
    if folder is None:
        raise PtcliError(f"'{source}' holds no LoRA adapter (adapter_config.json), so there is nothing to merge",
                         where="ptcli export --merge",
                         fix="Use --merge with a run of `ptcli finetune +peft=lora`; a run without LoRA needs no "
                             "merge: its model/ is already an ordinary Hugging Face folder (and `ptcli export <run> "
                             "<folder>` exports its newest checkpoint)")
    check_target(Path(out), folder, force)
    import torch
    import transformers

    from ptcli.models.build import load_pretrained
    from ptcli.models.export import save_folder
    from ptcli.processing.loading import load_processors

    transformers.utils.logging.disable_progress_bar()
    arch = ((read_model_config(str(folder)) or {}).get("architectures") or [""])[0]
    auto = getattr(transformers, arch, None) if arch.endswith(("Model", "LMHeadModel")) or "For" in arch else None
    if not (isinstance(auto, type) and issubclass(auto, transformers.PreTrainedModel)):
        auto = _auto_for_task(folder)
    model = load_pretrained(auto, str(folder), log=log)  # merged (models/adapters.py)
    with torch.no_grad():
        written = save_folder(model.eval(), load_processors(str(folder)), Path(out))
    log(f"merged the LoRA adapter {folder} into its base: {written}")
    return written


def _auto_for_task(folder: Path):
    """The auto class for an adapter saved without ptcli_adapter.json, from its peft task type."""
    import transformers

    task = json.loads((folder / "adapter_config.json").read_text()).get("task_type")
    name = {"CAUSAL_LM": "AutoModelForCausalLM", "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM",
            "SEQ_CLS": "AutoModelForSequenceClassification", "TOKEN_CLS": "AutoModelForTokenClassification"}.get(
        task, "AutoModel")
    return getattr(transformers, name)


def check_target(out: Path, checkpoint_dir: Path, force: bool) -> None:
    """Refuse a target whose files would be lost: a non-empty folder (or a file) unless ``force``; and, always, a
    folder that contains the checkpoint or the current directory (``..``, ``.``, the run directory)."""
    target, here = out.expanduser().resolve(), Path.cwd().resolve()
    for inside, what in ((checkpoint_dir.resolve(), "the checkpoint"), (here, "the current directory")):
        if inside == target or target in inside.parents:
            raise PtcliError(f"'{out}' holds {what}: exporting there would replace it", where="ptcli export",
                             fix="Name a new folder for the model, e.g. ptcli export <checkpoint> my-model")
    if target.is_file():
        raise PtcliError(f"'{out}' is a file", fix="Name a folder for the model")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise PtcliError(f"'{out}' exists and is not empty; ptcli export does not replace a folder's files unless "
                         "asked", fix="Name a new folder, or add --force to replace that folder's contents")


def _from_config(folder: Path):
    import transformers

    config = transformers.AutoConfig.from_pretrained(folder)
    cls = getattr(transformers, (config.architectures or [""])[0], None)
    if cls is None:
        raise PtcliError(f"transformers has no model class {config.architectures}", where=str(folder))
    return cls(config)


def load_sharded_weights(folder: Path, model) -> None:
    """The model part of an FSDP checkpoint into a plain model (the optimizer shards are not read)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    from ptcli.training import safe_dcp

    state = {"model": get_model_state_dict(model)}
    safe_dcp.load(state, folder)  # no pickle code runs, whatever the files hold
    set_model_state_dict(model, state["model"])
