"""Experiment trackers (``logger.tensorboard``, ``logger.mlflow``, ``logger.wandb``, ``logger.trackio``): each one
gets the resolved config at the start, the train/eval metrics at every log step and, at the end, the summary and
the final model folder. They run on rank 0 only (``MetricsLogger`` drives them); each library is imported only when
its tracker starts. A tracker that fails is dropped with one warning on stderr: tracking never stops training."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
from pathlib import Path


def flatten(tree, prefix: str = "") -> dict:
    """``{"optim": {"lr": 1e-3}}`` -> ``{"optim.lr": 1e-3}``; lists stay values."""
    flat = {}
    for key, value in (tree or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat |= flatten(value, name + ".")
        else:
            flat[name] = value
    return flat


def numbers(values: dict) -> dict:
    """The finite int/float values of ``values`` (bools as 0/1), the only kind every tracker takes as a metric."""
    out = {}
    for key, value in values.items():
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[key] = value
    return out


def summary_numbers(summary: dict) -> dict:
    """The summary's numbers as ``summary/<key>`` metrics (``final_val.val_loss`` for the nested ones)."""
    return {f"summary/{k}": v for k, v in numbers(flatten(summary)).items()}


def default_run_name(run_dir: Path) -> str:
    """The run directory's name (its timestamp); a sweep point's is ``<sweep timestamp>-<n>``."""
    run_dir = Path(run_dir)
    if run_dir.parent.parent.name == "multirun":
        return f"{run_dir.parent.name}-{run_dir.name}"
    return run_dir.name


class Tracker:
    """One backend. ``start`` once, ``log`` at every log/eval step, then ``finish`` (a completed run) or ``abort``
    (a failed or stopped one). Metric keys arrive as ``train/loss``, ``eval/val_loss``."""

    name = "tracker"

    def start(self, config: dict, run_dir: Path) -> None:
        raise NotImplementedError

    def log(self, metrics: dict, step: int) -> None:
        raise NotImplementedError

    def finish(self, summary: dict, model_dir: Path | None) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """The run ended without a summary (an error, a signal): close what is open, marked as such."""


