"""Finding a LoRA adapter's base model (torch-free: JSON and YAML reads only)."""

from __future__ import annotations

import json
from pathlib import Path

from ptcli.config.paths import adapter_base, adapter_folder, read_model_config


def _run(tmp_path: Path, recorded: str, started_in: Path) -> Path:
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / ".hydra").mkdir()
    (run / "model" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA",
                                                                    "base_model_name_or_path": recorded}))
    (run / "config.yaml").write_text(f"model:\n  path: {recorded}\n")
    (run / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  runtime:\n    cwd: {started_in}\n")
    return run


def test_a_relative_base_resolves_from_where_the_run_started_not_the_cwd(tmp_path, monkeypatch):
    started = tmp_path / "project"
    (started / "base").mkdir(parents=True)
    (started / "base" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    run = _run(tmp_path, "base", started)
    monkeypatch.chdir(tmp_path)  # somewhere without a base/ folder
    assert adapter_folder(str(run)) == run / "model"
    base, _ = adapter_base(run / "model")
    assert base == str(started / "base")
    assert read_model_config(str(run)) == {"model_type": "gpt2"}  # no ptcli_adapter.json: the base's config


def test_a_missing_base_says_where_it_looked(tmp_path, monkeypatch):
    run = _run(tmp_path, str(tmp_path / "gone"), tmp_path)
    base, tried = adapter_base(run / "model")
    assert base is None and tried == [str(tmp_path / "gone")]
    assert read_model_config(str(run)) is None
