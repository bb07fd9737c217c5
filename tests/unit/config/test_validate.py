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
