"""Compose a verb's config with Hydra's compose API and turn Hydra's errors into ptcli errors with suggestions."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from ptcli.config import launchers, paths
from ptcli.config.overrides import first_sweep_point, is_hydra_override, search_path_override
from ptcli.errors import PtcliError

_BAD_OVERRIDE = re.compile(r"Could not override '([^']+)'")
_MISSING_OPTION = re.compile(r"Could not find '([^']+)/([^']+)'")
_MISSING_GROUP = re.compile(r"Could not load '([^']+)/([^']+)'")


class ConfigError(PtcliError):
    """One or more config problems, reported together on one screen (exit code 2)."""

    def __init__(self, problems: list[str], fix: str | None = None):
        self.problems = problems
        what = problems[0] if len(problems) == 1 else f"{len(problems)} problems in the config"
        super().__init__(what, fix=fix)

    def message(self) -> str:
        if len(self.problems) == 1:
            return super().message()
        lines = [f"ptcli: error: {len(self.problems)} problems in the config:"]
        lines += [f"  - {p}" for p in self.problems]
        if self.fix:
            lines.append(self.fix)
        return "\n".join(lines)


def suggest(word: str, choices: list[str], prefix: str = "") -> str:
    """`` (did you mean 'prefix.x'?)`` for the choice closest to ``word``, or an empty string."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


def compose(verb: str, args: list[str], config_dirs: list[str | Path] = (), with_hydra: bool = False):
    """Compose ``verb``'s config from override strings (sweeps reduced to their first point).

    Unknown keys are all collected (each bad override is dropped and the rest composed again) so the user
    sees every mistake at once, each with the closest valid key.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    try:
        job_args = first_sweep_point([a for a in args if not is_hydra_override(a)])
    except OverrideParseException as e:
        raise PtcliError(f"cannot parse override: {str(e).splitlines()[0]}",
                         fix="Use key=value, group=option, +key=value or ~key (see `ptcli --help`)") from None
    extra = search_path_override(paths.user_config_dirs(config_dirs))
    hydra_args = [a for a in args if is_hydra_override(a)] if with_hydra else []
    launchers.quiet_schema_matching()
    problems: list[tuple[str, str]] = []  # (kind, key)
    remaining = list(job_args)
    with initialize_config_dir(config_dir=str(paths.packaged_config_dir()), version_base="1.3"):
        for _ in range(len(job_args) + 1):
            try:
                cfg = hydra_compose(verb, overrides=remaining + extra + hydra_args, return_hydra_config=with_hydra)
                break
            except MissingConfigException as e:
                raise _missing_option_error(str(e), config_dirs) from None
            except ConfigCompositionException as e:
                text = str(e) + " " + str(e.__cause__ or "")
                match = _BAD_OVERRIDE.search(text)
                bad = [a for a in remaining if match and a.lstrip("+~").split("=", 1)[0] == match.group(1)]
                if not bad:
                    raise _missing_option_error(text, config_dirs) from None
                problems.append(("key", match.group(1)))
                remaining.remove(bad[0])
    if problems:
        raise ConfigError([_unknown_key(key, cfg) for _, key in problems],
                          fix=f"`ptcli config {verb}` prints every valid key")
    return cfg


def _unknown_key(key: str, cfg) -> str:
    """Describe an unknown dotted key with the closest existing key at the same level."""
    from omegaconf import OmegaConf

    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if node is None or not OmegaConf.is_dict(node):
        top = parent.split(".")[0] if parent else leaf
        return f"unknown key '{key}'{suggest(top, list(cfg.keys()))}"
    return f"unknown key '{key}'{suggest(leaf, [str(k) for k in node.keys()], parent + '.' if parent else '')}"


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
