"""DP-SGD's parts (+privacy=dp): Poisson batches, the noise found for a budget and the epsilon the accountant
gives back, per-example gradients of a BERT model (the position-ids trap), and the noisy step itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from ptcli.data.loader import PoissonOrder
from ptcli.errors import PtcliError

pytest.importorskip("opacus")


def settings(**kw):
    return OmegaConf.create({"method": "dp", "epsilon": 8.0, "delta": 1e-5, "max_grad_norm": 1.0,
                             "noise_multiplier": None, "accountant": "rdp", **kw})


def test_poisson_batches_are_independent_draws_of_the_expected_size_and_replay_exactly():
    order = PoissonOrder(range(2000), global_batch=64, seed=3, grad_accum=4)
    sizes, seen = [], set()
    for step in range(300):
        micro = order.micro_batches(step * 64)
        assert order.count(step * 64) == len(micro) == 4
        drawn = [i for m in micro for i in m]
        assert len(drawn) == len(set(drawn)), "no example twice in a step"
        assert max(len(m) for m in micro) - min(len(m) for m in micro) <= 1, "micro-batches split evenly"
        sizes.append(len(drawn))
        seen.update(drawn)
    assert abs(np.mean(sizes) - 64) < 2 and np.std(sizes) == pytest.approx(np.sqrt(64 * (1 - 64 / 2000)), rel=0.2)
    assert len(set(sizes)) > 5, "the batch size varies, as Poisson sampling does"
    again = PoissonOrder(range(2000), global_batch=64, seed=3, grad_accum=4)
    assert again.micro_batches(17 * 64) == order.micro_batches(17 * 64), "a pure function of (seed, step)"
    other_seed = PoissonOrder(range(2000), 64, seed=4)
    assert other_seed.micro_batches(0) != PoissonOrder(range(2000), 64, seed=3).micro_batches(0)


def test_an_empty_draw_is_a_step_without_micro_batches():
    order = PoissonOrder(range(1000), global_batch=1, seed=0, grad_accum=2)  # rate 0.001: most steps are empty
    counts = [order.count(step) for step in range(200)]
    assert 0 in counts and all(c <= 2 for c in counts)
    assert all(order.micro_batches(s) == [] for s, c in enumerate(counts) if c == 0)


def test_the_noise_spends_the_budget_at_the_planned_step_and_the_accountant_agrees():
    from opacus.accountants import RDPAccountant

    from ptcli.training.privacy import Privacy

    logs = []
    p = Privacy(settings(), n_train=60000, batch_size=256, planned_steps=500, log=logs.append)
    assert 7.9 <= p.epsilon(500) <= 8.0, "spends the budget, never more"
    assert p.epsilon(100) < p.epsilon(300) < p.epsilon(500) and p.epsilon(0) == 0
    stepped = RDPAccountant()  # the accountant as Opacus's own optimizer hook drives it: one call per step
    for _ in range(500):
        stepped.step(noise_multiplier=p.noise_multiplier, sample_rate=256 / 60000)
    assert p.epsilon(500) == pytest.approx(stepped.get_epsilon(1e-5), rel=1e-9)
    assert "noise multiplier" in logs[0] and "Poisson sample rate 0.00427" in logs[0]
    more = Privacy(settings(epsilon=2.0), n_train=60000, batch_size=256, planned_steps=500, log=logs.append)
    assert more.noise_multiplier > p.noise_multiplier, "a smaller budget needs more noise"
    given = Privacy(settings(epsilon=None, noise_multiplier=1.1), 60000, 256, 500, logs.append)
    assert given.noise_multiplier == 1.1 and given.facts(500)["privacy"]["epsilon"] == round(given.epsilon(500), 6)


def test_budgets_that_cannot_be_private_are_refused():
    from ptcli.training.privacy import Privacy

    with pytest.raises(PtcliError, match="not below 1/N"):
        Privacy(settings(delta=1e-3), n_train=5000, batch_size=64, planned_steps=10, log=print)
    with pytest.raises(PtcliError, match="batch_size=64 is not below"):
        Privacy(settings(), n_train=64, batch_size=64, planned_steps=10, log=print)


def tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=16))


def batch():
    ids = torch.randint(5, 50, (4, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    return ids, mask, torch.tensor([0, 1, 1, 0])


def reference_gradients(model, ids, mask, y):
    """Each example's gradient, one example at a time: what per-example gradients must equal."""
    out = []
    for i in range(len(y)):
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(input_ids=ids[i:i + 1], attention_mask=mask[i:i + 1]).logits,
                                                 y[i:i + 1], reduction="sum")
        loss.backward()
        out.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    model.zero_grad(set_to_none=True)
    return out


