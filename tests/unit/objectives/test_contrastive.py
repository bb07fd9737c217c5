"""objective=contrastive: the loss is the textbook symmetric InfoNCE (and transformers' own), same-key pairs are
masked, templates build the captions, the evaluator's zero-shot accuracy and recall@k equal a hand computation and
its state merges like one pass, and pre-flight refuses towers that cannot work."""

from __future__ import annotations

import math
import pickle
from types import SimpleNamespace

import numpy as np
import pytest

from ptcli.errors import PtcliError
from ptcli.objectives.contrastive import Contrastive
from ptcli.objectives.labels import LabelMap
from ptcli.objectives.retrieval import recall_at_k

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
F = torch.nn.functional


def manual_info_nce(images, texts, scale, masked=()):
    """-log softmax of each pair's score among its row (image -> texts) and its column (text -> images), averaged
    over both directions, written out with loops; ``masked``: (i, j) pairs left out of both."""
    n = len(images)
    total = 0.0
    for i in range(n):
        row = [scale * float(images[i] @ texts[j]) for j in range(n) if j == i or (i, j) not in masked]
        col = [scale * float(images[j] @ texts[i]) for j in range(n) if j == i or (j, i) not in masked]
        total += -(scale * float(images[i] @ texts[i])) + math.log(sum(math.exp(v) for v in row))
        total += -(scale * float(images[i] @ texts[i])) + math.log(sum(math.exp(v) for v in col))
    return total / (2 * n)


def unit_rows(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float64), dim=-1)


def test_info_nce_is_the_manual_symmetric_cross_entropy_and_same_key_pairs_are_masked():
    from ptcli.objectives.retrieval import info_nce

    gen = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(5, 4, generator=gen, dtype=torch.float64), dim=-1)
    texts = F.normalize(torch.randn(5, 4, generator=gen, dtype=torch.float64), dim=-1)
    scale = 1 / 0.07
    logits = scale * images @ texts.T  # logits_per_image
    assert info_nce(logits).item() == pytest.approx(manual_info_nce(images, texts, scale), rel=1e-12)
    keys = torch.tensor([0, 1, 0, 2, 1])  # items 0 and 2 share a caption, and 1 and 4
    masked = {(0, 2), (2, 0), (1, 4), (4, 1)}
    assert info_nce(logits, keys).item() == pytest.approx(manual_info_nce(images, texts, scale, masked), rel=1e-12)
    assert info_nce(logits, torch.arange(5)).item() == pytest.approx(info_nce(logits).item(), rel=1e-12)


def tiny_dual_encoder(vocab=40):
    torch.manual_seed(0)
    vit = transformers.ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                 image_size=8, patch_size=4, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    bert = transformers.BertConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    config = transformers.VisionTextDualEncoderConfig.from_vision_text_configs(vit, bert, projection_dim=8)
    return transformers.VisionTextDualEncoderModel(config=config).eval()


def pair_batch(keys):
    gen = torch.Generator().manual_seed(1)
    n = len(keys)
    return {"pixel_values": torch.randn(n, 3, 8, 8, generator=gen), "input_ids": torch.randint(1, 40, (n, 6),
            generator=gen), "attention_mask": torch.ones(n, 6, dtype=torch.long), "keys": torch.tensor(keys)}


def test_the_loss_on_a_dual_encoder_is_infonce_with_its_temperature_summed_over_pairs():
    model = tiny_dual_encoder()
    batch = pair_batch([0, 1, 2, 3])
    out = Contrastive().loss(model, batch)
    assert out.count.item() == 4
    reference = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      pixel_values=batch["pixel_values"], return_loss=True)  # transformers' own CLIP loss
    assert (out.sum / out.count).item() == pytest.approx(reference.loss.item(), rel=1e-5)
    images, texts = reference.image_embeds.detach().double(), reference.text_embeds.detach().double()
    scale = math.exp(model.logit_scale.item())
    assert (out.sum / out.count).item() == pytest.approx(manual_info_nce(images, texts, scale), rel=1e-5)
    temperature_sum, count = out.logs["temperature"]
    assert (temperature_sum / count).item() == pytest.approx(0.07, rel=1e-3)  # ln(1/0.07) initially


