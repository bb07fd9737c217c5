"""Experiment trackers end to end: one tiny `ptcli pretrain` with three trackers at once (MLflow's file store,
W&B offline, TensorBoard), each read back with its own library: the config, the metrics by step, the summary and
the final model folder."""

from __future__ import annotations

import json

import pytest
import yaml

from tests import tracker_files
from tests.support import TINY, losses_by_step, records, run_cli

pytestmark = pytest.mark.slow


def test_mlflow_wandb_and_tensorboard_at_once(tmp_path):
    for name in ("mlflow", "wandb", "tensorboard"):
        pytest.importorskip(name)
    env = {name: str(tmp_path / name.lower()) for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR",
                                                            "WANDB_ARTIFACT_DIR")}
    env["MLFLOW_TRACKING_URI"] = ""  # the default store: ./mlruns in the working directory
    proc = run_cli("pretrain", *TINY, "train.max_steps=4", "train.eval_every=2", "train.save_every=100",
                   "logger=mlflow", "logger.wandb=true", "logger.tensorboard=true", cwd=tmp_path, env=env,
                   timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tracking stopped" not in proc.stderr, proc.stderr[-3000:]
    run_dir = (tmp_path / "outputs" / "pretrain" / "latest").resolve()
    summary = json.loads((run_dir / "summary.json").read_text())
    losses = losses_by_step(run_dir)
    assert sorted(losses) == [1, 2, 3, 4]

    # MLflow: params from the resolved config, the loss at every step, summary.json, model/ with its config.json
    uri = (tmp_path / "mlruns").as_uri()
    [run] = tracker_files.mlflow_runs(uri)
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert run.data.params["optim.lr"] == str(config["optim"]["lr"]) and run.data.params["train.max_steps"] == "4"
    from mlflow.tracking import MlflowClient

    history = MlflowClient(uri).get_metric_history(run.info.run_id, "train/loss")
    assert {m.step: m.value for m in history} == pytest.approx(losses)
    val = {m.step: m.value for m in MlflowClient(uri).get_metric_history(run.info.run_id, "eval/val_loss")}
    assert val == pytest.approx({r["step"]: r["val_loss"] for r in records(run_dir, "eval")}) and sorted(val) == [2, 4]
    assert tracker_files.mlflow_json(uri, run.info.run_id, "summary.json", tmp_path / "dl") == summary
    model_files = tracker_files.mlflow_artifacts(uri, run.info.run_id, "model")
    assert "model/config.json" in model_files and "model/model.safetensors" in model_files
    assert tracker_files.mlflow_json(uri, run.info.run_id, "model/config.json", tmp_path / "dl") == json.loads(
        (run_dir / "model" / "config.json").read_text())

    # W&B offline: the run files in <run>/wandb, with the config, the losses, the summary and the model artifact
    wandb = tracker_files.wandb_offline(run_dir)
    assert wandb["config"]["optim"]["lr"] == config["optim"]["lr"]
    assert {s: row["train/loss"] for s, row in wandb["history"].items() if "train/loss" in row} == pytest.approx(
        losses)
    assert wandb["summary"]["final_val_loss"] == pytest.approx(summary["final_val_loss"])
    [(name, kind, files)] = wandb["artifacts"]
    assert kind == "model" and "config.json" in files

    # TensorBoard: the scalars and the hparams session (the config against the final metrics)
    hparams, scalars = tracker_files.tensorboard_hparams(run_dir / "tensorboard")
    assert dict(scalars["train/loss"]) == pytest.approx(losses)
    assert hparams["optim.lr"] == pytest.approx(config["optim"]["lr"])
    assert dict(scalars["summary/final_val_loss"]) == pytest.approx({4: summary["final_val_loss"]})
