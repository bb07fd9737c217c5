"""``serve``: an OpenAI-compatible HTTP server for a causal LM or seq2seq model (FastAPI + uvicorn).

``POST /v1/completions`` (the prompt as it is) and ``POST /v1/chat/completions`` (the conversation through the
tokenizer's chat template, or a plain User/Assistant transcript without one), both with ``"stream": true`` as
server-sent events ending in ``data: [DONE]``; ``GET /v1/models`` and ``GET /health``. One worker thread owns the
model and batches concurrent requests (``ptcli.inference.batching``). A client that goes away mid-stream has its row
stopped at the next step. Logs go to stderr; SIGINT/SIGTERM stop the server (exit 0) and ``summary.json`` in the run
directory counts the requests.
"""

# no `from __future__ import annotations`: FastAPI reads the handlers' annotations (Request) at run time
import asyncio
import contextlib
import json
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path


def run(cfg, run_dir: Path, stderr=None) -> dict:
    """Serve until SIGINT or SIGTERM; returns the summary (also ``summary.json``)."""
    from ptcli.inference.decoding import check_settings

    check_settings(cfg)
    service = Service(cfg, Path(run_dir), stderr or sys.stderr)
    service.listen()  # a port in use fails at once, before the model loads
    try:
        service.start()
    except BaseException:
        service.sock.close()
        raise
    try:
        service.serve()
    finally:
        summary = service.finish()
    return summary