def test_same_caption_pairs_are_no_negatives_unless_asked_and_the_scale_is_capped_at_100():
    model = tiny_dual_encoder()
    batch = pair_batch([0, 1, 0, 1])
    masked = Contrastive().loss(model, batch)
    plain = Contrastive(same_caption_negatives=True).loss(model, batch)
    reference = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      pixel_values=batch["pixel_values"], return_loss=True)
    assert (plain.sum / 4).item() == pytest.approx(reference.loss.item(), rel=1e-5)
    images, texts = reference.image_embeds.detach().double(), reference.text_embeds.detach().double()
    scale = math.exp(model.logit_scale.item())
    expected = manual_info_nce(images, texts, scale, {(0, 2), (2, 0), (1, 3), (3, 1)})
    assert (masked.sum / 4).item() == pytest.approx(expected, rel=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(7.0)
    Contrastive().loss(model, batch)
    assert model.logit_scale.item() == pytest.approx(math.log(100), rel=1e-6)


def labelled(**settings):
    """An objective that learned 3 classes from label-only data (captions from templates)."""
    objective = Contrastive(**settings)
    objective.columns(SimpleNamespace(label_column="label", image_column="image"))
    logged = []
    objective.learn([(f"r{i}", {"label": name}) for i, name in enumerate(["cat", "dog", "owl"])], logged.append)
    return objective, logged


def test_templates_build_captions_from_class_names_and_say_what_that_tests():
    objective, logged = labelled(templates=["a photo of a {label}", "a {label}, drawn"])
    assert any("this tests the machinery, not open-vocabulary retrieval" in line for line in logged)
    assert objective.prompt_texts() == ["a photo of a cat", "a cat, drawn", "a photo of a dog", "a dog, drawn",
                                        "a photo of a owl", "a owl, drawn"]  # class-major
    assert objective.caption({"label": 1, "template": 1}, None) == "a dog, drawn"
    drawn = {objective.caption({"label": 2, "template": None}, torch.Generator().manual_seed(s)) for s in range(20)}
    assert drawn == {"a photo of a owl", "a owl, drawn"}  # training pairs draw a template from the step's generator
    renamed, _ = labelled(class_names=["kitten", "puppy", "owlet"])
    assert renamed.caption({"label": 0, "template": 0}, None) == "a photo of a kitten"
    wrong = Contrastive(class_names=["a", "b"])
    wrong.columns(SimpleNamespace(label_column="label"))
    with pytest.raises(PtcliError, match="class_names has 2 names but the data has 3 labels"):
        wrong.learn([(f"r{i}", {"label": n}) for i, n in enumerate("xyz")], print)


@pytest.mark.parametrize(("settings", "message"), [
    ({"templates": ["a photo"]}, "must name the class as {label}"),
    ({"templates": ["a {label} in {place}"]}, "must name the class as {label}"),
    ({"templates": []}, "templates is empty"),
    ({"logit_scale_init": 5.0}, "at most ln\\(100\\)"),
    ({"text_hidden": 30, "text_heads": 4}, "divisible"),
    ({"projection_dim": 0}, "projection_dim must be at least 1"),
    ({"class_names": ["a", "a"]}, "distinct"),
])
def test_settings_that_cannot_work_are_refused_when_built(settings, message):
    with pytest.raises(PtcliError, match=message):
        Contrastive(**settings)


def test_recall_at_k_by_hand():
    images = unit_rows([1, 0], [0, 1], [1, 0.9])
    texts = unit_rows([1, 0.1], [0.1, 1], [-1, 0])
    # cosines, image x text:  [[0.995, 0.100, -1.000],
    #                          [0.100, 0.995,  0.000],
    #                          [0.806, 0.740, -0.743]]
    got = recall_at_k(images, [0, 1, 2], texts, [0, 1, 2], ks=(1, 2))
    # i2t: images 0 and 1 rank their own text first; image 2's own text (2) is last: 2/3 at 1 and at 2
    # t2i: texts 0 and 1 find their image first; text 2 ranks image 1 (0.0) first and its own image 2 second
    assert got == {"i2t_r1": pytest.approx(2 / 3), "i2t_r2": pytest.approx(2 / 3), "t2i_r1": pytest.approx(2 / 3),
                   "t2i_r2": pytest.approx(1.0)}
    # keys as classes (templated captions): images of classes 0, 1, 1 against one text per class
    classes = recall_at_k(images, [0, 1, 1], texts[:2], [0, 1], ks=(1,))
    # i2t: image 2 (class 1) ranks the class-0 text first; t2i: text 0 -> image 0, text 1 -> image 1
    assert classes == {"i2t_r1": pytest.approx(2 / 3), "t2i_r1": pytest.approx(1.0)}


class LookupTokenizer:
    """Each text is one token: its index in ``vocab``; pad is 0."""

    pad_token_id = 0

    def __init__(self, vocab):
        self.vocab = vocab

    def __call__(self, texts, **_kwargs):
        ids = torch.tensor([[self.vocab.index(t)] for t in texts])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


class LookupModel(torch.nn.Module):
    """A dual encoder whose image embeddings are the pixel values and text embeddings a table row per token."""

    def __init__(self, table):
        super().__init__()
        self.table = F.normalize(torch.tensor(table, dtype=torch.float32), dim=-1)
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))

    def forward(self, input_ids, attention_mask, pixel_values):
        images, texts = F.normalize(pixel_values.float(), dim=-1), self.table[input_ids[:, 0]]
        return SimpleNamespace(image_embeds=images, text_embeds=texts,
                               logits_per_image=self.logit_scale.exp() * images @ texts.T)


