"""``explain``: why a text classifier, a token classifier or a causal LM says what it says, for texts from input=,
inputs_file= (.txt, or .jsonl with an "input" field) or stdin lines.

Per input: integrated gradients through the word embeddings (captum; the target's logit; the convergence delta,
F(x) and F(baseline) reported) and attention rollout, as per-token scores. Files (in the run directory, by
``output``): ``tokens-NNN.png`` (a token strip per input), ``attention-NNN.png`` (the layer x head grid of input
``index``) and ``explain.html`` (every input, self-contained). stdout: a table at a terminal, one JSON line per input
otherwise (``output=json``: JSON lines only, no files). Logs go to stderr.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

FILES = {"auto": ("png", "html"), "json": (), "png": ("png",), "html": ("html",)}


def run(cfg, run_dir: Path, stdin=None, stdout=None, stderr=None) -> dict:
    from transformers.utils import logging as hf_logging

    from ptcli.errors import PtcliError, RunFailure
    from ptcli.inference.explain import AUTO_CLASSES, Explainer, NoTokens, explain_kind
    from ptcli.inference.loading import hf_config, load_for_inference
    from ptcli.inference.output import silence_stdout
    from ptcli.inference.prompts import BadPrompt, PromptReader, choose_source

    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    run_dir = Path(run_dir)

    def log(message: str) -> None:
        print(f"ptcli explain: {message}", file=stderr, flush=True)

    hf_logging.disable_progress_bar()
    if cfg.method in ("ig", "both"):
        import importlib.util

        if importlib.util.find_spec("captum") is None:
            raise PtcliError("integrated gradients need the captum package", fix="pip install 'ptcli[explain]' "
                             "(or method=rollout, which does without)")
    source = choose_source(cfg.input, cfg.inputs_file, stdin, ("input", "inputs_file"))
    kind = explain_kind(hf_config(str(cfg.model.path)))
    loaded = load_for_inference(cfg.model, cfg.device, "causal" if kind == "causal" else "classify", log,
                                auto_class=None if kind == "causal" else AUTO_CLASSES[kind])
    try:
        loaded.model.set_attn_implementation("eager")  # SDPA returns no attention weights
    except (AttributeError, ValueError) as e:
        log(f"could not switch the model's attention to eager ({str(e).splitlines()[0]}); trying as it is")
    explainer = Explainer(loaded, kind, cfg.method, cfg.steps, cfg.baseline, cfg.target, cfg.batch_size, log)
    reader = PromptReader(source, cfg.input, cfg.inputs_file, stdin, stderr, key="input", verb="explain",
                          what="a text")
    files = FILES[cfg.output]
    table = cfg.output != "json" and stdout.isatty()
    items, failed, count, closed = [], [], 0, False
    started = time.perf_counter()
    from ptcli.inference import explain_pictures as pictures

    try:
        for item in reader:
            if isinstance(item, BadPrompt):
                failed.append(item.where)
                print(f"ptcli: error: {item.message} ({item.where}); the other inputs go on", file=stderr, flush=True)
                continue
            if cfg.max_inputs is not None and count >= cfg.max_inputs:
                log(f"max_inputs={cfg.max_inputs} reached; the rest are left out")
                break
            try:
                explained = explainer.explain(item)
            except NoTokens as e:
                failed.append(item.where)
                print(f"ptcli: error: {e.what} ({item.where}); the other inputs go on", file=stderr, flush=True)
                continue
            number = count
            count += 1
            if "png" in files:
                path = pictures.token_strip(explained, run_dir / f"tokens-{number:03d}.png", kind)
                explained.pictures["tokens"] = str(path)
            if number == cfg.index and files:
                grid = run_dir / f"attention-{number:03d}.png" if "png" in files else None
                explained.grid = pictures.attention_grid(explained, grid, cfg.layers, cfg.heads)
                if grid is not None:
                    explained.pictures["attention"] = str(grid)
            if "html" in files:
                explained.pictures["html"] = str(run_dir / "explain.html")
            explained.attentions = None  # only input `index` keeps its grid
            items.append(explained)
            if not table:
                stdout.write(json.dumps(explained.record(kind), ensure_ascii=False) + "\n")
                stdout.flush()
    except BrokenPipeError:
        silence_stdout()
        log("stdout was closed by its reader; stopped")
        closed = True
    page = None
    if "html" in files and items:
        grid = next((e.grid for e in items if e.grid is not None), None)
        page = pictures.html_page(items, kind, run_dir / "explain.html", str(cfg.model.path), grid, cfg.index)
    if table and items:
        print_table(items, kind, stdout)
    seconds = time.perf_counter() - started
    deltas = [abs(t.delta) for e in items for t in e.targets if t.delta is not None]
    summary = {"inputs": count, "failed": len(failed), "failed_at": failed[:100], "skipped_empty": len(reader.skipped),
               "kind": kind, "method": cfg.method, "steps": cfg.steps, "baseline": cfg.baseline,
               "max_abs_delta": max(deltas) if deltas else None, "html": str(page) if page else None,
               "seconds": round(seconds, 3), "stopped_early": closed}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    shown = f"; pictures in {run_dir}" if files and items else ""
    log(f"{count} input(s) explained in {seconds:.1f} s{shown}")
    if count == 0 and not failed and not closed:
        raise PtcliError("nothing to explain: no text was given (empty inputs are skipped)",
                         fix="Give input='a text', inputs_file=texts.txt, or one text per line on stdin")
    if failed:
        raise RunFailure(f"{len(failed)} input(s) failed (first at {failed[0]}); the others were explained",
                         where=str(run_dir))
    return summary


def print_table(items: list, kind: str, stream) -> None:
    """One row per target: the input, what was explained, and its three most attributed tokens."""
    from rich.console import Console
    from rich.table import Table

    from ptcli.inference.explain_pictures import shown

    table = Table("input", "explained", "p", "top tokens (IG, else rollout)", "delta", box=None)
    table.columns[0].overflow = "fold"
    for item in items:
        for target in item.targets:
            scores = target.ig if target.ig is not None else target.rollout
            top = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)[:3]
            what = f"{target.label} @{target.position}" if kind == "token" else target.label
            table.add_row(item.prompt.text, what, f"{target.probability:.3f}",
                          ", ".join(f"{shown(item.tokens[i]).strip()} {scores[i]:+.3f}" for i in top),
                          f"{target.delta:.1e}" if target.delta is not None else "-")
    Console(file=stream, soft_wrap=True).print(table)
