"""Rank-0 logging: metrics.jsonl always; a rich progress bar on a terminal, plain lines otherwise; the experiment
trackers the config turns on (``trackers.py``)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

UNITS = {"tokens": "tok", "images": "img", "seconds": "audio s"}


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class MetricsLogger:
    """Writes one JSON line per log/eval event and shows progress to a person or a log file."""

    def __init__(self, run_dir: Path, total_steps: int | None, enabled: bool = True, tensorboard: bool = False,
                 stream=None, trackers: list | None = None, config: dict | None = None):
        """``trackers``: ``ptcli.training.trackers.Tracker``s (TensorBoard, MLflow, W&B, trackio) that get
        ``config`` (the resolved config) now, every train/eval record, and the summary and final model at
        ``finish``; ``tensorboard=True`` adds a TensorBoard tracker. Rank 0 only: nothing starts when disabled."""
        from ptcli.training.trackers import TensorBoardTracker, Trackers

        self.enabled = enabled
        self.total = total_steps
        self.shown: set | None = None  # the validation metrics the progress line shows (the objective declares them)
        self.unit = "tokens"
        self.start_step = 0
        self.stream = stream or sys.stdout
        self.max_time: float | None = None  # train.max_time in seconds, for the ETA (``begin``)
        self.time_before = 0.0  # training seconds a resumed run had already spent
        self.start = time.time()
        self.progress = None
        trackers = list(trackers or [])
        if tensorboard and not any(isinstance(t, TensorBoardTracker) for t in trackers):
            trackers.append(TensorBoardTracker())
        self.trackers = Trackers(trackers if enabled else [])
        if not enabled:
            return
        self.file = open(Path(run_dir) / "metrics.jsonl", "a", buffering=1)
        self.trackers.start(config or {}, Path(run_dir))
        if self.stream.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeRemainingColumn())
            self.task = self.progress.add_task("train", total=total_steps, info="")
            self.progress.start()

    def info(self, message: str) -> None:
        """A one-off line (run dir, data, model size), printed above the progress bar."""
        if not self.enabled:
            return
        if self.progress:
            self.progress.console.print(message)
        else:
            print(message, file=self.stream, flush=True)

    def begin(self, total_steps: int | None, start_step: int, max_time: float | None = None,
              time_before: float = 0.0) -> None:
        """The loop starts (perhaps resumed at ``start_step``, ``time_before`` training seconds in): set the bar's
        total and the ETA's origin (the sooner of the steps left and ``max_time``). A run resumed in its own
        directory drops the rows the stopped run logged after its checkpoint (they are logged again), so
        metrics.jsonl keeps one row per step."""
        self.total, self.start_step, self.start = total_steps, start_step, time.time()
        self.max_time, self.time_before = max_time, time_before
        if self.enabled and start_step > 0:
            self._drop_after(start_step)
        if self.progress:
            self.progress.update(self.task, total=total_steps, completed=start_step)

    def _drop_after(self, step: int) -> None:
        import os

        path = Path(self.file.name)
        self.file.close()
        lines = path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if _step_of(line) is None or _step_of(line) <= step]
        if len(kept) != len(lines):
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(kept))
            os.replace(tmp, path)
        self.file = open(path, "a", buffering=1)

    def advance(self, step: int) -> None:
        """Move the progress bar every step (host-side only: nothing is read from the device)."""
        if self.progress:
            self.progress.update(self.task, completed=step)

    def log(self, kind: str, step: int, **values) -> None:
        """Record ``values`` at ``step``; ``kind`` is 'train' or 'eval'."""
        if not self.enabled:
            return
        elapsed = time.time() - self.start
        record = {"kind": kind, "step": step, **values, "elapsed": round(elapsed, 3)}
        self.file.write(json.dumps(record) + "\n")
        self.trackers.log(kind, step, values)
        text = self._line(kind, step, values, elapsed)
        if self.progress:
            if kind == "train":
                self.progress.update(self.task, completed=step, info=text)
            else:
                self.progress.console.print(text)
        else:
            print(text, file=self.stream, flush=True)

    def show(self, metrics, unit: str) -> None:
        """Which validation metrics the progress line shows (the others are in metrics.jsonl), and the unit of
        throughput (tokens, images, seconds)."""
        self.shown = {m.name for m in metrics if m.shown}
        self.unit = unit

    def _line(self, kind: str, step: int, v: dict, elapsed: float) -> str:
        total = f"/{self.total}" if self.total else ""
        if kind == "eval":
            shown = [f"{k} {x:.4f}" if abs(x) < 1000 else f"{k} {x:.1f}" for k, x in v.items()
                     if isinstance(x, (int, float)) and (self.shown is None or k.removeprefix("val_") in self.shown)]
            return f"eval step {step}{total} | " + " | ".join(shown[:8])
        parts = [] if self.progress else [f"step {step}{total}"]  # the bar shows the step itself
        terms = [k for k in v if k not in ("loss", "lr", "grad_norm", "tokens", "epoch", "mfu")
                 and not k.endswith("_per_s")]
        rate = f"{v[self.unit + '_per_s']:,.0f} {UNITS.get(self.unit, self.unit)}/s"
        parts += [f"loss {v['loss']:.4f}", *(f"{k} {v[k]:.4f}" for k in terms), f"lr {v['lr']:.2e}",
                  f"grad_norm {v['grad_norm']:.2f}", rate]
        if "mfu" in v:
            parts.append(f"MFU {100 * v['mfu']:.1f}%")
        if self.progress is None:
            parts.append(f"elapsed {_clock(elapsed)}")
            done = step - self.start_step
            left = [elapsed / done * (self.total - step)] if self.total and done > 0 else []
            if self.max_time is not None:  # train.max_time: the run stops then, whatever the step count says
                left.append(max(0.0, self.max_time - self.time_before - elapsed))
            if left:
                parts.append(f"eta {_clock(min(left))}")
        return " | ".join(parts)

    def peek(self, step: int, loss: float) -> None:
        """The loss of the run's first step, on the progress display only (metrics.jsonl and the trackers get the
        log steps' means), so that a slow run shows a loss at once."""
        if not self.enabled:
            return
        total = f"/{self.total}" if self.total else ""
        if self.progress:
            self.progress.update(self.task, info=f"loss {loss:.4f} (first step)")
        else:
            print(f"step {step}{total} | loss {loss:.4f} (first step; the next lines are means over train.log_every "
                  "steps)", file=self.stream, flush=True)

    def finish(self, summary: dict, model_dir: Path | None) -> None:
        """The run is complete: the trackers get its summary and its final model folder, and close."""
        if self.enabled:
            self.trackers.finish(summary, Path(model_dir) if model_dir is not None else None)

    def close(self) -> None:
        """The end, however the run ended: trackers not finished (an error, a signal) are closed as failed."""
        if not self.enabled:
            return
        if self.progress:
            self.progress.stop()
        self.trackers.abort()
        self.file.close()