class TensorBoardTracker(Tracker):
    """Event files in ``<run>/tensorboard``: scalars per step, the config as text, and at the end the hparams
    (the config's flat scalars against the summary's numbers) for TensorBoard's HPARAMS tab."""

    name = "tensorboard"

    def __init__(self, settings=None):
        self.writer = None
        self.config: dict = {}

    def start(self, config: dict, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.config = config
        self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        if config:
            import yaml

            self.writer.add_text("config", "```\n" + yaml.safe_dump(config, sort_keys=False) + "```", 0)

    def log(self, metrics: dict, step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def finish(self, summary: dict, model_dir: Path | None) -> None:
        hparams = {k: v for k, v in flatten(self.config).items()
                   if isinstance(v, (bool, str)) or (isinstance(v, (int, float)) and math.isfinite(v))}
        results = summary_numbers(summary)
        if hparams and results:
            # run_name ".": the hparams session sits beside the run's own scalars, one TensorBoard run per ptcli run
            self.writer.add_hparams(hparams, results, run_name=".", global_step=summary.get("steps"))
        self.abort()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class MLflowTracker(Tracker):
    """An MLflow run in ``logger.experiment``: the flattened config as params (values stringified and cut to
    MLflow's limits), ``config.yaml``, metrics by step, ``summary.json`` and ``summary/*`` metrics, and the final
    model folder as the ``model/`` artifact. ``logger.tracking_uri`` null: ``$MLFLOW_TRACKING_URI`` if set, else a
    local file store ``./mlruns``."""

    name = "mlflow"
    KEY = re.compile(r"[^\w\-. /]")  # MLflow's names: alphanumerics, underscores, dashes, periods, spaces, slashes

    def __init__(self, settings):
        self.settings = settings
        self.client = self.run_id = None

    @staticmethod
    def tracking_uri(setting: str | None) -> str:
        uri = setting or os.environ.get("MLFLOW_TRACKING_URI") or "mlruns"
        if re.match(r"^[A-Za-z][\w+.-]*:", uri) and not re.match(r"^[A-Za-z]:[\\/]", uri):  # a scheme, not C:\
            return uri
        return Path(uri).expanduser().resolve().as_uri()  # a folder: a file store

    def start(self, config: dict, run_dir: Path) -> None:
        uri = self.tracking_uri(self.settings.tracking_uri)
        if uri.startswith("file:"):
            # MLflow 3 refuses its file store unless asked (it wants a database, which mlflow-skinny cannot write)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        # a tracking server that is down must not hold the run for minutes of retries
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        try:
            from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH
        except ImportError:  # older MLflow
            MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH = 250, 500
        self.client = client = MlflowClient(uri)
        name = self.settings.experiment
        experiment = client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
        run = client.create_run(experiment_id, run_name=self.settings.run_name or default_run_name(run_dir),
                                tags={"ptcli.run_dir": str(run_dir), "mlflow.source.name": "ptcli"})
        self.run_id = run.info.run_id
        params = {}
        for key, value in flatten(config).items():
            text = value if isinstance(value, str) else json.dumps(value)
            params[self.KEY.sub("_", key)[:MAX_ENTITY_KEY_LENGTH]] = text[:MAX_PARAM_VAL_LENGTH]
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # log_batch takes at most 100 params at a time
            client.log_batch(self.run_id, params=items[i:i + 100])
        if config:
            client.log_dict(self.run_id, config, "config.yaml")
        _say(f"mlflow: run {run.info.run_name} ({self.run_id}) in experiment {name} at {uri}")

    def _metrics(self, metrics: dict, step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(self.KEY.sub("_", k), float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i:i + 1000])

    def log(self, metrics: dict, step: int) -> None:
        self._metrics(metrics, step)

    def finish(self, summary: dict, model_dir: Path | None) -> None:
        self._metrics(summary_numbers(summary), summary.get("steps") or 0)
        self.client.log_dict(self.run_id, summary, "summary.json")
        if self.settings.log_model and model_dir is not None and Path(model_dir).is_dir():
            self.client.log_artifacts(self.run_id, str(model_dir), "model")
        self.client.set_terminated(self.run_id, "FINISHED")
        self.run_id = None

    def abort(self) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, "FAILED")
            self.run_id = None


class WandbTracker(Tracker):
    """A Weights & Biases run under ``<run>/wandb``: offline by default (``wandb sync <run>/wandb/offline-run-*``
    uploads it later), ``logger.wandb_mode=online`` with credentials from ``wandb login`` or ``WANDB_API_KEY``. The
    config, metrics by step, the summary and the final model as a ``model`` artifact."""

    name = "wandb"

    def __init__(self, settings):
        self.settings = settings
        self.run = None

    def start(self, config: dict, run_dir: Path) -> None:
        mode = self.settings.wandb_mode
        os.environ.setdefault("WANDB_SILENT", "true")
        os.environ.setdefault("WANDB_CONSOLE", "off")  # no capture of our stdout/stderr
        if mode == "offline":
            os.environ.setdefault("WANDB_MODE", "offline")
        import wandb

        if mode == "online":
            try:
                logged_in = wandb.login(prompt=False, verify=False)  # never an interactive prompt mid-run
            except TypeError:  # an older wandb without prompt=
                logged_in = bool(os.environ.get("WANDB_API_KEY")) or wandb.login(anonymous="never")
            if not logged_in:
                raise RuntimeError("logger.wandb_mode=online needs W&B credentials: run `wandb login` or set "
                                   "WANDB_API_KEY (or use the default logger.wandb_mode=offline)")
        self.run = wandb.init(project=self.settings.project, name=self.settings.run_name or default_run_name(run_dir),
                              dir=str(run_dir), config=config, mode=mode,
                              settings=wandb.Settings(silent=True, console="off"))
        if mode == "offline":
            _say(f"wandb: offline run {Path(self.run.dir).parent} (`wandb sync` uploads it)")
        elif mode == "online":
            _say(f"wandb: {self.run.url}")

    def log(self, metrics: dict, step: int) -> None:
        self.run.log(metrics, step=step)

    def finish(self, summary: dict, model_dir: Path | None) -> None:
        import wandb

        self.run.summary.update(summary)
        if self.settings.log_model and model_dir is not None and Path(model_dir).is_dir():
            artifact = wandb.Artifact(re.sub(r"[^\w\-.]", "_", f"{self.run.name or self.run.id}-model"), type="model")
            artifact.add_dir(str(model_dir))
            self.run.log_artifact(artifact)
        self.run.finish()
        self.run = None

    def abort(self) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1)
            self.run = None


