"""The end-of-run report: curves drawn from metrics.jsonl (every logged loss term, validation loss, the best-metric
panel), the summary table's rows, the peak memory read from the OS."""

from __future__ import annotations

import io
import json

import pytest

from ptcli.training import report


def write_metrics(run, evals=True):
    lines = [{"kind": "train", "step": s, "loss": 1 / s, "kd_loss": 0.5 / s, "lr": 1e-3, "mfu": 0.1}
             for s in (10, 20, 30)]
    if evals:
        lines += [{"kind": "eval", "step": s, "val_loss": 1.2 / s, "val_accuracy": 0.5 + s / 100} for s in (10, 30)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines) + "not json\n")


def test_curves_are_drawn_from_the_metrics_log(tmp_path):
    PIL = pytest.importorskip("PIL.Image")
    pytest.importorskip("matplotlib")
    write_metrics(tmp_path)
    out = report.plot_curves(tmp_path, "accuracy", title="a run")
    assert out == tmp_path / "curves.png"
    with PIL.open(out) as image:
        wide = image.size
    write_metrics(tmp_path, evals=False)
    with PIL.open(report.plot_curves(tmp_path, "accuracy")) as image:
        assert image.size[0] < wide[0], "no metric panel without evaluations"
    train, evals = report.read_metrics(tmp_path)
    assert len(train) == 3 and evals == []


def test_nothing_logged_draws_nothing(tmp_path):
    assert report.plot_curves(tmp_path, "loss") is None


def test_the_summary_table_names_what_a_person_looks_for():
    summary = {"steps": 40, "tokens": 1234, "final_val_loss": 0.5, "best_metric": 0.9, "best_metric_name": "accuracy",
               "best_step": 30, "tokens_per_second": 100.0, "mfu": 0.05, "wall_seconds": 12.3,
               "peak_rss_bytes": 3 * 2**30, "model_dir": "/runs/x/model", "curves": "/runs/x/curves.png"}
    rows = dict(report.summary_rows(summary, "tokens"))
    assert rows["best accuracy"] == "0.9000 (step 30)" and rows["peak memory (process RSS)"] == "3.00 GiB"
    assert rows["MFU"] == "5.0%" and rows["curves"] == "/runs/x/curves.png"
    piped = io.StringIO()
    report.show_summary(summary, "tokens", piped)
    assert piped.getvalue() == "", "no table when piped"


def test_peak_memory_is_the_processes_own():
    import resource

    peak = report.peak_memory(None)["peak_rss_bytes"]
    assert peak >= resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 > 0
