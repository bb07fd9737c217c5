"""Where generate's results go: JSON Lines or readable text on stdout, and a quiet exit when the reader leaves."""

from __future__ import annotations

import json
import os
import sys


def record(result, many_sequences: bool) -> dict:
    """One JSON Lines object: the carried fields, then prompt, completion (or masks) and how it ended."""
    from ptcli.inference.decoding import Completion

    out = dict(result.prompt.fields)
    if result.prompt.messages is not None:  # a conversation: the messages it answers, as they came
        out["messages"] = result.prompt.messages
    else:
        out["prompt"] = result.prompt.text
    if isinstance(result, Completion):
        out.update(completion=result.text, new_tokens=result.new_tokens, finish_reason=result.finish_reason)
        if many_sequences:
            out["index"] = result.index
    elif hasattr(result, "tokens"):  # an ELECTRA discriminator's judgement of every token
        out.update(completion=result.text, tokens=result.tokens)
    elif hasattr(result, "seconds"):  # a transcript of the audio file named by the prompt
        out.pop("prompt", None)
        out.update(audio=result.prompt.text, text=result.text, seconds=result.seconds)
    else:  # a filled mask
        out.update(completion=result.text, masks=result.masks)
    return out


class Writer:
    """Writes results to ``stream`` as ``jsonl`` or ``text`` (a blank line between completions), flushing
    each batch so that a pipe reader sees them at once."""

    def __init__(self, mode: str, stream, kind: str, many_sequences: bool):
        self.mode, self.stream, self.kind, self.many = mode, stream, kind, many_sequences
        self.count = 0
        self.pending = ""

    def write(self, result) -> None:
        if self.mode == "jsonl":
            self.stream.write(json.dumps(record(result, self.many), ensure_ascii=False) + "\n")
        else:
            self.stream.write(self.separator() + self.text(result) + "\n")
        self.count += 1

    def separator(self) -> str:
        return "\n" if self.count and self.kind != "transcribe" else ""  # transcripts: one line each

    def text(self, result) -> str:
        from ptcli.inference.decoding import Completion

        if isinstance(result, Completion):
            shown = self.kind == "causal" and result.prompt.messages is None
            return result.prompt.text + result.text if shown else result.text
        if hasattr(result, "seconds"):  # a transcript
            return f"{result.prompt.text}\t{result.text}"
        if hasattr(result, "tokens"):  # replaced tokens in [brackets], then each token's probability
            return result.text + "\n  " + "  ".join(f"{t['token']} {t['replaced']:.2f}" for t in result.tokens)
        lines = [result.text]
        for n, entry in enumerate(result.masks, 1):
            shown = "  ".join(f"{c['token']} ({c['score']:.3f})" for c in entry["candidates"])
            lines.append(f"  mask {n}: {shown}")
        return "\n".join(lines)

    def begin_stream(self, prompt_text: str) -> None:
        """Before a streamed completion: the separator and (for a causal LM) the prompt it continues, written
        with the first piece (a refused prompt writes nothing)."""
        self.pending = self.separator() + (prompt_text if self.kind == "causal" else "")

    def stream_piece(self, text: str) -> None:
        self.stream.write(self.pending + text)
        self.pending = ""
        self.stream.flush()

    def end_stream(self) -> None:
        self.count += 1

    def flush(self) -> None:
        self.stream.flush()


def silence_stdout() -> None:
    """After the reader of stdout went away (``| head -1``): point stdout at /dev/null so that the final
    flush at exit raises nothing, as Python's documentation on SIGPIPE advises."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a real file (tests capturing it)
        pass


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
