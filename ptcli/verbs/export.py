"""``ptcli export``: a checkpoint (whole, or FSDP's shards from any number of processes) as an ordinary Hugging
Face model folder, in one process and without a process group."""

from __future__ import annotations

from pathlib import Path

from ptcli.errors import PtcliError


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
    if not (config_dir / "config.json").is_file():
        raise PtcliError(f"checkpoint {found} records no model config ({checkpoint.MODEL_CONFIG}/)",
                         fix="LoRA runs and checkpoints written before ptcli 0.x cannot be exported alone; resume "
                             "the run with train.resume=<checkpoint> and use its model/ folder")
    if not (run_dir / "tokenizer").is_dir():
        raise PtcliError(f"no tokenizer/ in the run directory {run_dir}",
                         fix="Export from a checkpoint inside its run directory (<run>/checkpoints/step-N)")
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    config = transformers.AutoConfig.from_pretrained(config_dir)
    cls = getattr(transformers, (config.architectures or [""])[0], None)
    if cls is None:
        raise PtcliError(f"transformers has no model class {config.architectures}", where=str(config_dir))
    model = cls(config)
    if (found / checkpoint.SHARDED).is_dir():
        load_sharded_weights(found / checkpoint.SHARDED, model)
    else:
        from safetensors.torch import load_model

        load_model(model, str(found / "model.safetensors"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(run_dir / "tokenizer")
    with torch.no_grad():
        written = checkpoint.export_model(model.eval(), tokenizer, Path(out))
    log(f"exported {found} to {written}")
    return written


def load_sharded_weights(folder: Path, model) -> None:
    """The model part of an FSDP checkpoint into a plain model (the optimizer shards are not read)."""
    import warnings

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    state = {"model": get_model_state_dict(model)}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*load in a single process.*")
        dcp.load(state, checkpoint_id=str(folder))
    set_model_state_dict(model, state["model"])