def test_per_example_gradients_of_bert_match_one_example_at_a_time_with_positions_expanded():
    from opacus import GradSampleModule

    from ptcli.training.privacy import Privacy

    ids, mask, y = batch()
    plain = tiny_bert()
    trap = GradSampleModule(plain, loss_reduction="sum")
    # Opacus #841: broadcast position ids give the position embeddings one gradient for the whole batch
    torch.nn.functional.cross_entropy(trap(input_ids=ids, attention_mask=mask).logits, y, reduction="sum").backward()
    assert plain.bert.embeddings.position_embeddings.weight.grad_sample.shape[0] == 1
    assert plain.bert.embeddings.word_embeddings.weight.grad_sample.shape[0] == 4
    trap._close()

    model = tiny_bert()
    expected = reference_gradients(model, ids, mask, y)
    logs = []
    wrapped = Privacy(settings(), 1000, 32, 10, logs.append).wrap_model(model, logs.append)
    assert any("position_ids are expanded per example" in line for line in logs)
    torch.nn.functional.cross_entropy(wrapped(input_ids=ids, attention_mask=mask).logits, y, reduction="sum").backward()
    for name, p in model.named_parameters():
        assert p.grad_sample.shape == (4, *p.shape), name
        for i in range(4):
            torch.testing.assert_close(p.grad_sample[i], expected[i][name], atol=1e-6, rtol=1e-4, msg=name)


def test_the_noisy_step_clips_each_example_sums_over_micro_batches_and_divides_by_the_expected_batch():
    from ptcli.training.privacy import Privacy

    ids, mask, y = batch()
    model = tiny_bert()
    expected = reference_gradients(model, ids, mask, y)
    clip = 0.05
    privacy = Privacy(settings(epsilon=None, noise_multiplier=1e-12, max_grad_norm=clip), 1000, 10, 10, print)
    wrapped = privacy.wrap_model(model, print)
    optimizer = privacy.wrap_optimizer(torch.optim.SGD(model.parameters(), lr=0.0))
    for part in (slice(0, 2), slice(2, 3), slice(3, 4)):  # three micro-batches (a virtual batch) in one step
        logits = wrapped(input_ids=ids[part], attention_mask=mask[part]).logits
        torch.nn.functional.cross_entropy(logits, y[part], reduction="sum").backward()
        if part.stop < 4:  # as the loop does: clipped into the sum, the per-example gradients freed
            privacy.accumulate(optimizer)
            assert all(p.grad_sample is None for p in model.parameters())
    optimizer.step()
    names = [n for n, _ in model.named_parameters()]
    norms = [torch.sqrt(sum(g[n].pow(2).sum() for n in names)) for g in expected]
    assert all(norm > clip for norm in norms), "every example is clipped here"
    for name, p in model.named_parameters():
        want = sum(g[name] * min(1.0, clip / (float(norm) + 1e-6)) for g, norm in zip(expected, norms)) / 10
        torch.testing.assert_close(p.grad, want, atol=1e-7, rtol=1e-4, msg=name)
    optimizer.zero_grad(set_to_none=True)
    optimizer.step()  # no example drawn: the step is noise alone (here almost none), never an error
    assert all(p.grad.abs().max() < 1e-9 for p in model.parameters())


def test_per_example_gradients_of_lora_adapters_match_one_example_at_a_time():
    from peft import LoraConfig, get_peft_model

    from ptcli.training.privacy import Privacy

    ids, mask, y = batch()
    model = get_peft_model(tiny_bert(), LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"],
                                                   modules_to_save=["classifier"], task_type="SEQ_CLS"))
    for p in model.parameters():  # LoRA B starts at zero: give the adapters a gradient to compare on A as well
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.1)
    expected = reference_gradients(model, ids, mask, y)
    wrapped = Privacy(settings(), 1000, 32, 10, print).wrap_model(model, print)
    torch.nn.functional.cross_entropy(wrapped(input_ids=ids, attention_mask=mask).logits, y, reduction="sum").backward()
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n, _ in trained) and any("classifier" in n for n, _ in trained)
    for name, p in trained:
        for i in range(4):
            torch.testing.assert_close(p.grad_sample[i], expected[i][name], atol=1e-6, rtol=1e-4, msg=name)
