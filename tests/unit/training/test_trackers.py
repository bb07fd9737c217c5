"""The experiment trackers against their real libraries: each tracker is driven with a config, a few metric rows,
a summary and a model folder, and what it wrote is read back with the library's own reader (MLflow's client on
its file store, W&B's offline transaction log, trackio's SQLite store, TensorBoard's event accumulator)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ptcli.config.schema import LoggerConfig
from ptcli.training import trackers as tr
from ptcli.training.metrics_log import MetricsLogger
from tests import tracker_files
from tests.tracker_files import CONFIG, ROWS, SUMMARY, drive


def numbers(values: dict) -> dict:
    return {k: v for k, v in values.items() if not isinstance(v, str)}  # what the loop logs


def settings(**kw) -> LoggerConfig:
    return LoggerConfig(**kw)  # the config's logger section, as the trackers read it (attributes)


@pytest.fixture
def run_dir(tmp_path, monkeypatch) -> Path:
    """A fake run directory with a final model folder; W&B's caches kept inside tmp_path."""
    for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "outputs" / "pretrain" / "2026-01-01_00-00-00"
    (run / "model").mkdir(parents=True)
    (run / "model" / "config.json").write_text('{"model_type": "gpt2"}\n')
    (run / "model" / "model.safetensors").write_bytes(b"\0" * 64)
    (run / "summary.json").write_text(json.dumps(SUMMARY))
    return run


# ---- MLflow: the file store, read back with MlflowClient


def test_mlflow_file_store_params_metrics_summary_and_model(run_dir):
    drive(tr.MLflowTracker(settings(mlflow=True)), run_dir)
    uri = (run_dir.parents[2] / "mlruns").as_uri()  # the default: ./mlruns in the working directory
    [run] = tracker_files.mlflow_runs(uri)
    assert run.info.status == "FINISHED" and run.info.run_name == "2026-01-01_00-00-00"
    params = run.data.params
    assert params["optim.lr"] == "0.002" and params["optim.betas"] == "[0.9, 0.95]"
    assert params["train.resume"] == "null" and params["train.gradient_checkpointing"] == "false"
    assert params["optim._target_"] == "torch.optim.AdamW"
    assert 500 <= len(params["dataset.note"]) < 9000, "cut to MLflow's limit on a param's value"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/loss")] == [
        (1, 4.0), (2, 3.0), (3, 2.0)]
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "eval/val_loss")] == [(2, 2.9)]
    assert "train/note" not in run.data.metrics, "only numbers are metrics"
    assert run.data.metrics["summary/final_val_loss"] == 2.5 and run.data.metrics["summary/final_val.ppl"] == 12.18
    assert run.data.tags["ptcli.run_dir"] == str(run_dir)
    assert tracker_files.mlflow_artifacts(uri, run.info.run_id) == ["config.yaml", "model", "summary.json"]
    assert tracker_files.mlflow_artifacts(uri, run.info.run_id, "model") == ["model/config.json",
                                                                            "model/model.safetensors"]
    assert tracker_files.mlflow_json(uri, run.info.run_id, "summary.json", run_dir.parent) == SUMMARY
    assert tracker_files.mlflow_json(uri, run.info.run_id, "config.yaml", run_dir.parent) == CONFIG


def test_mlflow_names_and_uris(run_dir, tmp_path):
    """Metric names MLflow refuses are sanitised; a plain folder is a file store; a URI with a scheme is kept;
    log_model=false leaves the model out; a run that fails is marked FAILED."""
    store = tmp_path / "elsewhere"
    tracker = tr.MLflowTracker(settings(mlflow=True, tracking_uri=str(store), experiment="exp", run_name="mine",
                                        log_model=False))
    group = tr.Trackers([tracker])
    group.start({}, run_dir)
    group.log("eval", 1, {"val_acc@1 (top)": 0.5})
    group.finish(SUMMARY, run_dir / "model")
    [run] = tracker_files.mlflow_runs(store.as_uri(), "exp")
    assert run.info.run_name == "mine" and run.data.metrics["eval/val_acc_1 _top_"] == 0.5
    assert "model" not in tracker_files.mlflow_artifacts(store.as_uri(), run.info.run_id)
    assert tr.MLflowTracker.tracking_uri("http://localhost:5000") == "http://localhost:5000"
    assert tr.MLflowTracker.tracking_uri("file:///x/mlruns") == "file:///x/mlruns"
    assert tr.MLflowTracker.tracking_uri("sqlite:///mlflow.db") == "sqlite:///mlflow.db"
    assert tr.MLflowTracker.tracking_uri(None) == (tmp_path / "mlruns").as_uri()

    drive(tr.MLflowTracker(settings(mlflow=True)), run_dir, finish=False)
    [failed] = tracker_files.mlflow_runs((tmp_path / "mlruns").as_uri())
    assert failed.info.status == "FAILED"


