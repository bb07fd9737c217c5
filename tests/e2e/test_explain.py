"""``ptcli explain`` end to end, as a user runs it: texts on stdin, JSON lines on stdout, the pictures and the HTML
page in the run directory; a masked LM refused on one screen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import assert_one_screen, run_cli, tiny_models

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    """A tiny BertForSequenceClassification folder (random weights, labels neg/pos) with a WordPiece tokenizer."""
    import torch
    import transformers

    bert = tiny_models(tmp_path_factory.mktemp("tiny-models"))["bert"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(bert)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id, num_labels=2,
        id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1}))
    folder = tmp_path_factory.mktemp("classifier") / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_explain_from_stdin_writes_json_lines_pictures_and_a_page(classifier, tmp_path):
    proc = run_cli("explain", f"model.path={classifier}", "device=cpu", "device.threads=1", "steps=20",
                   f"run.out_dir={tmp_path}", stdin="the cat sat in the sun\none day the cat saw a bird\n",
                   timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["input"] for line in lines] == ["the cat sat in the sun", "one day the cat saw a bird"]
    for line in lines:
        assert line["label"] in ("neg", "pos") and 0.5 <= line["probability"] <= 1
        assert len(line["ig"]) == len(line["tokens"]) == len(line["rollout"])
        assert abs(sum(line["ig"]) - (line["f_x"] - line["f_baseline"]) - line["delta"]) < 1e-3
        assert abs(line["delta"]) < 0.01
    run = Path(lines[0]["pictures"]["tokens"]).parent
    assert run.parent == tmp_path / "explain"
    for name in ("tokens-000.png", "tokens-001.png", "attention-000.png", "explain.html"):
        assert (run / name).stat().st_size > 1000, name
    assert json.loads((run / "summary.json").read_text())["inputs"] == 2


def test_explain_refuses_a_masked_lm(tmp_path):
    bert = tiny_models(tmp_path / "models")["bert"]
    proc = run_cli("explain", f"model.path={bert}", "input=hello", f"run.out_dir={tmp_path}")
    assert_one_screen(proc, 2, "explain needs a text classifier", "BertForMaskedLM")
