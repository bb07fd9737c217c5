"""``generate``: prompts in (prompt=, prompts_file=, stdin, or a prompt loop on a terminal), completions out; for a
speech recognition model (CTC, Whisper) the prompts are WAV file paths and the results their transcripts.

Data goes to stdout (JSON Lines, or readable text on a terminal, streamed token by token for one prompt);
logs, warnings and progress go to stderr. A prompt that fails is reported and the others still run; the
exit code is then 1. When the reader of stdout goes away (``| head -1``) generation stops quietly.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def run(cfg, run_dir: Path, stdin=None, stdout=None, stderr=None) -> dict:
    """Generate for every prompt; returns the summary (also written to ``run_dir/summary.json``)."""
    from ptcli.inference.decoding import check_settings
    from ptcli.inference.output import silence_stdout
    from ptcli.inference.prompts import choose_source

    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr

    def log(message: str) -> None:
        print(f"ptcli generate: {message}", file=stderr, flush=True)

    source = choose_source(cfg.prompt, cfg.prompts_file, stdin)
    check_settings(cfg)
    session = Session(cfg, source, stdin, stdout, stderr, log)
    try:
        session.start()
        session.loop()
    except BrokenPipeError:
        silence_stdout()
        log("stdout was closed by its reader; stopped")
        session.closed = True
    return session.finish(run_dir)


class Session:
    """One ``generate`` run: the loaded model, the prompt stream, the writer and the counts."""

    def __init__(self, cfg, source: str, stdin, stdout, stderr, log):
        self.cfg, self.source, self.stdin, self.stdout, self.stderr, self.log = cfg, source, stdin, stdout, stderr, log
        self.failed: list[str] = []
        self.prompts = self.results = self.new_tokens = 0
        self.audio_seconds = 0.0  # transcribed audio (speech recognition models)
        self.closed = False
        self.reader = None
        self.started = time.perf_counter()

    def start(self) -> None:
        from transformers.utils import logging as hf_logging

        from ptcli.inference.fill_mask import MaskFiller
        from ptcli.inference.loading import load_for_inference
        from ptcli.inference.output import Writer
        from ptcli.inference.prompts import PromptReader

        hf_logging.disable_progress_bar()  # stderr carries our messages only
        cfg = self.cfg
        self.loaded = load_for_inference(cfg.model, cfg.device, cfg.kind, self.log)
        if self.loaded.kind == "fill-mask":
            self.engine = MaskFiller(self.loaded, cfg.top_k, cfg.truncate, self.log)
        elif self.loaded.kind == "replaced":
            from ptcli.inference.replaced import ReplacedTokens

            self.engine = ReplacedTokens(self.loaded, cfg.truncate, self.log)
        elif self.loaded.kind == "transcribe":
            from ptcli.inference.transcribe import Transcriber

            self.engine = Transcriber(self.loaded, cfg, self.log)
        else:
            from ptcli.inference.decoding import Decoder

            self.engine = Decoder(self.loaded, cfg, self.log)
        mode = cfg.output if cfg.output != "auto" else ("text" if self.stdout.isatty() else "jsonl")
        self.writer = Writer(mode, self.stdout, self.loaded.kind, cfg.num_return_sequences > 1)
        self.stream = (mode == "text" and self.stdout.isatty() and self.loaded.kind in ("causal", "seq2seq")
                       and cfg.num_return_sequences == 1 and cfg.num_beams == 1)
        decoding = self.loaded.kind in ("causal", "seq2seq")
        self.reader = PromptReader(self.source, cfg.prompt, cfg.prompts_file, self.stdin, self.stderr,
                                   conversations=True, template=self.engine.format.run if decoding else None)
        self.progress = self.stderr.isatty() and not self.stdout.isatty() and self.source != "interactive"
        self.started = time.perf_counter()

    def good_prompts(self):
        """The reader's prompts; bad ones are reported here as they come and counted."""
        from ptcli.inference.prompts import BadPrompt

        for item in self.reader:
            if not isinstance(item, BadPrompt) and item.messages is not None and not hasattr(self.engine, "format"):
                item = BadPrompt(item.where, f"the line holds chat \"messages\", which a {self.loaded.kind} model "
                                             "does not answer (give a \"prompt\" line, or a chat model)")
            if isinstance(item, BadPrompt):
                self.report(item)
            else:
                self.prompts += 1
                yield item

    def report(self, bad) -> None:
        self.failed.append(bad.where)
        print(f"ptcli: error: {bad.message} ({bad.where}); the other prompts go on", file=self.stderr, flush=True)

    def loop(self) -> None:
        from ptcli.inference.decoding import Completion
        from ptcli.inference.prompts import BadPrompt, batches

        size = 1 if self.source == "interactive" else self.cfg.batch_size
        for batch in batches(self.good_prompts(), size):
            streaming = self.stream and len(batch) == 1
            if self.loaded.kind == "fill-mask":
                results = self.engine.fill(batch)
            elif self.loaded.kind == "replaced":
                results = self.engine.detect(batch)
            elif self.loaded.kind == "transcribe":
                results = self.engine.transcribe(batch)
            else:
                if streaming:
                    self.writer.begin_stream(batch[0].text if batch[0].messages is None else "")
                results = self.engine.generate(batch, self.writer.stream_piece if streaming else None)
            for result in results:
                if isinstance(result, BadPrompt):
                    self.report(result)
                    continue
                self.results += 1
                if isinstance(result, Completion):
                    self.new_tokens += result.new_tokens
                self.audio_seconds += getattr(result, "seconds", 0.0)
                if streaming:
                    self.writer.end_stream()
                else:
                    self.writer.write(result)
            self.writer.flush()
            if self.progress:
                print(f"\rptcli generate: {self.prompts} prompts, {self.new_tokens} new tokens, "
                      f"{self.rate():.0f} tokens/s", end="", file=self.stderr, flush=True)
        if self.progress and self.prompts:
            print(file=self.stderr)

    def rate(self) -> float:
        elapsed = time.perf_counter() - self.started
        return self.new_tokens / elapsed if elapsed > 0 else 0.0

    def finish(self, run_dir: Path) -> dict:
        """Log and write the summary; a failed prompt makes the run fail (exit code 1) after all the others."""
        from ptcli.errors import RunFailure

        skipped = self.reader.skipped if self.reader is not None else []
        if skipped:
            self.log(f"skipped {len(skipped)} empty prompt(s) (first at {skipped[0]})")
        seconds = time.perf_counter() - self.started
        summary = {"prompts": self.prompts, "results": self.results, "failed": len(self.failed),
                   "failed_at": self.failed[:100], "skipped_empty": len(skipped), "new_tokens": self.new_tokens,
                   "seconds": round(seconds, 3), "tokens_per_second": round(self.rate(), 1),
                   "stopped_early": self.closed}
        if getattr(self, "loaded", None) is not None and self.loaded.kind == "transcribe":
            summary |= {"audio_seconds": round(self.audio_seconds, 3),
                        "real_time_factor": round(seconds / self.audio_seconds, 4) if self.audio_seconds else None}
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if self.source != "interactive" or self.failed:
            if "audio_seconds" in summary:
                self.log(f"{self.prompts} audio file(s), {self.results} transcript(s) of {self.audio_seconds:.1f} s "
                         f"of audio in {seconds:.1f} s")
            else:
                self.log(f"{self.prompts} prompt(s), {self.results} result(s), {self.new_tokens} new tokens in "
                         f"{seconds:.1f} s ({summary['tokens_per_second']} tokens/s)")
        if self.prompts == 0 and not self.failed and not self.closed:
            self.log("no prompts to generate from (give prompt=..., prompts_file=... or lines on stdin)")
        if self.failed:
            raise RunFailure(f"{len(self.failed)} prompt(s) failed (first at {self.failed[0]}); "
                             f"{self.results} result(s) were written", where=str(run_dir))
        return summary
