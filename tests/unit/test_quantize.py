"""Quantized model folders (``ptcli/models/quantized.py``): int8 Linear layers saved as plain tensors and rebuilt
through ``load_pretrained`` with bit-identical outputs, smaller weight files, tied output layers kept tied, and
the failures that must be one clear error (an unknown recipe, torchao missing)."""

from __future__ import annotations

import io
import json
import sys

import pytest

from ptcli.errors import PtcliError

METHODS = ["dynamic-int8", "int8-weight", "int8-dynamic"]


def torchao_or_skip(method: str) -> None:
    from ptcli.models.quantized import torchao_available

    if method != "dynamic-int8" and not torchao_available():
        pytest.skip("torchao is not installed")


def tiny_bert():
    """A BERT classifier whose Linear layers hold most of its weights (small vocabulary and positions)."""
    import torch
    import transformers

    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
        max_position_embeddings=32, num_labels=3)).eval()


def tiny_gpt2():
    import torch
    import transformers

    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=64, n_head=2, n_positions=32, vocab_size=100, bos_token_id=0, eos_token_id=0,
        pad_token_id=0)).eval()


def quantize_and_save(model, method: str, folder):
    from ptcli.models import quantized

    details = quantized.quantize(model, method)
    quantized.save(model, folder, method, details)
    return details


def reload(auto_name: str, folder, log=None):
    import transformers

    from ptcli.models.build import load_pretrained

    return load_pretrained(getattr(transformers, auto_name), str(folder), log=log)


@pytest.mark.parametrize("method", METHODS)
def test_a_quantized_classifier_reloads_with_identical_outputs_and_a_smaller_file(tmp_path, method):
    import torch
    from safetensors.torch import load_file

    from ptcli.compression.measure import folder_bytes, parameter_counts

    torchao_or_skip(method)
    model = tiny_bert()
    model.save_pretrained(tmp_path / "fp32")
    ids = torch.randint(0, 100, (3, 16), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        fp32 = model(input_ids=ids).logits
    details = quantize_and_save(model, method, tmp_path / "int8")
    assert len(details["modules"]) == 2 * 6 + 2 and details["kept"] == []  # 6 per layer, pooler, classifier
    with torch.inference_mode():
        before = model(input_ids=ids).logits
    logs = []
    again = reload("AutoModelForSequenceClassification", tmp_path / "int8", logs.append)
    with torch.inference_mode():
        after = again(input_ids=ids).logits
    assert torch.equal(before, after), "the reloaded model computes exactly what the saved one did"
    assert not torch.equal(before, fp32) and torch.allclose(before, fp32, atol=0.05), "int8: close to fp32, not equal"
    assert folder_bytes(tmp_path / "int8") < 0.45 * folder_bytes(tmp_path / "fp32")
    recipe = json.loads((tmp_path / "int8" / "ptcli_recipe.json").read_text())
    assert recipe["kind"] == "quantized" and recipe["method"] == method and recipe["modules"] == details["modules"]
    stored = load_file(str(tmp_path / "int8" / "model.safetensors"))
    query = "bert.encoder.layer.0.attention.self.query.weight"
    assert stored[f"{query}.int8" if method == "dynamic-int8" else f"{query}.qdata"].dtype == torch.int8
    assert query not in stored and "bert.embeddings.word_embeddings.weight" in stored
    assert any(method in line for line in logs)
    assert parameter_counts(again)["parameters"] == parameter_counts(model)["parameters"]


@pytest.mark.parametrize("method", ["dynamic-int8", "int8-weight"])
def test_a_quantized_gpt2_keeps_its_output_layer_tied_and_generates_the_same_tokens(tmp_path, method):
    import torch

    torchao_or_skip(method)
    model = tiny_gpt2()
    details = quantize_and_save(model, method, tmp_path / "int8")
    assert details["kept"] == ["lm_head"], "tied to the token embeddings: left in fp32, still tied"
    assert len(details["linearized"]) == len(details["modules"]) == 8, "GPT-2's Conv1D layers became Linear"
    again = reload("AutoModelForCausalLM", tmp_path / "int8")
    assert again.lm_head.weight.data_ptr() == again.transformer.wte.weight.data_ptr()
    prompt = torch.tensor([[5, 6, 7]])
    kwargs = {"max_new_tokens": 4, "do_sample": False, "attention_mask": torch.ones_like(prompt)}
    assert torch.equal(model.generate(prompt, **kwargs), again.generate(prompt, **kwargs))


def test_an_untied_llama_head_is_quantized_too(tmp_path):
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
        vocab_size=100, max_position_embeddings=32, tie_word_embeddings=False)).eval()
    details = quantize_and_save(model, "dynamic-int8", tmp_path / "int8")
    assert "lm_head" in details["modules"] and details["kept"] == []
    ids = torch.tensor([[1, 2, 3, 4]])
    again = reload("AutoModelForCausalLM", tmp_path / "int8")
    with torch.inference_mode():
        assert torch.equal(model(input_ids=ids).logits, again(input_ids=ids).logits)


