"""Rank-0 logging: metrics.jsonl always; a rich progress bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class MetricsLogger:
    """Writes one JSON line per log/eval event and shows progress to a person or a log file."""

    def __init__(self, run_dir: Path, total_steps: int | None, enabled: bool = True, tensorboard: bool = False,
                 stream=None):
        self.enabled = enabled
        self.total = total_steps
        self.start_step = 0
        self.stream = stream or sys.stdout
        self.start = time.time()
        self.progress = None
        self.tb = None
        if not enabled:
            return
        self.file = open(Path(run_dir) / "metrics.jsonl", "a", buffering=1)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                from ptcli.errors import PtcliError

                raise PtcliError("logger=tensorboard needs the tensorboard package",
                                 fix="pip install tensorboard, or use logger=default") from None
            self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
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

    def begin(self, total_steps: int | None, start_step: int) -> None:
        """The loop starts (perhaps resumed at ``start_step``): set the bar's total and the ETA's origin."""
        self.total, self.start_step, self.start = total_steps, start_step, time.time()
        if self.progress:
            self.progress.update(self.task, total=total_steps, completed=start_step)

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
        if self.tb:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.tb.add_scalar(f"{kind}/{key}", value, step)
        text = self._line(kind, step, values, elapsed)
        if self.progress:
            if kind == "train":
                self.progress.update(self.task, completed=step, info=text)
            else:
                self.progress.console.print(text)
        else:
            print(text, file=self.stream, flush=True)

    def _line(self, kind: str, step: int, v: dict, elapsed: float) -> str:
        total = f"/{self.total}" if self.total else ""
        if kind == "eval":
            shown = [f"{k} {x:.4f}" if abs(x) < 1000 else f"{k} {x:.1f}" for k, x in v.items()
                     if isinstance(x, float) and not k.endswith(("_PER", "_LOC", "_ORG", "_MISC"))][:8]
            return f"eval step {step}{total} | " + " | ".join(shown)
        parts = [] if self.progress else [f"step {step}{total}"]  # the bar shows the step itself
        parts += [f"loss {v['loss']:.4f}", f"lr {v['lr']:.2e}", f"grad_norm {v['grad_norm']:.2f}",
                  f"{v['tokens_per_s']:,.0f} tok/s"]
        if self.progress is None:
            parts.append(f"elapsed {_clock(elapsed)}")
            done = step - self.start_step
            if self.total and done > 0:
                parts.append(f"eta {_clock(elapsed / done * (self.total - step))}")
        return " | ".join(parts)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.progress:
            self.progress.stop()
        if self.tb:
            self.tb.close()
        self.file.close()
