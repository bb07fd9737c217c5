"""``ptcli export``: a checkpoint (whole, or FSDP's shards from any number of processes) as an ordinary Hugging
Face model folder, in one process and without a process group."""

from __future__ import annotations

import json
from pathlib import Path

from ptcli.errors import PtcliError
from ptcli.processing.loading import RUN_FOLDERS


def export_checkpoint(source: str, out: str, log=print) -> Path:
    """Rebuild the model from the checkpoint's ``model_config/``, load its weights, add the run's tokenizer and
    write ``out`` (atomically). ``source``: a ``checkpoints/step-N`` folder or a run directory (its newest)."""
    from ptcli.training import checkpoint

    if not Path(source).exists():
        raise PtcliError(f"'{source}' does not exist", fix="Give a run directory or one of its checkpoints/step-N")
    path = Path(source)
    found = path if (path / checkpoint.COMPLETE).is_file() else checkpoint.CheckpointManager(path, 0).latest()
    if found is None:
        raise PtcliError(f"no complete checkpoint in '{source}'",
                         fix="Give a run directory with checkpoints/ or one of its checkpoints/step-N folders")
    run_dir = found.parent.parent
    config_dir = found / checkpoint.MODEL_CONFIG
    if not (config_dir / "config.json").is_file() and not (config_dir / "members.json").is_file():
        raise PtcliError(f"checkpoint {found} records no model config ({checkpoint.MODEL_CONFIG}/)",
                         fix="LoRA runs and checkpoints written before ptcli 0.x cannot be exported alone; resume "
                             "the run with train.resume=<checkpoint> and use its model/ folder")
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
