"""Adversarial training: FGM's perturbation has norm epsilon along the loss's gradient, PGD stays in its ball, FreeLB
starts at its init magnitude; padding is never perturbed; the perturbed loss is larger than the clean one and larger
than a random perturbation of the same size gives; gradients reach the weights through both terms; validation gets
the plain clean loss; taggers work too; other objectives are refused."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from ptcli.errors import PtcliError  # noqa: E402
from ptcli.objectives.adversarial import adversarial, ascent, cost, example_norms, freelb_init  # noqa: E402
from ptcli.objectives.classification import SequenceClassification  # noqa: E402
from ptcli.objectives.clm import CausalLM  # noqa: E402
from ptcli.objectives.token_classification import TokenClassification  # noqa: E402

VOCAB = 50


def settings(method="fgm", **over):
    return SimpleNamespace(**({"method": method, "epsilon": 1.0, "steps": 3, "step_size": 0.3, "init_mag": 0.6}
                              | over))


def bert(seed=0, token=False):
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=32, num_labels=3)
    cls = transformers.BertForTokenClassification if token else transformers.BertForSequenceClassification
    return cls(config).eval()  # eval: no dropout, so the forwards differ only by the perturbation


def batch(rows=4, length=10, seed=0, token=False):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(rows, length, dtype=torch.long)
    mask[0, 7:] = 0  # a padded row
    labels = torch.randint(0, 3, (rows, length) if token else (rows,), generator=g)
    if token:
        labels[mask == 0] = -100
    return {"input_ids": torch.randint(1, VOCAB, (rows, length), generator=g), "attention_mask": mask,
            "labels": labels}


def test_fgm_is_epsilon_along_the_gradient_per_example_and_leaves_padding_alone():
    g = torch.Generator().manual_seed(0)
    grad = torch.randn(3, 5, 4, generator=g)
    mask = torch.ones(3, 5, 1)
    mask[1, 3:] = 0
    r = ascent(torch.zeros_like(grad), grad, mask, 0.7, 0.0)
    assert torch.allclose(example_norms(r, mask).flatten(), torch.full((3,), 0.7), atol=1e-6)
    assert torch.all(r[1, 3:] == 0)
    cos = torch.nn.functional.cosine_similarity((r * mask).flatten(1), (grad * mask).flatten(1), dim=1)
    assert torch.allclose(cos, torch.ones(3), atol=1e-6)


def test_pgd_steps_stay_inside_the_epsilon_ball_and_freelb_starts_at_its_magnitude():
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(4, 6, 1)
    delta = torch.zeros(4, 6, 8)
    for _ in range(10):
        delta = ascent(delta, torch.randn(4, 6, 8, generator=g), mask, 0.4, 1.0)
        assert torch.all(example_norms(delta, mask) <= 1.0 + 1e-5)
    assert torch.allclose(example_norms(delta, mask).flatten(), torch.ones(4), atol=1e-4)  # 10 x 0.4 reaches it
    torch.manual_seed(0)
    start = freelb_init(torch.zeros(64, 20, 32), torch.ones(64, 20, 1), 0.6)
    assert example_norms(start, torch.ones(64, 20, 1)).mean().item() == pytest.approx(0.6 / 3 ** 0.5, rel=0.02)


def test_cost_counts_the_extra_passes():
    assert cost("fgm", 1) == pytest.approx(7 / 3)
    assert cost("pgd", 3) == pytest.approx(11 / 3)
    assert cost("freelb", 1) == pytest.approx(1.0)  # one step from a random start: a plain step on noisy inputs
    assert cost("freelb", 3) == pytest.approx(11 / 3)


@pytest.mark.parametrize("method", ["fgm", "pgd", "freelb"])
def test_the_perturbed_loss_is_larger_than_the_clean_and_a_random_one(method):
    model, b = bert(), batch()
    plain = SequenceClassification(num_labels=3)
    objective = adversarial(SequenceClassification(num_labels=3), settings(method, epsilon=2.0, step_size=0.8))
    torch.manual_seed(0)
    out = objective.loss(model, b)
    clean = plain.loss(model, b).sum.item()
    adv = out.logs["adv_loss"][0].item()
    assert adv > clean
    # a random perturbation with the same per-example norm hurts less than the adversarial one
    words = model.get_input_embeddings()(b["input_ids"]).detach()
    mask = b["attention_mask"].unsqueeze(-1).float()
    noise = torch.randn(words.shape, generator=torch.Generator().manual_seed(3)) * mask
    norm = out.logs["adv_norm"][0].item() / out.logs["adv_norm"][1].item()
    noise = noise * norm / example_norms(noise, mask)
    rest = {k: v for k, v in b.items() if k != "input_ids"}
    with torch.no_grad():
        random = plain.loss(model, {**rest, "inputs_embeds": words + noise}).sum.item()
    assert adv > random
    if method != "freelb":
        assert out.logs["clean_loss"][0].item() == pytest.approx(clean, rel=1e-5)
        assert out.sum.item() == pytest.approx((clean + adv) / 2, rel=1e-5)
    out.sum.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and model.get_input_embeddings().weight.grad.abs().sum() > 0


def test_validation_gets_the_plain_clean_loss():
    model, b = bert(), batch()
    objective = adversarial(SequenceClassification(num_labels=3), settings("pgd"))
    with torch.no_grad():
        out = objective.loss(model, b)
    assert out.sum.item() == pytest.approx(SequenceClassification(num_labels=3).loss(model, b).sum.item())
    assert "adv_loss" not in out.logs


def test_a_tagger_is_perturbed_on_its_attended_tokens():
    model, b = bert(token=True), batch(token=True)
    objective = adversarial(TokenClassification(), settings("fgm", epsilon=0.5))
    out = objective.loss(model, b)
    assert out.count.item() == (b["labels"] != -100).sum().item()
    assert out.logs["adv_norm"][0].item() / out.logs["adv_norm"][1].item() == pytest.approx(0.5, rel=1e-4)
    assert out.logs["adv_loss"][0].item() > out.logs["clean_loss"][0].item()


def test_a_language_model_objective_is_refused_with_the_fix():
    with pytest.raises(PtcliError, match="classifier or tagger") as info:
        adversarial(CausalLM(), settings())
    assert "objective=classification" in info.value.fix
