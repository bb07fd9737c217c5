"""What ``evaluate`` measures on: the objective and dataset from the run's config.yaml unless the command line
says otherwise, and the evaluation split read from them (validation files, all files, or the held-out tail)."""

from __future__ import annotations

import copy
import dataclasses
import math

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
    """clm for a causal model, mlm (with its default masking) for a masked LM."""
    from ptcli.config import schema

    if kind == "causal":
        return dataclasses.asdict(schema.CLMConfig())
    if kind == "fill-mask":
        return dataclasses.asdict(schema.MLMConfig())
    raise PtcliError(f"cannot tell which objective to evaluate this {kind} model with",
                     fix="Name it: objective=seq2seq (with a dataset), or evaluate a ptcli run directory")


def effective_config(cfg: dict, run_cfg: dict | None, keys: set[str], kind: str) -> tuple[dict, list[str], bool]:
    """The config the evaluation runs with, notes saying where its parts came from, and whether the data was
    named on the command line (then all of it is evaluated rather than the held-out tail)."""
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
        if not data_keys:
            notes.append("dataset: evaluate.yaml's default (choose one with dataset=...)")
        else:
            notes.append("dataset: from the command line")
    else:
        dataset = copy.deepcopy(run_cfg["dataset"])
        for key in sorted(data_keys):
            top = key.split(".", 1)[0]
            dataset[top] = copy.deepcopy(cfg["dataset"][top])
        eff["dataset"] = dataset
        notes.append("dataset: the run's (config.yaml)" + (f", with {', '.join(sorted(data_keys))} from the command "
                                                            "line" if data_keys else ""))
    named = "" in data_keys or bool({"files", "source", "hf_name"} & {k.split(".", 1)[0] for k in data_keys})
    return eff, notes, named


def split_plan(dataset, named: bool) -> str:
    """'val' (dataset.val_files), 'train' (all of dataset.files: data named on the command line, or no
    held-out fraction) or 'tail' (the last val_fraction of the packed training blocks, as pretraining split)."""
    if dataset.val_files:
        return "val"
    if named or not dataset.val_fraction:
        return "train"
    return "tail"


def describe(dataset, plan: str) -> str:
    where = {"embedded": "the embedded corpus", "hf": f"hf:{dataset.hf_name}"}.get(
        dataset.source, ", ".join(map(str, dataset.val_files if plan == "val" else dataset.files)))
    if plan == "tail":
        return f"{where}: the held-out last {dataset.val_fraction:g} of its blocks of {dataset.seq_len} tokens"
    return f"{where} ({'dataset.val_files' if plan == 'val' else 'all of dataset.files'})"


def heldout_blocks(cfg, objective, tokenizer, cache, log):
    """The validation blocks pretraining held out: the last ``val_fraction`` of the packed training blocks
    (read from the packed-corpus cache when the run's tokenizer and data are unchanged)."""
    from ptcli.data.pipeline import packed_split

    corpus = packed_split(cfg, "train", objective, tokenizer, cache, log)
    n = corpus.n_blocks
    n_val = min(n - 1, math.ceil(n * cfg.dataset.val_fraction)) if n > 1 else 0
    if n_val < 1:
        raise PtcliError(f"the data holds {n} block(s) of {cfg.dataset.seq_len} tokens, too few to hold any out",
                         fix="Evaluate on named files: dataset=text dataset.files=[valid.txt]")
    return corpus.blocks()[n - n_val:]


def causal_stream(cfg, plan: str, objective, tokenizer, cache, log):
    """The evaluation text as one token stream (perplexity.TokenStream)."""
    import numpy as np

    from ptcli.data.sources import read_documents
    from ptcli.inference.perplexity import TokenStream, token_stream

    sep, _ = objective.packing(tokenizer)
    if plan != "tail":
        return token_stream(read_documents(cfg.dataset, plan, log=log), tokenizer, sep)
    ids = np.asarray(heldout_blocks(cfg, objective, tokenizer, cache, log), dtype=np.int64).reshape(-1)
    # bytes of the held-out text: its decoded text (exact for byte-level BPE) plus one per separator
    text = tokenizer.decode(ids.tolist(), skip_special_tokens=True)
    return TokenStream(ids, len(text.encode("utf-8")) + int((ids == sep).sum()), 0)


def masked_blocks(cfg, plan: str, objective, tokenizer, cache, log):
    """The evaluation blocks for a masked LM, streamed (the held-out blocks, or the documents packed)."""
    from ptcli.data.packing import tokenize_documents
    from ptcli.data.sources import read_documents
    from ptcli.inference.masked import blocks_from_documents

    if plan == "tail":
        return iter(heldout_blocks(cfg, objective, tokenizer, cache, log))
    sep, prefix = objective.packing(tokenizer)
    docs = tokenize_documents(tokenizer, read_documents(cfg.dataset, plan, log=log))
    return blocks_from_documents(docs, cfg.dataset.seq_len, sep, prefix)
