"""After a ``-m`` sweep: ``sweep_summary.csv`` and ``sweep_summary.md`` in the sweep directory, one row per point
with the overrides that vary and the final metrics of its ``summary.json`` (or ``metrics.json`` for evaluate),
the best point marked. A Hydra callback, so it runs with every launcher (basic, submitit_local, submitit_slurm)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from hydra.experimental.callback import Callback

# Which metric marks the best point (the first one a sweep's rows have) and whether higher is better: a training run's
# summary says both (train.best_metric and the direction its objective declares); evaluate's metrics.json has loss.
BEST_KEYS = (("best_metric", None), ("best_val_loss", False), ("final_val_loss", False), ("loss", False),
             ("ppl", False))


# The sweep directory of the sweep this process runs (set when it starts), so that a sweep that stops on a failed
# point still gets its summary (ptcli.config.entry.launch writes it then).
CURRENT: dict = {}


class SweepSummary(Callback):
    def on_multirun_start(self, config, **kwargs) -> None:
        import sys

        sweep_dir = Path(config.hydra.sweep.dir)
        CURRENT["dir"] = sweep_dir
        target = str(config.hydra.launcher.get("_target_") or "")
        if target.startswith("hydra_plugins.hydra_submitit_launcher."):  # the points' output goes to job logs
            where = "a Slurm job" if target.endswith("SlurmLauncher") else "a local process"
            logs = str(config.hydra.launcher.submitit_folder).replace("%j", "<job id>")
            name = config.hydra.runtime.choices.get("hydra/launcher") or target.rsplit(".", 1)[-1]
            print(f"ptcli {config.hydra.job.name}: sweep directory {sweep_dir}; each point runs as {where} "
                  f"(hydra/launcher={name}) with its log in {logs}; waiting for them", file=sys.stderr, flush=True)

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        CURRENT.pop("dir", None)
        if sweep_dir.is_dir():
            write_summary(sweep_dir)


def point_row(point: Path) -> dict | None:
    """The overrides and flat final metrics of one sweep point (None if it wrote neither)."""
    import yaml

    overrides_file = point / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        return None
    overrides = yaml.safe_load(overrides_file.read_text()) or []
    row: dict = {"point": point.name}
    row.update(dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o
                    and not o.lstrip("+~").startswith("hydra")))
    for name in ("summary.json", "metrics.json"):
        if (point / name).is_file():
            row.update(flatten(json.loads((point / name).read_text())))
            row["status"] = "done"
            break
    else:
        row["status"] = "failed or stopped"
    return row


def flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float, str)) and not key.endswith(("_dir", "model")):
            out[f"{prefix}{key}"] = value
    return out


def write_summary(sweep_dir: Path) -> Path | None:
    """Write the tables; returns the CSV path (None for a sweep without points)."""
    points = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    rows = [r for r in map(point_row, points) if r is not None]
    if not rows:
        return None
    overrides = [k for k in rows[0] if k != "point" and k in _overrides_of(points[0])]
    varied = [k for k in overrides if len({str(r.get(k)) for r in rows}) > 1]
    columns = ["point"] + [k for k in dict.fromkeys(k for r in rows for k in r) if k not in ("point", "status")]
    columns.append("status")
    best_key, higher = next(((k, h) for k, h in BEST_KEYS if any(_number(r.get(k)) for r in rows)), (None, False))
    if best_key == "best_metric":  # train.best_metric names the metric (accuracy, f1, loss, ...) and its direction
        higher = next((bool(r["best_metric_higher_is_better"]) for r in rows
                       if r.get("best_metric_higher_is_better") is not None), False)
    if best_key:
        scored = [r for r in rows if _number(r.get(best_key))]
        best = (max if higher else min)(scored, key=lambda r: r[best_key])
        for r in rows:
            r["best"] = "*" if r is best else ""
        columns.insert(1, "best")
    csv_path = sweep_dir / "sweep_summary.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    shown = [c for c in columns if c in ("point", "best", "status", "steps", best_key) or c in varied
             or c.startswith(("final_val", "accuracy", "f1", "rouge", "ppl", "bits_per_byte"))]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(_cell(r.get(c, "")) for c in shown) + " |" for r in rows]
    note = f"\nBest point (*) by `{best_key}` ({'higher' if higher else 'lower'} is better).\n" if best_key else "\n"
    if plot_points(sweep_dir, points, rows, varied):
        note += "\n![every point's curves](sweep_curves.png)\n"
    (sweep_dir / "sweep_summary.md").write_text("\n".join(lines) + "\n" + note)
    return csv_path


def plot_points(sweep_dir: Path, points: list[Path], rows: list[dict], varied: list[str]) -> bool:
    """``sweep_curves.png`` (training.report.plot_sweep), each point labelled by what varies; never fails the sweep."""
    by_name = {r["point"]: r for r in rows}
    labelled = [(p, f"{p.name}: " + ", ".join(f"{k}={by_name[p.name].get(k)}" for k in varied) if varied else p.name)
                for p in points if p.name in by_name]
    metric = next((r.get("best_metric_name") for r in rows if r.get("best_metric_name")), None)
    try:
        from ptcli.training.report import plot_sweep

        return plot_sweep(sweep_dir, labelled, metric) is not None
    except Exception:  # noqa: BLE001 - a picture is a convenience; the tables are the record
        return False


def _overrides_of(point: Path) -> set:
    import yaml

    overrides = yaml.safe_load((point / ".hydra" / "overrides.yaml").read_text()) or []
    return {o.lstrip("+~").split("=", 1)[0] for o in overrides if "=" in o}


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
