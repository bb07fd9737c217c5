"""The CLI as a user meets it: help, config printing, errors and exit codes, user config folders, fast start."""

from __future__ import annotations

import re
import sys

import pytest

from tests.support import REPO, run_cli


def imported_modules(args: list[str], cwd) -> set[str]:
    """Top-level modules imported by ``python -X importtime -m ptcli ARGS``."""
    import os
    import subprocess

    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "ptcli", *args], cwd=cwd, text=True,
                          capture_output=True, env={**os.environ, "PTCLI_DEBUG": ""})
    return {m.group(1).split(".")[0] for m in re.finditer(r"\|\s+([\w.]+)\s*$", proc.stderr, re.M)}


def test_help_lists_verbs():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for verb in ("pretrain", "finetune", "generate", "evaluate", "config"):
        assert verb in proc.stdout


@pytest.mark.parametrize("verb", ["pretrain", "finetune", "generate", "evaluate"])
def test_verb_help_lists_groups_and_options(verb):
    proc = run_cli(verb, "--help")
    assert proc.returncode == 0
    assert re.search(r"model: .*gpt2-tiny", proc.stdout)
    assert "device: auto, cpu, cuda" in proc.stdout
    if verb in ("pretrain", "evaluate"):
        listed = re.search(r"objective: ([\w, ]+)", proc.stdout)
        assert listed and {"classification", "clm", "contrastive", "image_classification", "mlm"} <= set(
            listed.group(1).split(", ")), proc.stdout


def test_new_yaml_shows_in_help_and_composes_from_config_dir(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "my-bert.yaml").write_text(
        (REPO / "configs" / "model" / "bert-tiny.yaml").read_text().replace("layers: 4", "layers: 3"))
    help_ = run_cli("pretrain", "--config-dir", str(tmp_path), "--help")
    assert "my-bert" in help_.stdout
    proc = run_cli("config", "pretrain", "--config-dir", str(tmp_path), "model=my-bert", "objective=mlm")
    assert proc.returncode == 0, proc.stderr
    assert "layers: 3" in proc.stdout
    env_proc = run_cli("config", "pretrain", "model=my-bert", "objective=mlm", env={"PTCLI_CONFIG_PATH": str(tmp_path)})
    assert env_proc.returncode == 0 and "layers: 3" in env_proc.stdout
    without = run_cli("config", "pretrain", "model=my-bert")
    assert without.returncode == 2 and "unknown model 'my-bert'" in without.stderr


def test_plus_objective_form_works():
    proc = run_cli("config", "pretrain", "+objective=mlm")
    assert proc.returncode == 0, proc.stderr
    assert "ptcli.objectives.mlm.MaskedLM" in proc.stdout and "arch: bert" in proc.stdout


def test_config_prints_resolved_yaml_with_overrides_and_every_default():
    proc = run_cli("config", "pretrain", "optim.lr=3e-4", "~optim.eps", "+train.note=hi", "dataset=text",
                   "dataset.files=[a.txt]", "dataset.document=line")
    assert proc.returncode == 0, proc.stderr
    assert "lr: 0.0003" in proc.stdout and "note: hi" in proc.stdout and "\n  eps:" not in proc.stdout
    # settings the YAML files leave at their defaults: set on the command line, and shown with their defaults
    assert "document: line" in proc.stdout and "encoding_errors: fail" in proc.stdout
    assert "keep_last: 2" in proc.stdout and "timeout_s: 1800" in proc.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["optim.lrr=1e-3"], "unknown key 'optim.lrr' (did you mean 'optim.lr'?)"),
    (["train.batch_size=abc"], "'train.batch_size' must be an integer, got 'abc'"),
    (["dataset=text"], "missing required value 'dataset.files'"),
    (["model=gpt3"], "unknown model 'gpt3'"),
    (["dataset.files=[nope.txt]", "dataset=text"], "nope.txt"),
    (["train.batch_size=30", "train.grad_accum=4"], "must be divisible by train.grad_accum"),
    (["dataset.seq_len=1024"], "exceeds the model's maximum positions (256)"),
    (["model=gpt2-tiny", "objective=mlm"], "objective mlm needs an encoder"),
    (["key=[1,2"], "cannot read the override"),
    (["device.timeout_s=0"], "device.timeout_s must be at least 1 second"),
    (["--max_steps", "10"], "takes its settings as key=value overrides (Hydra's grammar): train.max_steps=10"),
])
def test_config_errors_are_one_screen_with_exit_2(args, message):
    proc = run_cli("pretrain", "--dry-run", *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) <= 12
    assert proc.stderr.startswith("ptcli: error:")


