"""Schema checks: types, unknown keys with suggestions, cross-field rules, size estimates."""

from typing import Literal, Optional

import pytest

from ptcli.config.estimate import count_parameters
from ptcli.config.schema import SchedulerConfig
from ptcli.config.validate import check_node, describe, fields_of, fits


@pytest.mark.parametrize(("value", "tp", "ok"), [
    (1, int, True), (True, int, False), (1.5, int, False), (1, float, True), ("1", float, False),
    (None, Optional[int], True), ("a", Optional[int], False), ("cpu", Literal["cpu", "cuda"], True),
    ("tpu", Literal["cpu", "cuda"], False), ([1, 2], list[float], True), ([1, "x"], list[float], False),
    (False, bool, True), (0, bool, False),
])
def test_fits(value, tp, ok):
    assert fits(value, tp) is ok


def test_describe_reads_like_english():
    assert describe(Optional[int]) == "an integer or null"
    assert describe(Literal["a", "b"]) == "one of: a, b"


def test_check_node_collects_every_problem_with_suggestions():
    problems = []
    check_node({"warmup_ratio": "fast", "warmup_stesp": 1, "name": "cosine", "min_lr_ratio": "???"},
               fields_of(SchedulerConfig), "scheduler.", problems, {})
    assert "'scheduler.warmup_ratio' must be a number, got 'fast'" in problems
    assert "unknown key 'scheduler.warmup_stesp' (did you mean 'scheduler.warmup_steps'?)" in problems
    assert "missing required value 'scheduler.min_lr_ratio' (set it: scheduler.min_lr_ratio=...)" in problems
    assert len(problems) == 3


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bert"])
def test_parameter_estimate_matches_transformers(arch):
    transformers = pytest.importorskip("transformers")
    import yaml

    from ptcli.config.paths import packaged_config_dir

    shipped = yaml.safe_load((packaged_config_dir() / "model" / f"{arch}-tiny.yaml").read_text())
    sizes = {"kv_heads": None, "intermediate": None, **shipped}
    kwargs = {
        "gpt2": dict(n_layer=sizes["layers"], n_head=sizes["heads"], n_embd=sizes["hidden"],
                     n_positions=sizes["max_positions"], vocab_size=sizes["vocab_size"]),
        "llama": dict(num_hidden_layers=sizes["layers"], num_attention_heads=sizes["heads"],
                      num_key_value_heads=sizes["kv_heads"], hidden_size=sizes["hidden"],
                      intermediate_size=sizes["intermediate"], vocab_size=sizes["vocab_size"],
                      tie_word_embeddings=True),
        "bert": dict(num_hidden_layers=sizes["layers"], num_attention_heads=sizes["heads"],
                     hidden_size=sizes["hidden"], intermediate_size=4 * sizes["hidden"],
                     max_position_embeddings=sizes["max_positions"], vocab_size=sizes["vocab_size"]),
    }[arch]
    config = transformers.AutoConfig.for_model(arch, **kwargs)
    model = transformers.AutoModel.from_config(config)
    actual = sum(p.numel() for p in model.parameters())
    assert abs(count_parameters(sizes) - actual) / actual < 0.03


def _compress_cfg(**over):
    import dataclasses

    from ptcli.config.schema import PruneVerbConfig

    cfg = dataclasses.asdict(PruneVerbConfig())
    cfg.update(over)
    return cfg


def test_compression_without_a_run_must_be_told_the_task_or_not_to_measure_it():
    from ptcli.config.compression_rules import compress_problems

    assert any("does not know the task" in p for p in compress_problems("prune", _compress_cfg(), False))
    assert compress_problems("prune", _compress_cfg(), True) == []  # a run brings its objective and dataset
    assert compress_problems("prune", _compress_cfg(evaluate=False, importance="norm"), False) == []
    assert compress_problems("prune", _compress_cfg(evaluate=False, method="magnitude"), False) == []
    assert any("amount" in p for p in compress_problems("prune", _compress_cfg(amount=1.0), True))
    bad = _compress_cfg(latency={"batch_sizes": [0], "repeats": 0, "seq_len": None, "warmup": 1, "threads": None})
    assert len(compress_problems("quantize", bad, True)) == 2


def test_distillation_settings_are_checked_before_anything_runs():
    import dataclasses

    from ptcli.config.compression_rules import distill_problems
    from ptcli.config.schema import DistillConfig

    def problems(**over):
        return distill_problems({"distill": dataclasses.asdict(DistillConfig()) | over, "model": {}}, False)

    assert problems() == []
    assert len(problems(teacher="t", temperature=0, alpha=2, hidden_weight=-1)) == 3
    assert "needs distill.teacher" in problems(init_from_teacher=True)[0]


