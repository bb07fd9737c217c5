"""`ptcli config <verb>` prints the composed config with each key's meaning beside it, and stays valid YAML."""

from __future__ import annotations

import yaml

from ptcli.launch.entry import config_yaml


def test_the_printed_config_carries_meanings_and_parses_to_the_same_values():
    text = config_yaml("finetune", ["dataset.files=[a.csv]", "optim.lr=3e-4"])
    lines = text.splitlines()
    assert "  seq_len: 128  # tokens per training sequence (a packed block, or the longest example)" in lines
    assert any(line.startswith("  max_time: null  # seconds") for line in lines), "a schema comment"
    assert any(line.startswith("  text_column: text  # ") for line in lines), "a data source class's comment"
    data = yaml.safe_load(text)
    assert data["optim"]["lr"] == 3e-4 and data["dataset"]["files"] == ["a.csv"]
    assert data["train"]["max_time"] is None, "the comments are comments"


def test_a_key_without_a_meaning_is_printed_as_it_was():
    text = config_yaml("pretrain", [])
    assert "  layers: 4\n" in text and "  _target_: torch.optim.AdamW\n" in text