def test_unknown_option_lists_valid_ones():
    proc = run_cli("pretrain", "--dry-run", "device=tpu")
    assert proc.returncode == 2
    assert "Choose one of: auto, cpu, cuda" in proc.stderr


def test_debug_shows_the_traceback():
    proc = run_cli("pretrain", "--dry-run", "--debug", "optim.lrr=1")
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def test_usage_error_exits_2():
    assert run_cli("no-such-verb").returncode == 2
    assert run_cli("config", "pretrainn").returncode == 2


@pytest.mark.parametrize("verb", ["pretrain", "finetune", "generate", "evaluate"])
def test_dry_run_prints_config_and_estimate(verb, tmp_path):
    args = []
    if verb == "finetune":
        (tmp_path / "t.csv").write_text("text,label\nhi,1\n")
        args = [f"dataset.files=[{tmp_path / 't.csv'}]"]
    if verb in ("generate", "evaluate"):
        (tmp_path / "config.json").write_text('{"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 2,'
                                              ' "n_positions": 256, "vocab_size": 500}')
        args = [f"model.path={tmp_path}"]
    proc = run_cli(verb, "--dry-run", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "# dry run" in proc.stdout and "parameters" in proc.stdout
    assert not (tmp_path / "outputs").exists(), "a dry run creates no run directory"


@pytest.mark.parametrize(("what", "message"), [
    ("missing", "'{tmp}/missing' does not exist"),
    ("", "no complete checkpoint in '{tmp}'"),
])
def test_export_names_a_missing_checkpoint(tmp_path, what, message):
    proc = run_cli("export", str(tmp_path / what) if what else str(tmp_path), str(tmp_path / "out"))
    assert proc.returncode == 2 and proc.stderr.startswith("ptcli: error:")
    assert message.format(tmp=tmp_path) in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_config_cp_copies_a_shipped_config_that_then_composes_as_a_new_option(tmp_path):
    proc = run_cli("config", "cp", "model/bert-tiny", str(tmp_path / "mine"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    copy = tmp_path / "mine" / "model" / "my-bert-tiny.yaml"
    assert f"--config-dir {tmp_path / 'mine'} model=my-bert-tiny" in proc.stderr
    copy.write_text(copy.read_text().replace("layers: 4", "layers: 3"))
    proc = run_cli("config", "pretrain", "--config-dir", str(tmp_path / "mine"), "model=my-bert-tiny",
                   "+objective=mlm", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "layers: 3" in proc.stdout
    again = run_cli("config", "cp", "model/bert-tiny", str(tmp_path / "mine"), cwd=tmp_path)
    assert again.returncode == 2 and "exists already" in again.stderr


def test_verb_help_lists_its_settings_with_defaults_and_meanings():
    proc = run_cli("generate", "--help")
    assert proc.returncode == 0
    assert re.search(r"max_new_tokens=50", proc.stdout) and "greedy" in proc.stdout
    assert "ptcli config generate` prints every key" in proc.stdout


@pytest.mark.parametrize("args", [["--help"], ["pretrain", "--help"], ["serve", "--help"], ["explain", "--help"],
                                  ["config", "pretrain"],
                                  ["pretrain", "--dry-run"], ["pretrain", "--dry-run", "optim.lrr=1"],
                                  ["export", "no-such-run", "out"], ["convert", "no-such-folder", "out"]])
def test_fast_paths_do_not_import_torch(args, tmp_path):
    modules = imported_modules(args, tmp_path)
    assert "ptcli" in modules
    assert not {"torch", "transformers", "fastapi", "uvicorn"} & modules


def test_python_dash_m_and_version():
    proc = run_cli("--version")
    assert proc.returncode == 0 and re.match(r"ptcli \d+\.\d+", proc.stdout)
