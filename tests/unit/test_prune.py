"""Pruning: structured pruning really removes parameters and the result reloads (plain from_pretrained for Llama and
feed-forward pruning, ptcli's pruned-heads recipe for BERT) with the same logits; the importance scores pick what
they should; magnitude pruning reaches the asked sparsity."""

from __future__ import annotations

import pytest
import torch
import transformers

from ptcli.compression import importance
from ptcli.compression import prune as P
from ptcli.errors import PtcliError
from ptcli.models import pruned
from ptcli.models.build import load_pretrained
from ptcli.models.restore import RECIPE_FILE
from ptcli.objectives.base import LossOutput


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_bert(heads: int = 4):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=heads,
                                     intermediate_size=64, max_position_embeddings=64, num_labels=2)
    return transformers.BertForSequenceClassification(config).eval()


def tiny_llama(kv_heads: int = 4):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=kv_heads, intermediate_size=64, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(config).eval()


def ids(batch: int = 2, length: int = 10):
    return torch.randint(5, 100, (batch, length), generator=torch.Generator().manual_seed(1))


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


class MeanCE:
    """An objective's loss: the summed cross-entropy of a classifier (or next-token LM) and its count."""

    def loss(self, model, batch) -> LossOutput:
        import torch.nn.functional as F

        logits = model(input_ids=batch["input_ids"]).logits
        labels = batch["labels"]
        if logits.dim() == 3:
            logits, labels = logits[:, :-1].reshape(-1, logits.shape[-1]), batch["input_ids"][:, 1:].reshape(-1)
        return LossOutput(F.cross_entropy(logits, labels, reduction="sum"), torch.tensor(labels.numel()))


def batches(n: int = 2):
    return [{"input_ids": ids(4, 12), "labels": torch.tensor([0, 1, 1, 0])} for _ in range(n)]


def test_bert_head_pruning_removes_parameters_and_reloads_through_ptcli(tmp_path):
    model = tiny_bert()
    x = ids()
    before = n_params(model)
    blocks = pruned.attention_blocks(model)
    scores = importance.normalise_per_layer(importance.head_norms(blocks))
    details = P.prune_heads(model, scores, 0.5, "global", tmp_path)
    assert sum(details["removed"]["heads_per_layer"]) == 4 and min(details["removed"]["heads_per_layer"]) >= 1
    # 4 heads of 8 dims: q, k, v rows (+ biases) and output columns
    assert before - n_params(model) == 4 * 8 * (3 * 32 + 3 + 32)
    assert (tmp_path / RECIPE_FILE).is_file() and details["loads_with"].startswith("ptcli")
    expected = model(input_ids=x).logits
    reloaded = load_pretrained(transformers.AutoModelForSequenceClassification, str(tmp_path))
    assert n_params(reloaded) == n_params(model)
    torch.testing.assert_close(reloaded(input_ids=x).logits, expected, rtol=0, atol=1e-6)
    # saved again without the recipe file (finetune's export): config.json still says the heads per layer
    again = tmp_path / "again"
    reloaded.save_pretrained(again)
    assert not (again / RECIPE_FILE).exists()
    third = load_pretrained(transformers.AutoModelForSequenceClassification, str(again))
    torch.testing.assert_close(third(input_ids=x).logits, expected, rtol=0, atol=1e-6)


