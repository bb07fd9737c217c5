"""The experiment trackers' tests share this: what a tracker is driven with, and reading back what it wrote with
each library's own client or file format."""

from __future__ import annotations

import json
import struct
from pathlib import Path

# What the tracker tests drive a tracker with: a config, metric rows (step, kind, values), a summary.
CONFIG = {"optim": {"lr": 0.002, "betas": [0.9, 0.95], "_target_": "torch.optim.AdamW"},
          "train": {"max_steps": 3, "resume": None, "gradient_checkpointing": False},
          "dataset": {"files": ["a.txt", "b.txt"], "note": "x" * 9000}}
SUMMARY = {"steps": 3, "final_val_loss": 2.5, "best_val_loss": 2.4, "final_val": {"loss": 2.5, "ppl": 12.18},
           "best_step": 2, "stopped_early": False, "model_dir": "somewhere/model", "mfu": None}
ROWS = [(1, "train", {"loss": 4.0, "lr": 1e-3, "tokens": 128}), (2, "train", {"loss": 3.0, "lr": 2e-3, "tokens": 256}),
        (2, "eval", {"val_loss": 2.9, "val_ppl": 18.2}), (3, "train", {"loss": 2.0, "lr": 2e-3, "tokens": 384,
                                                                       "note": "not a number"})]


def drive(tracker, run_dir: Path, finish: bool = True) -> None:
    """What MetricsLogger does with a ``ptcli.training.trackers.Tracker`` over a run."""
    from ptcli.training.trackers import Trackers

    group = Trackers([tracker])
    group.start(CONFIG, run_dir)
    for step, kind, values in ROWS:
        group.log(kind, step, values)
    if finish:
        group.finish(SUMMARY, run_dir / "model")
    else:
        group.abort()
    assert group.active == [], "every tracker is closed"


def wandb_offline(run_dir: Path, wait: float = 20) -> dict:
    """The one offline W&B run under ``run_dir/wandb``, from its ``.wandb`` transaction log (W&B's LevelDB-style
    record log of protobuf ``Record``s; wandb-core writes it, and no longer ships a Python reader): the config,
    the history rows (``_step`` -> values), the summary and the logged artifacts (name, type, files). wandb-core
    may still be writing the log just after ``run.finish()`` returns: it is read again until it ends with the
    run's exit record, for up to ``wait`` seconds."""
    import time

    runs = list((Path(run_dir) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    files = list(runs[0].glob("*.wandb"))
    assert len(files) == 1, files
    deadline = time.time() + wait
    while True:
        try:
            found = _wandb_records(files[0].read_bytes())
        except Exception:  # noqa: BLE001 - a record cut short: still being written
            found = None
        if (found and found["exited"]) or time.time() > deadline:
            assert found and found["exited"], f"{files[0]} never got its exit record"
            return found
        time.sleep(0.2)


def _wandb_records(data: bytes) -> dict:
    from wandb.proto import wandb_internal_pb2 as pb

    assert data[:4] == b":W&B", "a W&B transaction log"
    block, pos, buf = 32768, 7, b""
    out = {"config": {}, "history": {}, "summary": {}, "artifacts": [], "run": None, "exited": False}
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a record header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind not in (1, 4):  # FIRST / MIDDLE parts of a record split over blocks
            continue
        record = pb.Record()
        record.ParseFromString(buf)
        buf = b""
        which = record.WhichOneof("record_type")
        if which == "run":
            out["run"] = record.run
            out["config"] |= {i.key: json.loads(i.value_json) for i in record.run.config.update}
        elif which == "config":
            out["config"] |= {i.key: json.loads(i.value_json) for i in record.config.update}
        elif which == "history":
            row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            out["history"].setdefault(row["_step"], {}).update(row)
        elif which == "summary":
            out["summary"] |= {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.summary.update}
        elif which == "artifact":
            out["artifacts"].append((record.artifact.name, record.artifact.type,
                                     sorted(m.path for m in record.artifact.manifest.contents)))
        elif which == "exit":
            out["exited"] = True
    return out


def mlflow_runs(tracking_uri: str, experiment: str = "ptcli") -> list:
    """The runs of ``experiment`` in ``tracking_uri``, through MLflow's own client (newest first)."""
    import os

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment} in {tracking_uri}"
    return client.search_runs([found.experiment_id])


def mlflow_artifacts(tracking_uri: str, run_id: str, path: str | None = None) -> list[str]:
    from mlflow.tracking import MlflowClient

    return sorted(a.path for a in MlflowClient(tracking_uri).list_artifacts(run_id, path))


def mlflow_json(tracking_uri: str, run_id: str, path: str, dst: Path) -> dict:
    """An artifact downloaded with MLflow's client and parsed (JSON, or YAML for .yaml)."""
    from mlflow.tracking import MlflowClient

    local = Path(MlflowClient(tracking_uri).download_artifacts(run_id, path, str(dst)))
    if local.suffix == ".yaml":
        import yaml

        return yaml.safe_load(local.read_text())
    return json.loads(local.read_text())


def tensorboard_hparams(logdir: Path) -> tuple[dict, dict]:
    """TensorBoard's own reading of ``logdir``: the hparams of its session (plugin data) and every scalar tag's
    (step, value) list, over the folder's event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    hparams, scalars = {}, {}
    for events in sorted(Path(logdir).glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
        try:
            content = acc.PluginTagToContent("hparams")
        except KeyError:  # no hparams in this file
            content = {}
        if "_hparams_/session_start_info" in content:
            data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
            for key, value in data.session_start_info.hparams.items():
                hparams[key] = getattr(value, value.WhichOneof("kind"))
    return hparams, scalars
