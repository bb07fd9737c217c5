"""sweep_summary.csv/.md: one row per sweep point, the varying overrides, the best point marked."""

from __future__ import annotations

import csv
import json

from ptcli.launch.sweep import write_summary


def make_point(sweep, n: int, overrides: list[str], summary: dict | None) -> None:
    point = sweep / str(n)
    (point / ".hydra").mkdir(parents=True)
    (point / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if summary is not None:
        (point / "summary.json").write_text(json.dumps(summary))


def test_finetune_sweep_marks_the_highest_accuracy_and_failed_points(tmp_path):
    accuracy = {"best_metric_name": "accuracy", "best_metric_higher_is_better": True}
    make_point(tmp_path, 0, ["optim.lr=1e-5", "seed=0"], {"best_metric": 0.81, **accuracy,
                                                          "final_val": {"accuracy": 0.8, "loss": 0.5}})
    make_point(tmp_path, 1, ["optim.lr=5e-5", "seed=0"], {"best_metric": 0.9, **accuracy,
                                                          "final_val": {"accuracy": 0.9, "loss": 0.6}})
    make_point(tmp_path, 2, ["optim.lr=1e-4", "seed=0"], None)
    rows = list(csv.DictReader(write_summary(tmp_path).open()))
    assert [r["best"] for r in rows] == ["", "*", ""]
    assert [r["status"] for r in rows] == ["done", "done", "failed or stopped"]
    assert rows[1]["final_val.accuracy"] == "0.9"
    table = (tmp_path / "sweep_summary.md").read_text()
    assert "| optim.lr |" in table.replace("best | optim.lr", "| optim.lr") and "seed" not in table
    assert "by `best_metric` (higher is better)" in table


def test_lower_is_better_metrics_prefer_lower_as_the_summary_declares(tmp_path):
    """The direction comes from the run (its objective declares it), not from the metric's name: 'wer' is lower."""
    make_point(tmp_path, 0, ["a=1"], {"best_metric": 0.3, "best_metric_name": "wer",
                                      "best_metric_higher_is_better": False})
    make_point(tmp_path, 1, ["a=2"], {"best_metric": 0.2, "best_metric_name": "wer",
                                      "best_metric_higher_is_better": False})
    assert [r["best"] for r in csv.DictReader(write_summary(tmp_path).open())] == ["", "*"]
    assert write_summary(tmp_path / "empty") is None if (tmp_path / "empty").mkdir() is None else False


def test_every_points_curves_go_on_one_picture(tmp_path):
    from PIL import Image

    for n, lr in enumerate(("1e-3", "3e-4")):
        make_point(tmp_path, n, [f"optim.lr={lr}"], {"best_metric": 0.5 + n / 10, "best_metric_name": "accuracy",
                                                     "best_metric_higher_is_better": True})
        rows = [{"kind": "train", "step": s, "loss": 3.0 / s + n} for s in range(1, 11)]
        rows += [{"kind": "eval", "step": s, "val_loss": 3.2 / s + n, "val_accuracy": 0.5 + s / 100} for s in (5, 10)]
        (tmp_path / str(n) / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_summary(tmp_path)
    picture = tmp_path / "sweep_curves.png"
    assert Image.open(picture).size[0] > 1000, "loss and accuracy side by side"
    assert "![every point's curves](sweep_curves.png)" in (tmp_path / "sweep_summary.md").read_text()
    (tmp_path / "0" / "metrics.jsonl").unlink()
    (tmp_path / "1" / "metrics.jsonl").unlink()
    picture.unlink()
    write_summary(tmp_path)
    assert not picture.exists() and "sweep_curves" not in (tmp_path / "sweep_summary.md").read_text()
