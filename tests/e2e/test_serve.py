"""`ptcli serve` as a user runs it: one server process on 127.0.0.1 for every check, spoken to with the real `openai`
client (completions, chat, streaming, concurrent clients), a client that goes away mid-stream, bad requests, and a
clean SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
CPU = ["device=cpu", "device.threads=1"]
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|> {% endif %}")
openai = pytest.importorskip("openai")


class Server:
    def __init__(self, proc: subprocess.Popen, cwd: Path, url: str):
        self.proc, self.cwd, self.url = proc, cwd, url
        self.client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)

    def log(self) -> str:
        return (self.cwd / "stderr.txt").read_text()


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    """One `ptcli serve` of the tiny GPT-2 with a chat template, on a free port (port=0: the log says which)."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("serve")
    folder = root / "chat-model"
    shutil.copytree(models["gpt2"], folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PTCLI_DEBUG", None)
    with open(root / "stderr.txt", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "ptcli", "serve", f"model.path={folder}", "port=0",
                                 "max_new_tokens=12", "batch_wait_ms=100", *CPU],
                                cwd=root, env=env, stdout=subprocess.PIPE, stderr=err)
    deadline = time.time() + 180
    url = None
    while time.time() < deadline and proc.poll() is None and url is None:
        for line in (root / "stderr.txt").read_text().splitlines():
            if "serving 'chat-model' at " in line:
                url = line.split(" at ", 1)[1].split()[0]
        time.sleep(0.2)
    assert url, (root / "stderr.txt").read_text()
    import httpx

    assert httpx.get(url.removesuffix("/v1") + "/health", timeout=10).json() == {"status": "ok"}
    yield Server(proc, root, url)
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


def test_models_completion_and_chat(server):
    assert [m.id for m in server.client.models.list().data] == ["chat-model"]
    done = server.client.completions.create(model="chat-model", prompt="Once upon a time", max_tokens=5)
    assert done.object == "text_completion" and len(done.choices) == 1
    assert done.choices[0].finish_reason in ("stop", "length") and isinstance(done.choices[0].text, str)
    assert done.usage.completion_tokens <= 5
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    two = server.client.completions.create(model="chat-model", prompt=["The cat", "The bird"], max_tokens=4)
    assert [c.index for c in two.choices] == [0, 1]
    sampled = [server.client.completions.create(model="chat-model", prompt="The cat", max_tokens=6, temperature=1.0,
                                                seed=seed).choices[0].text for seed in (1, 1, 2)]
    assert sampled[0] == sampled[1]  # a request's seed makes its sample repeatable
    chat = server.client.chat.completions.create(model="chat-model", messages=[{"role": "user", "content": "hi"}])
    assert chat.object == "chat.completion" and chat.choices[0].message.role == "assistant"
    assert chat.usage.completion_tokens <= 12  # the server's max_new_tokens is the default


def test_a_streamed_chat_says_what_the_whole_answer_says(server):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]
    whole = server.client.chat.completions.create(model="chat-model", messages=messages, max_tokens=10)
    chunks = list(server.client.chat.completions.create(model="chat-model", messages=messages, max_tokens=10,
                                                        stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens
    streamed = list(server.client.completions.create(model="chat-model", prompt="The sun", max_tokens=6,
                                                     stream=True))
    plain = server.client.completions.create(model="chat-model", prompt="The sun", max_tokens=6)
    assert "".join(c.choices[0].text for c in streamed) == plain.choices[0].text


def test_concurrent_clients_are_batched_and_get_the_sequential_answers(server):
    prompts = ["Once upon a time", "The cat sat", "One day the bird", "The sun was"]
    sequential = [server.client.completions.create(model="chat-model", prompt=p, max_tokens=8).choices[0].text
                  for p in prompts]
    answers: dict[int, str] = {}
    clients = [openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60) for _ in prompts]
    together = threading.Barrier(len(prompts))

    def ask(i: int) -> None:
        together.wait(timeout=30)
        answers[i] = clients[i].completions.create(model="chat-model", prompt=prompts[i],
                                                   max_tokens=8).choices[0].text

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [answers.get(i) for i in range(4)] == sequential
    assert "batch of " in server.log(), server.log()


def test_a_client_that_leaves_mid_stream_does_not_stop_the_server(server):
    leave_mid_stream(server)
    again = server.client.chat.completions.create(model="chat-model", messages=[{"role": "user", "content": "hi"}],
                                                  max_tokens=3)
    assert again.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"model": "chat-model"}, 400, "prompt"),
    ({"prompt": 3}, 400, "prompt"),
    ({"prompt": "hi", "max_tokens": 0}, 400, "max_tokens"),
    ({"prompt": "hi", "temperature": "hot"}, 400, "temperature"),
    ({"prompt": "hi", "n": 2}, 400, "n"),
    ({"prompt": "hi", "model": "gpt-4"}, 404, "model"),
    ({"prompt": "hi", "max_tokens": 1000}, 400, "max_tokens"),
])
def test_bad_requests_get_openai_errors(server, body, status, param):
    import httpx

    response = httpx.post(server.url + "/completions", json=body, timeout=30)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param and error["message"]


