"""``evaluate``: a model's metrics on a dataset; with a ptcli run directory, on the run's own validation data.

Causal LMs: sliding-window perplexity and bits per byte. Masked LMs: masked-token accuracy and loss with
fixed masks. Fine-tuned objectives: ``ptcli.verbs.finetune_eval`` once it exists. The metrics go to
``metrics.json`` in the evaluation's run directory, and to stdout as a table (terminal) or one JSON object.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

BUILT_IN = {"ptcli.objectives.clm.CausalLM": "clm", "ptcli.objectives.mlm.MaskedLM": "mlm"}
NEEDED_KIND = {"clm": "causal", "mlm": "fill-mask"}


def objective_name(target: str) -> str:
    """'clm', 'classification', ... for ptcli's objectives; the class name for a plug-in."""
    if target in BUILT_IN:
        return BUILT_IN[target]
    if target.startswith("ptcli.objectives."):
        return target.split(".")[2]
    return target.rsplit(".", 1)[-1]


def run(cfg, run_dir: Path, stdout=None, stderr=None, overrides: list[str] | None = None) -> dict:
    """Evaluate as ``cfg`` says (completed from the run's config.yaml); returns the metrics.

    ``overrides``: the command line's overrides, which decide what replaces the run's objective and dataset
    (default: Hydra's record of this run's overrides)."""
    from omegaconf import OmegaConf
    from transformers.utils import logging as hf_logging

    from ptcli.errors import PtcliError
    from ptcli.inference import eval_data
    from ptcli.inference.loading import detect_kind, hf_config, run_config

    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr

    def log(message: str) -> None:
        print(f"ptcli evaluate: {message}", file=stderr, flush=True)

    hf_logging.disable_progress_bar()
    started = time.perf_counter()
    path = str(cfg.model.path)
    run_cfg = run_config(path)
    try:
        kind = detect_kind(hf_config(path), run_cfg)
    except PtcliError:
        kind = "other"  # a classifier: only its objective (from the run or the command line) can evaluate it
    plain = OmegaConf.to_container(cfg, resolve=True)
    keys = eval_data.command_line_keys(overrides)
    eff, notes, named = eval_data.effective_config(plain, run_cfg, keys, kind)
    for note in notes:
        log(note)
    effcfg = OmegaConf.create(eff)
    name = objective_name(effcfg.objective._target_)
    if name in NEEDED_KIND:
        metrics = evaluate_lm(effcfg, name, kind, named, log, stderr)
    else:
        metrics = evaluate_finetuned(effcfg, name, log)
    seconds = time.perf_counter() - started
    result = {"model": path, "objective": name, **metrics, "seconds": round(seconds, 2)}
    write_outputs(result, effcfg, notes, Path(run_dir))
    show(result, cfg.output, stdout)
    return result


def evaluate_lm(cfg, name: str, kind: str, named: bool, log, stderr) -> dict:
    """clm: sliding-window perplexity and bits per byte; mlm: masked-token accuracy and loss."""
    from ptcli.config.build import build
    from ptcli.errors import PtcliError
    from ptcli.inference import eval_data
    from ptcli.inference.loading import load_for_inference
    from ptcli.verbs.train import cache_dir

    if kind != NEEDED_KIND[name]:
        raise PtcliError(f"objective {name} needs a {NEEDED_KIND[name]} model, but the model at '{cfg.model.path}' "
                         f"is {'a ' + kind if kind != 'other' else 'neither'}",
                         fix="Choose the matching objective (objective=clm for decoders, objective=mlm for encoders)")
    if cfg.batch_size < 1:
        raise PtcliError(f"batch_size must be at least 1, got {cfg.batch_size}", fix="Set batch_size=8")
    objective = build(cfg.objective, "objective")
    loaded = load_for_inference(cfg.model, cfg.device, NEEDED_KIND[name], log)
    objective.bind(loaded.tokenizer)
    seq_len = cfg.dataset.seq_len
    if loaded.context and seq_len > loaded.context:
        raise PtcliError(f"dataset.seq_len ({seq_len}) exceeds the model's maximum positions ({loaded.context})",
                         fix=f"Set dataset.seq_len={loaded.context} (or lower)")
    plan = eval_data.split_plan(cfg.dataset, named)
    data = eval_data.describe(cfg.dataset, plan)
    log(f"data: {data}")
    cache = cache_dir(cfg)
    started = time.perf_counter()
    if name == "clm":
        from ptcli.inference.perplexity import clm_metrics, score_windows

        stride = cfg.stride or seq_len
        if not 1 <= stride <= seq_len:
            raise PtcliError(f"stride must be between 1 and dataset.seq_len ({seq_len}), got {stride}",
                             fix=f"Set stride={seq_len // 2} (overlapping windows) or leave it null")
        stream = eval_data.causal_stream(cfg, plan, objective, loaded.tokenizer, cache, log)
        if len(stream.ids) < 2:
            raise PtcliError("the evaluation text has fewer than 2 tokens", where=data, fix="Evaluate on more text")
        log(f"{len(stream.ids):,} tokens, windows of {seq_len} every {stride}")
        with Progress(stderr, "windows") as progress:
            scores = score_windows(loaded.model, stream.ids, seq_len, stride, cfg.batch_size, loaded.placement,
                                   cfg.max_batches, progress.update)
        metrics = clm_metrics(scores, stream.n_bytes, seq_len, stride)
    else:
        from ptcli.inference.masked import mlm_scores

        blocks = eval_data.masked_blocks(cfg, plan, objective, loaded.tokenizer, cache, log)
        with Progress(stderr, "blocks") as progress:
            metrics = mlm_scores(loaded.model, objective, blocks, cfg.batch_size, cfg.seed, loaded.placement,
                                 cfg.max_batches, lambda done: progress.update(done, None))
        metrics["seq_len"] = seq_len
    elapsed = time.perf_counter() - started
    counted = metrics.get("tokens") or metrics.get("masked_tokens") or 0
    if name == "clm":
        metrics["tokens_per_second"] = round(len(stream.ids) / elapsed, 1) if elapsed > 0 else None
    else:
        metrics["blocks_per_second"] = round((metrics.get("blocks") or 0) / elapsed, 2) if elapsed > 0 else None
    metrics["data"] = data
    log(f"loss {metrics['loss']:.4f} over {counted:,} tokens in {elapsed:.1f} s")
    return metrics