class TrackioTracker(Tracker):
    """A trackio run in ``logger.project``, kept locally in trackio's SQLite store (``$TRACKIO_DIR``, default
    ``~/.cache/huggingface/trackio``; ``trackio show`` opens its dashboard): the flattened config, metrics by step,
    ``summary.json`` and the final model folder as artifacts. No dashboard is launched and nothing goes to the Hub."""

    name = "trackio"

    def __init__(self, settings):
        self.settings = settings
        self.trackio = None

    def start(self, config: dict, run_dir: Path) -> None:
        import inspect

        with _quiet(), _no_hub_lookup():
            import trackio

            options = {"embed": False, "auto_log_gpu": False, "auto_log_cpu": False}  # no dashboard, no sampling
            known = inspect.signature(trackio.init).parameters
            trackio.init(project=self.settings.project, name=self.settings.run_name or default_run_name(run_dir),
                         config=flatten(config), **{k: v for k, v in options.items() if k in known})
        self.run_dir, self.trackio = Path(run_dir), trackio
        from trackio.utils import TRACKIO_DIR

        _say(f"trackio: project {self.settings.project} in {TRACKIO_DIR} (trackio show --project "
             f"{self.settings.project})")

    def log(self, metrics: dict, step: int) -> None:
        self.trackio.log(metrics, step=step)

    def finish(self, summary: dict, model_dir: Path | None) -> None:
        with _quiet():
            numbers_ = summary_numbers(summary)
            if numbers_:
                self.trackio.log(numbers_, step=summary.get("steps"))
            name = re.sub(r"[^\w\-.]", "_", self.settings.run_name or default_run_name(self.run_dir))
            if (self.run_dir / "summary.json").is_file():
                self.trackio.log_artifact(str(self.run_dir / "summary.json"), name=f"{name}-summary", type="summary")
            if self.settings.log_model and model_dir is not None and Path(model_dir).is_dir():
                self.trackio.log_artifact(str(model_dir), name=f"{name}-model", type="model")
            self.trackio.finish()
            self.trackio = None

    def abort(self) -> None:
        if self.trackio is not None:
            with _quiet():
                self.trackio.finish()
            self.trackio = None


@contextlib.contextmanager
def _no_hub_lookup():
    """A local trackio run still asks the Hub who the user is (``whoami``) when a Hugging Face token is set; ptcli's
    runs stay off the network (the run's username is then empty)."""
    try:
        import trackio.run as module
    except ImportError:
        yield
        return
    original = getattr(module, "_get_default_namespace", None)
    if original is None:
        yield
        return

    def offline() -> str:
        raise LookupError("ptcli asks trackio not to look the user up on the Hub")

    module._get_default_namespace = offline
    try:
        yield
    finally:
        module._get_default_namespace = original


def _say(line: str) -> None:
    """Where a tracker logs, once at its start (stderr, with ptcli's other log lines)."""
    print(line, file=sys.stderr, flush=True)


def _quiet():
    """trackio prints several lines (with colours) where ptcli prints one; stdout is for data."""
    import io

    return contextlib.redirect_stdout(io.StringIO())


BACKENDS = {"tensorboard": TensorBoardTracker, "mlflow": MLflowTracker, "wandb": WandbTracker,
            "trackio": TrackioTracker}


def from_config(logger) -> list[Tracker]:
    """The trackers ``logger`` (the config's ``logger`` section) turns on, in a fixed order."""
    return [cls(logger) for key, cls in BACKENDS.items() if _get(logger, key)]


def _get(node, key):
    return node.get(key) if isinstance(node, dict) else getattr(node, key, None)


class Trackers:
    """Several trackers driven as one: a call that fails drops that tracker with one warning on ``stream``
    (stderr), and the others go on."""

    def __init__(self, trackers: list[Tracker], stream=None):
        self.active = list(trackers)
        self.stream = stream
        self.finished = False

    def _each(self, what: str, call) -> None:
        for tracker in list(self.active):
            try:
                call(tracker)
            except Exception as e:  # noqa: BLE001 - a tracker never stops the run
                self.active.remove(tracker)
                first = str(e).splitlines()[0] if str(e) else ""
                first = first if len(first) <= 300 else first[:297] + "..."
                print(f"warning: {tracker.name} tracking stopped ({what} failed: {type(e).__name__}: {first}); "
                      "training goes on, metrics.jsonl has everything",
                      file=self.stream or sys.stderr, flush=True)
                with contextlib.suppress(Exception):
                    tracker.abort()

    def start(self, config: dict, run_dir: Path) -> None:
        self._each("start", lambda t: t.start(config, run_dir))

    def log(self, kind: str, step: int, values: dict) -> None:
        metrics = {f"{kind}/{k}": v for k, v in numbers(values).items()}
        if metrics:
            self._each(f"logging step {step}", lambda t: t.log(metrics, step))

    def finish(self, summary: dict, model_dir: Path | None) -> None:
        self._each("the end of the run", lambda t: t.finish(summary, model_dir))
        self.active, self.finished = [], True

    def abort(self) -> None:
        for tracker in self.active:
            with contextlib.suppress(Exception):
                tracker.abort()
        self.active = []
