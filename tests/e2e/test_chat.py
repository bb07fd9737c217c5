"""`ptcli chat` with piped stdin, `generate` with messages JSONL, and `generate` on an SFT run (its template)."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from tests.support import latest, run_cli

pytestmark = pytest.mark.slow
CPU = ["device=cpu", "device.threads=1"]
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|> {% endif %}")


@pytest.fixture(scope="module")
def chat_model(models, tmp_path_factory):
    """The tiny GPT-2 with a chat template in its tokenizer."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("chat") / "chat-model"
    shutil.copytree(models["gpt2"], folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    return folder


def test_chat_with_piped_turns_and_commands(chat_model, tmp_path):
    stdin = "What is 2+2?\nAnd 3+3?\n/reset\nhello\n/system Be brief.\nbye\n/exit\nnever sent\n"
    proc = run_cli("chat", f"model.path={chat_model}", "max_new_tokens=6", *CPU, cwd=tmp_path, stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and ">>> " in proc.stderr and ">>>" not in proc.stdout
    conversations = [json.loads(line)["messages"] for line in
                     (latest(tmp_path, "chat") / "chat.jsonl").read_text().splitlines()]
    assert [[(m["role"], m["content"]) for m in c if m["role"] != "assistant"] for c in conversations] == [
        [("user", "What is 2+2?"), ("user", "And 3+3?")], [("user", "hello")],
        [("system", "Be brief."), ("user", "bye")]]
    replies = [m["content"] for c in conversations for m in c if m["role"] == "assistant"]
    assert len(replies) == 4 and proc.stdout == "".join(r + "\n" for r in replies), "one reply per turn on stdout"
    # the model's input: the second turn holds the first exchange; /reset forgot it; /system set the system message
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(chat_model)

    def tokens(messages):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    counts = [int(n) for n in re.findall(r"ptcli chat: (\d+) prompt tokens", proc.stderr)]
    first, second = conversations[0], conversations[1]
    assert counts == [tokens(first[:1]), tokens(first[:3]), tokens(second[:1]), tokens(conversations[2][:2])]
    summary = json.loads((latest(tmp_path, "chat") / "summary.json").read_text())
    assert summary["turns"] == 4 and summary["conversations"] == 3


def test_chat_without_a_chat_template_uses_a_transcript_and_ends_at_eof(models, tmp_path):
    proc = run_cli("chat", f"model.path={models['gpt2']}", "max_new_tokens=4", *CPU, cwd=tmp_path,
                   stdin="hi\nhow are you\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("plain 'User: ... / Assistant: ...' transcript") == 1
    conversation = json.loads((latest(tmp_path, "chat") / "chat.jsonl").read_text())["messages"]
    assert [m["role"] for m in conversation] == ["user", "assistant", "user", "assistant"]
    assert proc.stdout == conversation[1]["content"] + "\n" + conversation[3]["content"] + "\n"


def test_chat_needs_a_model_path(tmp_path):
    proc = run_cli("chat", *CPU, cwd=tmp_path)
    assert proc.returncode == 2 and "model.path is required: chat uses a trained model" in proc.stderr


def test_generate_answers_messages_lines_with_the_chat_template(chat_model, models, tmp_path):
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]
    prompts = tmp_path / "chats.jsonl"
    prompts.write_text(json.dumps({"id": 1, "messages": conversation}) + "\n"
                       + json.dumps({"id": 2, "prompt": "What is 2+2?"}) + "\n"
                       + json.dumps({"id": 3, "messages": [{"role": "user"}]}) + "\n")
    proc = run_cli("generate", f"model.path={chat_model}", f"prompts_file={prompts}", "max_new_tokens=6", *CPU,
                   cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # line 3 is refused, the others answered
    assert f"messages[0] must be an object with \"role\" and \"content\" strings ({prompts}:3)" in proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["id"] for r in records] == [1, 2]
    assert records[0]["messages"] == conversation and "prompt" not in records[0]
    # the same completion as the templated text sent as it is
    templated = "<|system|> Be brief.\n<|user|> What is 2+2?\n<|assistant|> "
    (tmp_path / "templated.jsonl").write_text(json.dumps({"prompt": templated}) + "\n")
    plain = run_cli("generate", f"model.path={chat_model}", f"prompts_file={tmp_path / 'templated.jsonl'}",
                    "chat=off", "max_new_tokens=6", *CPU, cwd=tmp_path)
    assert json.loads(plain.stdout)["completion"] == records[0]["completion"]
    # on stdin too; a model without a chat template refuses the messages line only
    stdin = json.dumps({"messages": conversation}) + "\nOnce upon a time\n"
    proc = run_cli("generate", f"model.path={models['gpt2']}", "max_new_tokens=3", *CPU, cwd=tmp_path, stdin=stdin)
    assert proc.returncode == 1 and "need the tokenizer's chat template" in proc.stderr and "(stdin:1)" in proc.stderr
    assert [json.loads(line)["prompt"] for line in proc.stdout.splitlines()] == ["Once upon a time"]


def test_generate_on_an_sft_run_writes_prompts_as_training_did(models, tmp_path):
    rows = [{"instruction": f"Say {w}", "input": "" if i % 2 else "twice", "output": f"{w} {w}"}
            for i, w in enumerate(["cat", "dog", "sun", "bird", "tree", "song", "day", "sat"])]
    (tmp_path / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = run_cli("finetune", "objective=sft", f"model.path={models['gpt2']}", "dataset=jsonl",
                   "dataset.files=[sft.jsonl]", "objective.prompt_template='{instruction}\\n\\n{input}'",
                   "dataset.label_column=output", "dataset.seq_len=64", "train.epochs=null", "train.max_steps=2",
                   "train.batch_size=4", "train.eval_every=2", *CPU, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = latest(tmp_path)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"instruction": "Say dog", "input": "twice", "id": 1}) + "\n"
                       + json.dumps({"prompt": "Say cat", "id": 2}) + "\n")
    proc = run_cli("generate", f"model.path={run}", f"prompts_file={prompts}", "max_new_tokens=5", *CPU,
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "template: prompts are written as the SFT run's training wrote them" in proc.stderr
    templated = [json.loads(line) for line in proc.stdout.splitlines()]
    assert templated[0]["prompt"] == "Say dog\n\ntwice" and templated[0]["id"] == 1
    # template=off with the text training put before each response gives the same completions
    filled = tmp_path / "filled.jsonl"
    filled.write_text(json.dumps({"prompt": "Say dog\n\ntwice\n"}) + "\n" + json.dumps({"prompt": "Say cat\n\n\n"})
                      + "\n")
    proc = run_cli("generate", f"model.path={run}", f"prompts_file={filled}", "template=off", "max_new_tokens=5",
                   *CPU, cwd=tmp_path)
    assert proc.returncode == 0 and "template:" not in proc.stderr, proc.stderr
    assert [json.loads(line)["completion"] for line in proc.stdout.splitlines()] == [
        r["completion"] for r in templated]
    # a JSON prompt on stdin fills the template too
    proc = run_cli("generate", f"model.path={run}", "max_new_tokens=5", *CPU, cwd=tmp_path,
                   stdin=json.dumps({"instruction": "Say dog", "input": "twice"}) + "\n")
    assert json.loads(proc.stdout)["completion"] == templated[0]["completion"]


def test_ctrl_c_at_the_prompt_leaves_with_exit_code_0(models, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PTCLI_DEBUG", None)
    proc = subprocess.Popen([sys.executable, "-m", "ptcli", "chat", f"model.path={models['gpt2']}",
                             "max_new_tokens=3", *CPU], cwd=tmp_path, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            # as from a shell: pytest-xdist's workers ignore SIGINT, and a child inherits that
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    err = bytearray()

    def read():
        while chunk := os.read(proc.stderr.fileno(), 4096):
            err.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc.stdin.write(b"hi\n")
        proc.stdin.flush()
        deadline = time.time() + 480
        while err.count(b">>> ") < 2 and time.time() < deadline and proc.poll() is None:  # the reply is done
            time.sleep(0.1)
        assert err.count(b">>> ") >= 2, f"no second prompt (exit code {proc.poll()}): {err.decode()[-2000:]}"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:  # never leave a chat behind
            proc.kill()
            proc.wait()
    out = proc.stdout.read()
    reader.join(timeout=10)
    assert proc.returncode == 0, err.decode()
    assert len(out.decode().splitlines()) == 1 and "Traceback" not in err.decode()
    conversation = json.loads((latest(tmp_path, "chat") / "chat.jsonl").read_text())["messages"]
    assert [m["role"] for m in conversation] == ["user", "assistant"]
