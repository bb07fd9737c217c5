"""Shell completion of overrides: groups and their options, keys, and the values a key allows."""

from __future__ import annotations

from ptcli.config.completion import candidates


def test_groups_and_keys_complete_from_a_prefix():
    got = candidates("pretrain", "mod")
    assert got[0] == "model=" and "model.hidden=" in got
    assert candidates("pretrain", "train.max") == ["train.max_steps=", "train.max_tokens=", "train.max_time=",
                                                   "train.max_grad_norm="]
    assert "optim.lr=" in candidates("pretrain", "optim.")


def test_a_groups_options_and_a_keys_allowed_values_complete_after_the_equals_sign():
    assert candidates("pretrain", "model=gpt2-t") == ["model=gpt2-tiny"]
    assert candidates("pretrain", "+objective=ml") == ["+objective=mlm"]
    assert candidates("generate", "do_sample=") == ["do_sample=true", "do_sample=false"]
    assert candidates("pretrain", "device.precision=b") == ["device.precision=bf16"]
    assert candidates("pretrain", "train.max_steps=") == [], "a number: nothing to offer"


def test_an_unknown_verb_completes_nothing():
    assert candidates("nope", "mod") == []
