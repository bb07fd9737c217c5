"""`generate` in process on tiny models built from config: prompts, decoding, seeds, stops, kinds, bad input.

The tiny models (GPT-2, T5, BERT with ptcli-trained tokenizers) are built once per session by ``tiny_models``;
tests/e2e/test_generate.py and test_evaluate.py reuse them.
"""

from __future__ import annotations

import io
import json
import re

import pytest

from ptcli.errors import PtcliError, RunFailure
from tests.support import Terminal


def generate_cfg(*overrides: str):
    from omegaconf import OmegaConf

    from ptcli.config.validate import validate
    from ptcli.launch.compose import compose

    return OmegaConf.create(validate("generate", compose("generate", ["device=cpu", "device.threads=1", *overrides])))


def generate(tmp_path, *overrides: str, stdin: str = "", stdout=None):
    """Run the generate verb in process; returns (records or text, stderr text)."""
    from ptcli.verbs.generate import run

    out, err = stdout if stdout is not None else io.StringIO(), io.StringIO()
    stdin_stream = stdin if isinstance(stdin, io.StringIO) else io.StringIO(stdin)
    try:
        run(generate_cfg(*overrides), tmp_path / "run", stdin=stdin_stream, stdout=out, stderr=err)
    finally:
        generate.stderr = err.getvalue()
    text = out.getvalue()
    if isinstance(out, Terminal):
        return text, err.getvalue()
    return [json.loads(line) for line in text.splitlines()], err.getvalue()


# ---- prompts -----------------------------------------------------------------------------------------------

def test_prompt_reader_skips_empty_lines_and_reports_bad_json(tmp_path):
    from ptcli.inference.prompts import BadPrompt, PromptReader

    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a", "id": 1}\n\n{"prompt": "b"\n["x"]\n{"text": "c"}\n{"prompt": "  "}\n'
                    '{"prompt": "d", "id": 4}\n')
    reader = PromptReader("file", prompts_file=str(path))
    items = list(reader)
    good = [i for i in items if not isinstance(i, BadPrompt)]
    bad = [i for i in items if isinstance(i, BadPrompt)]
    assert [(p.text, p.fields, p.index) for p in good] == [("a", {"id": 1}, 0), ("d", {"id": 4}, 1)]
    assert [b.where for b in bad] == [f"{path}:3", f"{path}:4", f"{path}:5"]
    assert "invalid JSON" in bad[0].message and "not an object" in bad[1].message and "prompt" in bad[2].message
    assert reader.skipped == [f"{path}:2", f"{path}:6"]
    stdin = PromptReader("stdin", stdin=io.StringIO("x\n\n  \ny\r\n"))
    assert [p.text for p in stdin] == ["x", "y"] and stdin.skipped == ["stdin:2", "stdin:3"]


def test_json_lines_on_stdin_are_read_as_records_and_other_json_as_text():
    from ptcli.inference.prompts import PromptReader

    lines = '{"prompt": "a", "id": 7}\n{"not": "a prompt"}\n{broken\nplain\n'
    got = [(p.text, p.fields) for p in PromptReader("stdin", stdin=io.StringIO(lines))]
    assert got == [("a", {"id": 7}), ('{"not": "a prompt"}', {}), ("{broken", {}), ("plain", {})]
    predict = PromptReader("stdin", stdin=io.StringIO('{"input": "b", "k": 1}\n'), key="input", verb="predict")
    assert [(p.text, p.fields) for p in predict] == [("b", {"k": 1})]


def test_a_typed_backslash_n_in_prompt_is_a_newline_as_in_a_prompt_template():
    from ptcli.inference.prompts import PromptReader
    from ptcli.objectives.sft import unescape

    typed = "Q: 2+2?\\nA:"  # what `prompt='Q: 2+2?\nA:'` on a command line delivers
    got = [p.text for p in PromptReader("prompt", prompt=[typed, "tab\\there"])]
    assert got == ["Q: 2+2?\nA:", "tab\there"] == [unescape(typed), unescape("tab\\there")]
    assert [p.text for p in PromptReader("stdin", stdin=io.StringIO("a\\nb\n"))] == ["a\\nb"], "input text stays"


def test_prompt_source_rules(tmp_path):
    from ptcli.inference.prompts import choose_source

    assert choose_source("hi", None, io.StringIO()) == "prompt"
    assert choose_source(None, None, io.StringIO()) == "stdin"
    assert choose_source(None, None, Terminal()) == "interactive"
    with pytest.raises(PtcliError, match="does not exist"):
        choose_source(None, str(tmp_path / "nope.txt"), io.StringIO())
    with pytest.raises(PtcliError, match="both prompt and prompts_file"):
        choose_source("hi", "x.txt", io.StringIO())


# ---- decoding ----------------------------------------------------------------------------------------------