def test_a_folder_with_an_unknown_recipe_kind_or_method_is_one_clear_error(tmp_path):
    from ptcli.models.restore import write_recipe

    model = tiny_bert()
    model.save_pretrained(tmp_path / "odd")
    write_recipe(tmp_path / "odd", {"kind": "distilled"})
    with pytest.raises(PtcliError, match="unknown kind 'distilled'"):
        reload("AutoModelForSequenceClassification", tmp_path / "odd")
    write_recipe(tmp_path / "odd", {"kind": "quantized", "method": "int3", "modules": []})
    with pytest.raises(PtcliError, match="unknown quantization method 'int3'"):
        reload("AutoModelForSequenceClassification", tmp_path / "odd")


def test_weights_that_do_not_fit_the_recipe_are_refused(tmp_path):
    from ptcli.models.restore import RECIPE_FILE

    quantize_and_save(tiny_bert(), "dynamic-int8", tmp_path / "int8")
    recipe = json.loads((tmp_path / "int8" / RECIPE_FILE).read_text())
    recipe["modules"] = recipe["modules"][:-1]  # the classifier's int8 tensors are then unexpected
    (tmp_path / "int8" / RECIPE_FILE).write_text(json.dumps(recipe))
    with pytest.raises(PtcliError, match="do not fit"):
        reload("AutoModelForSequenceClassification", tmp_path / "int8")


def test_a_quantized_model_is_loaded_on_the_cpu_in_fp32_whatever_the_device_says(tmp_path):
    from omegaconf import OmegaConf

    from ptcli.inference.loading import load_for_inference
    from ptcli.processing.tokenizers import train_tokenizer

    tokenizer = train_tokenizer(["the plot was good", "the cast was bad"] * 20, "wordpiece", 100)
    model = tiny_bert()
    quantize_and_save(model, "dynamic-int8", tmp_path / "int8")
    tokenizer.save_pretrained(tmp_path / "int8")
    logs = []
    loaded = load_for_inference(OmegaConf.create({"path": str(tmp_path / "int8")}),
                                OmegaConf.create({"accelerator": "cpu", "precision": "bf16", "threads": 1}),
                                "classify", logs.append, auto_class="AutoModelForSequenceClassification")
    assert loaded.placement.device.type == "cpu" and loaded.placement.precision == "fp32"
    assert any("CPU only" in line for line in logs), logs


def test_quantize_preflight_asks_for_torchao_when_it_is_missing(tmp_path, monkeypatch, models):
    """method=int8-weight without torchao: exit 2 before any run directory, the fix named."""
    from ptcli.launch.entry import run_verb

    monkeypatch.setitem(sys.modules, "torchao", None)  # importlib.util.find_spec("torchao") is then None
    monkeypatch.chdir(tmp_path)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    code = run_verb("quantize", [f"model.path={models['bert']}", "method=int8-weight", "evaluate=false"])
    assert code == 2 and "pip install torchao" in err.getvalue(), err.getvalue()
    assert not (tmp_path / "outputs").exists()
