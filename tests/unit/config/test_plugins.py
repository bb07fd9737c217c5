"""The ``_target_`` allowlist: registered ptcli classes of the right kind, torch optimizers for ``optim``, and user
classes only when the user names them; plus the settings a class declares once, filled in and checked."""

from __future__ import annotations

import pytest

from ptcli.config import plugins
from ptcli.config.validate import validate
from ptcli.errors import PtcliError
from ptcli.launch.compose import compose


def test_registered_classes_resolve_by_section():
    from ptcli.data.sources.files import TextFiles
    from ptcli.objectives.mlm import MaskedLM

    assert plugins.resolve("ptcli.objectives.mlm.MaskedLM", "objective") is MaskedLM
    assert plugins.resolve("ptcli.data.sources.files.TextFiles", "dataset") is TextFiles
    assert plugins.resolve("torch.optim.AdamW", "optim") == "torch.optim.AdamW"


@pytest.mark.parametrize(("target", "section"), [
    ("ptcli.training.checkpoint.shutil.copyfile", "objective"),  # a function reached through a module attribute
    ("ptcli.objectives.base.os.system", "objective"),
    ("ptcli.objectives.base.Objective", "objective"),  # abstract
    ("ptcli.objectives.lm.LanguageModelling", "objective"),  # abstract
    ("ptcli.data.sources.files.TextFiles", "objective"),  # a data source is no objective
    ("ptcli.objectives.clm.CausalLM", "dataset"),
    ("ptcli.objectives.clm.documents", "objective"),  # a function
    ("os.system", "objective"),
    ("builtins.eval", "dataset"),
    ("torch.optim.AdamW", "objective"),  # optimizers only for optim
    ("torch.optim.lr_scheduler.os", "optim"),
    ("subprocess.Popen", "optim"),
    ("not a name", "objective"),
])
def test_anything_else_is_refused(target, section):
    with pytest.raises(PtcliError, match="is not built"):
        plugins.resolve(target, section)


def test_user_classes_need_the_users_word(monkeypatch):
    mine = "tests.plugins.objectives.LowerIsBetter"
    with pytest.raises(PtcliError) as refused:
        plugins.resolve(mine, "objective")
    assert f"objective._target_={mine}" in refused.value.message()
    assert "PTCLI_ALLOW_TARGETS=tests" in refused.value.message()
    assert plugins.resolve(mine, "objective", named={mine}).__name__ == "LowerIsBetter"
    monkeypatch.setenv("PTCLI_ALLOW_TARGETS", "tests.plugins")
    assert plugins.resolve(mine, "objective", load_user=False) == mine
    assert plugins.resolve(mine, "objective").__name__ == "LowerIsBetter"


def test_what_the_user_names_must_be_a_class_of_the_section():
    with pytest.raises(PtcliError, match="'os.system' is not a class"):  # a function: never called
        plugins.resolve("os.system", "objective", named={"os.system"})
    with pytest.raises(PtcliError, match="does not derive from ptcli.objectives.base.Objective"):
        plugins.resolve("collections.OrderedDict", "objective", named={"collections.OrderedDict"})
    with pytest.raises(PtcliError, match="does not derive from ptcli.data.sources.base.Source"):
        plugins.resolve("tests.plugins.objectives.LowerIsBetter", "dataset",
                        named={"tests.plugins.objectives.LowerIsBetter"})


def test_build_refuses_what_resolve_refuses():
    from ptcli.config.build import build

    with pytest.raises(PtcliError, match="is not built"):
        build({"_target_": "ptcli.training.checkpoint.shutil.copyfile", "src": "a", "dst": "b"}, "objective")
    with pytest.raises(PtcliError, match="is not a torch optimizer"):
        build({"_target_": "torch.optim.Optimizer", "_partial_": True}, "optim")


def test_a_config_naming_a_disallowed_target_fails_validation_before_anything_runs():
    cfg = compose("pretrain", ["objective._target_=ptcli.training.checkpoint.shutil.copyfile"])
    with pytest.raises(PtcliError, match="objective._target_ 'ptcli.training.checkpoint.shutil.copyfile'"):
        validate("pretrain", cfg)


def test_declared_settings_are_filled_in_and_checked():
    data = validate("pretrain", compose("pretrain", ["objective=mlm", "objective.mask_prob=0.3"]))
    assert data["objective"] == {"_target_": "ptcli.objectives.mlm.MaskedLM", "mask_prob": 0.3, "replace_mask": 0.8,
                                 "replace_random": 0.1, "whole_word": False}
    with pytest.raises(PtcliError, match="'objective.mask_prob' must be a number"):
        validate("pretrain", compose("pretrain", ["objective=mlm", "objective.mask_prob=lots"]))
    with pytest.raises(PtcliError, match=r"unknown key 'objective.mask_prb' \(did you mean 'objective.mask_prob'\?\)"):
        compose("pretrain", ["objective=mlm", "objective.mask_prb=0.3"])
    # the class's own range checks run at pre-flight too, not only when the run builds it
    with pytest.raises(PtcliError, match=r"objective.mask_prob must be in \(0, 1\)"):
        validate("pretrain", compose("pretrain", ["objective=mlm", "objective.mask_prob=1.5"]))


def test_an_optimizer_is_a_yaml_file():
    data = validate("finetune", compose("finetune", ["optim=sgd", "dataset.files=[x.csv]"]), check_files=False)
    assert data["optim"]["_target_"] == "torch.optim.SGD" and data["optim"]["momentum"] == 0.9