def test_greedy_batches_give_the_same_completions_as_one_by_one(models, tmp_path):
    prompts = "Once upon a time\nThe cat\nA bird sang a song about the little\nHi\n"
    batched, err = generate(tmp_path, f"model.path={models['gpt2']}", "max_new_tokens=12", "batch_size=4",
                            stdin=prompts)
    single, _ = generate(tmp_path, f"model.path={models['gpt2']}", "max_new_tokens=12", "batch_size=1",
                         stdin=prompts)
    assert [r["completion"] for r in batched] == [r["completion"] for r in single]
    assert [r["prompt"] for r in batched] == prompts.split("\n")[:4]
    assert all(r["new_tokens"] <= 12 and r["finish_reason"] in ("length", "eos") for r in batched)
    assert "index" not in batched[0] and "4 prompt(s), 4 result(s)" in err


def test_sampling_is_reproducible_whatever_the_batch_size(models, tmp_path):
    args = [f"model.path={models['gpt2']}", "do_sample=true", "top_k=50", "top_p=0.95", "temperature=1.5",
            "max_new_tokens=10", "num_return_sequences=3"]
    prompts = "Once upon a time\nThe cat\nA bird\n"
    a, _ = generate(tmp_path, *args, "batch_size=3", "seed=7", stdin=prompts)
    b, _ = generate(tmp_path, *args, "batch_size=1", "seed=7", stdin=prompts)
    c, _ = generate(tmp_path, *args, "batch_size=3", "seed=8", stdin=prompts)
    assert a == b
    assert [r["completion"] for r in a] != [r["completion"] for r in c]
    assert [(r["prompt"], r["index"]) for r in a[:3]] == [("Once upon a time", 0), ("Once upon a time", 1),
                                                          ("Once upon a time", 2)]
    assert len({r["completion"] for r in a[:3]}) == 3, "three different samples of one prompt"


def test_stop_string_cuts_the_completion(models, tmp_path):
    base = [f"model.path={models['gpt2']}", "prompt=Once upon a time", "max_new_tokens=20"]
    [full], _ = generate(tmp_path, *base, "do_sample=true", "seed=3")
    assert full["finish_reason"] == "length" and len(full["completion"]) > 8
    stop = re.search(r"[A-Za-z]{2}", full["completion"][1:]).group(0)  # a random model writes odd bytes too
    cut = full["completion"].find(stop)
    [stopped], _ = generate(tmp_path, *base, "do_sample=true", "seed=3", f"stop=['{stop}',zzzzzz]")
    assert stopped["finish_reason"] == "stop"
    assert stopped["completion"] == full["completion"][:cut]
    assert stopped["new_tokens"] < full["new_tokens"]
    streamed, _ = generate(tmp_path, *base, "do_sample=true", "seed=3", f"stop=['{stop}']", stdout=Terminal())
    assert streamed == "Once upon a time" + stopped["completion"] + "\n", "nothing past the stop is printed"


def test_beam_search_penalties_and_settings(models, tmp_path):
    base = [f"model.path={models['gpt2']}", "prompt=Once upon a time", "max_new_tokens=8"]
    beams, _ = generate(tmp_path, *base, "num_beams=3", "num_return_sequences=2")
    assert [r["index"] for r in beams] == [0, 1] and beams[0]["completion"] != beams[1]["completion"]
    [plain], _ = generate(tmp_path, *base)
    [varied], _ = generate(tmp_path, *base, "no_repeat_ngram_size=1", "repetition_penalty=1.5")
    assert varied["completion"] != plain["completion"], "the penalties change what greedy decoding picks"
    with pytest.raises(PtcliError, match="needs do_sample=true or num_beams"):
        generate(tmp_path, *base, "num_return_sequences=2")


def test_long_prompts_are_cut_from_the_left_or_refused(models, tmp_path):
    long_prompt = "the cat sat on the mat " * 60  # far more than the 128 - 20 positions left
    stdin = f"{long_prompt}\nOnce upon a time\n"
    args = [f"model.path={models['gpt2']}", "max_new_tokens=20"]
    records, err = generate(tmp_path, *args, stdin=stdin)
    assert len(records) == 2 and "cut to its last 108 tokens" in err and "stdin:1" in err
    with pytest.raises(RunFailure, match="1 prompt"):
        generate(tmp_path, *args, "truncate=fail", stdin=stdin)
    assert "more than the 108 that fit" in generate.stderr
    with pytest.raises(PtcliError, match="leaves no room"):
        generate(tmp_path, *args, "max_new_tokens=128", stdin=stdin)


def test_seq2seq_model_is_detected_and_answers(models, tmp_path):
    records, err = generate(tmp_path, f"model.path={models['t5']}", "prompt=[translate this,and that]",
                            "max_new_tokens=5", "num_beams=2")
    assert "(seq2seq)" in err
    assert [r["prompt"] for r in records] == ["translate this", "and that"]
    assert all(0 < r["new_tokens"] <= 5 for r in records)


