"""`ptcli serve`'s parts without a server: OpenAI request bodies checked into settings, the response and chunk
shapes, the per-row streamer, grouping by settings, and the batching worker (with a stand-in decoder and with the
tiny GPT-2)."""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import pytest

from ptcli.inference.batching import Batcher, Job, RowPrinter, RowStreamer, group
from ptcli.inference.prompts import Prompt
from ptcli.inference.serving import BadRequest, Settings, chunk, parse_request, response, sse

DEFAULTS = SimpleNamespace(max_new_tokens=16, do_sample=False, temperature=1.0, top_p=None, stop=[], system=None)
NAMES = {"tiny", "/models/tiny"}


def parse(body, chat=False, defaults=DEFAULTS):
    return parse_request(json.dumps(body).encode() if not isinstance(body, bytes) else body, chat, defaults, NAMES,
                         "tiny")


# ---- requests ------------------------------------------------------------------------------------------------
def test_a_completion_request_takes_the_server_defaults_unless_it_sets_them():
    request = parse({"model": "tiny", "prompt": "Once"})
    assert request.prompts == ["Once"] and not request.chat and not request.stream and request.model == "tiny"
    assert request.settings == Settings(16, False, 1.0, None, ())
    request = parse({"prompt": ["a", "b"], "max_tokens": 5, "temperature": 0.7, "top_p": 0.9, "stop": "\n",
                     "seed": 3, "stream": True, "stream_options": {"include_usage": True}})
    assert request.prompts == ["a", "b"] and request.seed == 3 and request.stream and request.include_usage
    assert request.settings == Settings(5, True, 0.7, 0.9, ("\n",))
    sampling = SimpleNamespace(**{**vars(DEFAULTS), "do_sample": True, "temperature": 0.8, "stop": ["END"]})
    assert parse({"prompt": "a"}, defaults=sampling).settings == Settings(16, True, 0.8, None, ("END",))
    # temperature 0 is greedy, and greedy requests share a batch whatever their top_p
    assert parse({"prompt": "a", "temperature": 0, "top_p": 0.5}, defaults=sampling).settings == Settings(
        16, False, 1.0, None, ("END",))


