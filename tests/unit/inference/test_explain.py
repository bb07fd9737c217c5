"""``explain``: integrated gradients' completeness, attention rows and rollout rows summing to 1, the deletion check on
a tiny classifier that keys on one word, the pictures and the HTML page, the verb's JSON lines, and its errors."""

from __future__ import annotations

import io
import json
import random
import types

import pytest

from ptcli.errors import PtcliError

WORDS = "the a cat dog sun tree house river road car book table chair window door light green blue small big".split()


def sentences(n: int, seed: int) -> list[tuple[str, int]]:
    """Filler words; label 1 when "great" is among them (the one word the tiny classifier learns)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(10, 14))]
        label = rng.random() < 0.5
        if label:
            words.insert(rng.randrange(len(words) + 1), "great")
        out.append((" ".join(words), int(label)))
    return out


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    """A tiny BertForSequenceClassification trained (80 steps, a few seconds) to say pos when "great" is in the
    text, saved with its WordPiece tokenizer; mildly trained, so the logit stays smooth along IG's path."""
    import torch
    import transformers

    from ptcli.processing.tokenizers import train_tokenizer

    torch.set_num_threads(1)
    train = sentences(600, 0)
    tokenizer = train_tokenizer([s for s, _ in train], "wordpiece", 200)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id, num_labels=2,
        id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1}))
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    model.train()
    for step in range(80):
        batch = random.Random(step).sample(train, 32)
        encoded = tokenizer([s for s, _ in batch], padding=True, return_tensors="pt")
        model(**encoded, labels=torch.tensor([label for _, label in batch])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    folder = tmp_path_factory.mktemp("keyed") / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def loaded_model(model, tokenizer):
    """What ``inference.loading.load_for_inference`` gives, for a model built here (eager attention)."""
    import torch

    model.eval().set_attn_implementation("eager")
    return types.SimpleNamespace(model=model, tokenizer=tokenizer, context=64,
                                 placement=types.SimpleNamespace(device=torch.device("cpu")))


@pytest.fixture(scope="module")
def explainer(keyed):
    import transformers

    from ptcli.inference.explain import Explainer

    model = transformers.AutoModelForSequenceClassification.from_pretrained(keyed)
    tokenizer = transformers.AutoTokenizer.from_pretrained(keyed)
    return Explainer(loaded_model(model, tokenizer), "classify", steps=50)


def prompt(text: str, index: int = 0):
    from ptcli.inference.prompts import Prompt

    return Prompt(index, text, "input")


def test_completeness_within_the_reported_delta(explainer):
    for text, _ in sentences(6, 3):
        target = explainer.explain(prompt(text)).targets[0]
        gap = target.f_x - target.f_baseline
        assert sum(target.ig) - gap == pytest.approx(target.delta, abs=1e-4)
        assert abs(target.delta) < 0.01, (text, target.delta, gap)
        assert len(target.ig) == len(explainer.encode(text))


def test_the_mask_baseline_keeps_special_tokens(explainer):
    ids = explainer.encode("the great road")
    tokenizer = explainer.tokenizer
    from ptcli.inference.explain import Explainer

    masked = Explainer(explainer.loaded, "classify", baseline="mask")
    reference = masked.baseline(ids)
    assert reference[0] == tokenizer.cls_token_id and reference[-1] == tokenizer.sep_token_id
    assert set(reference[1:-1]) == {tokenizer.mask_token_id}
    target = masked.explain(prompt("the great road by the river")).targets[0]
    assert abs(target.delta) < 0.01


def test_the_keyword_gets_the_most_attribution(explainer):
    explained = explainer.explain(prompt("the cat by the great river and the small house"))
    target = explained.targets[0]
    assert target.label == "pos" and target.probability > 0.5
    assert explained.tokens[max(range(len(target.ig)), key=target.ig.__getitem__)] == "great"


def test_attention_rows_and_rollout_rows_sum_to_one(explainer):
    import torch

    from ptcli.inference.explain import rollout

    explained = explainer.explain(prompt("a green car on the road"))
    attentions = explained.attentions
    n = len(explained.tokens)
    assert attentions.shape == (2, 2, n, n)  # layers x heads x queries x keys, eager attention
    assert torch.allclose(attentions.sum(-1), torch.ones(2, 2, n), atol=1e-5)
    matrix = rollout(attentions)
    assert torch.allclose(matrix.sum(-1), torch.ones(n), atol=1e-5)
    assert sum(explained.targets[0].rollout) == pytest.approx(1.0, abs=1e-5)
    assert explained.targets[0].rollout == pytest.approx(matrix[0].tolist(), abs=1e-6)  # [CLS]'s row
    uniform = torch.full((3, 2, 4, 4), 0.25)
    assert torch.allclose(rollout(uniform).sum(-1), torch.ones(4))
    assert torch.allclose(rollout(torch.eye(4).expand(2, 2, 4, 4)), torch.eye(4))  # no mixing: the identity


def test_deletion_check_on_a_model_that_keys_on_one_word(explainer):
    from ptcli.inference.explain import deletion_check

    texts = [text for text, label in sentences(40, 5) if label]
    result = deletion_check(explainer, texts, k=3, seed=0)
    assert result["counted"] == len(texts) and result["skipped"] == 0
    # the top 3 always hold "great"; 3 random tokens of 12-16 seldom do
    assert result["fraction"] >= 0.8, result
    assert result["mean_drop_top"] > result["mean_drop_random"]
    assert deletion_check(explainer, ["the cat"], k=3)["skipped"] == 1


def test_pictures_and_the_html_page(explainer, tmp_path):
    from ptcli.inference import explain_pictures as pictures

    items = [explainer.explain(prompt(text, i)) for i, (text, _) in enumerate(sentences(3, 7))]
    strip = pictures.token_strip(items[0], tmp_path / "tokens-000.png", "classify")
    grid = pictures.attention_grid(items[0], tmp_path / "attention-000.png", layers=[1], heads=None)
    page = pictures.html_page(items, "classify", tmp_path / "explain.html", "keyed", grid, 0)
    for path in (strip, tmp_path / "attention-000.png"):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000
    text = page.read_text()
    assert text.count("class='input'") == 3 and "data:image/png;base64," in text
    assert "<script" not in text and "http" not in text.split("</style>")[1]  # self-contained
    assert html_escaped(items[1].prompt.text) in text


def html_escaped(text: str) -> str:
    import html

    return html.escape(text)


def test_a_token_classifier_explains_each_token(models):
    import torch
    import transformers

    from ptcli.inference.explain import TOKEN, Explainer

    tokenizer = transformers.AutoTokenizer.from_pretrained(models["bert"])
    torch.manual_seed(0)
    model = transformers.BertForTokenClassification(transformers.BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id, num_labels=3))
    explainer = Explainer(loaded_model(model, tokenizer), TOKEN, steps=20)
    explained = explainer.explain(prompt("the cat sat"))
    content = [i for i, t in enumerate(explainer.encode("the cat sat")) if t not in explainer.special]
    assert [t.position for t in explained.targets] == content
    for target in explained.targets:
        assert sum(target.ig) - (target.f_x - target.f_baseline) == pytest.approx(target.delta, abs=1e-4)
        assert sum(target.rollout) == pytest.approx(1.0, abs=1e-5)
    record = explained.record(TOKEN)
    assert len(record["targets"]) == len(content) and "label" in record["targets"][0]
    one = Explainer(explainer.loaded, TOKEN, steps=20, target=1).explain(prompt("the cat sat"))
    assert [t.position for t in one.targets] == [1]
    with pytest.raises(PtcliError, match="token position"):
        Explainer(explainer.loaded, TOKEN, steps=5, target=99).explain(prompt("the cat sat"))


