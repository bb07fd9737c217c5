"""Learning-rate schedules and weight-decay groups."""

import math

import pytest

from ptcli.training.optim import lr_factor, param_groups


@pytest.mark.parametrize("name", ["cosine", "linear", "constant"])
def test_warmup_is_linear_then_schedule(name):
    factors = [lr_factor(s, name, warmup=10, total=110, min_ratio=0.1) for s in range(110)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(b > a for a, b in zip(factors[:9], factors[1:10]))
    if name == "constant":
        assert set(factors[10:]) == {1.0}
    else:
        assert factors[10] == pytest.approx(1.0)
        assert lr_factor(110, name, 10, 110, 0.1) == pytest.approx(0.1)
        assert all(b <= a for a, b in zip(factors[10:], factors[11:]))


def test_cosine_midpoint():
    assert lr_factor(60, "cosine", 10, 110, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_no_decay_for_biases_norms_and_embeddings():
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    decay, no_decay = param_groups(model, 0.1)
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 4])]
    assert len(no_decay["params"]) == 4 and no_decay["weight_decay"] == 0.0
