"""``chat``: a multi-turn conversation with a trained model on the terminal.

Each line on stdin is a user turn (or a command: /reset, /system <text>, /exit, /quit, /help); the reply streams
to stdout token by token and ends with a newline, so ``printf 'hi\\nwhat is 2+2\\n' | ptcli chat ... > replies.txt``
gives one reply per turn. Prompts (``>>> ``) and notices go to stderr. The conversation goes through the tokenizer's
chat template (a plain User/Assistant transcript without one), its oldest turns left out when it outgrows the
model's context. Ctrl-C stops a reply (what was printed stays in the history); at the prompt it leaves (exit 0).
The transcript is ``chat.jsonl`` in the run directory, rewritten after every turn.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def run(cfg, run_dir: Path, stdin=None, stdout=None, stderr=None) -> dict:
    """Chat until /exit, end of input or Ctrl-C at the prompt; returns the summary (also ``summary.json``)."""
    from ptcli.inference.decoding import check_settings
    from ptcli.inference.output import silence_stdout

    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    check_settings(cfg)
    session = ChatSession(cfg, Path(run_dir), stdin, stdout, stderr)
    session.start()
    try:
        session.loop()
    except BrokenPipeError:
        silence_stdout()
        session.log("stdout was closed by its reader; stopped")
    return session.finish()


class ChatSession:
    """The loaded model, its decoder, the conversation and the counts of one ``chat`` run."""

    def __init__(self, cfg, run_dir: Path, stdin, stdout, stderr):
        from ptcli.inference.conversation import Conversation

        self.cfg, self.run_dir, self.stdin, self.stdout, self.stderr = cfg, run_dir, stdin, stdout, stderr
        self.conversation = Conversation(cfg.system)
        self.turns = self.new_tokens = 0
        self.seconds = 0.0

    def log(self, message: str) -> None:
        print(f"ptcli chat: {message}", file=self.stderr, flush=True)

    def start(self) -> None:
        from transformers.utils import logging as hf_logging

        from ptcli.errors import PtcliError
        from ptcli.inference.decoding import Decoder
        from ptcli.inference.formatting import TRANSCRIPT_STOP
        from ptcli.inference.loading import load_for_inference

        hf_logging.disable_progress_bar()
        loaded = load_for_inference(self.cfg.model, self.cfg.device, "auto", self.log)
        if loaded.kind not in ("causal", "seq2seq"):
            raise PtcliError(f"chat needs a model that writes text (a causal LM or seq2seq model); this one is "
                             f"{loaded.kind}", fix="Use `ptcli generate` for masked LMs and ELECTRA discriminators")
        self.decoder = Decoder(loaded, self.cfg, self.log, conversation=True)
        if not self.decoder.format.chat:
            self.decoder.stops.append(TRANSCRIPT_STOP)  # the model would go on to write the user's next turn
        self.log("type a message and press Enter; /help lists the commands, /exit or Ctrl-D leaves")

    def loop(self) -> None:
        from ptcli.inference.conversation import HELP, LineReader, parse_command

        lines = LineReader(self.stdin)
        while True:
            try:
                print(">>> ", end="", file=self.stderr, flush=True)
                line = lines.readline()
            except KeyboardInterrupt:  # Ctrl-C at the prompt: leave
                line = ""
            if not line:
                print(file=self.stderr, flush=True)
                return
            text = line.rstrip("\r\n")
            if not self.stdin.isatty():  # a terminal shows what was typed; a log of piped input shows it here
                print(text, file=self.stderr, flush=True)
            if not text.strip():
                continue
            command = parse_command(text)
            if command is None:
                try:
                    self.reply(text)
                except KeyboardInterrupt:  # between the steps of a turn: the turn is dropped
                    print(file=self.stdout, flush=True)
                    self.log("reply stopped")
            elif command.name == "exit":
                return
            elif command.name == "help":
                print(HELP, file=self.stderr, flush=True)
            elif command.name == "reset":
                self.conversation.reset()
                self.log("the conversation is forgotten" + (" (the system message stays)"
                                                             if self.conversation.system else ""))
            elif command.name == "system":
                self.conversation.reset(command.argument)
                self.log("system message set; a new conversation" if command.argument else
                         "no system message; a new conversation")
            else:
                self.log(f"unknown command /{command.argument}; /help lists them (start a message with // "
                         "to send a slash)")
            self.save()

    def reply(self, user: str) -> None:
        """One turn: fit the history to the context, stream the reply, keep it."""
        from ptcli.inference.conversation import ReplyPrinter
        from ptcli.inference.prompts import BadPrompt, Prompt

        if user.lstrip().startswith("//"):
            user = user.lstrip()[1:]
        decoder = self.decoder
        conversation = self.conversation
        lengths: dict[int, int] = {}

        def length(messages):
            ids = decoder.token_ids(Prompt(self.turns, user, "", messages=messages))
            lengths[len(messages)] = len(ids)
            return len(ids)

        dropped = conversation.fit(user, length, decoder.budget)
        if dropped:
            self.log(f"the conversation outgrew the model's context: left out its {dropped} oldest message(s) "
                     "(the system message stays)")
        messages = conversation.messages(user)
        prompt = Prompt(self.turns, user, f"turn {self.turns + 1}", messages=messages)
        prompt_tokens = lengths.get(len(messages)) or length(messages)
        printer = ReplyPrinter(self.stdout)
        started = time.perf_counter()
        try:
            results = decoder.generate([prompt], printer)
        except KeyboardInterrupt:
            printer.end()
            self.log("reply stopped (what was printed stays in the conversation)")
            conversation.add(user, printer.text, interrupted=True)
            self.turns += 1
            return
        result = results[0]
        if isinstance(result, BadPrompt):
            self.log(f"error: {result.message}; the conversation goes on without this turn")
            return
        printer.end()
        seconds = time.perf_counter() - started
        self.seconds += seconds
        self.turns += 1
        self.new_tokens += result.new_tokens
        conversation.add(user, result.text.strip())
        rate = result.new_tokens / seconds if seconds > 0 else 0.0
        self.log(f"{prompt_tokens} prompt tokens, {result.new_tokens} new tokens, {rate:.1f} tokens/s")

    def save(self) -> None:
        """chat.jsonl: one {"messages": [...]} line per conversation (written whole after every turn)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in self.conversation.transcript())
        path = self.run_dir / "chat.jsonl"
        temporary = path.with_suffix(".jsonl.tmp")
        temporary.write_text(lines)
        temporary.replace(path)

    def finish(self) -> dict:
        self.save()
        summary = {"turns": self.turns, "conversations": len(self.conversation.transcript()),
                   "new_tokens": self.new_tokens, "seconds": round(self.seconds, 3),
                   "tokens_per_second": round(self.new_tokens / self.seconds, 1) if self.seconds else 0.0}
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        self.log(f"{self.turns} turn(s); the transcript is in {self.run_dir / 'chat.jsonl'}")
        return summary