def test_a_causal_lm_explains_its_next_token(models):
    import transformers

    from ptcli.inference.explain import CAUSAL, Explainer

    tokenizer = transformers.AutoTokenizer.from_pretrained(models["gpt2"])
    model = transformers.AutoModelForCausalLM.from_pretrained(models["gpt2"])
    explainer = Explainer(loaded_model(model, tokenizer), CAUSAL, steps=30)
    explained = explainer.explain(prompt("Once upon a time"))
    target = explained.targets[0]
    assert target.position == len(explained.tokens) - 1 and 0 < target.probability <= 1
    assert sum(target.ig) - (target.f_x - target.f_baseline) == pytest.approx(target.delta, abs=1e-4)
    assert abs(target.delta) < 0.01
    assert target.rollout == pytest.approx(target.rollout) and sum(target.rollout) == pytest.approx(1.0, abs=1e-5)


def test_bad_targets_and_empty_texts(explainer):
    from ptcli.inference.explain import Explainer, NoTokens

    with pytest.raises(NoTokens):
        explainer.explain(prompt("   "))
    with pytest.raises(PtcliError, match="not one of the model's labels"):
        Explainer(explainer.loaded, "classify", target="maybe").explain(prompt("the road"))
    named = Explainer(explainer.loaded, "classify", steps=5, target="neg").explain(prompt("the great road"))
    assert named.targets[0].label == "neg"
    assert Explainer(explainer.loaded, "classify", steps=5, target=1).explain(prompt("a")).targets[0].label == "pos"


