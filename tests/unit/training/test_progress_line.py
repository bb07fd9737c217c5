"""The plain progress line: its ETA is the sooner of the steps left and train.max_time's seconds left."""

from __future__ import annotations

import io

from ptcli.training.metrics_log import MetricsLogger

RECORD = {"loss": 2.0, "lr": 1e-3, "grad_norm": 0.5, "tokens_per_s": 1000.0}


def eta(log: MetricsLogger, step: int, elapsed: float) -> str:
    return log._line("train", step, RECORD, elapsed).split("eta ")[1]


def test_the_eta_counts_steps_or_the_time_limit_whichever_ends_first(tmp_path):
    log = MetricsLogger(tmp_path, 1_000_000, stream=io.StringIO())
    log.begin(1_000_000, 0)
    assert eta(log, 100, 100.0) == "277:45:00", "a million steps at one a second"
    log.begin(1_000_000, 0, max_time=2400.0)
    assert eta(log, 100, 100.0) == "0:38:20", "train.max_time=2400 stops it 2300 s from now"
    log.begin(1_000_000, 50, max_time=2400.0, time_before=400.0)  # resumed, 400 s already trained
    assert eta(log, 100, 100.0) == "0:31:40"
    log.begin(200, 0, max_time=2400.0)
    assert eta(log, 100, 100.0) == "0:01:40", "the steps end first"
    log.close()
