"""What ``prune`` and ``quantize`` share: load the trained model, measure it, compress it into ``<run>/model/``,
reload that folder the way every other verb will, measure again, and report the two side by side.

The report (one table, and ``compression.json`` in the run directory) holds parameters, zeros, bytes of weight files,
CPU latency at each ``latency.batch_sizes`` and the task metric on the validation data before and after; every
figure is measured in this process (nothing is copied from a config). The run directory is a ptcli run like a
fine-tuning run's (``model/`` with its processors, ``tokenizer/``, ``config.yaml`` naming the task's objective and
dataset), so ``ptcli evaluate model.path=<run>`` and ``ptcli finetune model.path=<run>`` take it as they are.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass
class Task:
    """The model to compress and what it is measured on."""

    cfg: Any  # the verb's config with the run's objective and dataset filled in (an OmegaConf node)
    kind: str  # the inference kind of the model (classify, causal, ...)
    named: bool  # the data was named on the command line (then all of it is evaluated)
    notes: list[str]
    source: str  # model.path as given
    log: Callable[[str], None]
    stderr: Any
    extra: dict = field(default_factory=dict)

    def objective(self):
        from ptcli.config.build import build

        return build(self.cfg.objective, "objective")

    def load(self, path: str | None = None, device: str = "cpu"):
        """The model at ``path`` (default: the source) with the objective's head, on ``device`` (CPU: compression
        and its latency figures are about CPU inference), in fp32."""
        from omegaconf import OmegaConf

        from ptcli.inference.loading import KIND_CLASSES, load_for_inference

        objective = self.objective()
        model_cfg = OmegaConf.merge(self.cfg.model, {"path": path or self.source})
        device_cfg = OmegaConf.merge(self.cfg.device, {"accelerator": device, "precision": "fp32"})
        wanted = objective.inference if objective.inference in KIND_CLASSES else "classify"
        return load_for_inference(model_cfg, device_cfg, wanted, self.log, auto_class=objective.auto_class)

    def metrics(self, path: str) -> dict:
        """The objective's metrics for the model at ``path`` on the task's validation data."""
        from omegaconf import OmegaConf

        from ptcli.verbs.evaluate import evaluate

        cfg = OmegaConf.merge(self.cfg, {"model": {"path": path}})
        metrics, _ = evaluate(cfg, self.kind, self.named, self.log, self.stderr)
        return metrics


def task_for(cfg, verb: str, stderr) -> Task:
    """The model and task of a compression run: the objective and dataset of the run at model.path unless the
    command line names them."""
    from omegaconf import OmegaConf

    from ptcli.errors import PtcliError
    from ptcli.inference.loading import detect_kind, hf_config, run_config
    from ptcli.verbs import evaluate_config

    def log(message: str) -> None:
        print(f"ptcli {verb}: {message}", file=stderr, flush=True)

    path = str(cfg.model.path)
    run_cfg = run_config(path)
    try:
        kind = detect_kind(hf_config(path), run_cfg)
    except PtcliError:
        kind = "classify"
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.setdefault("stride", None)  # what the evaluators read besides the verb's own keys
    keys = evaluate_config.command_line_keys()
    if plain.get("objective") is None and not (run_cfg and run_cfg.get("objective")):
        eff, notes, named = plain, ["objective: none (evaluate=false)"], False
    else:
        eff, notes, named = evaluate_config.effective_config(plain, run_cfg, keys, kind)
    for note in notes:
        log(note)
    return Task(OmegaConf.create(eff), kind, named, notes, path, log, stderr)


def run_compression(cfg, run_dir: Path, verb: str, compress: Callable[[Task, Any, Path], dict], stdout=None,
                    stderr=None) -> dict:
    """Measure, ``compress(task, loaded, out_folder) -> details`` (it saves the compressed model and its processors
    into ``out_folder``), reload, measure, report. Returns the report."""
    import torch
    from transformers.utils import logging as hf_logging

    from ptcli.compression.measure import measure

    hf_logging.disable_progress_bar()  # transformers' "Loading weights" bars, as evaluate and predict do
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    run_dir = Path(run_dir)
    task = task_for(cfg, verb, stderr)
    threads = cfg.latency.threads or (cfg.device.threads or torch.get_num_threads())
    seq_len = cfg.latency.seq_len or (task.cfg.get("dataset") or {}).get("seq_len") or 128

    def figures(loaded, folder: Path, path: str) -> dict:
        task.log(f"timing forward passes at batch {', '.join(map(str, cfg.latency.batch_sizes))} "
                 f"({seq_len} tokens, {threads} thread(s), median of {cfg.latency.repeats})")
        shown = measure(loaded.model, folder, cfg.latency.batch_sizes, seq_len, cfg.latency.repeats,
                        cfg.latency.warmup, threads)
        if cfg.evaluate:
            shown["metrics"] = {k: v for k, v in task.metrics(path).items() if isinstance(v, (int, float))}
        return shown

    loaded = task.load()
    before = figures(loaded, model_folder(task.source), task.source)
    out = run_dir / "model"
    out.mkdir(parents=True, exist_ok=True)
    details = compress(task, loaded, out)
    loaded.processors.save_pretrained(out)  # a model folder that transformers' pipelines take as it is
    del loaded
    reloaded = task.load(str(run_dir))  # exactly as evaluate, generate and finetune will load it
    # the run directory is a ptcli run: config.yaml names the task (written before evaluating the compressed model,
    # which reads it back), tokenizer/ beside model/
    write_run_config(task, run_dir)
    reloaded.processors.save_pretrained(run_dir / reloaded.processors.folder_name)
    after = figures(reloaded, out, str(run_dir))
    report = {"verb": verb, "model": task.source, "output": str(out), **details, "threads": threads,
              "seq_len": seq_len, "before": before, "after": after, "ratios": ratios(before, after)}
    (run_dir / "compression.json").write_text(json.dumps(report, indent=2) + "\n")
    show(report, cfg.output, stdout)
    task.log(f"wrote {out} and {run_dir / 'compression.json'}")
    return report


def model_folder(path: str) -> Path:
    """The folder whose weight files the model's size is measured on (a LoRA adapter: its base, which the merged
    model weighs as much as)."""
    from ptcli.config.paths import adapter_base, is_adapter, resolve_model_dir

    folder = resolve_model_dir(path)
    if folder is not None and is_adapter(folder) and adapter_base(folder)[0] is not None:
        return model_folder(adapter_base(folder)[0])
    return Path(folder) if folder is not None else Path(path)


def write_run_config(task: Task, run_dir: Path) -> None:
    from omegaconf import OmegaConf

    header = "".join(f"# {note}\n" for note in ["the config the compression ran with", *task.notes])
    (run_dir / "config.yaml").write_text(header + OmegaConf.to_yaml(task.cfg))


def ratios(before: dict, after: dict) -> dict:
    """after / before for the size and speed figures (below 1: smaller, faster)."""
    keys = ["parameters", "file_bytes"] + [k for k in before if k.startswith("latency_ms_")]
    return {k: round(after[k] / before[k], 3) for k in keys if before.get(k) and k in after}


def rows(report: dict) -> list[tuple[str, str, str, str]]:
    """(figure, before, after, after/before) rows of the report's table."""
    before, after, ratio = report["before"], report["after"], report["ratios"]
    out = [("parameters", f"{before['parameters'] / 1e6:.2f}M", f"{after['parameters'] / 1e6:.2f}M",
            f"{ratio.get('parameters', 1):.3f}x"),
           ("zero weights", f"{before['sparsity']:.1%}", f"{after['sparsity']:.1%}", ""),
           ("weight files", f"{before['file_bytes'] / 1e6:.1f} MB", f"{after['file_bytes'] / 1e6:.1f} MB",
            f"{ratio.get('file_bytes', 1):.3f}x")]
    for key in [k for k in before if k.startswith("latency_ms_")]:
        out.append((f"CPU latency, batch {key.removeprefix('latency_ms_b')}", f"{before[key]:.1f} ms",
                    f"{after[key]:.1f} ms", f"{ratio.get(key, 1):.3f}x"))
    for name, value in (before.get("metrics") or {}).items():
        if name in NOT_METRICS or name.endswith("_per_second"):
            continue
        later = (after.get("metrics") or {}).get(name)
        out.append((name, f"{value:.4f}", "-" if later is None else f"{later:.4f}",
                    "" if later is None else f"{later - value:+.4f}"))
    return out


NOT_METRICS = {"examples", "tokens", "blocks", "batches", "windows", "seq_len", "stride", "bytes", "seconds"}


def show(report: dict, output: str, stdout) -> None:
    """A table on a terminal (``output=auto``) or with ``output=table``; one JSON object otherwise."""
    from ptcli.verbs.evaluate import json_unless_table

    if not json_unless_table(report, output, stdout):
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ptcli {report['verb']}: {report.get('method', '')} on {report['model']}")
    for name, justify in (("", "left"), ("before", "right"), ("after", "right"), ("after/before", "right")):
        table.add_column(name, justify=justify)
    for row in rows(report):
        table.add_row(*row)
    Console(file=stdout, soft_wrap=True).print(table)
