"""The end of a training run, for people: the peak memory it took, its curves as a picture (``curves.png``: the
training loss and each logged term, the validation loss and the metric that picks the best checkpoint, by step) and
a summary table at a terminal. Everything is read from ``metrics.jsonl`` and ``summary.json``: the picture can be
redrawn later (``python -m ptcli.training.report <run dir>``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

# Logged per step but not a loss curve.
NOT_CURVES = {"kind", "step", "lr", "grad_norm", "tokens", "epoch", "elapsed", "mfu"}


def peak_memory(device) -> dict:
    """The most memory the run held: the process's peak resident set (CPU), and the allocator's peak on a GPU."""
    import resource

    out = {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}  # Linux reports KiB
    if getattr(device, "type", None) == "cuda":
        import torch

        out["peak_gpu_bytes"] = int(torch.cuda.max_memory_allocated(device))
    return out


def read_metrics(run_dir: Path) -> tuple[list[dict], list[dict]]:
    train, evals = [], []
    path = Path(run_dir) / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        (evals if record.get("kind") == "eval" else train if record.get("kind") == "train" else []).append(record)
    return train, evals


def plot_curves(run_dir: Path, best_metric: str | None = None, title: str | None = None) -> Path | None:
    """``curves.png`` in the run directory: losses (left) and the best-checkpoint metric (right) by step. None when
    nothing was logged or matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    train, evals = read_metrics(run_dir)
    if not train and not evals:
        return None
    metric = f"val_{best_metric}" if best_metric and best_metric != "loss" else None
    has_metric = metric is not None and any(metric in e for e in evals)
    fig, axes = plt.subplots(1, 2 if has_metric else 1, figsize=(11 if has_metric else 6.5, 4), squeeze=False)
    ax = axes[0][0]
    terms = sorted({k for r in train for k, v in r.items() if k not in NOT_CURVES and isinstance(v, (int, float))
                    and not k.endswith("_per_s")})
    for term in terms:
        points = [(r["step"], r[term]) for r in train if isinstance(r.get(term), (int, float))]
        ax.plot(*zip(*points), label=f"train {term}", linewidth=1.6 if term == "loss" else 1.0,
                alpha=1.0 if term == "loss" else 0.7)
    val = [(e["step"], e["val_loss"]) for e in evals if isinstance(e.get("val_loss"), (int, float))]
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss", linewidth=1.8)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("loss")
    if has_metric:
        right = axes[0][1]
        points = [(e["step"], e[metric]) for e in evals if isinstance(e.get(metric), (int, float))]
        right.plot(*zip(*points), "o-", color="tab:green")
        right.set_xlabel("step")
        right.set_ylabel(best_metric)
        right.set_title(f"validation {best_metric}")
        right.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(run_dir) / "curves.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_sweep(sweep_dir: Path, points: list[tuple[Path, str]], best_metric: str | None = None) -> Path | None:
    """``sweep_curves.png``: every point's validation loss (its training loss when it never evaluated) by step on
    one plot, and beside it the best-checkpoint metric, each line labelled with the point's varied overrides.
    None when no point logged anything or matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    runs = [(label, *read_metrics(point)) for point, label in points]
    runs = [r for r in runs if r[1] or r[2]]
    if not runs:
        return None
    metric = f"val_{best_metric}" if best_metric and best_metric != "loss" else None
    has_metric = metric is not None and any(metric in e for _, _, evals in runs for e in evals)
    fig, axes = plt.subplots(1, 2 if has_metric else 1, figsize=(11 if has_metric else 6.5, 4), squeeze=False)
    left = axes[0][0]
    for i, (label, train, evals) in enumerate(runs):
        color = f"C{i % 10}"
        val = [(e["step"], e["val_loss"]) for e in evals if isinstance(e.get("val_loss"), (int, float))]
        if val:
            left.plot(*zip(*val), "o-", color=color, label=label, linewidth=1.6, markersize=3)
        loss = [(r["step"], r["loss"]) for r in train if isinstance(r.get("loss"), (int, float))]
        if loss:
            left.plot(*zip(*loss), color=color, alpha=0.35 if val else 1.0, linewidth=1.0,
                      label=None if val else f"{label} (train)")
        if has_metric:
            points_ = [(e["step"], e[metric]) for e in evals if isinstance(e.get(metric), (int, float))]
            if points_:
                axes[0][1].plot(*zip(*points_), "o-", color=color, label=label, markersize=3)
    left.set(xlabel="step", ylabel="loss", title="validation loss (faint: training loss)")
    left.grid(alpha=0.3)
    left.legend(fontsize=7)
    if has_metric:
        right = axes[0][1]
        right.set(xlabel="step", ylabel=best_metric, title=f"validation {best_metric}")
        right.grid(alpha=0.3)
        right.legend(fontsize=7)
    fig.suptitle(f"ptcli sweep: {sweep_dir}", fontsize=10)
    fig.tight_layout()
    out = Path(sweep_dir) / "sweep_curves.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def summary_rows(summary: dict, unit: str) -> list[tuple[str, str]]:
    """(what, value) rows of the end-of-run table."""

    def gib(n):
        return f"{n / 2**30:.2f} GiB"

    rows = [("steps", f"{summary.get('steps')}"), (unit, f"{summary.get(unit, 0):,}")]
    if summary.get("final_val_loss") is not None:
        rows.append(("final validation loss", f"{summary['final_val_loss']:.4f}"))
    name = summary.get("best_metric_name")
    if summary.get("best_metric") is not None:
        rows.append((f"best {name}", f"{summary['best_metric']:.4f} (step {summary.get('best_step')})"))
    rate = summary.get(f"{unit}_per_second")
    if rate:
        rows.append((f"{unit} per second", f"{rate:,.1f}"))
    if summary.get("mfu") is not None:
        rows.append(("MFU", f"{summary['mfu']:.1%}"))
    rows.append(("wall time", f"{summary.get('wall_seconds', 0):.1f} s"))
    if summary.get("peak_rss_bytes"):
        rows.append(("peak memory (process RSS)", gib(summary["peak_rss_bytes"])))
    if summary.get("peak_gpu_bytes"):
        rows.append(("peak GPU memory", gib(summary["peak_gpu_bytes"])))
    rows.append(("model", str(summary.get("model_dir"))))
    if summary.get("curves"):
        rows.append(("curves", str(summary["curves"])))
    return rows


def show_summary(summary: dict, unit: str, stream=None) -> None:
    """A table at a terminal; nothing otherwise (summary.json and the log lines say it all when piped)."""
    stream = stream or sys.stderr
    if not stream.isatty():
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="ptcli: run summary", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for what, value in summary_rows(summary, unit):
        table.add_row(what, value)
    Console(file=stream, soft_wrap=True).print(table)


if __name__ == "__main__":  # redraw a run's curves: python -m ptcli.training.report <run dir> [best metric]
    print(plot_curves(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None))
