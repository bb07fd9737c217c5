"""`+privacy=dp` and `evaluate +attack=membership` as a user runs them: the run logs the epsilon it has spent, writes
it to summary.json and the model card, equal to Opacus's accountant recomputed from what it logged; a DP run
resumes exactly; combinations that would not be private stop before any run directory; the membership attack
reports its AUC."""

from __future__ import annotations

import json

import pytest

from tests.support import TINY_FINETUNE, assert_one_screen, records, run_cli, sentiment_csv

pytestmark = pytest.mark.slow
pytest.importorskip("opacus")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return sentiment_csv(tmp_path_factory.mktemp("privacy"), 300)


def args(data, steps=6):
    return [*TINY_FINETUNE, "dataset=csv", f"dataset.files=[{data}]", "dataset.val_fraction=0.2",
            f"train.max_steps={steps}", f"train.eval_every={steps}", "train.save_every=3", "train.keep_last=5",
            "train.batch_size=24", "train.grad_accum=2", "optim.lr=1e-3", "+privacy=dp", "privacy.epsilon=4"]


def test_a_private_run_logs_its_epsilon_and_the_accountant_agrees_then_the_membership_attack_runs(data, tmp_path):
    from opacus.accountants import RDPAccountant
    from transformers import AutoModelForSequenceClassification

    proc = run_cli("finetune", *args(data), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr
    assert "position_ids are expanded per example" in proc.stderr
    run = tmp_path / "outputs" / "finetune" / "latest"
    logged = [r["epsilon"] for r in records(run) if r["kind"] == "train"]
    assert len(logged) == 6 and logged == sorted(logged) and logged[0] > 0, "every log step, growing"
    summary = json.loads((run / "summary.json").read_text())
    p = summary["privacy"]
    assert p["steps"] == 6 and p["sample_rate"] == pytest.approx(24 / 240) and p["sampling"] == "poisson"
    assert p["epsilon"] <= 4.0 and p["epsilon"] == pytest.approx(logged[-1], rel=1e-5)
    accountant = RDPAccountant()
    for _ in range(p["steps"]):
        accountant.step(noise_multiplier=p["noise_multiplier"], sample_rate=p["sample_rate"])
    assert accountant.get_epsilon(p["delta"]) == pytest.approx(p["epsilon"], rel=0.05)
    card = (run / "model" / "README.md").read_text()
    assert "## Differential privacy" in card and f"epsilon = {p['epsilon']:.3f}" in card
    assert AutoModelForSequenceClassification.from_pretrained(run / "model").config.id2label == {0: "neg", 1: "pos"}

    proc = run_cli("evaluate", f"model.path={run}", "+attack=membership", "attack.examples=40", "output=json",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)
    assert metrics["attack"] == "membership" and metrics["members"] == metrics["nonmembers"] == 40
    assert 0 <= metrics["membership_auc"] <= 1 and metrics["member_loss"] > 0
    assert "membership AUC" in proc.stderr


def test_a_private_run_resumes_exactly(data, tmp_path):
    """The recipe that met the accuracy target: a linear head on the mean-pooled tokens (the folded block frozen)."""
    head = ["objective.pooling=mean", "tune.trainable=[classifier]"]
    proc = run_cli("finetune", *args(data), *head, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "pooling: mean" in proc.stderr
    first = (tmp_path / "outputs" / "finetune" / "latest").resolve()
    proc = run_cli("finetune", *args(data), *head, f"train.resume={first / 'checkpoints' / 'step-00000003'}",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    second = (tmp_path / "outputs" / "finetune" / "latest").resolve()
    assert second != first

    def losses(run):
        return {r["step"]: (r["loss"], r["epsilon"]) for r in records(run) if r["kind"] == "train"}

    assert sorted(losses(second)) == [4, 5, 6]
    for step in (4, 5, 6):  # the same Poisson draws and the same noise after the resume
        assert losses(second)[step][0] == pytest.approx(losses(first)[step][0], abs=1e-6)
        assert losses(second)[step][1] == losses(first)[step][1]


def test_combinations_that_are_not_private_or_not_supported_stop_before_any_run(data, tmp_path):
    cases = [
        (["device.strategy=fsdp"], ["device.strategy=fsdp is not supported", "one process"]),
        (["+adversarial=fgm"], ["+adversarial is not supported", "not private"]),
        (["device.precision=fp16"], ["fp16 is not supported", "bf16 or fp32"]),
        (["privacy.noise_multiplier=1.0"], ["privacy.epsilon=null"]),
        (["train.max_steps=null"], ["train.max_steps or train.epochs"]),
        (["privacy.max_grad_norm=0", "privacy.delta=2"], ["privacy.max_grad_norm", "privacy.delta"]),
    ]
    for extra, words in cases:
        assert_one_screen(run_cli("finetune", *args(data), *extra, cwd=tmp_path), 2, *words)
    proc = run_cli("pretrain", "model=gpt2-tiny", "+privacy=dp", "device=cpu", "train.max_steps=3", cwd=tmp_path)
    assert_one_screen(proc, 2, "objective=clm is not supported", "packs rows", "objective=classification")
    assert not (tmp_path / "outputs").exists()