def test_the_dry_run_counts_a_distillation_teacher(tmp_path):
    import json

    from ptcli.config.estimate import plan, teacher_parameters

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2,
                                                      "num_attention_heads": 2, "vocab_size": 100,
                                                      "intermediate_size": 128, "max_position_embeddings": 32}))
    student = {"arch": "bert", "hidden": 32, "layers": 1, "heads": 2, "vocab_size": 100, "max_positions": 32}
    cfg = {"model": student, "train": {"batch_size": 4, "grad_accum": 1, "max_steps": 10}, "dataset": {"seq_len": 16},
           "distill": {"teacher": str(tmp_path)}}
    teacher = teacher_parameters(cfg)
    assert teacher == count_parameters({"arch": "bert", "hidden": 64, "layers": 2, "heads": 2, "vocab_size": 100,
                                        "intermediate": 128, "max_positions": 32, "tie_embeddings": True})
    lines = plan("finetune", cfg)
    assert any(line.startswith("distill: the teacher has about") for line in lines)
    work = next(line for line in lines if line.startswith("work:"))
    assert f"{(6 * count_parameters(student) + 2 * teacher) * 10 * 4 * 16:.2e}" in work
    assert teacher_parameters({"distill": {"teacher": None}}) == 0


def test_a_warmup_as_long_as_the_run_is_warned_about():
    from ptcli.config.estimate import warnings_for

    cfg = {"model": {"arch": "gpt2", "hidden": 32, "layers": 1, "heads": 2, "vocab_size": 100, "max_positions": 32},
           "train": {"batch_size": 4, "grad_accum": 1, "max_steps": 10}, "dataset": {"seq_len": 16},
           "scheduler": {"warmup_steps": 50, "warmup_ratio": 0.0}}
    assert any("warmup (50 steps) is as long as the run" in w for w in warnings_for("pretrain", cfg))
    cfg["train"]["max_steps"] = 500
    assert warnings_for("pretrain", cfg) == []
    cfg["scheduler"] = {"warmup_steps": 0, "warmup_ratio": 1.0}
    assert warnings_for("pretrain", cfg)


@pytest.mark.parametrize("arch, targets", [("bert", None), ("gpt2", None), ("llama", None),
                                           ("llama", ["q_proj", "k_proj", "o_proj", "up_proj", "down_proj"])])
def test_the_lora_estimate_matches_peft_and_the_dry_run_counts_only_its_state(arch, targets):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    from ptcli.config.estimate import lora_parameters, plan

    sizes = {"arch": arch, "hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2 if arch == "llama" else None,
             "intermediate": 128, "vocab_size": 100, "max_positions": 32}
    kwargs = {"gpt2": dict(n_layer=2, n_head=4, n_embd=64, n_inner=128, n_positions=32, vocab_size=100),
              "llama": dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=64,
                            intermediate_size=128, vocab_size=100),
              "bert": dict(num_hidden_layers=2, num_attention_heads=4, hidden_size=64, intermediate_size=128,
                           max_position_embeddings=32, vocab_size=100)}[arch]
    model = transformers.AutoModel.from_config(transformers.AutoConfig.for_model(arch, **kwargs))
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=targets))
    actual = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    assert lora_parameters(sizes, {"r": 4, "target_modules": targets}) == actual

    big = {**sizes, "hidden": 1024, "layers": 12, "intermediate": 4096, "vocab_size": 30000}  # GiB to 2 decimals
    cfg = {"model": big, "train": {"batch_size": 4, "grad_accum": 1, "max_steps": 10}, "dataset": {"seq_len": 16}}
    full = next(line for line in plan("finetune", cfg) if line.startswith("memory"))
    lines = plan("finetune", {**cfg, "peft": {"r": 4, "target_modules": targets}})
    lora = next(line for line in lines if line.startswith("memory"))
    assert any(line.startswith("LoRA r=4: about") for line in lines)
    gib = [float(line.split("about ")[1].split(" GiB")[0]) for line in (full, lora)]
    assert gib[1] < gib[0] / 3, "frozen weights carry no gradients or AdamW moments"


def test_the_dry_run_counts_one_chunk_of_logits_for_the_chunked_causal_lm_loss():
    from ptcli.config import estimate

    sizes = {"arch": "gpt2", "hidden": 256, "layers": 2, "heads": 4, "intermediate": 1024, "vocab_size": 50_000,
             "max_positions": 1024}
    cfg = {"model": sizes, "train": {"batch_size": 4, "grad_accum": 1, "max_steps": 10}, "dataset": {"seq_len": 1024}}

    def activations(**extra):
        line = next(x for x in estimate.plan("pretrain", {**cfg, **extra}) if x.startswith("memory"))
        return float(line.split(" GiB for weights, gradients and optimizer state + ")[1].split(" GiB")[0])

    plain = activations(objective={"chunked_loss": False})
    chunked = activations(objective={"chunked_loss": True})
    full_logits = 3 * 4 * 1024 * 50_000 * 4 / 2**30
    assert plain - chunked == pytest.approx(full_logits - 2 * estimate.CHUNK_LOGIT_BYTES / 2**30, abs=0.011)
    assert activations(objective={"chunked_loss": True}, device={"strategy": "fsdp"}) == plain  # FSDP: full logits
    assert activations() == plain  # objectives without the chunked loss (MLM, classification)
    from ptcli.models.memory import CHUNK_LOGIT_BYTES

    assert estimate.CHUNK_LOGIT_BYTES == CHUNK_LOGIT_BYTES
