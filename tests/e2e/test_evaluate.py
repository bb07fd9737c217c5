"""The demo chain: `ptcli pretrain`, then `ptcli generate` and `ptcli evaluate` on outputs/pretrain/latest;
and an evaluation sweep over model.path."""

from __future__ import annotations

import json

import pytest

from tests.support import TINY, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny pretraining run whose validation loss covers all of its held-out blocks."""
    root = tmp_path_factory.mktemp("demo")
    proc = run_cli("pretrain", *TINY, "train.max_steps=3", "train.eval_batches=null", cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root


def test_generate_then_evaluate_the_latest_run(pretrained):
    proc = run_cli("generate", "model.path=outputs/pretrain/latest", "prompt=Once upon a time", "max_new_tokens=6",
                   "device=cpu", "device.threads=1", cwd=pretrained)
    assert proc.returncode == 0, proc.stderr
    [record] = [json.loads(line) for line in proc.stdout.splitlines()]
    assert record["prompt"] == "Once upon a time" and 0 < record["new_tokens"] <= 6
    proc = run_cli("evaluate", "model.path=outputs/pretrain/latest", "device=cpu", "device.threads=1", cwd=pretrained)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)  # exactly one JSON object: stdout is not a terminal
    summary = json.loads((pretrained / "outputs" / "pretrain" / "latest" / "summary.json").read_text())
    # stride = seq_len scores each held-out block as pretraining's validation did
    assert metrics["loss"] == pytest.approx(summary["final_val_loss"], rel=1e-5)
    assert metrics["objective"] == "clm" and metrics["bits_per_byte"] > 0
    assert "the part training held out" in metrics["data"]
    run_dir = (pretrained / "outputs" / "evaluate" / "latest").resolve()
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics


def test_sweep_over_model_paths_writes_metrics_per_run(pretrained):
    run = (pretrained / "outputs" / "pretrain" / "latest").resolve()
    proc = run_cli("evaluate", "-m", f"model.path={run},{run}/model", "stride=16", "device=cpu", "device.threads=1",
                   cwd=pretrained)
    assert proc.returncode == 0, proc.stderr
    printed = [json.loads(line) for line in proc.stdout.splitlines()]  # one object per run, nothing else
    sweep = sorted((pretrained / "outputs" / "evaluate" / "multirun").glob("*/*/metrics.json"))
    assert len(sweep) == 2 and len(printed) == 2
    first, second = (json.loads(p.read_text()) for p in sweep)
    assert first["model"] == str(run) and second["model"] == f"{run}/model"
    assert first["loss"] == second["loss"] and first["stride"] == 16, "run/model finds the run's config too"
