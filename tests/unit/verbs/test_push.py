"""`ptcli push`: the model card made from a run's files, and the refusals before any upload."""

from __future__ import annotations

import json

import pytest

from ptcli.errors import PtcliError, RunFailure
from tests.support import fake_run


def test_the_card_carries_metadata_metrics_and_the_command(tmp_path):
    from huggingface_hub import ModelCard

    from ptcli.verbs.push import push

    run = fake_run(tmp_path)
    printed = []
    result = push(str(run), "me/bert-sst2", dry_run=True, license="mit", log=lambda m: None, stdout=printed.append)
    assert json.loads(printed[0]) == result and result["dry_run"] and result["files"] == 3  # config, weights, card
    card = ModelCard.load(run / "model" / "README.md")
    assert card.data.license == "mit" and card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "text-classification" and "ptcli" in card.data.tags
    metrics = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert metrics == {"loss": 0.31, "accuracy": 0.8912}, "the best evaluation's numbers, scalars only"
    assert "ptcli finetune model=minilm 'dataset.files=[train.tsv]' optim.lr=5e-5" in card.text
    assert "Labels: neg, pos." in card.text and "22.70M parameters" in card.text and "train.tsv" in card.text
    assert 'pipeline("text-classification", model="me/bert-sst2")' in card.text


def test_a_bare_model_folder_gets_a_card_without_run_facts(tmp_path):
    from huggingface_hub import ModelCard

    from ptcli.verbs.push import push

    folder = fake_run(tmp_path) / "model"
    push(str(folder), "bert", dry_run=True, log=lambda m: None, stdout=lambda m: None)
    card = ModelCard.load(folder / "README.md")
    assert card.data.license == "apache-2.0" and not card.data.eval_results and "How it was made" not in card.text


@pytest.mark.parametrize("target, repo, needle", [
    ("missing", "me/x", "does not exist"),
    ("run-without-model", "me/x", "did it finish?"),
    ("run", "not a repo id!", "is not a Hub repository id"),
])
def test_bad_targets_and_repo_ids_are_refused_before_anything_is_written(tmp_path, target, repo, needle):
    from ptcli.verbs.push import push

    run = fake_run(tmp_path)
    paths = {"missing": tmp_path / "nope", "run": run, "run-without-model": run}
    if target == "run-without-model":
        import shutil

        shutil.rmtree(run / "model")
    with pytest.raises(PtcliError, match=needle) as err:
        push(str(paths[target]), repo, dry_run=True, log=lambda m: None, stdout=lambda m: None)
    assert err.value.exit_code == 2 and not (run / "model" / "README.md").exists()


def test_offline_fails_at_once_naming_the_dry_run(tmp_path, monkeypatch):
    from ptcli.verbs.push import push

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RunFailure, match="HF_HUB_OFFLINE is set") as err:
        push(str(fake_run(tmp_path)), "me/x", log=lambda m: None, stdout=lambda m: None)
    assert "--dry-run" in err.value.message() and err.value.exit_code == 1
