"""scripts/bench_gpu.sh runs end to end (on CPU, --cpu-smoke) and writes its JSON and Markdown table."""

from __future__ import annotations

import json
import subprocess

from tests.support import REPO


def test_the_gpu_benchmark_runs_on_cpu_and_writes_its_report(tmp_path):
    proc = subprocess.run(["bash", str(REPO / "scripts" / "bench_gpu.sh"), str(tmp_path / "out"), "--cpu-smoke"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "bench_gpu.json").read_text())
    assert report["cpu_smoke"] is True
    assert [(r["model"], r["compile"], r["gpus"]) for r in report["rows"]] == [("gpt2-124m", False, 1),
                                                                              ("llama-350m", False, 1)]
    for row in report["rows"]:
        assert row["bare_tokens_per_s"] > 0 and row["ptcli_tokens_per_s"] > 0
        assert row["ratio"] == row["ptcli_tokens_per_s"] / row["bare_tokens_per_s"]
        assert row["params"] > 0
    table = (tmp_path / "out" / "bench_gpu.md").read_text()
    assert "| model | compile | GPUs | bare tokens/s | ptcli tokens/s |" in table
    assert table.count("| off | 1 |") == 2
