"""``predict``: inputs in (image or WAV paths, or texts: input=, inputs_file=, or stdin lines), labels out.

``ls *.jpg | ptcli predict model.path=<run> > labels.jsonl``: one JSON line per input (the input, its top label and
score, and the top_k labels with their probabilities), or a table at a terminal; logs go to stderr. An input that
fails (a missing or unreadable image or WAV file) is reported and the others still run; the exit code is then 1.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def run(cfg, run_dir: Path, stdin=None, stdout=None, stderr=None) -> dict:
    from transformers.utils import logging as hf_logging

    from ptcli.errors import RunFailure
    from ptcli.inference.classify import AUTO_CLASSES, Classifier, input_kind
    from ptcli.inference.loading import hf_config, load_for_inference
    from ptcli.inference.output import silence_stdout
    from ptcli.inference.prompts import BadPrompt, PromptReader, batches, choose_source

    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr

    def log(message: str) -> None:
        print(f"ptcli predict: {message}", file=stderr, flush=True)

    hf_logging.disable_progress_bar()
    source = choose_source(cfg.input, cfg.inputs_file, stdin, ("input", "inputs_file"))
    kind = input_kind(hf_config(str(cfg.model.path)))
    loaded = load_for_inference(cfg.model, cfg.device, "classify", log, auto_class=AUTO_CLASSES[kind])
    classifier = Classifier(loaded, kind, cfg.top_k, log)
    reader = PromptReader(source, cfg.input, cfg.inputs_file, stdin, stderr, key="input", verb="predict",
                          what={"image": "an image path", "audio": "a WAV file path"}.get(kind, "a text"))
    table = cfg.output == "table" or (cfg.output == "auto" and stdout.isatty())
    rows, failed, count, labelled, closed = [], [], 0, 0, False
    started = time.perf_counter()

    def good():
        nonlocal count
        for item in reader:
            if isinstance(item, BadPrompt):
                report(item)
            else:
                count += 1
                yield item

    def report(bad) -> None:
        failed.append(bad.where)
        print(f"ptcli: error: {bad.message} ({bad.where}); the other inputs go on", file=stderr, flush=True)

    size = 1 if source == "interactive" else cfg.batch_size
    try:
        for batch in batches(good(), size):
            for result in classifier.predict(batch):
                if isinstance(result, BadPrompt):
                    report(result)
                    continue
                labelled += 1
                line = result.record()
                if table:
                    rows.append(line)
                else:
                    stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
            stdout.flush()
    except BrokenPipeError:
        silence_stdout()
        log("stdout was closed by its reader; stopped")
        closed = True
    if table and rows:
        print_table(rows, stdout)
    seconds = time.perf_counter() - started
    summary = {"inputs": count, "labelled": labelled, "failed": len(failed),
               "failed_at": failed[:100], "skipped_empty": len(reader.skipped), "seconds": round(seconds, 3),
               "kind": kind, "stopped_early": closed}
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    rate = count / seconds if seconds > 0 else 0.0
    unit = "clip" if kind == "audio" else kind
    log(f"{count} input(s), {labelled} labelled in {seconds:.1f} s ({rate:.1f} {unit}s/s)")
    if count == 0 and not failed and not closed:
        log("nothing to label (give input=..., inputs_file=... or one input per line on stdin)")
    if failed:
        raise RunFailure(f"{len(failed)} input(s) failed (first at {failed[0]}); the others were labelled",
                         where=str(run_dir))
    return summary


def print_table(rows: list, stream) -> None:
    from rich.console import Console
    from rich.table import Table

    if "value" in rows[0]:
        table = Table("input", "value", box=None)
        table.columns[0].overflow = "fold"
        for row in rows:
            table.add_row(row["input"], f"{row['value']:.4g}")
        Console(file=stream, soft_wrap=True).print(table)
        return
    table = Table("input", "label", "score", "next", box=None)
    table.columns[0].overflow = "fold"  # a long path wraps rather than losing its end
    for row in rows:
        rest = ", ".join(f"{t['label']} {t['score']:.2f}" for t in row["top"][1:3])
        table.add_row(row["input"], row["label"], f"{row['score']:.3f}", rest)
    Console(file=stream, soft_wrap=True).print(table)
