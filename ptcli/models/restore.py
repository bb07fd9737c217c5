"""Model folders that ``from_pretrained`` alone cannot rebuild: a quantized model (int8 weights, and the recipe that
re-applies the quantization) or a BERT-family model with attention heads pruned per layer (transformers 5 builds
every layer with the same head count). Such a folder holds ``ptcli_recipe.json``; ``load_pretrained`` hands it here.

The recipe is data (JSON: a kind and its settings), never code, and every weight file is safetensors: a downloaded
folder cannot run anything.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from ptcli.errors import PtcliError

RECIPE_FILE = "ptcli_recipe.json"
# kind -> "module:function(auto, folder, recipe, log) -> model", the modules that know how to rebuild it
LOADERS = {"quantized": "ptcli.models.quantized:load", "pruned-heads": "ptcli.models.pruned:load"}


def recipe_of(folder: Path | None) -> dict | None:
    """The folder's recipe, or None for an ordinary model folder."""
    if folder is None:
        return None
    if not (Path(folder) / RECIPE_FILE).is_file():
        return _heads_in_config(Path(folder))
    try:
        recipe = json.loads((Path(folder) / RECIPE_FILE).read_text())
    except (OSError, ValueError) as e:
        raise PtcliError(f"cannot read {Path(folder) / RECIPE_FILE}: {e}", fix="Re-create the model folder") from None
    if not isinstance(recipe, dict) or recipe.get("kind") not in LOADERS:
        kind = recipe.get("kind") if isinstance(recipe, dict) else recipe
        raise PtcliError(f"{Path(folder) / RECIPE_FILE} names an unknown kind {kind!r}",
                         fix=f"Known kinds: {', '.join(LOADERS)}; re-create the model folder with ptcli")
    return recipe


def write_recipe(folder: Path, recipe: dict) -> None:
    (Path(folder) / RECIPE_FILE).write_text(json.dumps(recipe, indent=2) + "\n")


def load(auto, folder: Path, recipe: dict, log=None):
    module, _, func = LOADERS[recipe["kind"]].partition(":")
    return getattr(importlib.import_module(module), func)(auto, Path(folder), recipe, log)


def _heads_in_config(folder: Path) -> dict | None:
    """A head-pruned model saved without the recipe file (``finetune model.path=<prune run>`` exports with
    ``save_pretrained``) still says its heads per layer in config.json (``ptcli_heads_per_layer``)."""
    try:
        heads = json.loads((folder / "config.json").read_text()).get("ptcli_heads_per_layer")
    except (OSError, ValueError, AttributeError):
        return None
    return {"kind": "pruned-heads", "heads_per_layer": heads} if heads else None