def test_only_classifiers_taggers_and_causal_lms_are_explained(monkeypatch):
    import importlib.util

    import transformers

    from ptcli.config.explain_rules import explain_problems
    from ptcli.inference.explain import explain_kind

    with pytest.raises(PtcliError, match="BertForMaskedLM"):
        explain_kind(transformers.BertConfig(architectures=["BertForMaskedLM"]))
    assert explain_kind(transformers.BertConfig(architectures=["BertForTokenClassification"])) == "token"
    assert explain_kind(transformers.GPT2Config(architectures=["GPT2LMHeadModel"])) == "causal"
    settings = {"method": "both", "steps": 50, "batch_size": 25, "max_inputs": None, "index": 0}
    masked = {"model_type": "bert", "architectures": ["BertForMaskedLM"]}
    assert any("BertForMaskedLM" in p for p in explain_problems(settings, masked))
    assert explain_problems(settings, {"model_type": "bert", "architectures": ["BertForSequenceClassification"]}) == []
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "captum" else real(name, *a))
    assert any("pip install 'ptcli[explain]'" in p for p in explain_problems(settings, None))
    assert explain_problems({**settings, "method": "rollout"}, None) == []
    assert len(explain_problems({**settings, "method": "rollout", "steps": 0, "index": -1}, None)) == 2


def test_the_verb_writes_json_lines_pictures_and_a_page(keyed, composed, tmp_path):
    from ptcli.verbs import explain

    cfg = composed("explain", f"model.path={keyed}", "device=cpu", "device.threads=1", "steps=20")
    stdout, stderr = io.StringIO(), io.StringIO()
    stdin = io.StringIO("the great house\n\nthe road by the river\n")
    summary = explain.run(cfg, tmp_path, stdin=stdin, stdout=stdout, stderr=stderr)
    lines = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert [line["input"] for line in lines] == ["the great house", "the road by the river"]
    first = lines[0]
    assert first["tokens"][0] == "[CLS]" and first["label"] == "pos"
    assert len(first["ig"]) == len(first["tokens"]) == len(first["rollout"])
    assert {"delta", "f_x", "f_baseline", "probability"} <= set(first)
    assert set(first["pictures"]) == {"tokens", "attention", "html"} and "attention" not in lines[1]["pictures"]
    for name in ("tokens-000.png", "tokens-001.png", "attention-000.png", "explain.html"):
        assert (tmp_path / name).stat().st_size > 1000, name
    assert summary["inputs"] == 2 and summary["skipped_empty"] == 1
    json_only = tmp_path / "json-only"
    cfg = composed("explain", f"model.path={keyed}", "device=cpu", "input=a great film", "output=json",
                   "method=rollout")
    explain.run(cfg, json_only, stdin=io.StringIO(), stdout=(out := io.StringIO()), stderr=io.StringIO())
    line = json.loads(out.getvalue())
    assert "ig" not in line and "pictures" not in line and len(line["rollout"]) == len(line["tokens"])
    assert sorted(p.name for p in json_only.iterdir()) == ["summary.json"]


def test_the_verb_refuses_empty_input(keyed, composed, tmp_path):
    from ptcli.verbs import explain

    cfg = composed("explain", f"model.path={keyed}", "device=cpu", "input=''")
    with pytest.raises(PtcliError, match="nothing to explain"):
        explain.run(cfg, tmp_path, stdin=io.StringIO(), stdout=io.StringIO(), stderr=io.StringIO())


def test_a_masked_lm_or_a_missing_model_is_refused_before_the_run(models, composed):
    from ptcli.config.problems import ConfigError

    with pytest.raises(ConfigError, match="explain needs a text classifier"):
        composed("explain", f"model.path={models['bert']}")
    with pytest.raises(ConfigError, match="does not exist"):
        composed("explain", "model.path=./no/such/run")
    with pytest.raises(ConfigError, match="model.path is required"):
        composed("explain")