def test_malformed_json_unknown_paths_and_the_openai_client_see_errors(server):
    import httpx

    response = httpx.post(server.url + "/chat/completions", content=b"{not json", timeout=30)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    response = httpx.post(server.url + "/chat/completions", json={"messages": [{"role": "user"}]}, timeout=30)
    assert response.status_code == 400 and response.json()["error"]["param"] == "messages"
    assert httpx.get(server.url + "/nothing", timeout=30).status_code == 404
    with pytest.raises(openai.BadRequestError, match="max_tokens must be an integer of at least 1"):
        server.client.chat.completions.create(model="chat-model", messages=[{"role": "user", "content": "hi"}],
                                              max_tokens=-1)
    with pytest.raises(openai.NotFoundError):
        server.client.completions.create(model="other", prompt="hi")
    assert server.client.completions.create(model="chat-model", prompt="hi", max_tokens=2).choices


def test_a_masked_lm_or_a_port_in_use_is_refused_at_startup(models, server, tmp_path):
    from tests.support import assert_one_screen, run_cli

    proc = run_cli("serve", f"model.path={models['bert']}", "port=0", *CPU, cwd=tmp_path, timeout=120)
    assert_one_screen(proc, 2, "serve needs a model that writes text", "this one is fill-mask")
    port = server.url.rsplit(":", 1)[1].split("/")[0]
    proc = run_cli("serve", f"model.path={models['gpt2']}", f"port={port}", *CPU, cwd=tmp_path, timeout=120)
    assert_one_screen(proc, 2, f"cannot listen on 127.0.0.1:{port}")
    assert "model: gpt2" not in proc.stderr  # refused before the model was loaded


def leave_mid_stream(server) -> None:
    """Open a streamed chat, read its first event and hang up; wait until the server says it stopped that row."""
    import httpx

    before = server.log().count("the client went away")
    body = {"model": "chat-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100,
            "stream": True}
    with httpx.stream("POST", server.url + "/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert next(response.iter_lines()).startswith("data: ")
    deadline = time.time() + 30
    while server.log().count("the client went away") == before and time.time() < deadline:
        time.sleep(0.1)
    assert server.log().count("the client went away") == before + 1, server.log()


def test_sigterm_stops_the_server_cleanly(server):
    # its own disconnect and bad request, so that the summary's counts are known whatever ran before on this server
    leave_mid_stream(server)
    with pytest.raises(openai.BadRequestError):
        server.client.completions.create(model="chat-model", prompt="hi", max_tokens=0)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0, server.log()
    log = server.log()
    assert server.proc.stdout.read() == b"" and "Traceback" not in log
    summary = json.loads(next((server.cwd / "outputs" / "serve").glob("*/summary.json")).read_text())
    statuses = [line.split()[4] for line in log.splitlines() if line.split()[2:3] in (["GET"], ["POST"])]
    assert summary["disconnected"] == log.count("the client went away") >= 1
    assert summary["failed"] == sum(status >= "400" for status in statuses) >= 1
    assert summary["requests"] >= 2
