"""device.fused_kernels: the written-out tanh GELUs swapped for torch's fused kernel, same function, same folder."""

import pytest
import torch
import transformers
from transformers import activations

from ptcli.models.kernels import fuse_activations


def tiny_gpt2(act: str = "gelu_new") -> transformers.GPT2LMHeadModel:
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=16, vocab_size=64,
                                     activation_function=act, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel(config)


@pytest.mark.parametrize("act", ["gelu_new", "gelu_fast", "gelu_accurate", "gelu_python_tanh"])
def test_written_out_gelus_become_the_fused_kernel_and_compute_the_same(act):
    model, ids = tiny_gpt2(act), torch.randint(64, (2, 16))
    before = model(input_ids=ids, labels=ids)
    before.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    assert fuse_activations(model) == 2  # one per block
    assert all(type(b.mlp.act) is activations.GELUTanh and b.mlp.act.act.func is torch.nn.functional.gelu
               for b in model.transformer.h)
    after = model(input_ids=ids, labels=ids)
    after.loss.backward()
    torch.testing.assert_close(after.logits, before.logits, rtol=1e-6, atol=1e-6)
    assert abs(after.loss.item() - before.loss.item()) <= 1e-6 * before.loss.item()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, grads[name], rtol=1e-5, atol=1e-6)


def test_other_activations_and_already_fused_ones_are_left_alone():
    for act in ("gelu", "relu", "quick_gelu", "gelu_pytorch_tanh"):
        model = tiny_gpt2(act)
        kinds = [type(b.mlp.act) for b in model.transformer.h]
        assert fuse_activations(model) == 0
        assert [type(b.mlp.act) for b in model.transformer.h] == kinds


def test_the_saved_folder_keeps_the_models_own_activation(tmp_path):
    model = tiny_gpt2()
    fuse_activations(model)
    model.save_pretrained(tmp_path)
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    assert again.config.activation_function == "gelu_new"
    assert type(again.transformer.h[0].mlp.act) is activations.NewGELUActivation
    ids = torch.randint(64, (1, 16))
    torch.testing.assert_close(again(input_ids=ids).logits, model(input_ids=ids).logits, rtol=1e-6, atol=1e-6)
