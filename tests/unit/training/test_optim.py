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



def test_adamw_takes_its_fused_kernel_on_cpu_unless_the_config_says_otherwise():
    import copy

    import torch

    from ptcli.training.optim import build_optimizer

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    twin = copy.deepcopy(model)
    adamw = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-2, "weight_decay": 0.1}
    fused = build_optimizer(adamw, model, "cpu")
    loop = build_optimizer({**adamw, "fused": False}, twin, "cpu")
    assert fused.defaults["fused"] is True and loop.defaults["fused"] is False
    sgd = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 1e-3}
    assert not build_optimizer(sgd, model, "cpu").defaults.get("fused")  # only Adam and AdamW on CPU
    for step in range(3):  # the same updates as the per-tensor loop, to rounding
        x = torch.randn(8, 4, generator=torch.Generator().manual_seed(step))
        for opt, m in ((fused, model), (loop, twin)):
            opt.zero_grad()
            m(x).square().sum().backward()
            opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