def test_bert_masked_lm_with_tied_embeddings_reloads(tmp_path):
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64)).eval()
    blocks = pruned.attention_blocks(model)
    P.prune_heads(model, importance.head_norms(blocks), 0.25, "layer", tmp_path)
    reloaded = load_pretrained(transformers.AutoModelForMaskedLM, str(tmp_path))
    assert [b.heads for b in pruned.attention_blocks(reloaded)] == [3, 3]
    torch.testing.assert_close(reloaded(input_ids=ids()).logits, model(input_ids=ids()).logits, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_llama_head_pruning_reloads_with_plain_from_pretrained(tmp_path, kv_heads):
    model = tiny_llama(kv_heads)
    before = n_params(model)
    blocks = pruned.attention_blocks(model)
    scores = importance.head_gradients(model, MeanCE(), batches(), blocks)
    assert [s.shape[0] for s in scores] == [kv_heads, kv_heads]  # one score per key/value group
    details = P.prune_heads(model, scores, 0.5, "layer", tmp_path)
    assert details["loads_with"] == "from_pretrained" and not (tmp_path / RECIPE_FILE).exists()
    assert details["removed"]["heads_per_layer"] == [2, 2]
    assert n_params(model) < before
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    assert reloaded.config.num_attention_heads == 2 and reloaded.config.num_key_value_heads == kv_heads // 2
    assert n_params(reloaded) == n_params(model)
    torch.testing.assert_close(reloaded(input_ids=ids()).logits, model(input_ids=ids()).logits, rtol=0, atol=1e-6)


def test_llama_global_head_pruning_with_uneven_layers_reloads_through_ptcli(tmp_path):
    model = tiny_llama()
    scores = [torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([0.9, 0.8, 0.7, 0.6])]
    details = P.prune_heads(model, scores, 0.5, "global", tmp_path)
    assert details["removed"]["heads_per_layer"] == [1, 3], "the lowest across the model, one kept per layer"
    reloaded = load_pretrained(transformers.AutoModelForCausalLM, str(tmp_path))
    torch.testing.assert_close(reloaded(input_ids=ids()).logits, model(input_ids=ids()).logits, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", ["llama", "bert"])
def test_ffn_pruning_updates_the_config_and_reloads_with_plain_from_pretrained(tmp_path, family):
    model = tiny_llama() if family == "llama" else tiny_bert()
    auto = transformers.AutoModelForCausalLM if family == "llama" else transformers.AutoModelForSequenceClassification
    before = n_params(model)
    blocks = pruned.feed_forward_blocks(model)
    scores = importance.neuron_gradients(model, MeanCE(), batches(), blocks)
    assert [s.shape for s in scores] == [torch.Size([64])] * 2 and all(s.sum() > 0 for s in scores)
    details = P.prune_ffn(model, scores, 0.25, tmp_path)
    assert details["removed"]["intermediate_size"] == 48 and model.config.intermediate_size == 48
    removed_per_neuron = 3 * 32 if family == "llama" else 2 * 32 + 1
    assert before - n_params(model) == 2 * 16 * removed_per_neuron
    reloaded = auto.from_pretrained(tmp_path)
    torch.testing.assert_close(reloaded(input_ids=ids()).logits, model(input_ids=ids()).logits, rtol=0, atol=1e-6)


def test_norm_importance_removes_the_head_with_zero_weights(tmp_path):
    model = tiny_bert()
    block = pruned.attention_blocks(model)[0]
    rows = slice(2 * 8, 3 * 8)  # head 2 of 4, 8 dims each
    with torch.no_grad():
        for linear in (block.q, block.k, block.v):
            linear.weight[rows] = 0
            linear.bias[rows] = 0
        block.o.weight[:, rows] = 0
    scores = importance.head_norms(pruned.attention_blocks(model))
    assert scores[0][2] == 0 and all(scores[0][i] > 0 for i in (0, 1, 3))
    details = P.prune_heads(model, scores, 0.25, "layer", tmp_path)
    assert details["removed"]["kept"][0] == [0, 1, 3]
    assert details["removed"]["heads_per_layer"] == [3, 3]


def test_gradient_importance_is_nonzero_and_one_score_per_head():
    model = tiny_bert()
    blocks = pruned.attention_blocks(model)
    scores = importance.head_gradients(model, MeanCE(), batches(3), blocks)
    assert [tuple(s.shape) for s in scores] == [(4,), (4,)]
    assert all(bool((s > 0).all()) for s in scores)
    assert all(p.requires_grad for p in model.parameters()), "the model's own flags are restored"
    normalised = importance.normalise_per_layer(scores)
    assert all(abs(float(s.norm()) - 1) < 1e-5 for s in normalised)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_magnitude_pruning_reaches_the_asked_sparsity_inside_the_layers(scope):
    model = tiny_bert()
    untouched = {n: p.clone() for n, p in model.named_parameters() if "encoder.layer" not in n}
    details = P.magnitude(model, 0.4, scope)
    assert details["removed"]["sparsity"] == pytest.approx(0.4, abs=1e-3)
    if scope == "layer":
        assert all(abs(s - 0.4) < 0.01 for s in details["removed"]["sparsity_per_layer"].values())
    assert "pytorch/pytorch#36214" in details["note"]
    names = {name for name, _ in P.layer_linears(model)}
    assert "classifier" not in names and "bert.pooler.dense" not in names and len(names) == 12
    assert all(torch.equal(p, untouched[n]) for n, p in model.named_parameters() if n in untouched), \
        "embeddings, pooler and head left alone"
    assert not any(n.endswith("weight_orig") for n, _ in model.named_parameters()), "made permanent"


def test_choose_keeps_one_unit_per_layer_and_refuses_removing_none():
    scores = [torch.tensor([0.0, 0.1]), torch.tensor([5.0, 6.0])]
    assert P.choose(scores, 0.75, "global", "heads") == [[1], [1]]
    with pytest.raises(PtcliError, match="removes none"):
        P.choose(scores, 0.2, "layer", "heads")


def task_for(**cfg):
    from types import SimpleNamespace

    settings = {"method": "heads", "amount": 0.5, "scope": "layer", "importance": "norm", "seed": 0, **cfg}
    return SimpleNamespace(cfg=SimpleNamespace(**settings), log=lambda message: None)


def test_prune_saves_the_model_and_says_what_it_removed(tmp_path):
    from types import SimpleNamespace

    model = tiny_bert()
    details = P.prune(task_for(), SimpleNamespace(model=model), tmp_path, tmp_path / "cache", None)
    assert details["method"] == "heads" and details["removed"]["heads_per_layer"] == [2, 2]
    assert len(details["scores"]) == 2 and (tmp_path / "model.safetensors").is_file()


def test_structured_pruning_of_an_unknown_family_is_refused_by_name(tmp_path):
    from types import SimpleNamespace

    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(PtcliError, match="gpt2") as refused:
        P.prune(task_for(), SimpleNamespace(model=gpt2), tmp_path, tmp_path / "cache", None)
    assert "method=magnitude" in refused.value.fix
    details = P.prune(task_for(method="magnitude", amount=0.2), SimpleNamespace(model=gpt2), tmp_path, tmp_path, None)
    assert details["removed"]["sparsity"] == pytest.approx(0.2, abs=1e-3), "GPT-2's Conv1D layers are pruned too"
