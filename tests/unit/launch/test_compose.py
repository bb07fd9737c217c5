"""complete_overrides: a setting the selected source or objective declares, but its YAML leaves out, is added."""

from __future__ import annotations

from ptcli.launch.compose import complete_overrides


def test_a_declared_setting_missing_from_the_yaml_is_added():
    args = complete_overrides("pretrain", ["dataset=text", "dataset.document=line", "train.max_steps=3"])
    assert "++dataset.document=line" in args and "train.max_steps=3" in args


def test_a_key_only_the_swept_options_have_is_added_for_hydra_s_first_unswept_composition():
    # a multirun composes once with the default dataset (embedded: no files), then once per point
    args = complete_overrides("pretrain", ["dataset=jsonl,csv", "dataset.files=[data]"])
    assert args == ["dataset=jsonl,csv", "++dataset.files=[data]"]


def test_an_unknown_key_is_left_for_pre_flight_to_refuse():
    assert complete_overrides("pretrain", ["train.max_stepz=3"]) == ["train.max_stepz=3"]
    assert complete_overrides("pretrain", ["dataset.embedded_bytez=3"]) == ["dataset.embedded_bytez=3"]
