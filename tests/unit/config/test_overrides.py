"""Override normalisation and sweep pre-flight are pure functions."""

import pytest

from ptcli.config.overrides import first_sweep_point, is_hydra_override, normalise, search_path_override


def test_plus_group_becomes_plain_for_groups_in_defaults():
    groups = ["model", "objective"]
    assert normalise(["+objective=mlm", "+model=bert-tiny"], groups) == ["objective=mlm", "model=bert-tiny"]


def test_plus_keeps_hydra_meaning_elsewhere():
    groups = ["model", "objective"]
    args = ["+optim.foo=1", "+experiment=x", "++train.seed=3", "~model.extra", "model.layers=2"]
    assert normalise(args, groups) == args


def test_first_sweep_point_takes_first_value_of_each_sweep():
    args = ["optim.lr=1e-3,3e-4", "train.seed=range(3,6)", "model=gpt2-tiny", "+x=choice(a,b)"]
    assert first_sweep_point(args) == ["optim.lr=0.001", "train.seed=3", "model=gpt2-tiny", "+x=a"]


def test_first_sweep_point_rejects_bad_grammar():
    from hydra.errors import OverrideParseException

    with pytest.raises(OverrideParseException):
        first_sweep_point(["key=[1,2"])


def test_hydra_overrides_are_recognised(tmp_path):
    assert is_hydra_override("hydra.run.dir=x") and is_hydra_override("hydra/launcher=basic")
    assert not is_hydra_override("model.hydra=1")
    assert search_path_override([]) == []
    assert search_path_override([tmp_path]) == [f"hydra.searchpath=['file://{tmp_path}']"]


def test_generate_prompts_are_literal_text():
    from ptcli.launch.entry import prepare_args, quote_prompt

    assert quote_prompt("prompt=Hello, I'm a model,") == "prompt='Hello, I\\'m a model,'"
    assert quote_prompt("prompt='already quoted'") == "prompt='already quoted'"
    assert quote_prompt("prompt=[a,b]") == "prompt=[a,b]" and quote_prompt("seed=1") == "seed=1"
    assert quote_prompt("prompt=end\\") == "prompt='end\\\\'"
    assert prepare_args("pretrain", ["prompt=a,b"]) == ["prompt=a,b"]  # only generate has prompts