# ---- W&B: offline run files


def test_wandb_offline_run_files(run_dir):
    drive(tr.WandbTracker(settings(wandb=True, project="proj")), run_dir)
    run = tracker_files.wandb_offline(run_dir)
    assert run["run"].project == "proj" and run["run"].display_name == "2026-01-01_00-00-00"
    assert run["config"]["optim"] == CONFIG["optim"] and run["config"]["dataset"]["files"] == ["a.txt", "b.txt"]
    history = run["history"]
    assert sorted(history) == [1, 2, 3]
    assert [history[s]["train/loss"] for s in (1, 2, 3)] == [4.0, 3.0, 2.0]
    assert history[2]["eval/val_loss"] == 2.9 and "train/note" not in history[3]
    assert run["summary"]["final_val_loss"] == 2.5 and run["summary"]["best_step"] == 2
    assert run["artifacts"] == [("2026-01-01_00-00-00-model", "model", ["config.json", "model.safetensors"])]


# ---- trackio: its SQLite store (TRACKIO_DIR is read when trackio is imported: a fresh process)

TRACKIO_SCRIPT = """
import json, sys
from pathlib import Path
from ptcli.config.schema import LoggerConfig
from tests.tracker_files import drive
from ptcli.training.trackers import TrackioTracker
import huggingface_hub
calls = []
huggingface_hub.whoami = lambda *a, **k: calls.append(1) or {"name": "someone"}  # the Hub lookup, recorded
run_dir = Path(sys.argv[1])
drive(TrackioTracker(LoggerConfig(trackio=True, project="proj")), run_dir)
from trackio.sqlite_storage import SQLiteStorage as S
print(json.dumps({"runs": [r["name"] for r in S.get_run_records("proj")], "logs": S.get_logs("proj", run_dir.name),
                  "config": S.get_run_config("proj", run_dir.name),
                  "artifacts": sorted((a["name"], a["type"]) for a in S.list_artifacts("proj")), "whoami": len(calls)}))
"""


