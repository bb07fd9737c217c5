"""What ``ptcli serve`` speaks: OpenAI's request bodies (``/v1/completions``, ``/v1/chat/completions``) checked into
settings and prompts, and OpenAI's response, streamed-chunk and error shapes. Torch-free.

A request's fields override the server's decoding defaults (``ptcli serve max_new_tokens=... temperature=...``):
``max_tokens`` (chat: also ``max_completion_tokens``), ``temperature`` (0: greedy; more: sampling at that
temperature; unset: the server's ``do_sample``/``temperature``), ``top_p``, ``stop`` and ``seed`` (unset: one made
from the server's ``seed`` and the request's number, so two requests sample differently); ``n`` must be 1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ptcli.inference.formatting import messages_problem

FINISH = {"stop": "stop", "eos": "stop", "length": "length"}  # ptcli's finish reasons as OpenAI's


class BadRequest(Exception):
    """A request the server refuses: an HTTP status and OpenAI's error object."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.message, self.param, self.code, self.status, self.kind = message, param, code, status, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class Settings:
    """The decoding settings of a request; requests with equal settings may share a batch."""

    max_new_tokens: int
    do_sample: bool
    temperature: float
    top_p: float | None
    stop: tuple[str, ...]

    def changes(self) -> dict:
        """The settings as ``Decoder.variant`` keywords."""
        return {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample, "temperature": self.temperature,
                "top_p": self.top_p, "stop": list(self.stop)}

    def describe(self) -> str:
        how = f"sampling at temperature {self.temperature:g}" if self.do_sample else "greedy"
        return f"{how}, max_tokens={self.max_new_tokens}"


@dataclass
class ParsedRequest:
    """A checked request: the prompts (completions: one choice each) or the conversation, and how to decode."""

    chat: bool
    model: str
    settings: Settings
    stream: bool
    include_usage: bool
    seed: int | None  # sampling: the request's seed (None: the server picks one per request)
    prompts: list[str] | None = None
    messages: list[dict] | None = None


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_body(raw: bytes) -> dict:
    """The request body as a JSON object, else a 400."""
    try:
        body = json.loads(raw or b"")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"the request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", code="invalid_json")
    return body


def text_content(content, where: str) -> str:
    """A message's content: a string, or OpenAI's list of parts of which only text ones are taken."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        if any(p.get("type") != "text" or not isinstance(p.get("text"), str) for p in content):
            raise BadRequest(f"{where}: only text content parts are supported", param="messages")
        return "".join(p["text"] for p in content)
    raise BadRequest(f"{where} must be a string or a list of text parts", param="messages")


def parse_messages(value, system: str | None) -> list[dict]:
    """The conversation as {role, content} strings; the server's system message first when it has none."""
    if not isinstance(value, list) or not value:
        raise BadRequest("\"messages\" is required: a non-empty list of {\"role\": ..., \"content\": ...} objects",
                         param="messages")
    messages = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a \"role\" string and a \"content\"",
                             param="messages")
        messages.append({"role": m["role"], "content": text_content(m.get("content"), f"messages[{i}].content")})
    problem = messages_problem(messages)
    if problem:
        raise BadRequest(problem, param="messages")
    if system and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": system})
    return messages


def parse_prompts(value) -> list[str]:
    if value is None:
        raise BadRequest("\"prompt\" is required: a string or a list of strings", param="prompt")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(p, str) for p in value):
        return list(value)
    if isinstance(value, list) and value and all(is_int(t) or isinstance(t, list) for t in value):
        raise BadRequest("prompts as token ids are not supported; send the text", param="prompt")
    raise BadRequest("\"prompt\" must be a string or a non-empty list of strings", param="prompt")