def test_a_chat_request_gets_the_server_system_message_when_it_has_none():
    system = SimpleNamespace(**{**vars(DEFAULTS), "system": "Be brief."})
    request = parse({"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 4}, True, system)
    assert request.chat and request.settings.max_new_tokens == 4
    assert request.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    own = [{"role": "system", "content": "Be long."}, {"role": "user", "content": [{"type": "text", "text": "h"},
                                                                                   {"type": "text", "text": "i"}]}]
    assert parse({"messages": own}, True, system).messages == [{"role": "system", "content": "Be long."},
                                                               {"role": "user", "content": "hi"}]


def test_a_request_without_a_seed_leaves_it_to_the_server():
    assert parse({"prompt": "a"}).seed is None and parse({"prompt": "a", "seed": 0}).seed == 0


@pytest.mark.parametrize(("body", "chat", "param", "status"), [
    (b"{not json", False, None, 400),
    (b"[1, 2]", False, None, 400),
    ({}, False, "prompt", 400),
    ({"prompt": ""}, False, None, None),  # an empty prompt is the model's to refuse (no tokens)
    ({"prompt": [1, 2, 3]}, False, "prompt", 400),
    ({"prompt": []}, False, "prompt", 400),
    ({"prompt": "a", "max_tokens": 0}, False, "max_tokens", 400),
    ({"prompt": "a", "max_tokens": 2.5}, False, "max_tokens", 400),
    ({"prompt": "a", "max_tokens": True}, False, "max_tokens", 400),
    ({"prompt": "a", "temperature": 3}, False, "temperature", 400),
    ({"prompt": "a", "top_p": 0}, False, "top_p", 400),
    ({"prompt": "a", "stop": [""]}, False, "stop", 400),
    ({"prompt": "a", "stop": 5}, False, "stop", 400),
    ({"prompt": "a", "n": 2}, False, "n", 400),
    ({"prompt": "a", "stream": "yes"}, False, "stream", 400),
    ({"prompt": "a", "seed": "x"}, False, "seed", 400),
    ({"prompt": "a", "model": "gpt-4"}, False, "model", 404),
    ({"prompt": "a", "model": 7}, False, "model", 400),
    ({"messages": []}, True, "messages", 400),
    ({"messages": [{"role": "user"}]}, True, "messages", 400),
    ({"messages": [{"content": "hi"}]}, True, "messages", 400),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, True, "messages", 400),
    ({"prompt": "a"}, True, "messages", 400),  # a chat request needs messages
])
def test_bad_requests_are_refused_in_openai_error_shape(body, chat, param, status):
    if status is None:
        parse(body, chat)
        return
    with pytest.raises(BadRequest) as caught:
        parse(body, chat)
    error = caught.value
    assert error.status == status and error.param == param
    assert set(error.body()["error"]) == {"message", "type", "param", "code"} and error.message


def test_response_and_chunk_shapes():
    request = parse({"messages": [{"role": "user", "content": "hi"}]}, True)
    body = response(request, "chatcmpl-1", 7, [("Hello", "eos")], {"prompt_tokens": 3})
    assert body["object"] == "chat.completion" and body["choices"][0]["message"] == {"role": "assistant",
                                                                                   "content": "Hello"}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert chunk(request, "c", 7, 0, role=True)["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunk(request, "c", 7, 0, "He")["choices"][0]["delta"] == {"content": "He"}
    end = chunk(request, "c", 7, 0, reason="length")["choices"][0]
    assert end["delta"] == {} and end["finish_reason"] == "length"
    plain = parse({"prompt": "a"})
    assert chunk(plain, "c", 7, 1, "x")["choices"][0] == {"index": 1, "text": "x", "logprobs": None,
                                                        "finish_reason": None}
    assert sse("[DONE]") == b"data: [DONE]\n\n" and json.loads(sse({"a": 1})[6:]) == {"a": 1}


# ---- streaming and grouping ----------------------------------------------------------------------------------
def letters(ids):  # a stand-in tokenizer: token t is the letter chr(t)
    return "".join(chr(t) for t in ids)


def test_the_row_streamer_splits_each_step_by_row_and_ends_rows_at_eos():
    import torch

    written = [[], [], []]
    printers = [RowPrinter(letters, written[0].append, []), None, RowPrinter(letters, written[2].append, ["cd"])]
    streamer = RowStreamer(printers, eos_ids={0})
    streamer.put(torch.tensor([[1, 2], [3, 4], [5, 6]]))  # the prompts: not streamed
    for step in ([ord("a"), ord("x"), ord("b")], [ord("b"), ord("y"), ord("c")], [0, ord("z"), ord("d")],
                 [ord("c"), ord("q"), ord("e")]):
        streamer.put(torch.tensor(step))  # [batch]
    streamer.put(torch.tensor([[ord("d")], [ord("r")], [ord("f")]]))  # [batch, 1] works too
    streamer.end()
    assert "".join(written[0]) == "ab"  # nothing after its end-of-text token
    assert "".join(written[2]) == "b"  # cut before the stop string, "c" held back until it was sure
    assert written[1] == []


def test_the_row_streamer_drops_rows_it_is_told_to_skip():
    import torch

    written = []
    cancelled = {0: False}
    streamer = RowStreamer([RowPrinter(letters, written.append, [])], set(), skip=lambda r: cancelled[r])
    streamer.put(torch.tensor([[1]]))
    streamer.put(torch.tensor([ord("a")]))
    cancelled[0] = True
    streamer.put(torch.tensor([ord("b")]))
    streamer.end()
    assert "".join(written) == "a"


def job(text, settings, chat=False, sink=None, stream=False):
    return Job(Prompt(0, text, "x", seed=1), chat, settings, (sink if sink is not None else []).append, stream)


def test_jobs_group_by_kind_and_settings_in_arrival_order():
    greedy, short, sample = Settings(8, False, 1.0, None, ()), Settings(4, False, 1.0, None, ()), Settings(
        8, True, 0.7, None, ())
    jobs = [job("a", greedy), job("b", sample), job("c", greedy), job("d", greedy, chat=True), job("e", short),
            job("f", greedy), job("g", greedy)]
    assert [[j.prompt.text for j in g] for g in group(jobs, 3)] == [["a", "c", "f"], ["g"], ["b"], ["d"], ["e"]]


# ---- the worker ----------------------------------------------------------------------------------------------
class FakeDecoder:
    """Echoes each prompt reversed; records the batches it was given."""

    def __init__(self):
        self.batches, self.stops, self.eos_ids = [], [], set()

    def variant(self, **changes):
        if changes["max_new_tokens"] > 100:
            from ptcli.errors import PtcliError

            raise PtcliError("max_new_tokens=101 leaves no room")
        return self

    def encode(self, prompts):
        from ptcli.inference.prompts import BadPrompt

        kept = [p for p in prompts if p.text != "bad"]
        return kept, [[ord(c) for c in p.text] for p in kept], [BadPrompt(p.where, "too long") for p in prompts
                                                                  if p.text == "bad"]

    def completion_text(self, prompt_ids, ids):
        return letters(ids)

    def generate_encoded(self, kept, ids_list, streamer=None, criteria=()):
        from ptcli.inference.decoding import Completion

        self.batches.append([p.text for p in kept])
        return [Completion(p, p.text[::-1], len(p.text), "length") for p in kept]


def test_the_worker_batches_what_waits_and_answers_each_job():
    decoder = FakeDecoder()
    batcher = Batcher({False: decoder, True: decoder}, max_batch_size=8, wait_s=0.2, log=lambda m: None)
    greedy = Settings(8, False, 1.0, None, ())
    sinks = [[] for _ in range(6)]
    jobs = [job(t, greedy if t != "big" else Settings(101, False, 1.0, None, ()), sink=s)
            for t, s in zip(["abc", "bad", "xy", "big", "late", "gone"], sinks)]
    jobs[5].cancelled = True
    batcher.submit(jobs[:4])
    batcher.start()
    time.sleep(0.05)
    batcher.submit(jobs[4:])  # within the window: the same batch
    deadline = time.time() + 10
    while not all(sinks[:5]) and time.time() < deadline:
        time.sleep(0.01)
    batcher.stop()
    assert decoder.batches == [["abc", "xy", "late"]]
    assert sinks[0][0] == ("started", 3) and sinks[0][1][0] == "done" and sinks[0][1][1].text == "cba"
    assert sinks[1][0][0] == "error" and sinks[1][0][1].param == "prompt"
    assert sinks[3][0][0] == "error" and "max_tokens=101" in sinks[3][0][1].message
    assert sinks[5] == [] and batcher.stats.largest_batch == 3 and batcher.stats.cancelled == 1


# ---- with the tiny GPT-2 -------------------------------------------------------------------------------------
def test_batched_rows_stream_and_answer_as_single_prompts_do(tmp_path_factory):
    from omegaconf import OmegaConf

    from ptcli.config.validate import validate
    from ptcli.inference.decoding import Decoder
    from ptcli.inference.loading import load_for_inference
    from ptcli.launch.compose import compose
    from tests.support import tiny_models

    path = tiny_models(tmp_path_factory.mktemp("tiny"))["gpt2"]
    cfg = OmegaConf.create(validate("serve", compose("serve", [f"model.path={path}", "device=cpu",
                                                               "device.threads=1"])))
    cfg.chat, cfg.template = "off", "off"
    loaded = load_for_inference(cfg.model, cfg.device, "auto", lambda m: None)
    decoder = Decoder(loaded, cfg, lambda m: None)
    settings = Settings(6, False, 1.0, None, ())
    prompts = ["Once upon a time", "The cat", "One day the bird sang"]
    alone = [decoder.variant(**settings.changes()).generate([Prompt(0, p, "p")])[0].text for p in prompts]
    batcher = Batcher({False: decoder, True: decoder}, max_batch_size=8, wait_s=0.5, log=lambda m: None)
    sinks = [[] for _ in prompts]
    done = threading.Event()

    def sink(events):
        def send(event):
            events.append(event)
            if all(any(e[0] == "done" for e in s) for s in sinks):
                done.set()
        return send

    batcher.submit([Job(Prompt(0, p, "x", seed=1), False, settings, sink(s), stream=True)
                    for p, s in zip(prompts, sinks)])
    batcher.start()
    assert done.wait(60)
    batcher.stop()
    assert batcher.stats.largest_batch == 3
    for events, text in zip(sinks, alone):
        final = events[-1][1]
        assert final.text == text
        streamed = "".join(e[1] for e in events if e[0] == "text")
        assert text.startswith(streamed)


def test_serve_without_fastapi_is_refused_before_anything_runs(monkeypatch, tmp_path):
    import importlib.util

    from ptcli.config.problems import ConfigError
    from ptcli.config.validate import validate
    from ptcli.launch.compose import compose

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 1, "n_embd": 8, "n_head": 1}))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a))
    with pytest.raises(ConfigError) as caught:
        validate("serve", compose("serve", [f"model.path={tmp_path}", "port=70000", "max_batch_size=0"]))
    message = caught.value.message()
    assert "serve needs the fastapi package: pip install 'ptcli[serve]'" in message
    assert "port must be from 0 to 65535" in message and "max_batch_size must be at least 1" in message
    assert caught.value.exit_code == 2
