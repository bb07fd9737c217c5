"""`+adversarial=fgm|pgd|freelb` as a user runs it: the run logs the clean and the perturbed loss and the
perturbation's size, counts the extra passes in MFU, exports an ordinary classifier; it runs under DDP; settings and
combinations it cannot honour stop before any run directory."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support import TINY_FINETUNE, assert_one_screen, records, run_cli, sentiment_csv

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return sentiment_csv(tmp_path_factory.mktemp("adversarial"), 200)


def args(data, steps=4):
    return [*TINY_FINETUNE, "dataset=csv", f"dataset.files=[{data}]", "dataset.val_fraction=0.2",
            f"train.max_steps={steps}", f"train.eval_every={steps}", f"train.save_every={steps}", "train.batch_size=8"]


def test_fgm_and_pgd_runs_log_both_losses_and_pay_for_their_passes_in_mfu(data, tmp_path):
    from transformers import AutoModelForSequenceClassification

    mfu = {}
    for method in ("none", "fgm", "pgd"):
        extra = [] if method == "none" else [f"+adversarial={method}", "adversarial.epsilon=0.5"]
        proc = run_cli("finetune", *args(data), *extra, f"run.out_dir={method}", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        run = tmp_path / method / "finetune" / "latest"
        last = records(run)[-1]
        mfu[method] = last["mfu"] / last["tokens_per_s"]  # FLOPs per token, as the run counts them
        if method == "none":
            assert "adv_loss" not in last
            continue
        assert f"adversarial: {method} on the input embeddings" in proc.stderr
        assert last["adv_loss"] > last["clean_loss"] > 0
        assert last["adv_norm"] == pytest.approx(0.5, rel=1e-3) if method == "fgm" else last["adv_norm"] <= 0.5 + 1e-4
        assert last["loss"] == pytest.approx((last["clean_loss"] + last["adv_loss"]) / 2, rel=1e-3)
        model = AutoModelForSequenceClassification.from_pretrained(run / "model")
        assert model.config.id2label == {0: "neg", 1: "pos"}
    assert mfu["fgm"] / mfu["none"] == pytest.approx(7 / 3, rel=1e-3)
    assert mfu["pgd"] / mfu["none"] == pytest.approx(11 / 3, rel=1e-3)


@pytest.mark.distributed
def test_freelb_runs_under_ddp(data, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                           "-m", "ptcli", "finetune", *args(data, steps=3), "+adversarial=freelb",
                           "device.strategy=ddp", f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = records(tmp_path / "run")[-1]
    assert last["step"] == 3 and last["adv_loss"] > 0 and "clean_loss" not in last
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_settings_and_combinations_it_cannot_honour_stop_before_any_run(data, tmp_path):
    proc = run_cli("finetune", *args(data), "+adversarial=pgd", "adversarial.epsilon=0", "adversarial.steps=0",
                   cwd=tmp_path)
    assert_one_screen(proc, 2, "adversarial.epsilon", "adversarial.steps")
    proc = run_cli("finetune", *args(data), "+adversarial=fgm", "device.strategy=fsdp", cwd=tmp_path)
    assert_one_screen(proc, 2, "device.strategy=fsdp is not supported", "device.strategy=ddp")
    proc = run_cli("pretrain", "model=gpt2-tiny", "+adversarial=fgm", "device=cpu", cwd=tmp_path)
    assert_one_screen(proc, 2, "objective=clm is neither", "objective=classification")
    proc = run_cli("finetune", *args(data), "+adversarial=sharp", cwd=tmp_path)
    assert_one_screen(proc, 2, "fgm", "freelb")
    assert not (tmp_path / "outputs").exists()
