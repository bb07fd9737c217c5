"""CTranslate2's model.bin read without CTranslate2, and a Whisper model.bin mapped onto transformers: a tiny fake
Whisper written in CTranslate2's layout from a reference model's weights gives back that model, output for output."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from ptcli.errors import PtcliError
from ptcli.models import ctranslate2

SIZES = dict(vocab_size=60, d_model=8, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
             decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16, num_mel_bins=4,
             max_source_positions=6, max_target_positions=10)
IDS = dict(pad_token_id=50, bos_token_id=51, eos_token_id=50, decoder_start_token_id=51)


def reference_model():
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.WhisperForConditionalGeneration(transformers.WhisperConfig(**SIZES, **IDS)).eval()
    with torch.no_grad():  # no zero biases or unit norms: every tensor must land in its own place
        for name, p in model.named_parameters():
            if "embed_positions" not in name:
                p.copy_(torch.randn_like(p) * 0.3 + (1.0 if name.endswith("layer_norm.weight") else 0.0))
    return model


def ct2_variables(model, k_bias: float = 0.0) -> dict[str, np.ndarray]:
    """The model's weights as CTranslate2's Whisper converter lays them out (float16 and scalars included)."""
    s = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    v: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(1)

    def norm(src, dst):
        v[f"{dst}/gamma"], v[f"{dst}/beta"] = s[f"{src}.weight"], s[f"{src}.bias"]

    def lin(src, dst):
        v[f"{dst}/weight"], v[f"{dst}/bias"] = s[f"{src}.weight"], s[f"{src}.bias"]

    def k_bias_of(n):
        return (rng.normal(size=n) * k_bias).astype(np.float32)

    def fused(src, parts, dst):
        v[f"{dst}/weight"] = np.concatenate([s[f"{src}.{p}_proj.weight"] for p in parts])
        v[f"{dst}/bias"] = np.concatenate([k_bias_of(8) if p == "k" else s[f"{src}.{p}_proj.bias"] for p in parts])

    for c in ("conv1", "conv2"):
        lin(f"model.encoder.{c}", f"encoder/{c}")
    v["encoder/position_encodings/encodings"] = s["model.encoder.embed_positions.weight"]
    for side, n in (("encoder", 1), ("decoder", 1)):
        for i in range(n):
            src, dst = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            norm(f"{src}.self_attn_layer_norm", f"{dst}/self_attention/layer_norm")
            fused(f"{src}.self_attn", "qkv", f"{dst}/self_attention/linear_0")
            lin(f"{src}.self_attn.out_proj", f"{dst}/self_attention/linear_1")
            norm(f"{src}.final_layer_norm", f"{dst}/ffn/layer_norm")
            lin(f"{src}.fc1", f"{dst}/ffn/linear_0")
            lin(f"{src}.fc2", f"{dst}/ffn/linear_1")
            if side == "decoder":
                norm(f"{src}.encoder_attn_layer_norm", f"{dst}/attention/layer_norm")
                lin(f"{src}.encoder_attn.q_proj", f"{dst}/attention/linear_0")
                fused(f"{src}.encoder_attn", "kv", f"{dst}/attention/linear_1")
                lin(f"{src}.encoder_attn.out_proj", f"{dst}/attention/linear_2")
        norm(f"model.{side}.layer_norm", f"{side}/layer_norm")
    v["decoder/embeddings/weight"] = s["model.decoder.embed_tokens.weight"]
    v["decoder/position_encodings/encodings"] = s["model.decoder.embed_positions.weight"]
    v |= {"encoder/num_heads": np.int16(2), "decoder/num_heads": np.int16(2), "decoder/activation": np.int8(3),
          "decoder/pre_norm": np.int8(1), "decoder/scale_embeddings": np.int8(0), "decoder/alibi": np.int8(0),
          "decoder/start_from_zero_embedding": np.int8(0), "decoder/alignment_heads": np.int16(1),
          "decoder/alignment_layer": np.int16(-1)}
    return v


ALIASES = {"decoder/projection/weight": "decoder/embeddings/weight"}


def logits(model, seed: int = 3):
    import torch

    g = torch.Generator().manual_seed(seed)
    features = torch.randn(2, SIZES["num_mel_bins"], 2 * SIZES["max_source_positions"], generator=g)
    tokens = torch.randint(0, SIZES["vocab_size"], (2, 5), generator=g)
    with torch.no_grad():
        return model(input_features=features, decoder_input_ids=tokens).logits


def test_model_bin_round_trip_keeps_names_shapes_dtypes_and_aliases(tmp_path):
    variables = {"a/weight": np.arange(12, dtype=np.float32).reshape(3, 4), "a/half": np.ones((2, 1), np.float16),
                 "b/int8": np.int8(-3), "b/int16": np.int16(6), "c/int32": np.arange(3, dtype=np.int32)}
    path = tmp_path / "model.bin"
    ctranslate2.write_model_bin(path, "WhisperSpec", 3, variables, {"alias/x": "a/weight"})
    assert ctranslate2.read_header(path) == (6, "WhisperSpec", 3)
    model = ctranslate2.read_model_bin(path)
    assert (model.spec, model.revision, model.version) == ("WhisperSpec", 3, 6)
    assert set(model.variables) == set(variables) and model.aliases == {"alias/x": "a/weight"}
    for name, value in variables.items():
        got = model.variables[name]
        assert got.dtype == np.asarray(value).dtype and got.shape == np.shape(value), name
        np.testing.assert_array_equal(got, value)
    np.testing.assert_array_equal(model.get("alias/x"), variables["a/weight"])


def test_bfloat16_variables_are_widened_to_float32(tmp_path):
    path = tmp_path / "model.bin"
    ctranslate2.write_model_bin(path, "WhisperSpec", 3, {"x": np.zeros(2, np.float32)})
    data = bytearray(path.read_bytes())
    values = np.array([1.5, -2.25], np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    head = data.index(b"x\0") + 2  # name, then rank 1, dim 2, dtype, n_bytes
    data[head:] = struct.pack("<BIBI", 1, 2, 5, 4) + bf16 + struct.pack("<I", 0)
    path.write_bytes(bytes(data))
    np.testing.assert_array_equal(ctranslate2.read_model_bin(path).variables["x"], values)


@pytest.mark.parametrize("k_bias", [0.0, 0.5])
def test_a_whisper_model_bin_maps_onto_transformers_output_for_output(tmp_path, k_bias):
    import torch

    reference = reference_model()
    path = tmp_path / "model.bin"
    variables = ct2_variables(reference, k_bias)
    half = {k: (v.astype(np.float16) if v.dtype == np.float32 else v) for k, v in variables.items()}
    ctranslate2.write_model_bin(path, "WhisperSpec", 3, variables, ALIASES)
    sizes, state, notes = ctranslate2.whisper_state(ctranslate2.read_model_bin(path))
    assert sizes == {**SIZES, "tie_word_embeddings": True}
    assert len(notes) == (3 if k_bias else 0)  # encoder and decoder self-attention, cross-attention
    model = ctranslate2.whisper_model(sizes, state, **IDS)
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    ours, theirs = model.state_dict(), reference.state_dict()
    for name, value in theirs.items():
        if not name.endswith("k_proj.bias"):
            assert torch.equal(ours[name], value), name
    torch.testing.assert_close(logits(model), logits(reference), rtol=1e-5, atol=1e-5)

    ctranslate2.write_model_bin(path, "WhisperSpec", 3, half, ALIASES)  # as shipped: float16 weights
    fp16 = ctranslate2.whisper_model(*ctranslate2.whisper_state(ctranslate2.read_model_bin(path))[:2], **IDS)
    assert fp16.dtype == torch.float32
    torch.testing.assert_close(logits(fp16), logits(reference), rtol=0.05, atol=0.05)
    kept = ctranslate2.whisper_model(*ctranslate2.whisper_state(ctranslate2.read_model_bin(path))[:2],
                                     dtype="float16", **IDS)
    assert kept.dtype == torch.float16


def test_an_untied_output_projection_is_kept(tmp_path):
    reference = reference_model()
    variables = ct2_variables(reference)
    variables["decoder/projection/weight"] = variables["decoder/embeddings/weight"] * 2
    path = tmp_path / "model.bin"
    ctranslate2.write_model_bin(path, "WhisperSpec", 3, variables)
    sizes, state, _ = ctranslate2.whisper_state(ctranslate2.read_model_bin(path))
    assert sizes["tie_word_embeddings"] is False and "proj_out.weight" in state
    model = ctranslate2.whisper_model(sizes, state, **IDS)
    np.testing.assert_array_equal(model.proj_out.weight.detach().numpy(), variables["decoder/projection/weight"])


def test_truncated_garbage_and_padded_files_are_clear_errors(tmp_path):
    path = tmp_path / "model.bin"
    ctranslate2.write_model_bin(path, "WhisperSpec", 3, {"w": np.ones((4, 4), np.float32)})
    whole = path.read_bytes()
    path.write_bytes(whole[:-20])
    with pytest.raises(PtcliError, match="cut short"):
        ctranslate2.read_model_bin(path)
    path.write_bytes(whole + b"\0\0")
    with pytest.raises(PtcliError, match="bytes after its last alias"):
        ctranslate2.read_model_bin(path)
    path.write_bytes(b"PK\x03\x04 not a model at all" * 4)
    with pytest.raises(PtcliError, match="not a CTranslate2 model.bin"):
        ctranslate2.read_model_bin(path)
    path.write_bytes(b"\x06\0")
    with pytest.raises(PtcliError, match="cut short"):
        ctranslate2.read_header(path)


def test_a_model_that_is_not_whisper_or_has_unknown_variables_is_refused(tmp_path):
    path = tmp_path / "model.bin"
    ctranslate2.write_model_bin(path, "TransformerSpec", 1, {"w": np.ones(2, np.float32)})
    with pytest.raises(PtcliError, match="Whisper models only"):
        ctranslate2.whisper_state(ctranslate2.read_model_bin(path))
    variables = ct2_variables(reference_model()) | {"decoder/something_new": np.ones(2, np.float32)}
    ctranslate2.write_model_bin(path, "WhisperSpec", 3, variables, ALIASES)
    with pytest.raises(PtcliError, match="does not know how to map: decoder/something_new"):
        ctranslate2.whisper_state(ctranslate2.read_model_bin(path))
    variables = ct2_variables(reference_model()) | {"decoder/activation": np.int8(1)}
    ctranslate2.write_model_bin(path, "WhisperSpec", 3, variables, ALIASES)
    with pytest.raises(PtcliError, match="decoder/activation is 1"):
        ctranslate2.whisper_state(ctranslate2.read_model_bin(path))


def test_convert_refuses_a_missing_source_a_plain_folder_another_model_and_a_full_target(tmp_path, monkeypatch):
    from ptcli.verbs.convert import convert

    monkeypatch.chdir(tmp_path)
    with pytest.raises(PtcliError, match="does not exist"):
        convert(str(tmp_path / "nowhere"), "out")
    (tmp_path / "plain").mkdir()
    with pytest.raises(PtcliError, match="not a CTranslate2 model folder: it has no model.bin"):
        convert("plain", "out")
    (tmp_path / "t5").mkdir()
    ctranslate2.write_model_bin(tmp_path / "t5" / "model.bin", "TransformerSpec", 1, {"w": np.ones(2, np.float32)})
    with pytest.raises(PtcliError, match="CTranslate2 TransformerSpec, and ptcli converts Whisper models only"):
        convert("t5", "out")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(PtcliError, match="not empty") as refused:
        convert("t5", "full")
    assert "--force" in refused.value.message()
    with pytest.raises(PtcliError, match="holds the source model"):
        convert("t5", "t5", force=True)
    with pytest.raises(PtcliError, match="--dtype"):
        convert("t5", "out", dtype="int4")
    with pytest.raises(PtcliError, match="pkg-that-is-not-there, which is not installed"):
        convert("pkg:pkg_that_is_not_there/model", "out")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
