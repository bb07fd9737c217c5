"""Layer-wise learning-rate decay, freezing rules and Hugging Face dataset folders as labelled records."""

from __future__ import annotations

from types import SimpleNamespace

import pytest


@pytest.fixture(scope="module")
def tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    return BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3,
                                                    num_attention_heads=2, intermediate_size=32))


def test_layer_ids_follow_the_stack(tiny_bert):
    from ptcli.training.finetune import count_layers, is_head, layer_id

    assert count_layers(tiny_bert) == 3
    assert layer_id("bert.embeddings.word_embeddings.weight", 3) == 0
    assert layer_id("bert.encoder.layer.0.attention.self.query.weight", 3) == 1
    assert layer_id("bert.encoder.layer.2.output.dense.bias", 3) == 3
    assert layer_id("classifier.weight", 3) == layer_id("bert.pooler.dense.weight", 3) == 4
    assert layer_id("transformer.h.1.attn.c_attn.weight", 2) == 2  # GPT-2 naming
    assert is_head("classifier.bias") and is_head("bert.pooler.dense.weight")
    assert not is_head("bert.encoder.layer.0.output.dense.weight")


def test_layer_decay_scales_learning_rates(tiny_bert):
    from ptcli.training.optim import build_optimizer

    optim_cfg = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3, "weight_decay": 0.01,
                 "betas": [0.9, 0.999], "eps": 1e-8}
    optimizer = build_optimizer(optim_cfg, tiny_bert, "cpu", layer_decay=0.5)
    lr_of = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            lr_of[id(p)] = (group["lr"], group["weight_decay"])
    params = dict(tiny_bert.named_parameters())
    assert lr_of[id(params["classifier.weight"])] == (pytest.approx(1e-3), 0.01)
    assert lr_of[id(params["bert.encoder.layer.2.attention.self.query.weight"])][0] == pytest.approx(5e-4)
    assert lr_of[id(params["bert.encoder.layer.0.attention.self.query.weight"])][0] == pytest.approx(1.25e-4)
    assert lr_of[id(params["bert.embeddings.word_embeddings.weight"])] == (pytest.approx(6.25e-5), 0.0)
    assert lr_of[id(params["bert.encoder.layer.0.attention.self.query.bias"])][1] == 0.0
    plain = build_optimizer(optim_cfg, tiny_bert, "cpu")
    assert len(plain.param_groups) == 2 and all(g["lr"] == 1e-3 for g in plain.param_groups)


def test_freeze_layers_and_head_only(tiny_bert):
    import copy

    from ptcli.errors import PtcliError
    from ptcli.training.finetune import freeze

    tune = SimpleNamespace(freeze_embeddings=False, freeze_layers=2, head_only=False)
    model = copy.deepcopy(tiny_bert)
    freeze(model, tune, lambda _m: None)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen_prefixes = ("bert.embeddings", "bert.encoder.layer.0.", "bert.encoder.layer.1.")
    assert not any(n.startswith(frozen_prefixes) for n in trainable)
    assert any(n.startswith("bert.encoder.layer.2.") for n in trainable) and "classifier.weight" in trainable
    model = copy.deepcopy(tiny_bert)
    freeze(model, SimpleNamespace(freeze_embeddings=False, freeze_layers=0, head_only=True), lambda _m: None)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "classifier.weight", "classifier.bias", "bert.pooler.dense.weight", "bert.pooler.dense.bias"}
    with pytest.raises(PtcliError, match="the model has 3 layers"):
        freeze(copy.deepcopy(tiny_bert), SimpleNamespace(freeze_embeddings=False, freeze_layers=5, head_only=False),
               lambda _m: None)


def test_trainable_trains_only_the_named_modules_and_names_what_exists(tiny_bert):
    import copy

    from ptcli.errors import PtcliError
    from ptcli.training.finetune import freeze

    plain = dict(freeze_embeddings=False, freeze_layers=0, head_only=False)
    model = copy.deepcopy(tiny_bert)
    freeze(model, SimpleNamespace(**plain, trainable=["classifier"]), lambda _m: None)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"classifier.weight", "classifier.bias"}
    model = copy.deepcopy(tiny_bert)
    freeze(model, SimpleNamespace(**plain, trainable=["bert.encoder.layer.2", "classifier"]), lambda _m: None)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "classifier.bias" in names and all(n.startswith(("bert.encoder.layer.2.", "classifier.")) for n in names)
    assert not any(n.startswith("bert.encoder.layer.1.") for n in names)
    with pytest.raises(PtcliError, match="does not have: clasifier") as e:
        freeze(copy.deepcopy(tiny_bert), SimpleNamespace(**plain, trainable=["clasifier"]), lambda _m: None)
    assert "classifier" in e.value.fix and "bert" in e.value.fix


def test_hf_dataset_folder_gives_train_and_validation_records(tmp_path):
    from ptcli.data.sources.hub import HFDataset

    (tmp_path / "train.csv").write_text("text,label\na,pos\nb,neg\n")
    (tmp_path / "validation.csv").write_text("text,label\nc,pos\n")
    source = HFDataset(hf_name=str(tmp_path), label_column="label")
    assert [r["text"] for _, r in source.records("train")] == ["a", "b"]
    assert source.has_split("val"), "one split rule: the dataset's validation split is used when it has one"
    assert [r["text"] for _, r in source.records("val")] == ["c"]
    assert not HFDataset(hf_name=str(tmp_path), hf_val_split=None).has_split("val")
