"""Pure functions over Hydra override strings: ptcli's ``+group=option`` rule and the first point of a sweep."""

from __future__ import annotations

from pathlib import Path


def normalise(args: list[str], groups: list[str]) -> list[str]:
    """Accept ``+group=option`` for a group the defaults list already has (Hydra refuses it; users expect it).

    ``ptcli pretrain +objective=mlm`` becomes ``objective=mlm``; ``+optim.foo=1`` and ``+newgroup=x`` are
    left alone, so Hydra's own meaning of ``+`` is kept everywhere else.
    """
    out = []
    for arg in args:
        if arg.startswith("+") and not arg.startswith("++") and "=" in arg:
            key = arg[1:].split("=", 1)[0]
            if key.split("@", 1)[0] in groups:
                arg = arg[1:]
        out.append(arg)
    return out


def search_path_override(dirs: list[Path]) -> list[str]:
    """One ``hydra.searchpath=[...]`` override for the user's config folders (none when there are none)."""
    if not dirs:
        return []
    items = ",".join(f"'file://{d}'" for d in dirs)
    return [f"hydra.searchpath=[{items}]"]


def is_hydra_override(arg: str) -> bool:
    """True for overrides of Hydra's own config (``hydra.run.dir=...``, ``hydra/launcher=...``)."""
    key = arg.lstrip("+~").split("=", 1)[0]
    return key == "hydra" or key.startswith("hydra.") or key.startswith("hydra/")


def first_sweep_point(args: list[str]) -> list[str]:
    """Replace every sweep (``a=1,2``, ``range(...)``, ``choice(...)``) by its first value, for pre-flight.

    Raises Hydra's ``OverrideParseException`` on malformed overrides.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(args)
    out = []
    for arg, override in zip(args, parsed):
        if override.is_sweep_override():
            try:
                arg = f"{override.get_key_element()}={next(iter(override.sweep_string_iterator()))}"
            except Exception:  # glob sweeps need the group's option list; let Hydra expand those later
                continue
        out.append(arg)
    return out


def quoted(value: str) -> str:
    """``value`` as a quoted string in Hydra's grammar."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def corrected(arg: str) -> str:
    """The override with its value quoted (each item of a [list] quoted): what a value with a comma, '=', a space,
    brackets or non-ASCII characters needs."""
    key, sep, value = arg.partition("=")
    if not sep:
        return arg
    if value.startswith("[") and value.endswith("]"):
        items = [v.strip() for v in value[1:-1].split(",") if v.strip()]
        return f"{key}=[{','.join(quoted(v.strip(chr(39) + chr(34))) for v in items)}]"
    return f"{key}={quoted(value)}"


def parse_problem(args: list[str]) -> tuple[str, str] | None:
    """(the override Hydra cannot parse, why) for the first such override, else None."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for arg in args:
        try:
            parser.parse_overrides([arg])
        except OverrideParseException as e:
            return arg, str(e).splitlines()[0]
    return None


def sweeps(args: list[str]) -> list[str]:
    """The overrides that are sweeps in Hydra's grammar (``a=1,2``, ``range(..)``, ``choice(..)``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(args)
    return [arg for arg, override in zip(args, parsed) if override.is_sweep_override()]
