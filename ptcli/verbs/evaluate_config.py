"""What ``evaluate`` measures with and on: the objective and dataset from the run's config.yaml unless the command
line says otherwise, and which split of the data (validation files, all of the named data, or the held-out part)."""

from __future__ import annotations

import copy

from ptcli.config import plugins
from ptcli.errors import PtcliError


def command_line_keys(overrides: list[str] | None = None) -> set[str]:
    """The keys the user set for this run (``dataset``, ``dataset.files``, ``objective``, ...): from
    ``overrides``, else from Hydra's record of the task overrides (a sweep point included)."""
    if overrides is None:
        try:
            from hydra.core.hydra_config import HydraConfig

            overrides = list(HydraConfig.get().overrides.task)
        except Exception:  # not inside a hydra.main task (in-process use)
            return set()
    return {o.lstrip("+~").split("=", 1)[0].split("@", 1)[0] for o in overrides}


def touched(keys: set[str], section: str) -> set[str]:
    """The keys under ``section`` the user set: {'files', 'seq_len'}; '' when the group itself was chosen."""
    return {k[len(section) + 1:] if k != section else "" for k in keys if k == section or k.startswith(section + ".")}


def default_objective(kind: str) -> dict:
    """clm for a causal model, mlm (with its default masking) for a masked LM: the objective's declared settings."""
    target = {"causal": "ptcli.objectives.clm.CausalLM", "fill-mask": "ptcli.objectives.mlm.MaskedLM"}.get(kind)
    if target is None:
        raise PtcliError(f"cannot tell which objective to evaluate this {kind} model with",
                         fix="Name it: objective=seq2seq (with a dataset), or evaluate a ptcli run directory")
    declared = plugins.settings_of(plugins.resolve(target, "objective")) or {}
    return {"_target_": target, **{name: plugins.default_of(f) for name, f in declared.items()}}


def effective_config(cfg: dict, run_cfg: dict | None, keys: set[str], kind: str) -> tuple[dict, list[str], bool]:
    """The config the evaluation runs with, notes saying where its parts came from, and whether the data was
    named on the command line (then all of it is evaluated rather than the held-out part)."""
    eff = copy.deepcopy(cfg)
    notes = []
    if touched(keys, "objective"):
        notes.append("objective: from the command line")
    elif run_cfg and run_cfg.get("objective"):
        eff["objective"] = copy.deepcopy(run_cfg["objective"])
        notes.append("objective: the run's (config.yaml)")
    else:
        eff["objective"] = default_objective(kind)
        notes.append(f"objective: {'clm' if kind == 'causal' else 'mlm'} (from the model's kind)")
    data_keys = touched(keys, "dataset")
    if "" in data_keys or not run_cfg or not run_cfg.get("dataset"):
        notes.append("dataset: from the command line" if data_keys else
                     "dataset: evaluate.yaml's default (choose one with dataset=...)")
    else:
        dataset = copy.deepcopy(run_cfg["dataset"])
        for key in sorted(data_keys):
            top = key.split(".", 1)[0]
            dataset[top] = copy.deepcopy(cfg["dataset"][top])
        eff["dataset"] = dataset
        notes.append("dataset: the run's (config.yaml)" + (f", with {', '.join(sorted(data_keys))} from the command "
                                                            "line" if data_keys else ""))
    named = "" in data_keys or bool({"files", "_target_", "hf_name"} & {k.split(".", 1)[0] for k in data_keys})
    return eff, notes, named


def split_plan(source, named: bool) -> str:
    """'val' (the source's validation split), 'train' (all of the data: named on the command line, or no held-out
    fraction) or 'heldout' (the part training held out of its data, exactly as it split it)."""
    if source.has_split("val"):
        return "val"
    if named or not source.val_fraction:
        return "train"
    return "heldout"


def describe(source, plan: str, unit: str = "tokens") -> str:
    """Where the evaluation data comes from, in words (with dataset.seq_len when the objective counts tokens)."""
    where = source.describe("val" if plan == "val" else "train")
    if plan == "heldout":
        length = f", dataset.seq_len={source.seq_len}" if unit == "tokens" else ""
        return f"{where}: the part training held out (dataset.val_fraction={source.val_fraction:g}{length})"
    return f"{where} ({'the validation split' if plan == 'val' else 'all of it'})"
