"""Where prompts come from (``prompt=``, ``prompts_file=``, stdin, an interactive loop), one at a time.

Bad input never stops the others: an empty prompt is skipped and counted, a broken .jsonl line becomes a
:class:`BadPrompt` naming the file and line, and the caller reports it and carries on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from ptcli.errors import PtcliError


@dataclass
class Prompt:
    """One prompt: its text, the fields carried through to the output, and where it came from."""

    index: int  # position among the valid prompts, in input order (seeds sampling, orders the output)
    text: str
    where: str  # "prompt", "prompts.jsonl:3", "stdin:5"
    fields: dict = field(default_factory=dict)
    messages: list | None = None  # a conversation ({role, content} dicts) to answer; text is then its last turn
    values: dict | None = None  # a record with the fields of an SFT run's prompt template (text: the filled prompt)
    seed: int | None = None  # sampling: this prompt's own seed (a server request's); None: the run's


@dataclass
class BadPrompt:
    """A prompt that could not be used, and why (reported on stderr; the run exits non-zero at the end)."""

    where: str
    message: str


def choose_source(prompt, prompts_file, stdin, names=("prompt", "prompts_file")) -> str:
    """'prompt', 'file', 'stdin' (a pipe or file) or 'interactive' (a terminal and nothing else given)."""
    one, many = names
    if prompt is not None and prompts_file:
        raise PtcliError(f"both {one} and {many} are set", fix="Give one of them")
    if prompt is not None:
        return "prompt"
    if prompts_file:
        if prompts_file != "-" and not os.path.isfile(prompts_file):
            raise PtcliError(f"{many} '{prompts_file}' does not exist", where=os.getcwd(),
                             fix="Check the path (relative to the current folder); .txt or .jsonl")
        return "file" if prompts_file != "-" else "stdin"
    return "interactive" if stdin.isatty() else "stdin"


class PromptReader:
    """Iterate prompts (and bad ones) from the chosen source; ``skipped`` counts empty prompts passed over."""

    def __init__(self, source: str, prompt=None, prompts_file: str | None = None, stdin=None, stderr=None,
                 key: str = "prompt", verb: str = "generate", what: str = "a prompt", conversations: bool = False,
                 template=None):
        self.source, self.prompt, self.prompts_file = source, prompt, prompts_file
        self.key, self.verb, self.what = key, verb, what  # the .jsonl field read; the banner's verb and noun
        # generate: "messages" lines (.jsonl, and JSON lines on stdin) are conversations; with an SFT run's template
        # (formatting.RunTemplate) a .jsonl line with its fields and no "prompt" fills it
        self.conversations, self.template = conversations, template
        self.stdin, self.stderr = stdin, stderr
        self.skipped: list[str] = []
        self._count = 0

    def __iter__(self) -> Iterator[Prompt | BadPrompt]:
        if self.source == "prompt":
            many_values = isinstance(self.prompt, Sequence) and not isinstance(self.prompt, str)
            values = list(self.prompt) if many_values else [self.prompt]
            many = len(values) > 1
            from ptcli.objectives.sft import unescape  # "\n" typed means a newline, as in a prompt_template

            for i, value in enumerate(values):
                yield from self._text(unescape(str(value)) if value is not None else "",
                                      f"prompt[{i}]" if many else "prompt")
        elif self.source == "file" and self.prompts_file.lower().endswith(".jsonl"):
            yield from self._jsonl(self.prompts_file)
        elif self.source == "file":
            yield from self._lines(self._file_lines(self.prompts_file), self.prompts_file)
        elif self.source == "stdin":
            yield from self._lines(self._stdin_lines(), "stdin")
        else:
            yield from self._interactive()

    def _new(self, text: str, where: str, fields: dict | None = None, **kind) -> Prompt:
        prompt = Prompt(self._count, text, where, fields or {}, **kind)
        self._count += 1
        return prompt

    def _conversation(self, record: dict, where: str) -> Prompt | BadPrompt:
        from ptcli.inference.formatting import messages_problem

        messages = record.pop("messages")
        problem = messages_problem(messages)
        if problem:
            return BadPrompt(where, problem)
        return self._new(messages[-1]["content"], where, record, messages=messages)

    def _text(self, text: str, where: str) -> Iterator[Prompt]:
        if text.strip():
            yield self._new(text, where)
        else:
            self.skipped.append(where)

    def _file_lines(self, path: str) -> Iterator[tuple[int, str | BadPrompt]]:
        """A file's lines decoded one by one, so a bad byte costs one line, not the file."""
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, 1):
                try:
                    yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError as e:
                    yield number, BadPrompt(f"{path}:{number}", f"not valid UTF-8 ({e.reason} at byte {e.start})")

    def _stdin_lines(self) -> Iterator[tuple[int, str | BadPrompt]]:
        """stdin's lines, decoded one by one from its bytes (a bad byte costs one line); binary data (a gzip file,
        an image) is refused at once, saying what it is."""
        buffer = getattr(self.stdin, "buffer", None)
        if buffer is None:  # a text stream already (tests, a wrapper)
            yield from enumerate(self.stdin, 1)
            return
        from ptcli.data.binary import sniff
        from ptcli.errors import PtcliError

        for number, raw in enumerate(buffer, 1):
            if number == 1 and sniff(raw):
                what, fix = sniff(raw)
                raise PtcliError(f"stdin holds {what}, not prompts", where="stdin",
                                 fix=f"give one prompt per line of UTF-8 text ({fix})")
            try:
                yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as e:
                yield number, BadPrompt(f"stdin:{number}", f"not valid UTF-8 ({e.reason} at byte {e.start})")

    def _lines(self, lines, name: str) -> Iterator[Prompt | BadPrompt]:
        for number, line in lines:
            if isinstance(line, BadPrompt):
                yield line
                continue
            text = line.rstrip("\r\n")
            record = self._json_line(text)
            if record is not None:  # JSON Lines on stdin: read as a .jsonl file's line would be
                yield from self._record(record, f"{name}:{number}")
                continue
            yield from self._text(text, f"{name}:{number}")

    def _json_line(self, text: str) -> dict | None:
        """A line that is a JSON object holding the prompt field (or "messages"), else None (literal text)."""
        from ptcli.inference.formatting import json_object_with

        return json_object_with(text, (self.key, "messages") if self.conversations else (self.key,))

    def _jsonl(self, path: str) -> Iterator[Prompt | BadPrompt]:
        for number, line in self._file_lines(path):
            where = f"{path}:{number}"
            if isinstance(line, BadPrompt):
                yield line
                continue
            if not line.strip():
                self.skipped.append(where)
                continue
            try:
                record = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as e:  # json's messages may end in "at" ("Unterminated string starting at")
                at = "" if e.msg.endswith(" at") else " at"
                yield BadPrompt(where, f"invalid JSON: {e.msg}{at} column {e.colno}")
                continue
            if not isinstance(record, dict):
                yield BadPrompt(where, f"the line holds a JSON {type(record).__name__}, not an object")
                continue
            yield from self._record(record, where)

    def _record(self, record: dict, where: str) -> Iterator[Prompt | BadPrompt]:
        """One JSON object: a conversation, the SFT template's fields, or the prompt field plus fields carried."""
        if self.conversations and self.key not in record and "messages" in record:
            yield self._conversation(record, where)
            return
        if self.template is not None and self.key not in record and any(f in record for f in self.template.fields):
            values = {f: record[f] for f in self.template.fields if f in record}
            yield self._new(self.template.prompt(values), where, record, values=values)
            return
        text = record.pop(self.key, None)
        if not isinstance(text, str):
            found = f"no \"{self.key}\" field" if text is None else f"\"{self.key}\" is a {type(text).__name__}"
            fields = ", ".join(self.template.fields) if self.template else ""
            also = [*(['a "messages" list'] if self.conversations else []),
                    *([f"the prompt template's fields ({fields})"] if self.template else [])]
            also = f" (or {', or '.join(also)})" if also else ""
            yield BadPrompt(where, f"{found}; each line needs a \"{self.key}\" string{also}")
            return
        if text.strip():
            yield self._new(text, where, record)
        else:
            self.skipped.append(where)

    def _interactive(self) -> Iterator[Prompt]:
        """A prompt loop on the terminal: the prompt marker goes to stderr, Ctrl-D (end of input) quits."""
        print(f"ptcli {self.verb}: type {self.what} and press Enter; Ctrl-D quits.", file=self.stderr, flush=True)
        number = 0
        while True:
            print("> ", end="", file=self.stderr, flush=True)
            line = self.stdin.readline()
            if not line:
                print(file=self.stderr, flush=True)
                return
            number += 1
            text = line.rstrip("\r\n")
            if text.strip():
                yield self._new(text, f"input:{number}")


def batches(items, size: int) -> Iterator[list]:
    """Consecutive lists of up to ``size`` items, produced as soon as each is full (input order kept)."""
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
