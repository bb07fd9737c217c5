"""``ptcli serve``'s batching: one worker thread owns the model; requests wait in a queue, and the worker takes what
is waiting (up to ``max_batch_size``, within ``batch_wait_ms`` of the first), groups it by identical decoding
settings and runs one batched ``generate`` per group (left-padded for decoder-only models).

Each job (one choice of a request) receives events through its ``send``: ``("started", prompt_tokens)`` once its
prompt is encoded, ``("text", piece)`` while a streamed row grows, ``("done", completion, prompt_tokens)`` at its
end, or ``("error", BadRequest)``. A job marked ``cancelled`` (its client went away) stops at the next step.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ptcli.errors import PtcliError
from ptcli.inference.decoding import TokenPrinter
from ptcli.inference.prompts import Prompt
from ptcli.inference.serving import BadRequest, Settings


@dataclass
class Job:
    """One choice to generate, and where its events go (``send`` must be safe to call from the worker thread)."""

    prompt: Prompt
    chat: bool
    settings: Settings
    send: Callable[[tuple], None]
    stream: bool = False
    cancelled: bool = False
    queued: float = field(default_factory=time.monotonic)


def group(jobs: list[Job], max_batch_size: int) -> list[list[Job]]:
    """Jobs with the same kind (chat or not) and settings together, in arrival order, at most max_batch_size each."""
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        groups.setdefault((job.chat, job.settings), []).append(job)
    return [same[i:i + max_batch_size] for same in groups.values() for i in range(0, len(same), max_batch_size)]


class RowPrinter(TokenPrinter):
    """One row's streamed text (stop strings and unfinished characters held back, as ``TokenPrinter`` does),
    written to ``write`` piece by piece; ``end`` flushes what was held back."""

    def __init__(self, text_of, write, stops: list[str]):
        super().__init__(text_of, write, stops)
        self.started = True

    def add(self, ids: list[int]) -> None:
        self.ids.extend(ids)
        self._show(final=False)

    def end(self) -> None:
        self._show(final=True)


class RowStreamer:
    """A ``generate`` streamer for a batch: splits each step's tokens (``[batch]`` or ``[batch, 1]``) by row and
    feeds each row's printer (None: a row nobody streams), until the row's end-of-text token."""

    def __init__(self, printers: list[RowPrinter | None], eos_ids: set[int], skip=lambda row: False):
        self.printers, self.eos_ids, self.skip = printers, set(eos_ids), skip
        self.started = False
        self.done: set[int] = set()

    def put(self, value) -> None:
        if not self.started:  # the first call carries the prompts (or the decoder's start tokens)
            self.started = True
            return
        for r, tokens in enumerate(value.reshape(len(self.printers), -1).tolist()):
            printer = self.printers[r]
            if printer is None or r in self.done:
                continue
            if self.skip(r):
                self.done.add(r)
                continue
            keep = []
            for token in tokens:
                if token in self.eos_ids:
                    self.done.add(r)
                    break
                keep.append(token)
            if keep:
                printer.add(keep)
            if r in self.done:
                printer.end()

    def end(self) -> None:
        for r, printer in enumerate(self.printers):
            if printer is not None and r not in self.done:
                self.done.add(r)
                printer.end()


class Cancelled:
    """A stopping criterion: rows whose job was cancelled (the client went away) are done."""

    def __init__(self, jobs: list[Job]):
        self.jobs = jobs

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.tensor([j.cancelled for j in self.jobs], dtype=torch.bool, device=input_ids.device)


@dataclass
class Stats:
    """What the worker did (``summary.json``)."""

    batches: int = 0
    largest_batch: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cancelled: int = 0  # rows whose client went away before they finished


class Batcher:
    """The worker thread and its queue. ``decoders``: the Decoder for plain prompts (False) and for conversations
    (True); ``extra_stops``: stop strings each kind always has (a transcript's next user turn)."""

    def __init__(self, decoders: dict, max_batch_size: int, wait_s: float, log, extra_stops: dict | None = None):
        self.decoders, self.max_batch_size, self.wait_s, self.log = decoders, max_batch_size, wait_s, log
        self.extra_stops = extra_stops or {}
        self.queue: queue.Queue = queue.Queue()
        self.stats = Stats()
        self.variants: dict[tuple, object] = {}
        self.thread = threading.Thread(target=self.loop, name="ptcli-serve-worker", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def submit(self, jobs: list[Job]) -> None:
        for job in jobs:
            self.queue.put(job)

    def stop(self, timeout: float = 30) -> None:
        """Finish the batch in progress, refuse what still waits, and end the thread."""
        self.queue.put(None)
        self.thread.join(timeout)

    def collect(self, first: Job) -> tuple[list[Job], bool]:
        """The first job and what joins it within the window (at most max_batch_size); True when told to stop."""
        jobs, deadline = [first], time.monotonic() + self.wait_s
        while len(jobs) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                job = self.queue.get(timeout=remaining) if remaining > 0 else self.queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
        return jobs, False

    def loop(self) -> None:
        stopping = False
        while not stopping:
            first = self.queue.get()
            if first is None:
                break
            jobs, stopping = self.collect(first)
            for batch in group(jobs, self.max_batch_size):
                try:
                    self.run_batch(batch)
                except Exception as e:  # noqa: BLE001 - the worker goes on; these requests get a 500
                    self.log(f"error: a batch of {len(batch)} failed: {type(e).__name__}: {e}")
                    for job in batch:
                        job.send(("error", BadRequest(f"generation failed: {type(e).__name__}: {e}", status=500,
                                                      kind="server_error")))
        while True:  # requests that came in while shutting down
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job.send(("error", BadRequest("the server is shutting down", status=503, kind="server_error")))

    def decoder_for(self, job: Job):
        key = (job.chat, job.settings)
        if key not in self.variants:
            changes = job.settings.changes()
            changes["stop"] = changes["stop"] + [s for s in self.extra_stops.get(job.chat, ())
                                                 if s not in changes["stop"]]
            self.variants[key] = self.decoders[job.chat].variant(**changes)
        return self.variants[key]

    def run_batch(self, batch: list[Job]) -> None:
        live = [j for j in batch if not j.cancelled]
        self.stats.cancelled += len(batch) - len(live)
        if not live:
            return
        try:
            decoder = self.decoder_for(live[0])
        except PtcliError as e:
            for job in live:
                job.send(("error", BadRequest(e.what.replace("max_new_tokens=", "max_tokens="), param="max_tokens",
                                              code="context_length_exceeded")))
            return
        prompts = [Prompt(i, j.prompt.text, f"#{i}", messages=j.prompt.messages, seed=j.prompt.seed)
                   for i, j in enumerate(live)]
        try:
            kept, ids_list, bad = decoder.encode(prompts)
        except Exception as e:  # a template that fails on this conversation, ...
            for job in live:
                job.send(("error", BadRequest(f"cannot encode the prompt: {e}", param="messages")))
            return
        for b in bad:
            job = live[int(b.where[1:])]
            job.send(("error", BadRequest(b.message, param="messages" if job.chat else "prompt",
                                          code="context_length_exceeded" if "context" in b.message else None)))
        jobs = [live[p.index] for p in kept]
        if not jobs:
            return
        for job, ids in zip(jobs, ids_list):
            job.send(("started", len(ids)))
        printers = [RowPrinter(lambda new, ids=ids: decoder.completion_text(ids, new),
                               lambda piece, job=job: job.send(("text", piece)), decoder.stops)
                    if job.stream else None for job, ids in zip(jobs, ids_list)]
        streamer = RowStreamer(printers, decoder.eos_ids, lambda r: jobs[r].cancelled) if any(printers) else None
        self.stats.batches += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(jobs))
        if len(jobs) > 1:
            self.log(f"batch of {len(jobs)} requests ({jobs[0].settings.describe()})")
        completions = decoder.generate_encoded(kept, ids_list, streamer, [Cancelled(jobs)])
        rows = {p.index: (job, ids) for p, job, ids in zip(kept, jobs, ids_list)}  # prompt index: its place in live
        for completion in completions:
            job, ids = rows[completion.prompt.index]
            if job.cancelled:
                self.stats.cancelled += 1
                continue
            self.stats.prompt_tokens += len(ids)
            self.stats.completion_tokens += completion.new_tokens
            job.send(("done", completion, len(ids)))