def parse_settings(body: dict, defaults, chat: bool) -> Settings:
    """The request's decoding settings over the server's ``defaults`` (a decoding config)."""
    max_tokens = body.get("max_completion_tokens") if chat and body.get("max_tokens") is None else body.get(
        "max_tokens")
    param = "max_completion_tokens" if chat and body.get("max_tokens") is None else "max_tokens"
    if max_tokens is None:
        max_tokens = defaults.max_new_tokens
    elif not is_int(max_tokens) or max_tokens < 1:
        raise BadRequest(f"{param} must be an integer of at least 1, got {max_tokens!r}", param=param)
    do_sample, temperature = bool(defaults.do_sample), float(defaults.temperature)
    if body.get("temperature") is not None:
        t = body["temperature"]
        if not is_number(t) or not 0 <= t <= 2:
            raise BadRequest(f"temperature must be a number from 0 to 2, got {t!r}", param="temperature")
        do_sample, temperature = t > 0, float(t) if t > 0 else 1.0
    top_p = defaults.top_p
    if body.get("top_p") is not None:
        top_p = body["top_p"]
        if not is_number(top_p) or not 0 < top_p <= 1:
            raise BadRequest(f"top_p must be a number in (0, 1], got {top_p!r}", param="top_p")
        top_p = float(top_p)
    stop = body.get("stop")
    if stop is None:
        stop = list(defaults.stop)
    elif isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or any(not isinstance(s, str) or not s for s in stop):
        raise BadRequest(f"stop must be a non-empty string or a list of them, got {body.get('stop')!r}", param="stop")
    if not do_sample:  # greedy: the sampling knobs do nothing, so greedy requests share batches
        temperature, top_p = 1.0, None
    return Settings(max_tokens, do_sample, temperature, top_p, tuple(stop))


def parse_request(raw: bytes, chat: bool, defaults, model_names: set[str], served: str) -> ParsedRequest:
    """A request body checked against the rules above; raises BadRequest (400, or 404 for an unknown model)."""
    body = parse_body(raw)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequest(f"model must be a string, got {model!r}", param="model")
    if model is not None and model not in model_names:
        raise BadRequest(f"the model '{model}' is not served here; this server serves '{served}' (GET /v1/models)",
                         param="model", code="model_not_found", status=404)
    n = body.get("n")
    if n is not None and (not is_int(n) or n != 1):
        raise BadRequest(f"n must be 1 (one choice per prompt), got {n!r}", param="n")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise BadRequest(f"stream must be true or false, got {stream!r}", param="stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise BadRequest("stream_options must be an object", param="stream_options")
    seed = body.get("seed")
    if seed is not None and not is_int(seed):
        raise BadRequest(f"seed must be an integer, got {seed!r}", param="seed")
    settings = parse_settings(body, defaults, chat)
    request = ParsedRequest(chat, served, settings, stream, bool(options.get("include_usage")),
                            seed)
    if chat:
        request.messages = parse_messages(body.get("messages"), defaults.system)
    else:
        request.prompts = parse_prompts(body.get("prompt"))
    return request


# ---- OpenAI's response shapes --------------------------------------------------------------------------------
def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def response(request: ParsedRequest, rid: str, created: int, choices: list[tuple[str, str]], counts: dict) -> dict:
    """The whole answer: ``choices`` is (text, ptcli finish reason) per prompt, ``counts`` the usage."""
    if request.chat:
        body = [{"index": i, "message": {"role": "assistant", "content": text}, "logprobs": None,
                 "finish_reason": FINISH[reason]} for i, (text, reason) in enumerate(choices)]
        kind = "chat.completion"
    else:
        body = [{"index": i, "text": text, "logprobs": None, "finish_reason": FINISH[reason]}
                for i, (text, reason) in enumerate(choices)]
        kind = "text_completion"
    return {"id": rid, "object": kind, "created": created, "model": request.model, "choices": body,
            "usage": counts}


def chunk(request: ParsedRequest, rid: str, created: int, index: int, text: str | None = None,
          reason: str | None = None, role: bool = False) -> dict:
    """One streamed piece of choice ``index``: its text (chat: a delta; ``role``: the first delta, the role alone),
    or its end (``reason``: ptcli's finish reason)."""
    finish = FINISH[reason] if reason else None
    if request.chat:
        delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        kind = "chat.completion.chunk"
    else:
        choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}
        kind = "text_completion"
    return {"id": rid, "object": kind, "created": created, "model": request.model, "choices": [choice]}


def usage_chunk(request: ParsedRequest, rid: str, created: int, counts: dict) -> dict:
    """The last chunk when ``stream_options.include_usage`` asks for it: no choices, the usage."""
    kind = "chat.completion.chunk" if request.chat else "text_completion"
    return {"id": rid, "object": kind, "created": created, "model": request.model, "choices": [], "usage": counts}


def sse(data: dict | str) -> bytes:
    """One server-sent event."""
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n".encode()
