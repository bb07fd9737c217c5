"""ELECTRA: the loss is generator CE + disc_weight x discriminator BCE (each its own mean), the two models share one
embeddings module (the generator's output layer its own), sampling is a function of the batch's noise, and the loop's
token-weighted mean over micro-batches gives the one-batch gradient exactly."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch.nn.functional as F  # noqa: E402

from ptcli.errors import PtcliError  # noqa: E402
from ptcli.objectives.electra import Electra, ElectraEvaluator, build_pair, histogram_auc, sample_from  # noqa: E402

VOCAB, MASK, CLS, SEP, PAD = 60, 3, 1, 2, 0


class FakeTokenizer:
    mask_token_id, cls_token_id, sep_token_id, pad_token_id = MASK, CLS, SEP, PAD
    bos_token_id = eos_token_id = None
    all_special_ids = [PAD, CLS, SEP, MASK]

    def __len__(self):
        return VOCAB


def model_cfg(**over):
    base = dict(arch="bert", layers=2, heads=4, hidden=32, intermediate=None, max_positions=64, vocab_size=VOCAB,
                dropout=0.0, tie_embeddings=True, extra=None, kv_heads=None)
    return SimpleNamespace(**(base | over))


def objective(**kwargs):
    obj = Electra(**kwargs)
    obj.bind(FakeTokenizer())
    return obj


def pair(seed=0):
    torch.manual_seed(seed)
    return build_pair(model_cfg(), FakeTokenizer(), 0.25, log=lambda m: None).eval()


def blocks(rows=4, length=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (rows, length), generator=g)
    ids[:, 0] = CLS
    ids[:, 9] = SEP
    return ids


def test_settings_are_checked_cheaply():
    for bad in ({"mask_prob": 0.0}, {"mask_prob": 1.0}, {"disc_weight": 0}, {"generator_size_ratio": 0},
                {"generator_size_ratio": 1.5}):
        with pytest.raises(PtcliError):
            Electra(**bad)
    Electra(generator_size_ratio=1.0)


def test_config_problems_refuse_decoders_vision_and_model_path():
    ok = {"model": {"arch": "bert", "vocab_size": 10, "max_positions": 8}, "dataset": {"seq_len": 8}}
    assert Electra.config_problems(ok, None) == []
    assert any("encoder" in p for p in Electra.config_problems({**ok, "model": {**ok["model"], "arch": "gpt2"}}, None))
    assert any("text model" in p for p in Electra.config_problems({**ok, "model": {**ok["model"], "arch": "vit"}},
                                                                   None))
    assert any("model.path" in p for p in Electra.config_problems({**ok, "model": {"path": "x"}}, {"model_type":
                                                                                                    "electra"}))
    assert Electra.config_problems({**ok, "device": {"strategy": "fsdp"}}, None) == []


def test_embeddings_are_shared_and_the_generators_output_layer_is_its_own():
    models = pair()
    gen, disc = models["generator"], models["discriminator"]
    assert gen.config.hidden_size == 8 and gen.config.num_attention_heads == 1 and gen.config.embedding_size == 32
    assert gen.config.num_hidden_layers == disc.config.num_hidden_layers == 2
    assert hasattr(gen.electra, "embeddings_project") and not hasattr(disc.electra, "embeddings_project")
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm"):
        a, b = getattr(gen.electra.embeddings, name).weight, getattr(disc.electra.embeddings, name).weight
        assert a is b and a.data_ptr() == b.data_ptr(), name
    assert gen.generator_lm_head.weight.data_ptr() != gen.electra.embeddings.word_embeddings.weight.data_ptr()
    assert not gen.config.tie_word_embeddings
    params = list(models.parameters())  # one parameter each in the optimizer
    assert len({id(p) for p in params}) == len(params)
    shared = disc.electra.embeddings.word_embeddings.weight
    assert sum(p is shared for p in params) == 1


def test_sharing_survives_a_checkpoint_round_trip(tmp_path):
    from safetensors.torch import load_model, save_model

    models = pair(seed=0)
    save_model(models, str(tmp_path / "m.safetensors"))
    other = pair(seed=1)
    load_model(other, str(tmp_path / "m.safetensors"))
    gen, disc = other["generator"], other["discriminator"]
    assert gen.electra.embeddings.word_embeddings.weight is disc.electra.embeddings.word_embeddings.weight
    for (name, a), (_, b) in zip(models.state_dict().items(), other.state_dict().items()):
        assert torch.equal(a, b), name


def test_collate_masks_a_fixed_count_of_non_special_tokens_all_as_mask():
    obj = objective()
    ids = blocks()
    batch = obj.collate(ids, torch.Generator().manual_seed(0))
    masked = batch["masked"]
    assert masked.sum(dim=1).tolist() == [3] * 4  # round(0.15 * 20)
    assert not masked[:, [0, 9]].any(), "special tokens are never masked"
    assert (batch["input_ids"][masked] == MASK).all() and torch.equal(batch["input_ids"][~masked], ids[~masked])
    again = obj.collate(ids, torch.Generator().manual_seed(0))
    assert all(torch.equal(batch[k], again[k]) for k in batch), "a function of the generator"


def test_sampling_is_a_function_of_the_noise():
    logits = torch.randn(50, VOCAB)
    u = torch.rand(50)
    assert torch.equal(sample_from(logits, u), sample_from(logits, u))
    cdf = torch.softmax(logits, -1).cumsum(-1)
    for row in range(50):  # the inverse CDF: the first token whose cumulative probability reaches u
        want = int((cdf[row] < u[row]).sum())
        assert int(sample_from(logits[row:row + 1], u[row:row + 1])) == min(want, VOCAB - 1)
    models, obj = pair(), objective()
    batch = obj.collate(blocks(), torch.Generator().manual_seed(1))
    with torch.no_grad():
        first, second = models(obj.terms, batch), models(obj.terms, batch)
    assert torch.equal(first["samples"], second["samples"])
    other = dict(batch, noise=torch.rand(batch["noise"].shape, generator=torch.Generator().manual_seed(9)))
    with torch.no_grad():
        assert not torch.equal(models(obj.terms, other)["samples"], first["samples"])


def manual_loss(models, batch, weight):
    gen, disc = models["generator"], models["discriminator"]
    original, masked = batch["original_ids"], batch["masked"]
    logits = gen(input_ids=batch["input_ids"]).logits
    gen_ce = F.cross_entropy(logits[masked], original[masked])
    probs = torch.softmax(logits[masked].detach(), -1)
    samples = torch.tensor([min(int((probs[i].cumsum(-1) < batch["noise"][masked][i]).sum()), VOCAB - 1)
                            for i in range(len(probs))])
    fake = original.clone()
    fake[masked] = samples
    disc_logits = disc(input_ids=fake).logits
    bce = F.binary_cross_entropy_with_logits(disc_logits, (fake != original).float())
    return gen_ce + weight * bce, gen_ce, bce


def test_the_loss_is_generator_ce_plus_weighted_discriminator_bce():
    models, obj = pair(), objective()
    batch = obj.collate(blocks(), torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = obj.loss(models, batch)
        want, gen_ce, bce = manual_loss(models, batch, 50.0)
    assert float(out.sum / out.count) == pytest.approx(float(want), rel=1e-5)
    assert float(out.logs["gen_loss"][0] / out.logs["gen_loss"][1]) == pytest.approx(float(gen_ce), rel=1e-5)
    assert float(out.logs["disc_loss"][0] / out.logs["disc_loss"][1]) == pytest.approx(float(bce), rel=1e-5)


def test_two_micro_batches_give_the_one_batch_gradient():
    """The loop: backward of each micro-batch's sum, then the gradients divided by the summed counts."""
    models, obj = pair(), objective(disc_weight=50.0)
    batch = obj.collate(blocks(rows=6, seed=3), torch.Generator().manual_seed(3))
    params = [p for p in models.parameters()]
    want, _, _ = manual_loss(models, batch, 50.0)
    reference = torch.autograd.grad(want, params, allow_unused=True)
    models.zero_grad()
    count = 0
    for rows in (slice(0, 2), slice(2, 6)):  # uneven micro-batches
        out = obj.loss(models, {k: v[rows] for k, v in batch.items()})
        out.sum.backward()
        count += int(out.count)
    for p, r in zip(params, reference):
        if r is None:
            assert p.grad is None or not p.grad.any()
            continue
        torch.testing.assert_close(p.grad / count, r, rtol=1e-4, atol=1e-7)