def test_trackio_local_store(run_dir, tmp_path):
    env = {"TRACKIO_DIR": str(tmp_path / "trackio"), "PATH": "/usr/bin:/bin", "HF_TOKEN": "hf_not_a_real_token",
           "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(Path(__file__).parents[3])}
    proc = subprocess.run([sys.executable, "-c", TRACKIO_SCRIPT, str(run_dir)], env=env, capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("\n") == 1, "trackio's own prints stay off stdout"
    assert "trackio: project proj in" in proc.stderr
    found = json.loads(proc.stdout)
    assert found["runs"] == [run_dir.name]
    losses = {r["step"]: r["train/loss"] for r in found["logs"] if "train/loss" in r}
    assert losses == {1: 4.0, 2: 3.0, 3: 2.0}
    assert [r["eval/val_loss"] for r in found["logs"] if "eval/val_loss" in r] == [2.9]
    assert [r["summary/final_val_loss"] for r in found["logs"] if "summary/final_val_loss" in r] == [2.5]
    assert found["config"]["optim.lr"] == 0.002
    assert found["artifacts"] == [[f"{run_dir.name}-model", "model"], [f"{run_dir.name}-summary", "summary"]]
    assert (tmp_path / "trackio" / "proj.db").is_file()
    assert found["whoami"] == 0, "nothing asks the Hub, even with a token set"


# ---- TensorBoard: scalars and hparams, read with TensorBoard's own event accumulator


def test_tensorboard_scalars_and_hparams(run_dir):
    pytest.importorskip("tensorboard")
    drive(tr.TensorBoardTracker(), run_dir)
    hparams, scalars = tracker_files.tensorboard_hparams(run_dir / "tensorboard")
    assert scalars["train/loss"] == [(1, 4.0), (2, 3.0), (3, 2.0)]
    assert scalars["eval/val_loss"] == [(2, pytest.approx(2.9))]
    assert hparams["optim.lr"] == pytest.approx(0.002) and hparams["optim._target_"] == "torch.optim.AdamW"
    assert hparams["train.gradient_checkpointing"] == 0 and "optim.betas" not in hparams  # flat scalars only
    assert scalars["summary/final_val_loss"] == [(3, 2.5)], "the final metrics the hparams table shows"


# ---- failures never stop the run; rank 0 only


class Broken(tr.Tracker):
    name = "broken"

    def __init__(self, fail_at: str):
        self.fail_at, self.calls = fail_at, []

    def _call(self, what):
        self.calls.append(what)
        if what == self.fail_at:
            raise ConnectionError("server down\nmore detail")

    def start(self, config, run_dir):
        self._call("start")

    def log(self, metrics, step):
        self._call(f"log {step}")

    def finish(self, summary, model_dir):
        self._call("finish")

    def abort(self):
        self.calls.append("abort")


def test_a_failing_tracker_warns_once_and_the_run_goes_on(run_dir, capsys):
    broken, healthy = Broken("log 2"), Broken(None)
    log = MetricsLogger(run_dir, 3, trackers=[broken, healthy], config=CONFIG, stream=sys.stdout)
    for step, kind, values in ROWS:
        log.log(kind, step, **numbers(values), grad_norm=1.0, tokens_per_s=10.0)
    log.finish(SUMMARY, run_dir / "model")
    log.close()
    err = capsys.readouterr().err
    assert err.count("warning: broken tracking stopped") == 1, err
    assert "logging step 2 failed: ConnectionError: server down" in err and "more detail" not in err
    assert broken.calls == ["start", "log 1", "log 2", "abort"], "dropped after the failure, and closed"
    assert healthy.calls == ["start", "log 1", "log 2", "log 2", "log 3", "finish"]
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == len(ROWS)


def test_an_unreachable_mlflow_server_only_warns(run_dir, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    log = MetricsLogger(run_dir, 3, trackers=[tr.MLflowTracker(settings(mlflow=True,
                                                                        tracking_uri="http://127.0.0.1:9"))],
                        config=CONFIG, stream=sys.stdout)
    for step, kind, values in ROWS:
        log.log(kind, step, **numbers(values), grad_norm=1.0, tokens_per_s=10.0)
    log.finish(SUMMARY, run_dir / "model")
    log.close()
    err = capsys.readouterr().err
    assert err.count("warning: mlflow tracking stopped (start failed") == 1, err
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == len(ROWS)


def test_other_ranks_start_no_tracker(run_dir):
    tracker = Broken(None)
    log = MetricsLogger(run_dir, 3, enabled=False, trackers=[tracker], config=CONFIG)
    log.log("train", 1, loss=1.0)
    log.finish(SUMMARY, run_dir / "model")
    log.close()
    assert tracker.calls == []


def test_from_config_and_flatten():
    assert [t.name for t in tr.from_config(settings(mlflow=True, tensorboard=True, trackio=True))] == [
        "tensorboard", "mlflow", "trackio"]
    assert tr.from_config(settings()) == []
    assert tr.flatten({"a": {"b": 1, "c": {}}, "d": [1]}) == {"a.b": 1, "a.c": {}, "d": [1]}
    assert tr.default_run_name(Path("outputs/pretrain/multirun/2026-01-01_00-00-00/3")) == "2026-01-01_00-00-00-3"


# ---- config: a missing package is a config error naming the extra


@pytest.mark.parametrize(("option", "module"), [("mlflow", "mlflow"), ("wandb", "wandb"), ("trackio", "trackio")])
def test_a_missing_tracker_package_is_a_config_error(option, module, monkeypatch, composed):
    monkeypatch.setitem(sys.modules, module, None)  # importlib.util.find_spec answers None: not installed
    needs = rf"logger={option} needs the {module} package: pip install 'ptcli\[trackers\]'"
    with pytest.raises(Exception, match=needs):
        composed("pretrain", f"logger={option}")


def test_two_trackers_at_once_compose(composed):
    cfg = composed("pretrain", "logger=mlflow", "logger.wandb=true", "logger.tensorboard=true")
    assert (cfg.logger.mlflow, cfg.logger.wandb, cfg.logger.tensorboard, cfg.logger.trackio) == (True, True, True,
                                                                                                   False)
    assert cfg.logger.wandb_mode == "offline" and cfg.logger.tracking_uri is None and cfg.logger.log_model
    with pytest.raises(Exception, match="wandb_mode"):
        composed("pretrain", "logger=wandb", "logger.wandb_mode=sometimes")
