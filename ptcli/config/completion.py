"""Shell completion of a verb's overrides (bash, zsh, fish through Click's completion protocol): config groups and
their options (``model=<TAB>``), the verb's keys (``train.max<TAB>``), and the values a key allows (booleans and
``Literal`` choices). Torch-free and Hydra-free: it runs at every TAB press."""

from __future__ import annotations

import dataclasses
import typing

from ptcli.config import keys, paths, schema


def candidates(verb: str, incomplete: str, config_dirs=()) -> list[str]:
    """Every completion of ``incomplete`` (one word of the command line) for ``verb``."""
    if verb not in paths.VERBS:
        return []
    prefix = ""
    word = incomplete
    for mark in ("++", "+", "~"):
        if word.startswith(mark):
            prefix, word = mark, word[len(mark):]
            break
    groups = paths.defaults_groups(verb)
    if "=" in word:
        key, _, value = word.partition("=")
        values = (paths.group_options(key, config_dirs) + ["null"] if key in groups else allowed_values(verb, key))
        return [f"{prefix}{key}={v}" for v in values if v.startswith(value)]
    out = [f"{prefix}{g}=" for g in groups if g.startswith(word)]
    names = [k.name for k in keys.verb_keys(verb)] + list(keys.PLUGIN_KEYS.get(verb, ()))
    out += [f"{prefix}{n}=" for n in names if n.startswith(word) and f"{prefix}{n}=" not in out]
    return out


def allowed_values(verb: str, key: str) -> list[str]:
    """The values a key takes when they are few: true/false, a Literal's choices; else none."""
    field_type = _field_type(schema.VERB_SCHEMAS[verb], key.split("."))
    if field_type is None:
        return []
    args = [a for a in typing.get_args(field_type) if a is not type(None)]
    if field_type is bool or bool in args:
        return ["true", "false"]
    if typing.get_origin(field_type) is typing.Literal:
        return [str(a) for a in args]
    for arg in args:  # Optional[Literal[...]]
        if typing.get_origin(arg) is typing.Literal:
            return [str(a) for a in typing.get_args(arg)] + ["null"]
    return []


def _field_type(cls, parts: list[str]):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name != parts[0]:
            continue
        hint = hints.get(f.name)
        if len(parts) == 1:
            return hint
        inner = [a for a in (typing.get_args(hint) or (hint,)) if dataclasses.is_dataclass(a)]
        return _field_type(inner[0], parts[1:]) if inner else None
    return None