def test_the_evaluator_merges_and_computes_auc_from_counts():
    models, obj = pair(), objective()
    batch = obj.fixed_noise(blocks(rows=4), 0)
    whole, halves = ElectraEvaluator(obj), [ElectraEvaluator(obj), ElectraEvaluator(obj)]
    with torch.no_grad():
        whole.update(models, batch)
        halves[0].update(models, {k: v[:1] for k, v in batch.items()})
        halves[1].update(models, {k: v[1:] for k, v in batch.items()})
    halves[0].merge(halves[1].state())
    a, b = whole.compute(), halves[0].compute()
    assert a.keys() == {"loss", "gen_loss", "disc_loss", "disc_accuracy", "disc_auc", "replaced_accuracy"}
    assert all(a[k] == pytest.approx(b[k], rel=1e-5) for k in a)
    assert a["loss"] == pytest.approx(a["gen_loss"] + 50 * a["disc_loss"])
    assert obj.fixed_noise(blocks(rows=4)[2:], 0)["masked"].equal(batch["masked"][2:]), "fixed per block"
    assert histogram_auc([0, 0, 3], [3, 0, 0]) == 1.0 and histogram_auc([1, 0], [1, 0]) == 0.5
    assert histogram_auc([0, 1, 1], [1, 1, 0]) == pytest.approx(0.875)
