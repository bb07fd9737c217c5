"""Conversations: slash commands, history cut to the context (never the system message), messages and transcripts
formatted for the model, an SFT run's prompt template written as training wrote it, and `chat` in process."""

from __future__ import annotations

import io
import json
import shutil
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from tests.support import tiny_models

CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|> {% endif %}")


def composed(verb: str, *overrides: str):
    from ptcli.config.validate import validate
    from ptcli.launch.compose import compose

    return OmegaConf.create(validate(verb, compose(verb, ["device=cpu", "device.threads=1", *overrides])))


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    """The tiny GPT-2 with a chat template in its tokenizer."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("chat") / "chat-model"
    shutil.copytree(tiny_models(tmp_path_factory.mktemp("tiny"))["gpt2"], folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    return folder


# ---- commands and history ------------------------------------------------------------------------------------

def test_commands_are_parsed_and_messages_are_not():
    from ptcli.inference.conversation import Command, parse_command

    assert parse_command("/reset") == Command("reset")
    assert parse_command("  /system  Be brief, please. ") == Command("system", "Be brief, please.")
    assert parse_command("/system") == Command("system", "")
    assert parse_command("/quit") == parse_command("/EXIT") == Command("exit")
    assert parse_command("/help") == Command("help")
    assert parse_command("/frobnicate now") == Command("unknown", "frobnicate")
    assert parse_command("what is 2/2?") is None and parse_command("//etc is a folder") is None


def test_history_is_cut_from_its_oldest_turns_and_never_loses_the_system_message():
    from ptcli.inference.conversation import Conversation

    chat = Conversation("Be brief.")
    for i in range(4):
        chat.add(f"question {i}", f"answer {i}")

    def length(messages):  # ten tokens a message
        return 10 * len(messages)

    assert chat.fit("question 4", length, budget=100) == 0  # 1 + 8 + 1 messages fit
    assert chat.fit("question 4", length, budget=60) == 4  # the two oldest exchanges go
    seen = chat.messages("question 4")
    assert seen[0] == {"role": "system", "content": "Be brief."}
    assert [m["content"] for m in seen[1:]] == ["question 2", "answer 2", "question 3", "answer 3", "question 4"]
    assert chat.fit("question 4", length, budget=5) == 4  # everything but the system message and the new turn
    assert chat.messages("question 4") == [{"role": "system", "content": "Be brief."},
                                           {"role": "user", "content": "question 4"}]
    # the transcript keeps every message, and /reset, /system start new conversations
    chat.add("question 4", "answer 4", interrupted=True)
    chat.reset()
    assert chat.system == "Be brief." and chat.messages() == [{"role": "system", "content": "Be brief."}]
    chat.reset("Be kind.")
    chat.add("hi", "hello")
    chat.reset(None)
    assert chat.messages() == []
    transcript = chat.transcript()
    assert len(transcript) == 2 and len(transcript[0]["messages"]) == 1 + 10
    assert transcript[0]["messages"][-1] == {"role": "assistant", "content": "answer 4", "interrupted": True}
    assert transcript[1]["messages"][0] == {"role": "system", "content": "Be kind."}


def test_a_streamed_reply_is_one_line_without_surrounding_whitespace():
    from ptcli.inference.conversation import ReplyPrinter

    out = io.StringIO()
    printer = ReplyPrinter(out)
    for piece in ["\n ", " Hello", ",", " ", "world", "\n", "\n"]:
        printer(piece)
    printer.end()
    assert out.getvalue() == "Hello, world\n" and printer.text == "Hello, world"


# ---- formatting ------------------------------------------------------------------------------------------------

def test_messages_go_through_the_chat_template_and_need_one(chat_model, tmp_path):
    from transformers import AutoTokenizer

    from ptcli.inference.formatting import Formatter, Refused, transcript
    from ptcli.inference.prompts import Prompt

    tokenizer = AutoTokenizer.from_pretrained(chat_model)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"},
                {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"}]
    prompt = Prompt(0, "And 3+3?", "x", messages=messages)
    cfg = composed("generate", f"model.path={chat_model}")
    text, special = Formatter(tokenizer, "causal", cfg, print).text(prompt)
    assert text == ("<|system|> Be brief.\n<|user|> What is 2+2?\n<|assistant|> 4\n<|user|> And 3+3?\n"
                    "<|assistant|> ") and special is False
    with pytest.raises(Refused, match="chat=off"):
        Formatter(tokenizer, "causal", composed("generate", f"model.path={chat_model}", "chat=off"), print).text(prompt)
    tokenizer.chat_template = None
    with pytest.raises(Refused, match="has none"):
        Formatter(tokenizer, "causal", cfg, print).text(prompt)
    logged = []
    chat = Formatter(tokenizer, "causal", composed("chat", f"model.path={chat_model}"), logged.append,
                     conversation=True)
    assert chat.text(prompt) == (transcript(messages), True) and "transcript" in logged[0]
    assert transcript(messages) == ("System: Be brief.\nUser: What is 2+2?\nAssistant: 4\nUser: And 3+3?\n"
                                    "Assistant:")


def test_jsonl_messages_lines_are_conversations_and_bad_ones_are_named(tmp_path):
    from ptcli.inference.prompts import BadPrompt, PromptReader

    path = tmp_path / "p.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "hi"}], "id": 1}\n{"messages": "hi"}\n'
                    '{"prompt": "plain", "id": 3}\n{"messages": [{"role": "user"}]}\n')
    items = list(PromptReader("file", prompts_file=str(path), conversations=True))
    assert items[0].messages == [{"role": "user", "content": "hi"}] and items[0].fields == {"id": 1}
    assert items[2].messages is None and items[2].text == "plain"
    assert isinstance(items[1], BadPrompt) and "non-empty list" in items[1].message
    assert isinstance(items[3], BadPrompt) and "messages[0]" in items[3].message
    stdin = io.StringIO('{"messages": [{"role": "user", "content": "hi"}]}\n{"not": "messages"}\n')
    items = list(PromptReader("stdin", stdin=stdin, conversations=True))
    assert items[0].messages is not None and items[1].messages is None and items[1].text == '{"not": "messages"}'


def test_an_sft_runs_prompts_are_written_exactly_as_training_wrote_them(tokenizer, tmp_path):
    """The same record gives the same token ids before the response in training and in generate."""
    from ptcli.inference.formatting import Formatter
    from ptcli.inference.prompts import Prompt, PromptReader
    from ptcli.objectives.sft import SFT

    saved = {"objective": {"_target_": "ptcli.objectives.sft.SFT", "prompt_template": "{instruction}\\n\\n{input}",
                           "messages_column": None}, "dataset": {"text_column": "text", "label_column": "output"}}
    sft = SFT(prompt_template=saved["objective"]["prompt_template"])
    sft.use(SimpleNamespace(text_column="text", label_column="output", seq_len=64), SimpleNamespace(
        tokenizer=tokenizer))
    cfg = composed("generate", "model.path=unused")
    logged = []
    formatter = Formatter(tokenizer, "causal", cfg, logged.append, run_cfg=saved)
    assert "template: prompts are written as the SFT run's training wrote them" in logged[0]
    for record, prompt in [
        ({"instruction": "Name a colour.", "input": "", "output": "Red."}, Prompt(0, "Name a colour.", "p")),
        ({"instruction": "Add them.", "input": "2 and 3", "output": "5"},
         Prompt(0, json.dumps({"instruction": "Add them.", "input": "2 and 3"}), "p")),
        ({"instruction": "Add them.", "input": "2 and 3", "output": "5"},
         Prompt(0, "", "p", values={"instruction": "Add them.", "input": "2 and 3"})),
    ]:
        trained = sft.encode([record], ["r"])[0]
        response = len(tokenizer(record["output"], add_special_tokens=False)["input_ids"]) + 1  # and the EOS
        text, special = formatter.text(prompt)
        assert text == sft.segments(record, "r")[0][0]
        assert tokenizer(text, add_special_tokens=special)["input_ids"] == trained["input_ids"][:-response]
    # without a template, the text column: the prompt then the separator
    plain = Formatter(tokenizer, "causal", cfg, print, run_cfg={**saved, "objective": {**saved["objective"],
                                                                                        "prompt_template": None}})
    assert plain.text(Prompt(0, "Hi", "p")) == ("Hi\n", False)
    # a .jsonl line with the template's fields and no "prompt" fills it; template=off and chat messages runs: none
    path = tmp_path / "p.jsonl"
    path.write_text('{"instruction": "Add them.", "input": "2 and 3", "id": 7}\n{"id": 8}\n')
    good, bad = list(PromptReader("file", prompts_file=str(path), template=formatter.run))
    assert good.values == {"instruction": "Add them.", "input": "2 and 3"} and good.text == "Add them.\n\n2 and 3"
    assert good.fields["id"] == 7 and "the prompt template's fields (instruction, input)" in bad.message
    assert Formatter(tokenizer, "causal", composed("generate", "model.path=x", "template=off"), print,
                     run_cfg=saved).text(Prompt(0, "Hi", "p")) == ("Hi", True)
    chat_run = {**saved, "objective": {**saved["objective"], "messages_column": "messages"}}
    assert Formatter(tokenizer, "causal", cfg, print, run_cfg=chat_run).run is None


# ---- chat in process -------------------------------------------------------------------------------------------

class Lines(io.StringIO):
    """stdin whose reads raise KeyboardInterrupt (Ctrl-C at the prompt) once its lines run out."""

    def readline(self, *args):
        line = super().readline(*args)
        if not line:
            raise KeyboardInterrupt
        return line


def chat(tmp_path, stdin, *overrides: str):
    from ptcli.verbs.chat import run

    out, err = io.StringIO(), io.StringIO()
    summary = run(composed("chat", *overrides), tmp_path / "run", stdin=stdin, stdout=out, stderr=err)
    lines = (tmp_path / "run" / "chat.jsonl").read_text().splitlines()
    return summary, out.getvalue(), err.getvalue(), [json.loads(line)["messages"] for line in lines]


def test_chat_keeps_the_history_cuts_it_to_the_context_and_survives_ctrl_c(chat_model, tmp_path, monkeypatch):
    from ptcli.inference.decoding import Decoder

    seen, generate = [], Decoder.generate
    calls = {"n": 0}

    def recording(self, prompts, printer_write=None):
        seen.append([dict(m) for m in prompts[0].messages])
        calls["n"] += 1
        if calls["n"] == 3:  # Ctrl-C during the third reply, after its first words
            printer_write(" partial reply")
            raise KeyboardInterrupt
        return generate(self, prompts, printer_write)

    monkeypatch.setattr(Decoder, "generate", recording)
    long = " ".join(["the cat sat in the sun"] * 2)  # 19 tokens (the template's marks cost as much again)
    stdin = Lines(f"first {long}\nsecond\nthird\nfourth {long}\n")
    summary, out, err, conversations = chat(tmp_path, stdin, f"model.path={chat_model}", "max_new_tokens=8",
                                            "system='Be brief.'")
    assert summary["turns"] == 4 and "Traceback" not in err
    replies = [m["content"] for m in conversations[0] if m["role"] == "assistant"]
    assert out == "".join(r + "\n" for r in replies) and replies[2] == "partial reply"
    assert conversations[0][6] == {"role": "assistant", "content": "partial reply", "interrupted": True}
    assert seen[1][:3] == conversations[0][:3], "the second turn sees the first"
    assert "left out its 2 oldest message(s)" in err, err  # 128 positions - 8 new tokens: the first exchange goes
    assert all(turn[0] == {"role": "system", "content": "Be brief."} for turn in seen)
    assert seen[3][-1]["content"].startswith("fourth") and seen[3][1]["content"] != seen[0][1]["content"]
    assert "reply stopped" in err


def test_the_line_reader_splits_chunks_into_lines_and_ends_with_the_input():
    import os

    from ptcli.inference.conversation import LineReader

    read_end, write_end = os.pipe()
    os.write(write_end, b"one\ntwo\nthr")
    os.write(write_end, "ée".encode())
    os.close(write_end)
    with os.fdopen(read_end, encoding="utf-8") as stream:
        reader = LineReader(stream)
        assert [reader.readline() for _ in range(4)] == ["one\n", "two\n", "thrée", ""]


def test_ctrl_c_interrupts_the_line_reader_when_another_thread_takes_the_signal():
    """The kernel may deliver SIGINT to any thread (torch keeps several): the read must still end at once."""
    import os
    import signal
    import threading
    import time

    from ptcli.inference.conversation import LineReader

    read_end, write_end = os.pipe()

    def other_thread():  # SIGINT is not blocked here, so the kernel delivers it to this thread
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
        try:
            os.write(write_end, b"too late\n")  # what a reader that ignored the signal would return
        except BrokenPipeError:  # the reader ended at once, as it should, and closed its end
            pass

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # pytest-xdist's workers ignore SIGINT
    helper = threading.Thread(target=other_thread, daemon=True)
    helper.start()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # ... and never to the reading thread
    start = time.monotonic()
    try:
        with os.fdopen(read_end, encoding="utf-8") as stream:
            with pytest.raises(KeyboardInterrupt):
                LineReader(stream).readline()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - start < 3
