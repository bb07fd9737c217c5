"""The classes a ``_target_`` may name, and their settings: resolved without importing torch.

A section that builds something (``objective``, ``dataset``, ``optim``) names its class with ``_target_``. Only these
may be built: a ptcli class registered for that section (it says so with ``ptcli_kind``), a ``torch.optim`` optimizer
for ``optim``, or a class the user allowed, by naming it on the command line (``objective._target_=mypkg.Obj``) or by
a package prefix in ``$PTCLI_ALLOW_TARGETS``. A saved config (a run directory's ``config.yaml``) selects among the
registered classes and the ``$PTCLI_ALLOW_TARGETS`` prefixes only. A ptcli class's settings are the fields of the
dataclass it is: each default is declared there once.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import re

from ptcli.errors import PtcliError

HYDRA_KEYS = ("_target_", "_partial_", "_args_", "_convert_", "_recursive_")
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")
_TORCH_OPTIMIZER = re.compile(r"^torch\.optim\.[A-Z]\w*$")
EXAMPLES = {"objective": "objective=clm", "dataset": "dataset=text", "optim": "optim=adamw"}


def allowed_prefixes() -> tuple[str, ...]:
    """The user's own packages named in ``$PTCLI_ALLOW_TARGETS`` (comma-separated prefixes)."""
    extra = [p.strip() for p in os.environ.get("PTCLI_ALLOW_TARGETS", "").split(",") if p.strip()]
    return tuple(p if p.endswith(".") else p + "." for p in extra)


_COMMAND_LINE: set[str] = set()
_TYPED: dict[str, str] = {}


def allow_command_line(args) -> None:
    """Remember the ``_target_`` values this process's command line names (``resolve`` allows them: the user typed
    them, wherever the config they appear in came from) and the keys it sets (``typed``)."""
    _COMMAND_LINE.update(targets_on_command_line(args))
    for arg in args or ():
        key, sep, value = arg.partition("=")
        if sep:
            _TYPED[key.lstrip("+~")] = value.strip().strip("'\"")


def typed(key: str) -> str | None:
    """The value the command line gave ``key``, or None when the command line did not set it."""
    return _TYPED.get(key)


def targets_on_command_line(args) -> set[str]:
    """``_target_`` values the user typed (``objective._target_=mypkg.Obj``, ``+dataset._target_=...``)."""
    found = set()
    for arg in args or ():
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+~").endswith("._target_"):
            found.add(value.strip().strip("'\""))
    return found


def resolve(target, section: str, named: set[str] | frozenset = frozenset(), load_user: bool = True):
    """The class (or, for torch optimizers, the dotted name) that ``target`` may build in ``section``.

    ``named``: targets the user typed on the command line. ``load_user``: import an allowed user class (a pre-flight
    import of the user's own code); when False its name is returned instead. Raises PtcliError for anything else."""
    if not isinstance(target, str) or not _DOTTED.match(target):
        raise _refused(target, section, "is not a dotted class name")
    if target.startswith("ptcli."):
        return _registered(target, section)
    if section == "optim" and _TORCH_OPTIMIZER.match(target):
        return target  # checked to be a torch.optim.Optimizer when built (torch is imported then)
    if target in named or target in _COMMAND_LINE or target.startswith(allowed_prefixes()):
        return _import(target, section) if load_user else target
    raise _refused(target, section, "is neither one of ptcli's own nor allowed by you",
                   fix=f"Choose a shipped option ({EXAMPLES.get(section, section + '=...')}), name the class on the "
                       f"command line ({section}._target_={target}), or allow its package with "
                       f"PTCLI_ALLOW_TARGETS={target.split('.')[0]}")


def _registered(target: str, section: str):
    """A ptcli class registered for ``section``: defined in the module the name says (no re-exported callables),
    concrete, and declaring ``ptcli_kind == section``."""
    module_name, _, name = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise _refused(target, section, "names no ptcli module") from None
    cls = module.__dict__.get(name)
    if not (inspect.isclass(cls) and cls.__module__ == module_name and cls.__qualname__ == name
            and getattr(cls, "ptcli_kind", None) == section and not cls.__dict__.get("abstract", False)):
        raise _refused(target, section, f"is not a registered {section} class")
    return cls


def _import(target: str, section: str):
    module_name, _, name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as e:
        raise PtcliError(f"{section}._target_ '{target}' cannot be imported: {e}",
                         fix="Check the name, and that its package is installed or on PYTHONPATH") from None
    base = _BASES.get(section)
    if not inspect.isclass(cls):
        raise _refused(target, section, "is not a class",
                       fix=f"Name a class that builds the {section}" + (f" (a subclass of {base})" if base else ""))
    if base and getattr(cls, "ptcli_kind", None) != section:
        raise _refused(target, section, f"does not derive from {base}",
                       fix=f"Derive the class from {base} (docs/architecture.md says how)")
    return cls


_BASES = {"objective": "ptcli.objectives.base.Objective", "dataset": "ptcli.data.sources.base.Source"}


def _refused(target, section: str, why: str, fix: str | None = None) -> PtcliError:
    return PtcliError(f"{section}._target_ '{target}' {why}; it is not built",
                      fix=fix or f"Choose a shipped option, e.g. {EXAMPLES.get(section, section + '=...')}")


def settings_of(cls) -> dict[str, dataclasses.Field] | None:
    """The settings a class declares (its dataclass fields), or None when it declares none that way."""
    if isinstance(cls, type) and dataclasses.is_dataclass(cls):
        return {f.name: f for f in dataclasses.fields(cls) if f.init}
    return None


def default_of(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return "???"


def keyword_names(cls) -> list[str] | None:
    """The keyword arguments a non-dataclass callable takes (None: it takes any)."""
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in named]