def evaluate_finetuned(cfg, name: str, log) -> dict:
    """Fine-tuned objectives (classification, NER, seq2seq, ...): their own metrics, computed by
    ``ptcli.verbs.finetune_eval.evaluate_objective`` (the fine-tuning work, issue #4) once that exists."""
    import importlib
    import importlib.util

    import transformers

    from ptcli.config.build import build
    from ptcli.errors import PtcliError
    from ptcli.inference.loading import load_tokenizer_for
    from ptcli.models import HEADS, load_pretrained
    from ptcli.training.device import resolve

    # ---- the fine-tuning branch: delegated, never implemented here -------------------------------------------
    if importlib.util.find_spec("ptcli.verbs.finetune_eval") is None:
        raise PtcliError(f"evaluating {name} models is not built yet",
                         fix="ptcli evaluate handles causal LMs (clm) and masked LMs (mlm) for now")
    finetune_eval = importlib.import_module("ptcli.verbs.finetune_eval")
    objective = build(cfg.objective, "objective")
    tokenizer = load_tokenizer_for(str(cfg.model.path), "other", log)
    placement = resolve(cfg.device)
    model = load_pretrained(getattr(transformers, HEADS[objective.head]), str(cfg.model.path))
    model.to(placement.device).eval()
    return dict(finetune_eval.evaluate_objective(cfg, model, tokenizer, placement, log))


def write_outputs(result: dict, cfg, notes: list[str], run_dir: Path) -> None:
    """``metrics.json``, and ``config.yaml`` rewritten as the config actually evaluated (the run's objective
    and dataset filled in), with where each part came from."""
    from omegaconf import OmegaConf

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    header = "".join(f"# {note}\n" for note in ["the config evaluate ran with", *notes])
    (run_dir / "config.yaml").write_text(header + OmegaConf.to_yaml(cfg))


def show(result: dict, output: str, stdout) -> None:
    """``json``: exactly one JSON object on stdout; ``table``: a table on stdout; ``auto``: table on a terminal."""
    if output == "auto":
        output = "table" if stdout.isatty() else "json"
    if output == "json":
        stdout.write(json.dumps(result) + "\n")
        stdout.flush()
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ptcli evaluate: {result['model']}", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.items():
        if key in ("model",):
            continue
        shown = f"{value:.6g}" if isinstance(value, float) else ("-" if value is None else str(value))
        table.add_row(key, shown)
    Console(file=stdout, soft_wrap=True).print(table)


class Progress:
    """A rich progress bar on stderr when it is a terminal; nothing otherwise (logs say the rest)."""

    def __init__(self, stderr, unit: str):
        self.stderr, self.unit, self.bar = stderr, unit, None

    def __enter__(self):
        if self.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self.bar = Bar("[bold]evaluate", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                           console=Console(file=self.stderr), transient=True)
            self.task = self.bar.add_task(self.unit, total=None)
            self.bar.start()
        return self

    def update(self, done: int, total: int | None) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=total)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