PROMPTS = ["a photo of a cat", "a photo of a dog"]
IMAGES = [[1, 0.2], [0.9, -0.1], [0.2, 1], [1, 0.8]]  # labels 0, 0, 1, 1: the last one looks like a cat


def zero_shot_setup():
    objective, _ = labelled()
    objective.labels = LabelMap(["cat", "dog"])
    objective.tokenizer = LookupTokenizer(PROMPTS)
    model = LookupModel([[1, 0], [0, 1]])
    batches = [{"pixel_values": torch.tensor(IMAGES[s:s + 2]), "input_ids": torch.tensor([[lab], [lab]]),
                "attention_mask": torch.ones(2, 1, dtype=torch.long), "keys": torch.tensor([lab, lab]),
                "labels": torch.tensor([lab, lab])} for s, lab in ((0, 0), (2, 1))]
    return objective, model, batches


@torch.no_grad()  # as validation and evaluate run it
def test_the_evaluator_scores_zero_shot_and_recall_as_by_hand_and_merges_like_one_pass():
    objective, model, batches = zero_shot_setup()
    one = objective.evaluator()
    for batch in batches:
        one.update(model, batch)
    metrics = one.compute()
    # the prompts point along x (cat) and y (dog): image 3 ([1, 0.8]) is nearer the cat prompt, so 3 of 4 are right
    assert metrics["zeroshot_accuracy"] == pytest.approx(0.75)
    assert metrics["i2t_r1"] == pytest.approx(0.75) and metrics["i2t_r5"] == pytest.approx(1.0)
    # the cat prompt's nearest image is image 1 (a cat, 0.994); the dog prompt's is image 2 (a dog, 0.981)
    assert metrics["t2i_r1"] == pytest.approx(1.0)
    assert metrics["loss"] == pytest.approx(0.0, abs=1e-6)  # each batch's two pairs share a class: only positives
    first, second = objective.evaluator(), objective.evaluator()
    first.update(model, batches[0])
    second.update(model, batches[1])
    first.merge(pickle.loads(pickle.dumps(second.state())))  # as gathered from another process
    assert first.compute() == pytest.approx(metrics)


