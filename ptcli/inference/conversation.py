"""What ``ptcli chat`` keeps between turns: the history the model sees (cut from its oldest turns to fit the
context, never the system message), the whole transcript, the slash commands, and the streamed reply."""

from __future__ import annotations

from dataclasses import dataclass

HELP = """commands:
  /reset           forget the conversation (the system message stays)
  /system <text>   set the system message and start over (/system alone: none)
  /exit, /quit     leave (also Ctrl-D); Ctrl-C stops a reply, or leaves at the prompt
  /help            this list"""


@dataclass
class Command:
    """A slash command typed instead of a message."""

    name: str  # reset | system | exit | help | unknown
    argument: str = ""


def parse_command(line: str) -> Command | None:
    """``/reset``, ``/system <text>``, ``/exit`` or ``/quit``, ``/help`` (any other ``/word``: unknown); None for a
    message to the model."""
    text = line.strip()
    if not text.startswith("/") or text.startswith("//"):
        return None
    word, _, argument = text[1:].partition(" ")
    name = {"quit": "exit"}.get(word.lower(), word.lower())
    if name not in ("reset", "system", "exit", "help"):
        return Command("unknown", word)
    return Command(name, argument.strip())


class Conversation:
    """The system message, the turns the model sees, and every conversation so far (``/reset`` starts another)."""

    def __init__(self, system: str | None = None):
        self.system = system or None
        self.turns: list[dict] = []  # user and assistant messages still in the model's view
        self.conversations: list[list[dict]] = []  # the transcript: every message, left-out turns included
        self.reset()

    def messages(self, user: str | None = None) -> list[dict]:
        """What the model is given: the system message, the kept turns, then ``user``'s new message."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.turns + ([{"role": "user", "content": user}] if user is not None else [])

    def fit(self, user: str, length, budget: int | None) -> int:
        """Leave out the oldest exchanges until ``length(messages)`` (tokens) fits ``budget``; the system message
        and the new message always stay. Returns how many messages were left out."""
        dropped = 0
        while budget is not None and self.turns and length(self.messages(user)) > budget:
            first = 2 if len(self.turns) > 1 and self.turns[1]["role"] == "assistant" else 1
            del self.turns[:first]
            dropped += first
        return dropped

    def add(self, user: str, reply: str, interrupted: bool = False) -> None:
        """A finished exchange: into the history and the transcript (a reply stopped by Ctrl-C is marked)."""
        answer = {"role": "assistant", "content": reply}
        self.turns += [{"role": "user", "content": user}, dict(answer)]
        self.current += [{"role": "user", "content": user}, answer | ({"interrupted": True} if interrupted else {})]

    def reset(self, system: str | None | bool = False) -> None:
        """Forget the history (``system``: a new system message; False keeps it); the transcript starts a new
        conversation."""
        if system is not False:
            self.system = system or None
        self.turns = []
        self.current = [{"role": "system", "content": self.system}] if self.system else []
        self.conversations.append(self.current)

    def transcript(self) -> list[dict]:
        """One ``{"messages": [...]}`` per conversation that has a turn: the shape of a messages JSONL line
        (``ptcli generate prompts_file=``, ``finetune objective=sft objective.messages_column=messages``)."""
        return [{"messages": c} for c in self.conversations if any(m["role"] != "system" for m in c)]


class ReplyPrinter:
    """Writes a streamed reply to ``stream`` without its leading and trailing whitespace (a reply is one line
    ended by ``end``); ``text`` is what was printed, the partial reply when Ctrl-C stops it."""

    def __init__(self, stream):
        self.stream, self.text, self.pending = stream, "", ""

    def __call__(self, piece: str) -> None:
        combined = self.pending + piece
        if not self.text:
            combined = combined.lstrip()
        body = combined.rstrip()
        self.pending = combined[len(body):]
        if body:
            self.stream.write(body)
            self.stream.flush()
            self.text += body

    def end(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


class LineReader:
    """Lines of the chat's input that a Ctrl-C can always interrupt.

    A blocking ``readline()`` on a pipe or terminal is interrupted only when the kernel delivers SIGINT to the main
    thread; with torch's worker threads alive it may pick one of those, and the read goes on waiting. Here the main
    thread waits in ``select`` with a short timeout, so Python runs the pending signal handler (KeyboardInterrupt)
    within a fraction of a second. Streams without a file descriptor (tests' StringIO) are read as they are.
    """

    def __init__(self, stream, poll_s: float = 0.2):
        self.stream, self.poll_s, self.pending = stream, poll_s, b""
        try:
            self.fd = stream.fileno()
        except (AttributeError, OSError, ValueError):
            self.fd = None
        self.encoding = getattr(stream, "encoding", None) or "utf-8"

    def readline(self) -> str:
        """The next line with its newline; "" at end of input."""
        import os
        import select

        if self.fd is None:
            return self.stream.readline()
        while b"\n" not in self.pending:
            ready, _, _ = select.select([self.fd], [], [], self.poll_s)
            if not ready:
                continue
            chunk = os.read(self.fd, 65536)
            if not chunk:
                break
            self.pending += chunk
        line, newline, self.pending = self.pending.partition(b"\n")
        return (line + newline).decode(self.encoding, errors="replace")