def test_fill_mask_gives_ranked_candidates_and_refuses_prompts_without_a_mask(models, tmp_path):
    stdin = "the cat [MASK] on the [MASK] .\nno mask here\nthe [MASK] sang\n"
    out = io.StringIO()
    with pytest.raises(RunFailure, match="1 prompt"):
        generate(tmp_path, f"model.path={models['bert']}", "top_k=3", stdin=stdin, stdout=out)
    assert "no mask token" in generate.stderr and "stdin:2" in generate.stderr
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["prompt"] for r in records] == ["the cat [MASK] on the [MASK] .", "the [MASK] sang"]
    first = records[0]
    assert len(first["masks"]) == 2 and all(len(m["candidates"]) == 3 for m in first["masks"])
    scores = [c["score"] for c in first["masks"][0]["candidates"]]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
    assert first["masks"][0]["candidates"][0]["token"].lstrip("#") in first["completion"]


def test_terminal_streams_the_same_text_and_interactive_loop_reads_until_eof(models, tmp_path):
    args = [f"model.path={models['gpt2']}", "max_new_tokens=10"]
    [record], _ = generate(tmp_path, *args, "prompt=Once upon a time")
    text, _ = generate(tmp_path, *args, "prompt=Once upon a time", stdout=Terminal())
    assert text == "Once upon a time" + record["completion"] + "\n"
    stdin = Terminal("Once upon a time\n\nThe cat\n")
    text, err = generate(tmp_path, *args, stdin=stdin, stdout=Terminal())
    assert text.startswith("Once upon a time" + record["completion"] + "\n\nThe cat")
    assert err.count("> ") == 4 and "Ctrl-D" in err


def test_model_folder_without_tokenizer_is_a_clear_error(models, tmp_path):
    with pytest.raises(PtcliError, match="no tokenizer in the model folder"):
        generate(tmp_path, f"model.path={models['no-tokenizer']}", "prompt=hi")


def test_gpt2_preset_composes_the_classic_example(models, tmp_path):
    cfg = generate_cfg("model=gpt2")
    assert (cfg.model.path, cfg.decoding, cfg.do_sample, cfg.top_k) == ("gpt2", "gpt2", True, 50)
    assert (cfg.max_new_tokens, cfg.num_return_sequences, cfg.seed) == (50, 5, 42)
    assert generate_cfg("model=gpt2", "num_return_sequences=2").num_return_sequences == 2
    plain = generate_cfg("model.path=some-hub-model")
    assert plain.do_sample is False and plain.decoding is None and plain.num_return_sequences == 1
    # offline: the same settings on any local GPT-2 folder
    # a prompt with a comma or a quote needs Hydra's quoting: prompt="\"Hello, I'm a language model,\"" in bash
    records, _ = generate(tmp_path, "model=gpt2", f"model.path={models['gpt2']}",
                          "prompt=\"Hello, I'm a language model,\"", "max_new_tokens=6")
    assert records[0]["prompt"] == "Hello, I'm a language model,"
    assert [r["index"] for r in records] == [0, 1, 2, 3, 4]


CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|> {% endif %}")


def test_a_chat_model_gets_its_template_and_a_system_message(models, tmp_path, monkeypatch):
    """An instruct model's tokenizer carries a chat template: chat=auto sends each prompt as a user turn in it, which
    is exactly the completion of the templated text sent as it is (chat=off)."""
    import shutil

    from transformers import AutoTokenizer

    folder = tmp_path / "chat-model"
    shutil.copytree(models["gpt2"], folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    from ptcli.inference.decoding import Decoder

    seen, encode = [], Decoder.encode

    def recording(self, prompts):
        kept, ids_list, bad = encode(self, prompts)
        seen.extend(ids_list)
        return kept, ids_list, bad

    monkeypatch.setattr(Decoder, "encode", recording)
    chatted, err = generate(tmp_path, f"model.path={folder}", "max_new_tokens=8", "prompt='What is 2+2?'",
                            "system='Be brief.'")
    assert "chat: each prompt goes to the model as a user turn" in err and "system message" in err
    templated = "<|system|> Be brief.\n<|user|> What is 2+2?\n<|assistant|> "
    (tmp_path / "templated.jsonl").write_text(json.dumps({"prompt": templated}) + "\n")
    plain, err_off = generate(tmp_path, f"model.path={folder}", "max_new_tokens=8",
                              f"prompts_file={tmp_path / 'templated.jsonl'}", "chat=off")
    assert "chat:" not in err_off
    assert chatted[0]["completion"] == plain[0]["completion"] and chatted[0]["prompt"] == "What is 2+2?"
    assert seen[0] == seen[1] == tokenizer(templated, add_special_tokens=False)["input_ids"], "the model saw the turn"


def test_chat_on_without_a_template_and_a_stray_system_message_are_refused(models, tmp_path):
    with pytest.raises(PtcliError, match="no chat template"):
        generate(tmp_path, f"model.path={models['gpt2']}", "prompt=hi", "chat=on")
    with pytest.raises(PtcliError, match="system= needs a chat template"):
        generate(tmp_path, f"model.path={models['gpt2']}", "prompt=hi", "system=Be brief.")
