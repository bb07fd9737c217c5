"""``evaluate``: a model's metrics on a dataset, measured by its objective's evaluator; with a ptcli run directory,
on the run's own validation data with the run's objective.

Causal LMs: sliding-window perplexity and bits per byte. Masked LMs: masked-token accuracy and loss with fixed
masks. Fine-tuned objectives: their own metrics. The metrics go to ``metrics.json`` in the evaluation's run
directory, and to stdout as a table (terminal) or one JSON object.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def run(cfg, run_dir: Path, stdout=None, stderr=None, overrides: list[str] | None = None) -> dict:
    """Evaluate as ``cfg`` says (completed from the run's config.yaml); returns the metrics.

    ``overrides``: the command line's overrides, which decide what replaces the run's objective and dataset
    (default: Hydra's record of this run's overrides)."""
    from omegaconf import OmegaConf
    from transformers.utils import logging as hf_logging

    from ptcli.errors import PtcliError
    from ptcli.inference.loading import detect_kind, hf_config, run_config
    from ptcli.verbs import evaluate_config

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
    keys = evaluate_config.command_line_keys(overrides)
    eff, notes, named = evaluate_config.effective_config(plain, run_cfg, keys, kind)
    for note in notes:
        log(note)
    effcfg = OmegaConf.create(eff)
    metrics, name = evaluate(effcfg, kind, named, log, stderr, Path(run_dir))
    seconds = time.perf_counter() - started
    result = {"model": path, "objective": name, **metrics, "seconds": round(seconds, 2)}
    write_outputs(result, effcfg, notes, Path(run_dir))
    show(result, cfg.output, stdout)
    return result


def evaluate(cfg, kind: str, named: bool, log, stderr, run_dir: Path | None = None) -> tuple[dict, str]:
    """Load the model as the objective trains it, and drive the objective's evaluator over its evaluation data
    (with ``+attack=...``: attack it, writing the attacked examples into ``run_dir``)."""
    import torch

    from ptcli.config.build import build
    from ptcli.errors import PtcliError
    from ptcli.inference.loading import KIND_CLASSES, load_for_inference
    from ptcli.inference.output import Progress
    from ptcli.objectives.base import Context
    from ptcli.training.loop import to_device
    from ptcli.training.parallel import Dist
    from ptcli.verbs import evaluate_config
    from ptcli.verbs.train import cache_dir

    objective = build(cfg.objective, "objective")
    name = objective.name or type(objective).__name__
    wanted = objective.inference
    if wanted in KIND_CLASSES and kind != wanted:
        raise PtcliError(f"objective {name} needs a {wanted} model, but the model at '{cfg.model.path}' is "
                         f"{'a ' + kind + ' model' if kind != 'other' else 'neither'}",
                         fix="Choose the matching objective (objective=clm for decoders, objective=mlm for encoders)")
    if cfg.batch_size < 1:
        raise PtcliError(f"batch_size must be at least 1, got {cfg.batch_size}", fix="Set batch_size=8")
    loaded = load_for_inference(cfg.model, cfg.device, wanted if wanted in KIND_CLASSES else "classify", log,
                                auto_class=objective.auto_class)
    source = build(cfg.dataset, "dataset")
    split = evaluate_config.split_plan(source, named)
    ctx = Context(cfg, source, cache_dir(cfg), Dist(), log, split=split)
    described = evaluate_config.describe(source, split, objective.unit)
    log(f"data: {described}")
    if cfg.get("attack") is not None:
        from ptcli.verbs.attack import attack

        return attack(cfg, objective, loaded, ctx, run_dir, stderr) | {"data": described}, name
    data = objective.setup_evaluation(ctx, loaded)
    evaluator = objective.evaluator()
    started = time.perf_counter()
    with Progress(stderr, "batches") as progress, torch.no_grad():
        for done, batch in enumerate(data.batches, 1):
            with loaded.placement.autocast():
                evaluator.update(loaded.model, to_device(batch, loaded.placement.device))
            progress.update(done, data.total)
    metrics = data.finish(evaluator)
    elapsed = time.perf_counter() - started
    for unit in ("tokens", "blocks", "examples"):
        if isinstance(metrics.get(unit), int) and elapsed > 0:
            metrics[f"{unit}_per_second"] = round(metrics[unit] / elapsed, 1)
            break
    metrics["data"] = described
    if "loss" in metrics:
        log(f"loss {metrics['loss']:.4f} in {elapsed:.1f} s")
    return metrics, name


def write_outputs(result: dict, cfg, notes: list[str], run_dir: Path) -> None:
    """``metrics.json``, and ``config.yaml`` rewritten as the config actually evaluated (the run's objective
    and dataset filled in), with where each part came from."""
    from omegaconf import OmegaConf

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    header = "".join(f"# {note}\n" for note in ["the config evaluate ran with", *notes])
    (run_dir / "config.yaml").write_text(header + OmegaConf.to_yaml(cfg))


def json_unless_table(result: dict, output: str, stdout) -> bool:
    """``json``: write exactly one JSON object on stdout and return False; ``table`` (``auto`` at a terminal): True,
    the caller draws its table."""
    if output == "auto":
        output = "table" if stdout.isatty() else "json"
    if output == "json":
        stdout.write(json.dumps(result) + "\n")
        stdout.flush()
        return False
    return True


def show(result: dict, output: str, stdout) -> None:
    """``json``: exactly one JSON object on stdout; ``table``: a table on stdout; ``auto``: table on a terminal."""
    if not json_unless_table(result, output, stdout):
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