@torch.no_grad()
def test_recall_over_captions_from_the_data_keys_each_distinct_caption():
    objective = Contrastive()
    objective.columns(SimpleNamespace(label_column=None, caption_column="caption"))
    objective.tokenizer = LookupTokenizer(["x", "y", "z"])
    model = LookupModel([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    examples = objective.postprocess([{"caption": c} for c in ("x", "y", "x", "z")])
    assert [e["key"] for e in examples] == [0, 1, 0, 2]  # the same caption text, the same key
    images = torch.tensor([[1, 0, 0], [0.9, 0, 0.5], [0.8, 0.1, 0], [0, 0, 1.0]])  # image 1's caption is y
    batch = {"pixel_values": images, "input_ids": torch.tensor([[0], [1], [0], [2]]),
             "attention_mask": torch.ones(4, 1, dtype=torch.long), "keys": torch.tensor([0, 1, 0, 2])}
    evaluator = objective.evaluator()
    evaluator.update(model, batch)
    metrics = evaluator.compute()
    assert "zeroshot_accuracy" not in metrics  # no classes
    # i2t over the 3 distinct captions: images 0, 2 -> x (right), 1 -> x (wrong; y is last), 3 -> z (right)
    assert metrics["i2t_r1"] == pytest.approx(3 / 4) and metrics["i2t_r5"] == pytest.approx(1.0)
    # t2i: x -> image 0 (right); y -> image 2 (0.1: wrong); z -> image 3 (right)
    assert metrics["t2i_r1"] == pytest.approx(2 / 3)


def test_preflight_accepts_vision_towers_and_refuses_the_rest(tmp_path):
    import json

    def problems(model, **objective):
        return Contrastive.config_problems({"model": model, "objective": {"text_max_len": 32, **objective}}, None)

    assert problems({"arch": "vit"}) == []
    assert "needs a vision model for its image tower, but model.arch is 'bert'" in problems({"arch": "bert"})[0]
    assert "masked autoencoder" in problems({"arch": "vit_mae"})[0]
    assert "needs class labels" in Contrastive.config_problems(
        {"model": {"arch": "vit"}, "objective": {}, "dataset": {"caption_column": "caption", "label_column": None},
         "train": {"best_metric": "zeroshot_accuracy"}}, None)[0]
    assert "device.strategy=ddp" in Contrastive.config_problems(
        {"model": {"arch": "vit"}, "objective": {}, "device": {"strategy": "fsdp"}}, None)[0]
    gpt = tmp_path / "gpt"
    gpt.mkdir()
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert "must be a BERT-like text encoder" in problems({"arch": "vit"}, text_model=str(gpt))[0]
    assert "is the package 'no_such_pkg' installed" in problems({"arch": "vit"}, text_model="pkg:no_such_pkg/m")[0]
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "max_position_embeddings": 16}))
    assert problems({"arch": "vit"}, text_model=str(bert), text_max_len=16) == []
    assert "exceeds the text tower's 16 positions" in problems({"arch": "vit"}, text_model=str(bert))[0]
    dual = {"model_type": "vision-text-dual-encoder", "text_config": {"max_position_embeddings": 64}}
    assert Contrastive.config_problems({"model": {"path": "x"}, "objective": {"text_max_len": 32}}, dual) == []
    assert "leave objective.text_model unset" in Contrastive.config_problems(
        {"model": {"path": "x"}, "objective": {"text_model": str(bert)}}, dual)[0]


def test_the_shipped_config_validates_and_a_text_model_for_the_image_tower_is_refused(composed):
    from ptcli.config.problems import ConfigError

    cfg = composed("finetune", "objective=contrastive")
    assert cfg.model.arch == "vit" and cfg.objective.templates == ["a photo of a {label}"]
    with pytest.raises(ConfigError, match="needs a vision model for its image tower"):
        composed("finetune", "objective=contrastive", "model=minilm")


def test_digits_examples_and_batches(tmp_path):
    from ptcli.data.sources.images import Digits
    from ptcli.processing.images import vit_image_processor
    from ptcli.processing.loading import Processors
    from ptcli.processing.tokenizers import train_tokenizer

    objective = Contrastive(templates=["a photo of a {label}", "the digit {label}"])
    tokenizer = train_tokenizer([f"a photo of a {i} the digit {i}" for i in range(10)], "wordpiece", 100)
    processor = transformers.VisionTextDualEncoderProcessor(image_processor=vit_image_processor(16),
                                                            tokenizer=tokenizer)
    source = Digits()
    objective.use(source, Processors(processor=processor))
    rows = list(source.records("train", print))[:40]
    objective.learn(rows, print)
    examples, skipped = objective.encode_all(rows)
    assert skipped == 0 and len(examples) == 40 and all(e["key"] == e["label"] for e in examples)
    batch = objective.collate(examples[:8], None)
    assert batch["pixel_values"].shape == (8, 3, 16, 16) and batch["input_ids"].shape[0] == 8
    assert objective.units(batch) == 8 and bool((batch["keys"] == batch["labels"]).all())
    again = objective.collate(examples[:8], None)  # validation captions are fixed per record
    assert bool((again["input_ids"] == batch["input_ids"]).all())
    assert np.array_equal(batch["labels"].numpy(), [int(r["label"]) for _, r in rows[:8]])