class Service:
    """The loaded model, the batching worker, the HTTP app and the counts of one ``serve`` run."""

    def __init__(self, cfg, run_dir: Path, stderr):
        self.cfg, self.run_dir, self.stderr = cfg, run_dir, stderr
        self.requests = self.failed = self.disconnected = 0
        self.started = time.time()
        self.batcher = self.sock = None

    def log(self, message: str) -> None:
        print(f"ptcli serve: {message}", file=self.stderr, flush=True)

    def start(self) -> None:
        import copy

        from transformers.utils import logging as hf_logging

        from ptcli.errors import PtcliError
        from ptcli.inference.batching import Batcher
        from ptcli.inference.decoding import Decoder
        from ptcli.inference.formatting import TRANSCRIPT_STOP
        from ptcli.inference.loading import load_for_inference

        hf_logging.disable_progress_bar()
        cfg = self.cfg
        loaded = load_for_inference(cfg.model, cfg.device, "auto", self.log)
        if loaded.kind not in ("causal", "seq2seq"):
            raise PtcliError(f"serve needs a model that writes text (a causal LM or seq2seq model); this one is "
                             f"{loaded.kind}", fix="Use `ptcli generate` for masked LMs and ELECTRA discriminators, "
                                                   "`ptcli predict` for classifiers")
        plain = copy.deepcopy(cfg)  # /v1/completions: the prompt as it is (no chat template, no system message)
        plain.chat, plain.system, plain.template = "off", None, "off"
        chats = Decoder(loaded, cfg, self.log, conversation=True)
        self.batcher = Batcher({False: Decoder(loaded, plain, self.log), True: chats}, cfg.max_batch_size,
                               cfg.batch_wait_ms / 1000, self.log,
                               extra_stops={True: [] if chats.format.chat else [TRANSCRIPT_STOP]})
        path = str(cfg.model.path)
        local = Path(path).expanduser().absolute()  # not resolved: outputs/finetune/latest is "latest"
        folder = local.parent if local.name == "model" and (local.parent / "config.yaml").is_file() else local
        self.name = cfg.model_name or (folder.name if local.exists() else path)
        self.names = {self.name, path}

    # -- HTTP -------------------------------------------------------------------------------------------------
    def listen(self) -> None:
        from ptcli.errors import PtcliError

        family = socket.AF_INET6 if ":" in self.cfg.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.cfg.host, self.cfg.port))
            sock.listen(128)
        except OSError as e:
            sock.close()
            raise PtcliError(f"cannot listen on {self.cfg.host}:{self.cfg.port}: {e.strerror or e}",
                             fix="Choose another port= (port=0: any free port) or host=") from None
        self.sock = sock

    def serve(self) -> None:
        import uvicorn

        sock = self.sock
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
        config = uvicorn.Config(build_app(self), log_config=None, access_log=False, lifespan="off",
                                timeout_graceful_shutdown=5, log_level="warning")
        server = quiet_server_class()(config, self.log)
        self.batcher.start()
        self.log(f"serving '{self.name}' at http://{shown}:{port}/v1 (POST /v1/completions, /v1/chat/completions; "
                 f"GET /v1/models, /health); Ctrl-C stops")
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()

    def reply(self, request, status: int, body: dict, tokens: str = "", started: float | None = None):
        from fastapi.responses import JSONResponse

        why = f": {body['error']['message']}" if status >= 400 and "error" in body else ""
        self.access(request, status, tokens, started, why)
        return JSONResponse(body, status_code=status)

    def access(self, request, status: int, tokens: str = "", started: float | None = None, note: str = "") -> None:
        if status >= 400:
            self.failed += 1
        seconds = f" {time.perf_counter() - started:.2f} s" if started is not None else ""
        self.log(f"{request.method} {request.url.path} {status}{f' {tokens}' if tokens else ''}{seconds}{note}")

    async def generate(self, request, chat: bool):
        """/v1/completions and /v1/chat/completions."""
        from fastapi.responses import StreamingResponse

        from ptcli.inference.batching import Job
        from ptcli.inference.prompts import Prompt
        from ptcli.inference.serving import BadRequest, parse_request

        started = time.perf_counter()
        self.requests += 1
        try:
            parsed = parse_request(await request.body(), chat, self.cfg, self.names, self.name)
        except BadRequest as e:
            return self.reply(request, e.status, e.body(), started=started)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        texts = [parsed.messages[-1]["content"]] if chat else parsed.prompts
        jobs = []
        seed = parsed.seed if parsed.seed is not None else (self.cfg.seed * 1_000_003 + self.requests) % 2**31
        for i, text in enumerate(texts):
            def send(event, i=i):
                with contextlib.suppress(RuntimeError):  # the event loop is gone: the server is stopping
                    loop.call_soon_threadsafe(events.put_nowait, (i, event))

            prompt = Prompt(i, text, f"choice {i}", messages=parsed.messages, seed=seed + i)  # each prompt its own
            jobs.append(Job(prompt, chat, parsed.settings, send, stream=parsed.stream))
        self.batcher.submit(jobs)
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        early: list[tuple[int, tuple]] = []  # text that came before every choice had started
        waiting = set(range(len(jobs)))
        try:
            while waiting:  # every prompt encoded (or refused) before any answer: a refusal is a plain 4xx
                i, event = await events.get()
                if event[0] == "error":
                    raise event[1]
                if event[0] == "started":
                    waiting.discard(i)
                else:
                    early.append((i, event))
        except BadRequest as e:
            for job in jobs:
                job.cancelled = True
            return self.reply(request, e.status, e.body(), started=started)
        except asyncio.CancelledError:
            for job in jobs:
                job.cancelled = True
            raise
        if parsed.stream:
            stream = self.stream(request, parsed, jobs, events, early, rid, created, started)
            return StreamingResponse(stream, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            results = await self.collect(jobs, events, early)
        except BadRequest as e:
            return self.reply(request, e.status, e.body(), started=started)
        from ptcli.inference.serving import response, usage

        counts = usage(sum(r[2] for r in results), sum(r[1].new_tokens for r in results))
        body = response(parsed, rid, created, [(c.text, c.finish_reason) for _, c, _ in results], counts)
        return self.reply(request, 200, body, f"{counts['prompt_tokens']}+{counts['completion_tokens']} tokens",
                          started)

    async def collect(self, jobs, events, early) -> list[tuple]:
        """Every choice's ("done", completion, prompt_tokens), in order; raises the first error."""
        done: dict[int, tuple] = {i: e for i, e in early if e[0] == "done"}
        try:
            while len(done) < len(jobs):
                i, event = await events.get()
                if event[0] == "error":
                    raise event[1]
                if event[0] == "done":
                    done[i] = event
        except BaseException:
            for job in jobs:
                job.cancelled = True
            raise
        return [done[i] for i in range(len(jobs))]

    async def stream(self, request, parsed, jobs, events, early, rid, created, started):
        """The server-sent events of a streamed answer; a client that goes away cancels its rows."""
        from ptcli.inference.serving import BadRequest, chunk, sse, usage, usage_chunk

        sent = [""] * len(jobs)
        finished: set[int] = set()
        prompt_tokens = completion_tokens = 0
        status, note = 200, ""
        pending = list(early)
        try:
            if parsed.chat:
                for i in range(len(jobs)):
                    yield sse(chunk(parsed, rid, created, i, role=True))
            while len(finished) < len(jobs):
                i, event = pending.pop(0) if pending else await events.get()
                if event[0] == "text":
                    sent[i] += event[1]
                    yield sse(chunk(parsed, rid, created, i, event[1]))
                elif event[0] == "done":
                    completion = event[1]
                    rest = completion.text[len(sent[i]):] if completion.text.startswith(sent[i]) else ""
                    if rest:
                        yield sse(chunk(parsed, rid, created, i, rest))
                    yield sse(chunk(parsed, rid, created, i, reason=completion.finish_reason))
                    finished.add(i)
                    prompt_tokens += event[2]
                    completion_tokens += completion.new_tokens
                elif event[0] == "error":
                    error: BadRequest = event[1]
                    status = error.status
                    yield sse(error.body())
                    break
            if parsed.include_usage and len(finished) == len(jobs):
                yield sse(usage_chunk(parsed, rid, created, usage(prompt_tokens, completion_tokens)))
            yield sse("[DONE]")
        finally:
            if len(finished) < len(jobs):
                for job in jobs:
                    job.cancelled = True
                if status == 200:
                    self.disconnected += 1
                    note = " (the client went away; its generation was stopped)"
            self.access(request, status, f"{prompt_tokens}+{completion_tokens} tokens", started, note)

    # -- the end ----------------------------------------------------------------------------------------------
    def finish(self) -> dict:
        if self.batcher is not None and self.batcher.thread.is_alive():
            self.batcher.stop()
        stats = self.batcher.stats if self.batcher is not None else None
        summary = {"model": getattr(self, "name", None), "requests": self.requests, "failed": self.failed,
                   "disconnected": self.disconnected, "batches": stats.batches if stats else 0,
                   "largest_batch": stats.largest_batch if stats else 0,
                   "rows_stopped": stats.cancelled if stats else 0,  # rows whose client went away before their end
                   "prompt_tokens": stats.prompt_tokens if stats else 0,
                   "completion_tokens": stats.completion_tokens if stats else 0,
                   "seconds": round(time.time() - self.started, 3)}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        self.log(f"stopped after {self.requests} request(s) in {summary['batches']} batch(es) "
                 f"(largest: {summary['largest_batch']})")
        return summary


def build_app(service: Service):
    """The FastAPI app: the four routes, and OpenAI-shaped errors for everything else."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        message = {404: f"no such path: {request.url.path} (try /v1/completions, /v1/chat/completions, "
                        "/v1/models or /health)",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return service.reply(request, exc.status_code, {"error": {"message": message, "type": "invalid_request_error",
                                                                  "param": None, "code": None}})

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception):
        service.log(f"error: {type(exc).__name__}: {exc}")
        return JSONResponse({"error": {"message": f"internal error: {type(exc).__name__}: {exc}",
                                       "type": "server_error", "param": None, "code": None}}, status_code=500)

    @app.get("/health")
    async def health(request: Request):
        return JSONResponse({"status": "ok"})

    @app.get("/v1/models")
    async def models(request: Request):
        return service.reply(request, 200, {"object": "list", "data": [
            {"id": service.name, "object": "model", "created": int(service.started), "owned_by": "ptcli"}]})

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await service.generate(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await service.generate(request, chat=True)

    return app


def quiet_server_class():
    import uvicorn

    class QuietServer(uvicorn.Server):
        """uvicorn's server, stopping on SIGINT/SIGTERM without re-raising the signal afterwards (exit 0)."""

        def __init__(self, config, log):
            super().__init__(config)
            self.log = log

        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            originals = {sig: signal.signal(sig, self.stop_on) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in originals.items():
                    signal.signal(sig, handler)

        def stop_on(self, sig, frame) -> None:
            if not self.should_exit:
                self.log(f"{signal.Signals(sig).name}: stopping (finishing the requests in progress)")
            self.handle_exit(sig, frame)

    return QuietServer

