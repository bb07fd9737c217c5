"""Compose a verb's config with Hydra's compose API; turn Hydra's errors into ptcli errors with suggestions.

YAML files state only what differs from the schema defaults, so a key the user sets may not be in the composed
config yet (``dataset.document=line``, ``objective.mask_prob=0.2``): ``complete_overrides`` turns such an override
into Hydra's add-or-set form (``++key=value``) when the key is a declared setting of that section.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from ptcli.config import paths, plugins, schema
from ptcli.config.overrides import first_sweep_point, is_hydra_override, search_path_override
from ptcli.config.problems import ConfigError, suggest
from ptcli.errors import PtcliError

_BAD_OVERRIDE = re.compile(r"Could not override '([^']+)'")
_MISSING_OPTION = re.compile(r"Could not find '([^']+)/([^']+)'")
_MISSING_GROUP = re.compile(r"Could not load '([^']+)/([^']+)'")


def quiet_schema_matching() -> None:
    """configs/hydra/launcher/submitit_*.yaml keep the plugin's option names, so `hydra/launcher=submitit_slurm`
    gives ptcli's defaults. Hydra 1.3 merges such a file onto the plugin's structured config of the same name (its
    "automatic schema matching": types checked, every other plugin key kept) and says so with a deprecation
    warning on every composition. That merge is what ptcli wants (and the files stand alone without it): not the
    user's concern. Called before composing (idempotent: warnings keeps one copy of a filter)."""
    warnings.filterwarnings("ignore", category=UserWarning,
                            message=r"\s*'hydra/launcher/submitit_\w+' is validated against ConfigStore schema")


def register_defaults() -> None:
    """Every setting's default, from the schemas, as the first config of each verb's defaults list
    (``ptcli_<verb>_defaults`` in Hydra's ConfigStore), so that YAML files state only what differs. Idempotent;
    also run on import, since a submitit job composes its point's config before ptcli code runs."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    if all(f"ptcli_{verb}_defaults.yaml" in store.repo for verb in schema.VERB_SCHEMAS):
        return  # stored once per process: a fifth of each composition's time went into storing them again
    for verb, verb_schema in schema.VERB_SCHEMAS.items():
        store.store(name=f"ptcli_{verb}_defaults", node=schema_defaults(verb_schema))


def schema_defaults(verb_schema) -> dict:
    """A verb schema's defaults as plain data: sections as mappings, plug-in and optional sections as null."""
    import dataclasses

    from ptcli.config.plugins import default_of

    out: dict = {}
    for f in dataclasses.fields(verb_schema):
        value = default_of(f)
        out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return out


def compose(verb: str, args: list[str], config_dirs: list[str | Path] = (), with_hydra: bool = False):
    """Compose ``verb``'s config from override strings (sweeps reduced to their first point).

    Unknown keys are all collected (each bad override is dropped and the rest composed again) so the user
    sees every mistake at once, each with the closest valid key.
    """
    from hydra.errors import OverrideParseException

    try:
        args = complete_overrides(verb, list(args), config_dirs)
        job_args = first_sweep_point([a for a in args if not is_hydra_override(a)])
    except OverrideParseException as e:
        raise parse_error(args, e) from None
    hydra_args = [a for a in args if is_hydra_override(a)] if with_hydra else []
    problems: list[str] = []
    remaining = list(job_args)
    for _ in range(len(job_args) + 1):
        try:
            cfg = _compose(verb, remaining + hydra_args, config_dirs, with_hydra)
            break
        except _BadOverride as bad:
            key = bad.key
            matches = [a for a in remaining if a.lstrip("+~").split("=", 1)[0] == key]
            if not matches:
                raise _missing_option_error(bad.text, config_dirs) from None
            problems.append(key)
            remaining.remove(matches[0])
    if problems:
        raise ConfigError([_unknown_key(verb, key, cfg) for key in problems],
                          fix=f"`ptcli config {verb}` prints every valid key")
    return cfg


class _BadOverride(Exception):
    def __init__(self, key: str, text: str):
        super().__init__(text)
        self.key, self.text = key, text


def _compose(verb: str, args: list[str], config_dirs, with_hydra: bool):
    import yaml
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import ConfigCompositionException, MissingConfigException

    extra = search_path_override(paths.user_config_dirs(config_dirs))
    quiet_schema_matching()
    register_defaults()
    with initialize_config_dir(config_dir=str(paths.packaged_config_dir()), version_base="1.3"):
        try:
            return hydra_compose(verb, overrides=args + extra, return_hydra_config=with_hydra)
        except yaml.YAMLError as e:
            raise yaml_error(e) from None
        except MissingConfigException as e:
            raise _missing_option_error(str(e), config_dirs) from None
        except ConfigCompositionException as e:
            text = str(e) + " " + str(e.__cause__ or "")
            match = _BAD_OVERRIDE.search(text)
            if not match:
                raise _missing_option_error(text, config_dirs) from None
            raise _BadOverride(match.group(1), text) from None


def parse_error(args: list[str], error) -> PtcliError:
    """An override Hydra's grammar cannot read: which one, and the same override quoted (commas, '=', spaces and
    non-ASCII characters need quotes)."""
    from ptcli.config.overrides import corrected, parse_problem

    found = parse_problem(args)
    arg, why = found if found else ("", str(error).splitlines()[0])
    arg = arg.lstrip("+") if arg.startswith("++") else arg
    if not arg:
        return PtcliError(f"cannot parse override: {why}",
                          fix="Use key=value, group=option, +key=value or ~key (see `ptcli --help`)")
    return PtcliError(f"cannot read the override {arg!r} ({why})",
                      fix=f"A value with a comma, '=', brackets, quotes or non-ASCII characters needs quotes: "
                          f"{corrected(arg)} (in a shell, wrap it in double quotes: \"{corrected(arg)}\")")


