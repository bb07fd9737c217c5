"""The keys a verb takes, with their defaults and one-line meanings (the comments beside them in ``schema.py``): for
``ptcli <verb> --help`` and for the hint a ``--flag value`` habit gets. Torch-free and fast (no Hydra)."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import re
from typing import NamedTuple

from ptcli.config import schema

# Sections a verb's help lists key by key (the others are listed by name: `ptcli config <verb>` shows them all).
LISTED = {"pretrain": ("train",), "finetune": ("train", "tune", "distill")}
# Common settings of the plug-in sections (declared beside their classes), for the --flag hint.
_TRAIN_PLUGIN_KEYS = ("optim.lr", "optim.weight_decay", "dataset.files", "dataset.seq_len", "dataset.val_fraction",
                      "dataset.text_column", "dataset.label_column")
PLUGIN_KEYS = {"pretrain": _TRAIN_PLUGIN_KEYS, "finetune": _TRAIN_PLUGIN_KEYS,
               "evaluate": ("dataset.files", "dataset.seq_len")}
_FIELD = re.compile(r"^\s+(\w+):[^#]*?(?:#\s*(.*))?$")


class Key(NamedTuple):
    name: str  # dotted: train.max_steps
    default: object
    meaning: str


@functools.cache
def comments(cls: type) -> dict[str, str]:
    """field name -> the comment on its line in the class's source ('' when it has none)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out = {}
    for line in source.splitlines():
        match = _FIELD.match(line)
        if match and match.group(1) not in out:
            out[match.group(1)] = (match.group(2) or "").strip()
    return out


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def keys_of(cls: type, prefix: str = "") -> list[Key]:
    """Every key of a schema dataclass, sections included, depth first."""
    out = []
    notes = {}
    for base in reversed(cls.__mro__):  # inherited fields keep the comments of the class that declares them
        if dataclasses.is_dataclass(base):
            notes.update({k: v for k, v in comments(base).items() if v or k not in notes})
    for f in dataclasses.fields(cls):
        value = _default(f)
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out += keys_of(type(value), name + ".")
        else:
            out.append(Key(name, value, notes.get(f.name, "")))
    return out


def verb_keys(verb: str) -> list[Key]:
    """The verb's keys with the defaults it runs with: the schema's, then its primary YAML's (pretrain.yaml sets
    train.max_steps: 500)."""
    overrides = _flatten(primary_yaml(verb))
    return [k._replace(default=overrides[k.name]) if k.name in overrides else k
            for k in keys_of(schema.VERB_SCHEMAS[verb])]


@functools.cache
def primary_yaml(verb: str) -> dict:
    import yaml

    from ptcli.config.paths import packaged_config_dir

    data = yaml.safe_load((packaged_config_dir() / f"{verb}.yaml").read_text()) or {}
    return {k: v for k, v in data.items() if k != "defaults"}


def _flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def sections(verb: str) -> list[str]:
    """The verb's sections (model, device, train, ...) and plug-in sections, in schema order."""
    cls = schema.VERB_SCHEMAS[verb]
    return [f.name for f in dataclasses.fields(cls)
            if dataclasses.is_dataclass(_default(f)) or f.name in schema.PLUGIN_SECTIONS
            or f.name in ("tune", "peft", "adversarial", "privacy", "attack")]


def shown(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def help_lines(verb: str) -> list[str]:
    """``key=default  meaning`` for the verb's own keys and the sections it lists in full."""
    listed = LISTED.get(verb, ())
    own = [k for k in verb_keys(verb) if "." not in k.name or k.name.split(".", 1)[0] in listed]
    own = [k for k in own if k.name not in sections(verb)]
    width = min(34, max((len(k.name) + len(shown(k.default)) + 1 for k in own), default=0))
    lines = []
    for key in own:
        text = f"{key.name}={shown(key.default)}"
        lines.append(f"  {text.ljust(width)}  {key.meaning}".rstrip())
    return lines


def flag_hint(verb: str, args: list[str]) -> str | None:
    """For ``--max_steps 10`` (or ``--max-steps=10``): the key=value form, with the key it most likely means."""
    for i, arg in enumerate(args):
        if not arg.startswith("--") or arg in ("--", "--help"):
            continue
        name, sep, value = arg[2:].partition("=")
        if not sep and i + 1 < len(args) and "=" not in args[i + 1] and not args[i + 1].startswith("-"):
            value = args[i + 1]
        wanted = name.replace("-", "_")
        names = [k.name for k in verb_keys(verb)] + list(PLUGIN_KEYS.get(verb, ()))
        exact = [n for n in names if n == wanted or n.endswith("." + wanted)]
        close = exact or difflib.get_close_matches(wanted, names, n=2, cutoff=0.6) or \
            [n for n in names if difflib.get_close_matches(wanted, [n.rsplit(".", 1)[-1]], n=1, cutoff=0.75)][:2]
        shown_value = value or "<value>"
        suggestion = " or ".join(f"{n}={shown_value}" for n in close or [wanted])
        return (f"'{arg}' is a --flag, but ptcli takes its settings as key=value overrides (Hydra's grammar): "
                f"{suggestion}")
    return None


_YAML_KEY = re.compile(r"^(\s*)([\w.\-]+):(\s.*)?$")


def plugin_comments(section: str, target: str | None) -> dict[str, str]:
    """``section.field`` -> its meaning, for a plug-in section's ``_target_`` class (objectives and data sources
    are importable without torch; a class that cannot be imported, torch.optim's, has none)."""
    if not target or not target.startswith("ptcli."):
        return {}
    import importlib

    module, _, name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return {}
    notes: dict[str, str] = {}
    for base in reversed(cls.__mro__):
        notes.update({k: v for k, v in comments(base).items() if v})
    return {f"{section}.{k}": v for k, v in notes.items()}


def annotated(verb: str, data: dict, text: str) -> str:
    """``ptcli config``'s YAML with each key's meaning as a comment at the end of its line: the schema's comments,
    and those beside the fields of the objective's and data source's classes."""
    meanings = {k.name: k.meaning for k in keys_of(schema.VERB_SCHEMAS[verb]) if k.meaning}
    for section, value in data.items():
        if isinstance(value, dict):
            meanings.update(plugin_comments(section, value.get("_target_")))
    out, path = [], []
    for line in text.splitlines():
        match = _YAML_KEY.match(line)
        if match:
            depth = len(match.group(1)) // 2
            path = path[:depth] + [match.group(2)]
            meaning = meanings.get(".".join(path))
            if meaning and "#" not in line:
                line = f"{line}  # {meaning}"
        out.append(line)
    return "\n".join(out) + "\n"
