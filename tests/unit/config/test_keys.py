"""The keys a verb's --help lists (with the defaults the verb runs with and their meanings), the hint for a
``--flag value`` habit, and copying a shipped config to edit."""

from __future__ import annotations

import pytest

from ptcli.config import keys, paths
from ptcli.errors import PtcliError


def test_help_lists_the_verbs_own_keys_with_the_defaults_it_runs_with_and_their_meaning():
    lines = {line.split("=", 1)[0].strip(): line for line in keys.help_lines("pretrain")}
    assert "train.max_steps=500" in lines["train.max_steps"], "pretrain.yaml's value, not the schema's null"
    assert "sequences per optimizer step" in lines["train.batch_size"]
    generate = {line.split("=", 1)[0].strip(): line for line in keys.help_lines("generate")}
    assert "max_new_tokens" in generate and "temperature" in generate
    assert "greedy" in generate["do_sample"], "a comment on a field a base class declares is still found"
    assert "model" in keys.sections("generate") and "model.path" not in generate


@pytest.mark.parametrize(("args", "suggested"), [
    (["--max_steps", "10"], "train.max_steps=10"),
    (["--max-steps=10"], "train.max_steps=10"),
    (["--lr", "3e-4"], "optim.lr=3e-4"),
    (["model=bert-tiny", "--batch_size", "8"], "train.batch_size=8"),
])
def test_a_flag_gets_the_key_value_form_it_meant(args, suggested):
    assert suggested in keys.flag_hint("pretrain", args)


def test_key_value_overrides_get_no_hint():
    assert keys.flag_hint("pretrain", ["train.max_steps=10", "+objective=mlm", "~logger"]) is None
    assert "<value>" in keys.flag_hint("generate", ["--nonsense"])


def test_a_shipped_config_is_copied_under_a_name_the_search_path_will_reach(tmp_path):
    target = paths.copy_config("model/bert-tiny", tmp_path)
    assert target == tmp_path / "model" / "my-bert-tiny.yaml"
    assert target.read_text() == (paths.packaged_config_dir() / "model" / "bert-tiny.yaml").read_text()
    with pytest.raises(PtcliError, match="exists already"):
        paths.copy_config("model/bert-tiny", tmp_path)
    with pytest.raises(PtcliError, match="did you mean model/bert-tiny"):
        paths.copy_config("model/bert-tinny", tmp_path)
    assert paths.copy_config("objective/mlm", tmp_path / "x.yaml") == tmp_path / "x.yaml"