def yaml_error(error) -> PtcliError:
    """A YAML syntax error in a config file: the file, line and column, and the parser's reason."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    where = f"{mark.name}:{mark.line + 1}:{mark.column + 1}" if mark is not None else None
    reason = " ".join(str(getattr(error, "problem", "") or error).split())
    return PtcliError(f"a config file is not valid YAML: {reason}", where=where,
                      fix="Fix that line (quote values with ':' or '#', close brackets), then run again")


def complete_overrides(verb: str, args: list[str], config_dirs=()) -> list[str]:
    """``section.key=value`` becomes ``++section.key=value`` when the composed config lacks the key and it is a
    declared setting of the section (a schema field, or a field of the section's ``_target_`` class)."""
    groups = set(paths.all_groups(config_dirs)) | {"experiment"}
    selections = [a for a in args if "=" in a and a.lstrip("+~").split("=", 1)[0].split("@")[0] in groups]
    candidates = [a for a in args if "=" in a and not a.startswith(("+", "~")) and not is_hydra_override(a)
                  and a.split("=", 1)[0] not in groups]
    if not candidates:
        return list(args)
    first = first_sweep_point(selections)
    try:
        base = _compose(verb, first, config_dirs, False)
        # a multirun first composes without its swept groups (Hydra skips them), so a key that only the swept
        # options have (dataset=jsonl,csv dataset.files=[...]) must be added there too
        unswept = _compose(verb, [a for a in selections if a in first], config_dirs, False) if first != selections \
            else base
    except Exception:  # Hydra says what is wrong when the whole command line is composed
        return list(args)
    named = plugins.targets_on_command_line(args)
    out = []
    for arg in args:
        key = arg.split("=", 1)[0]
        if arg in candidates and (_settable(verb, base, key, named)
                                  or (unswept is not base and _missing(unswept, key) and not _missing(base, key))):
            arg = "++" + arg
        out.append(arg)
    return out


def _missing(cfg, key: str) -> bool:
    from omegaconf import OmegaConf

    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return not (node is not None and OmegaConf.is_dict(node) and leaf in node.keys())


def _settable(verb: str, cfg, key: str, named) -> bool:
    """True when ``key`` is missing from ``cfg`` but declared by its section's schema (or an open mapping)."""
    from omegaconf import OmegaConf

    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if node is not None and OmegaConf.is_dict(node) and leaf in node.keys():  # present (a ??? value counts too)
        return False
    if parent and "." in parent:  # deeper keys: only inside an open mapping that exists (model.extra.d_kv)
        return OmegaConf.is_dict(node)
    return leaf in declared_keys(verb, cfg, parent, named)


_ABSENT = object()


def declared_keys(verb: str, cfg, section: str, named=frozenset()) -> list[str]:
    """The keys ``section`` may hold: its schema's fields, or those of its ``_target_`` class; '' = the verb's top."""
    from ptcli.config.validate import fields_of

    verb_fields = fields_of(schema.VERB_SCHEMAS[verb])
    if not section:
        return list(verb_fields)
    if section in schema.PLUGIN_SECTIONS:
        node = cfg.get(section) if cfg is not None else None
        target = node.get("_target_") if node is not None and hasattr(node, "get") else None
        try:
            cls = plugins.resolve(target, section, named)
        except PtcliError:
            return []
        declared = plugins.settings_of(cls)
        return list(declared or [])
    tp = verb_fields.get(section)
    import dataclasses
    import typing

    inner = [a for a in (tp, *typing.get_args(tp)) if dataclasses.is_dataclass(a)]
    return list(fields_of(inner[0])) if inner else []


def _unknown_key(verb: str, key: str, cfg) -> str:
    """Describe an unknown dotted key with the closest existing or declared key at the same level."""
    from omegaconf import OmegaConf

    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if node is None or not OmegaConf.is_dict(node):
        top = parent.split(".")[0] if parent else leaf
        return f"unknown key '{key}'{suggest(top, list(cfg.keys()))}"
    choices = {str(k) for k in node.keys()}
    if "." not in parent:
        choices |= set(declared_keys(verb, cfg, parent))
    hint = suggest(leaf, sorted(choices), parent + "." if parent else "")
    if parent == "optim" and not hint:
        hint = f" (not in the optim config; to pass another keyword to the optimizer use +{key}=...)"
    elif parent in schema.PLUGIN_SECTIONS and not hint:
        target = str(node.get("_target_") or "")
        hint = (f": {target.rpartition('.')[2] or parent} has no such setting; its settings are: "
                f"{', '.join(sorted(choices - {'_target_', '_partial_'}))}")
    return f"unknown key '{key}'{hint}"


def _missing_option_error(text: str, config_dirs) -> PtcliError:
    """An unknown group option (``model=gpt3``) or group, listing the valid options."""
    match = _MISSING_OPTION.search(text) or _MISSING_GROUP.search(text)
    if not match:
        first = text.strip().splitlines()[0] if text.strip() else "the config could not be composed"
        return PtcliError(first, fix="Check the overrides; `ptcli --help` lists groups and options")
    group, option = match.group(1), match.group(2)
    options = paths.group_options(group, config_dirs)
    if not options:
        return PtcliError(f"unknown config group '{group}'{suggest(group, paths.all_groups(config_dirs))}",
                          fix="`ptcli --help` lists the config groups")
    return PtcliError(f"unknown {group} '{option}'{suggest(option, options)}",
                      fix=f"Choose one of: {', '.join(options)} (or add {group}/{option}.yaml with --config-dir)")


register_defaults()
