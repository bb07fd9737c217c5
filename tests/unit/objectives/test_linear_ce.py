"""The chunked linear cross-entropy: the same loss and gradients as the plain computation, without the full logits."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from ptcli.objectives import linear_ce  # noqa: E402
from ptcli.objectives.base import summed_cross_entropy  # noqa: E402


def _inputs(rows=37, hidden=16, vocab=50, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(rows, hidden, generator=g, requires_grad=True)
    w = torch.randn(vocab, hidden, generator=g, requires_grad=True)
    b = torch.randn(vocab, generator=g, requires_grad=True) if bias else None
    y = torch.randint(0, vocab, (rows,), generator=g)
    y[::5] = -100
    return h, w, b, y


@pytest.mark.parametrize("chunk", [1, 7, 64])
@pytest.mark.parametrize("bias", [True, False])
def test_loss_and_gradients_equal_the_plain_computation(chunk, bias):
    h, w, b, y = _inputs(bias=bias)
    plain = summed_cross_entropy(torch.nn.functional.linear(h, w, b), y)
    (plain.sum * 0.5).backward()
    expected = [t.grad.clone() for t in (h, w, b) if t is not None]
    for t in (h, w, b):
        if t is not None:
            t.grad = None
    chunked = linear_ce.linear_cross_entropy(h, w, b, y, chunk=chunk)
    (chunked.sum * 0.5).backward()
    assert int(chunked.count) == int(plain.count) == int((y != -100).sum())
    assert abs(chunked.sum.item() - plain.sum.item()) <= 1e-6 * abs(plain.sum.item())
    for got, want in zip([t.grad for t in (h, w, b) if t is not None], expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_without_gradients_it_only_sums():
    h, w, b, y = _inputs()
    with torch.no_grad():
        out = linear_ce.linear_cross_entropy(h, w, b, y, chunk=8)
    assert not out.sum.requires_grad
    assert out.sum.item() == pytest.approx(summed_cross_entropy(h @ w.T + b, y).sum.item(), rel=1e-6)


def test_a_chunk_holds_at_most_128_mib_of_logits():
    assert linear_ce.chunk_rows(8192, 49152) == 512  # SmolLM2: 512 x 49,152 x 4 bytes = 96 MiB
    assert linear_ce.chunk_rows(100, 49152) == 100
    assert linear_ce.chunk_rows(100_000, 512) == 65536
    assert linear_ce.chunk_rows(100_000, 10**7) == 16


def _gpt2(**extra):
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=97, n_positions=32,
                                     bos_token_id=0, eos_token_id=0, **extra)
    return transformers.GPT2LMHeadModel(config).eval()  # no dropout: two forwards compare


def test_a_causal_lm_trains_with_the_same_loss_and_gradients():
    model = _gpt2()
    ids = torch.randint(0, 97, (3, 12), generator=torch.Generator().manual_seed(1))
    labels = torch.nn.functional.pad(ids[:, 1:], (0, 1), value=-100)
    plain = summed_cross_entropy(model(input_ids=ids).logits, labels)
    plain.sum.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    chunked = linear_ce.causal_lm_loss(model, labels, input_ids=ids)
    chunked.sum.backward()
    assert linear_ce._DECIDED[model] is True
    assert chunked.sum.item() == pytest.approx(plain.sum.item(), rel=1e-6)
    for name, p in model.named_parameters():  # the tied embedding gets both its contributions
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_model_whose_logits_are_not_its_output_layer_falls_back_to_the_plain_loss():
    model = _gpt2()
    head = model.get_output_embeddings()
    head.register_forward_hook(lambda module, args, out: out * 2.0)  # logits no longer = head(hidden)
    ids = torch.randint(0, 97, (2, 10), generator=torch.Generator().manual_seed(2))
    labels = torch.nn.functional.pad(ids[:, 1:], (0, 1), value=-100)
    got = linear_ce.causal_lm_loss(model, labels, input_ids=ids)
    assert linear_ce._DECIDED[model] is False
    assert got.sum.item() == pytest.approx(summed_cross_entropy(model(input_ids=ids).logits, labels).sum.item())


def test_the_output_layer_is_found_through_peft_and_refused_where_it_does_not_apply():
    peft = pytest.importorskip("peft")
    model = _gpt2()
    assert linear_ce.output_layer(model) is model.lm_head
    wrapped = peft.get_peft_model(_gpt2(), peft.LoraConfig(r=2, target_modules=["c_attn"], task_type="CAUSAL_LM"))
    assert linear_ce.output_layer(wrapped) is wrapped.get_base_model().lm_head
    adapted = peft.get_peft_model(_gpt2(), peft.LoraConfig(r=2, target_modules=["lm_head"], task_type="CAUSAL_LM"))
    assert linear_ce.output_layer(adapted) is None  # an adapted head is not a plain linear layer
    capped = _gpt2()
    capped.config.final_logit_softcapping = 30.0
    assert linear_ce.output_layer(capped) is None


def test_lora_with_gradient_checkpointing_gets_the_same_loss_and_adapter_gradients_through_the_chunked_path():
    """The memory benchmark's setting (+peft=lora, train.gradient_checkpointing=true): the chunked path applies under
    PEFT and recomputation, and the adapters' gradients equal the plain loss's."""
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    base = _gpt2(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)  # training mode below: no dropout to differ
    model = peft.get_peft_model(base, peft.LoraConfig(r=2, target_modules=["c_attn"], task_type="CAUSAL_LM",
                                                      init_lora_weights=False))  # B != 0: every gradient flows
    model.get_base_model().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()  # Hugging Face checkpoints only in training mode
    assert base.transformer.gradient_checkpointing
    ids = torch.randint(0, 97, (3, 12), generator=torch.Generator().manual_seed(3))
    labels = torch.nn.functional.pad(ids[:, 1:], (0, 1), value=-100)
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n for n, _ in trained)
    plain = linear_ce.causal_lm_loss(model, labels, chunked=False, input_ids=ids)
    plain.sum.backward()
    expected = {n: p.grad.clone() for n, p in trained}
    model.zero_grad()
    chunked = linear_ce.causal_lm_loss(model, labels, input_ids=ids)
    chunked.sum.backward()
    assert linear_ce._DECIDED[model] is True  # the chunked path ran, not the fallback
    assert chunked.sum.item() == pytest.approx(plain.sum.item(), rel=1e-6)
    for name, p in trained:
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_perplexity_windows_score_the_same_tokens_through_the_chunked_loss():
    from ptcli.objectives.perplexity import scored_nll

    model = _gpt2()
    ids = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        total, count = scored_nll(model, {"input_ids": ids, "score_from": 5})
        logits = model(input_ids=ids).logits[:, 4:15]
        want = torch.nn.functional.cross_entropy(logits.reshape(-1, 97), ids[:, 5:].reshape(-1), reduction="sum")
    assert count == 2 * 11
    assert float(total) == pytest.approx(float(want), rel=1e-6)


@pytest.mark.parametrize("chunk", [1, 7, 64])
@pytest.mark.parametrize(("bias", "cut"), [(True, None), (False, 41)])
def test_distillation_equals_the_plain_cross_entropy_and_kl_with_their_gradients(chunk, bias, cut):
    """task_weight CE + soft_weight KL(teacher_T || student_T), the soft term over the first `cut` ids."""
    import torch.nn.functional as F

    h, w, b, y = _inputs(bias=bias)
    g = torch.Generator().manual_seed(9)
    th, tw = torch.randn(37, 24, generator=g), torch.randn(50, 24, generator=g)
    tb = torch.randn(50, generator=g) if bias else None
    teacher_head = torch.nn.Linear(24, 50, bias=bias)
    student_head = torch.nn.Linear(16, 50, bias=bias)
    with torch.no_grad():
        teacher_head.weight.copy_(tw)
        student_head.weight.copy_(w)
        if bias:
            teacher_head.bias.copy_(tb)
            student_head.bias.copy_(b)
    T, alpha, keep = 2.0, 0.3, cut or 50
    logits, t_logits = F.linear(h, w, b), F.linear(th, tw, tb)
    valid = y != -100
    ce = summed_cross_entropy(logits, y).sum
    soft = F.kl_div(F.log_softmax(logits[valid][:, :keep] / T, -1), F.log_softmax(t_logits[valid][:, :keep] / T, -1),
                    log_target=True, reduction="sum")
    plain = (1 - alpha) * ce + alpha * T ** 2 * soft
    plain.backward()
    expected = [h.grad.clone(), w.grad.clone()] + ([b.grad.clone()] if bias else [])
    hh = h.detach().clone().requires_grad_(True)
    total, task, kd, count = linear_ce.linear_distillation(hh, student_head, y, th, teacher_head, T, 1 - alpha,
                                                           alpha * T ** 2, cut=cut, chunk=chunk)
    (total * 1.0).backward()
    assert int(count) == int(valid.sum())
    assert abs(total.item() - plain.item()) <= 1e-6 * abs(plain.item())
    assert abs(task.item() - ce.item()) <= 1e-6 * abs(ce.item()) and abs(kd.item() - soft.item()) <= 1e-5 * soft.item()
    assert not task.requires_grad and not kd.requires_grad
    got = [hh.grad, student_head.weight.grad] + ([student_head.bias.grad] if bias else [])
    for mine, want in zip(got, expected):
        torch.testing.assert_close(mine, want, rtol=1e-5, atol=1e-6)
    assert teacher_head.weight.grad is None
