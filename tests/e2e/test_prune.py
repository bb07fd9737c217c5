"""`ptcli prune`: a fine-tuned tiny BERT classifier loses half its attention heads (or feed-forward neurons, or its
smallest weights); the report measures both models; the result is a run that evaluate and finetune (recovery
fine-tuning) take as it is; bad settings are refused before any run directory exists."""

from __future__ import annotations

import json

import pytest

from tests.support import TINY_FINETUNE, assert_one_screen, latest, run_cli

pytestmark = pytest.mark.slow
CPU = ["device=cpu", "device.threads=1"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, sentiment):
    """A tiny BERT (2 layers of 2 heads) fine-tuned for a few steps on the sentiment rows."""
    root = tmp_path_factory.mktemp("prune")
    proc = run_cli("finetune", *TINY_FINETUNE, f"dataset.files=[{sentiment}]", "train.max_steps=6",
                   "train.batch_size=8", "train.eval_every=6", "optim.lr=3e-3", cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, latest(root)


@pytest.fixture(scope="module")
def heads_run(classifier):
    """Half the attention heads of the classifier removed (gradient importance); the command and its run."""
    root, run = classifier
    proc = run_cli("prune", f"model.path={run}", "method=heads", "amount=0.5", "output=json", "latency.repeats=2",
                   "importance_batches=2", "batch_size=8", *CPU, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, latest(root, "prune")


def test_head_pruning_reports_both_models(heads_run):
    proc, pruned_run = heads_run
    shown = json.loads(proc.stdout.strip().splitlines()[-1])
    report = json.loads((pruned_run / "compression.json").read_text())
    assert shown["after"] == report["after"]
    assert report["method"] == "heads" and report["importance"] == "gradient"
    assert report["removed"]["heads_per_layer"] == [1, 1] and report["removed"]["heads"] == 2
    assert report["after"]["parameters"] < report["before"]["parameters"]
    assert report["after"]["file_bytes"] < report["before"]["file_bytes"]
    for side in ("before", "after"):
        assert {"loss", "accuracy"} <= set(report[side]["metrics"])
        assert report[side]["latency_ms_b1"] > 0
    assert "importance: 2 batches of 8 training examples" in proc.stderr
    assert (pruned_run / "model" / "ptcli_recipe.json").is_file() and (pruned_run / "config.yaml").is_file()


def test_the_pruned_run_evaluates_like_the_report(classifier, heads_run):
    root, _ = classifier
    _, pruned_run = heads_run
    report = json.loads((pruned_run / "compression.json").read_text())
    proc = run_cli("evaluate", f"model.path={pruned_run}", "output=json", *CPU, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    assert metrics["accuracy"] == pytest.approx(report["after"]["metrics"]["accuracy"])
    assert metrics["loss"] == pytest.approx(report["after"]["metrics"]["loss"], abs=1e-5)


def test_recovery_finetuning_of_the_pruned_run_keeps_its_heads(classifier, heads_run, sentiment):
    root, _ = classifier
    _, pruned_run = heads_run
    proc = run_cli("finetune", f"model.path={pruned_run}", f"dataset.files=[{sentiment}]", "train.max_steps=2",
                   "train.batch_size=4", "train.eval_every=2", *CPU, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pruned attention: 2 heads in 2 layers" in proc.stdout + proc.stderr
    proc = run_cli("evaluate", f"model.path={latest(root)}", "output=json", *CPU, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pruned attention: 2 heads in 2 layers" in proc.stderr


@pytest.mark.parametrize("args", [["method=ffn", "amount=0.25", "importance=norm"],
                                  ["method=magnitude", "amount=0.3", "scope=global"]])
def test_ffn_and_magnitude_pruning(classifier, args):
    root, run = classifier
    proc = run_cli("prune", f"model.path={run}", *args, "output=json", "latency.repeats=2", "evaluate=false", *CPU,
                   cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    if args[0] == "method=ffn":
        width = report["removed"]["of_neurons"] // 2  # two layers
        assert report["removed"]["intermediate_size"] == width - int(width * 0.25 + 0.5)
        assert report["after"]["parameters"] < report["before"]["parameters"]
    else:
        assert report["after"]["parameters"] == report["before"]["parameters"]
        assert report["after"]["sparsity"] > report["before"]["sparsity"] + 0.1
        assert "pytorch/pytorch#36214" in report["note"]


def test_bad_amount_is_refused_before_any_run_directory(classifier, tmp_path):
    _, run = classifier
    proc = run_cli("prune", f"model.path={run}", "amount=1.5", *CPU, cwd=tmp_path)
    assert_one_screen(proc, 2, "amount", "1.5")
    assert not (tmp_path / "outputs").exists()
