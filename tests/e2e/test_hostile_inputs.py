"""Hostile inputs and faults (issue #12), one test per class at least: a downloaded file never runs code, a mistake
never deletes files or loses work, every error is one screen with the right exit code, before any work.

Each test asserts the exit code, that no traceback appears, that the message names the problem and the fix, and
that nothing was lost or written where it should not be."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import TINY, TINY_MODEL, assert_one_screen, records, run_cli

pytestmark = pytest.mark.slow


def pretrain_run(tmp_path: Path, *extra: str, name: str = "run") -> Path:
    run = tmp_path / name
    proc = run_cli("pretrain", *TINY, "train.max_steps=6", "train.save_every=3", "train.keep_last=5",
                   "train.eval_every=1000", f"hydra.run.dir={run}", *extra, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return run


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One finished tiny run (checkpoints at steps 3 and 6) the tests copy before they damage anything."""
    return pretrain_run(tmp_path_factory.mktemp("trained"))


def copy_run(run: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(run, to, symlinks=True)
    return to


class Payload:
    """A pickle that runs a shell command when it is loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ---- 1. a crafted FSDP .metadata never runs

def test_a_crafted_sharded_checkpoint_is_refused_and_runs_nothing(trained, tmp_path):
    run = copy_run(trained, tmp_path / "run")
    step = run / "checkpoints" / "step-00000006"
    (step / "sharded").mkdir()
    marker = tmp_path / "pwned"
    (step / "sharded" / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    exported = run_cli("export", str(step), str(tmp_path / "out"), cwd=tmp_path)
    assert_one_screen(exported, 2, "posix.system", "not loaded", "could run code")
    resumed = run_cli("pretrain", *TINY, "train.max_steps=8", f"train.resume={step}",
                      f"hydra.run.dir={tmp_path / 'again'}", cwd=tmp_path)
    assert_one_screen(resumed, 2, "posix.system")
    assert not marker.exists() and not (tmp_path / "out").exists()


# ---- 2. a _target_ outside the allowlist is never built

def test_a_run_directorys_config_selects_registered_classes_only(trained, tmp_path):
    import yaml

    run = copy_run(trained, tmp_path / "run")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    victim = tmp_path / "written-by-the-config"
    cfg["objective"] = {"_target_": "ptcli.training.checkpoint.shutil.copyfile", "src": str(run / "config.yaml"),
                        "dst": str(victim)}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = run_cli("evaluate", f"model.path={run}", "device=cpu", cwd=tmp_path)
    assert_one_screen(proc, 2, "ptcli.training.checkpoint.shutil.copyfile", "it is not built")
    assert not victim.exists()
    cfg["objective"] = {"_target_": "os.system", "command": f"touch {victim}"}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = run_cli("evaluate", f"model.path={run}", "device=cpu", cwd=tmp_path)
    assert_one_screen(proc, 2, "'os.system' is neither one of ptcli's own nor allowed by you")
    assert not victim.exists()


def test_a_target_on_the_command_line_must_still_be_a_class_of_its_kind(tmp_path):
    proc = run_cli("pretrain", "--dry-run", "objective._target_=ptcli.training.checkpoint.shutil.copyfile",
                   "+objective.src=a", "+objective.dst=b", cwd=tmp_path)
    assert_one_screen(proc, 2, "ptcli.training.checkpoint.shutil.copyfile", "it is not built")
    assert not (tmp_path / "b").exists() and not (tmp_path / "outputs").exists()


# ---- 3. a model folder's Python runs only when typed on the command line

def evil_model(tmp_path: Path, marker: Path) -> Path:
    """A model folder whose config names its own configuration class (auto_map): importing it writes ``marker``."""
    from tests.support import tiny_models

    folder = tmp_path / "evil"
    import shutil

    shutil.copytree(tiny_models(tmp_path / "models")["gpt2"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig",
                          "AutoModelForCausalLM": "configuration_evil.EvilModel"}
    config["model_type"] = "evil-gpt2"  # not a family transformers knows: only the folder's code could load it
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
        "from transformers import GPT2Config, GPT2LMHeadModel\n\n"
        "class EvilConfig(GPT2Config):\n    model_type = 'evil-gpt2'\n\n"
        "class EvilModel(GPT2LMHeadModel):\n    config_class = EvilConfig\n")
    return folder


def test_remote_code_never_runs_from_a_folder_or_a_config_file(tmp_path):
    marker = tmp_path / "code-ran"
    folder = evil_model(tmp_path, marker)
    env = {"HF_HOME": str(tmp_path / "hf")}
    proc = run_cli("generate", f"model.path={folder}", "prompt=hi", "device=cpu", cwd=tmp_path, env=env)
    assert_one_screen(proc, 2, "needs its own Python code", "model.trust_remote_code=true")
    assert not marker.exists()
    configs = tmp_path / "configs" / "model"
    configs.mkdir(parents=True)
    (configs / "sneaky.yaml").write_text(f"# a preset\n# Run: x\npath: {folder}\nextra: {{trust_remote_code: true}}\n")
    proc = run_cli("generate", "--config-dir", str(tmp_path / "configs"), "model=sneaky", "prompt=hi", cwd=tmp_path,
                   env=env)
    assert_one_screen(proc, 2, "model.extra.trust_remote_code is not honoured")
    (configs / "sneaky.yaml").write_text(f"# a preset\n# Run: x\npath: {folder}\ntrust_remote_code: true\n")
    proc = run_cli("generate", "--config-dir", str(tmp_path / "configs"), "model=sneaky", "prompt=hi", cwd=tmp_path,
                   env=env)
    assert_one_screen(proc, 2, "came from a config file")
    assert not marker.exists()
    # typed on the command line: a warning naming the files, then transformers runs them
    proc = run_cli("generate", f"model.path={folder}", "model.trust_remote_code=true", "prompt=hi", "device=cpu",
                   "max_new_tokens=2", cwd=tmp_path, env=env)
    assert "configuration_evil.py" in proc.stderr and marker.exists()


def test_a_known_family_with_an_auto_map_loads_natively_without_running_the_folders_code(tmp_path, models):
    import shutil

    marker, folder = tmp_path / "code-ran", tmp_path / "known"
    shutil.copytree(models["gpt2"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_evil.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    proc = run_cli("generate", f"model.path={folder}", "prompt=hi", "max_new_tokens=2", "device=cpu", cwd=tmp_path,
                   env={"HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()


# ---- 5. export never deletes a folder's files

def test_export_never_replaces_a_folder_without_force_nor_ever_a_parent(trained, tmp_path):
    important = tmp_path / "m" / "important"
    important.mkdir(parents=True)
    (important / "thesis.txt").write_text("years of work")
    step = trained / "checkpoints" / "step-00000006"
    proc = run_cli("export", str(step), str(important), cwd=tmp_path)
    assert_one_screen(proc, 2, "exists and is not empty", "--force")
    assert (important / "thesis.txt").read_text() == "years of work"
    for target in ("..", ".", str(trained)):
        proc = run_cli("export", str(step), target, "--force", cwd=tmp_path / "m")
        assert_one_screen(proc, 2, "exporting there would replace it")
    assert (important / "thesis.txt").is_file() and (trained / "config.yaml").is_file()
    forced = run_cli("export", str(step), str(important), "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert (important / "config.json").is_file() and not (important / "thesis.txt").exists()
    assert not [p for p in important.parent.iterdir() if p.name.startswith((".tmp-", ".old-"))], "no debris"


# ---- 6. leftovers of a killed save or prune are cleaned up

def test_unfinished_checkpoint_folders_are_removed_on_resume(trained, tmp_path):
    run = copy_run(trained, tmp_path / "run")
    checkpoints = run / "checkpoints"
    (checkpoints / ".tmp-step-00000009").mkdir()
    (checkpoints / ".trash-step-00000001").mkdir()
    (checkpoints / "step-00000002").mkdir()  # half pruned: its state.json already gone
    (checkpoints / "step-00000002" / "model.safetensors").write_bytes(b"x" * 10)
    proc = run_cli("pretrain", *TINY, "train.max_steps=7", "train.save_every=3", "train.keep_last=5",
                   "train.eval_every=1000", "train.resume=auto", f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "removed 3 unfinished folder(s)" in proc.stderr
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-00000003", "step-00000006", "step-00000007"]


# ---- 7. Ctrl-C: the first stops after the step with a checkpoint, a second at once

def start(tmp_path: Path, run: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "ptcli", "pretrain", *TINY, "train.max_steps=100000",
                             "train.save_every=100000", "train.eval_every=100000", f"hydra.run.dir={run}", *extra],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_steps(run: Path, proc, steps: int = 3, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (run / "metrics.jsonl").is_file() and len(records(run)) >= steps:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.kill()
    pytest.fail("the run did not start")


def test_ctrl_c_checkpoints_and_a_second_stops_at_once(tmp_path):
    run = tmp_path / "run"
    proc = start(tmp_path, run)
    wait_for_steps(run, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 3, err
    assert "Ctrl-C: stopping after this step" in err and "train.resume=auto" in err and "Traceback" not in err
    saved = sorted((run / "checkpoints").iterdir())
    assert len(saved) == 1 and (saved[0] / "state.json").is_file()
    # steps of about a second, so that the second Ctrl-C arrives while the step is still running
    again = start(tmp_path, tmp_path / "second", "model.hidden=256", "model.layers=4", "dataset.seq_len=128",
                  "train.batch_size=32", "device.threads=1", "train.save_every=2")
    wait_for_steps(tmp_path / "second", again, steps=3)
    again.send_signal(signal.SIGINT)
    time.sleep(0.1)
    again.send_signal(signal.SIGINT)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 130, err
    assert "interrupted at once (a second Ctrl-C): the last checkpoint, step-" in err and "Traceback" not in err


# ---- 8 and 9. a damaged checkpoint is skipped (or named), and metrics.jsonl keeps one row per step

def test_a_damaged_newest_checkpoint_is_skipped_and_the_rows_stay_one_per_step(trained, tmp_path):
    run = copy_run(trained, tmp_path / "run")
    weights = run / "checkpoints" / "step-00000006" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    proc = run_cli("pretrain", *TINY, "train.max_steps=6", "train.save_every=3", "train.keep_last=5",
                   "train.eval_every=1000", "train.resume=auto", f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "checkpoint step-00000006 is damaged (model.safetensors is 1000 bytes" in proc.stderr
    assert "resumed from" in proc.stderr and "step-00000003" in proc.stderr
    steps = [r["step"] for r in records(run)]
    assert steps == sorted(set(steps)) == [1, 2, 3, 4, 5, 6], "one row per step after the redone steps"
    # step 6 was rewritten by the resumed run: damage it again and name it
    weights.write_bytes(b"\0" * weights.stat().st_size)
    named = run_cli("pretrain", *TINY, "train.max_steps=9", f"train.resume={weights.parent}",
                    f"hydra.run.dir={tmp_path / 'named'}", cwd=tmp_path)
    assert_one_screen(named, 2, "step-00000006 is damaged", "does not match the digest", "earlier checkpoint")
    assert "weights_only" not in named.stderr and not (tmp_path / "named").exists()


# ---- 10. labels that cannot make a classifier

@pytest.mark.parametrize(("rows", "needle"), [
    ("a,pos\nb,pos\nc,pos\n", "a single label ('pos')"),
    ("a,0\nb,1\nc,neg\nd,pos\n", "mix numbers (0, 1) and names (neg, pos)"),
])
def test_label_sets_that_cannot_make_a_classifier_are_refused(tmp_path, rows, needle):
    (tmp_path / "t.csv").write_text("text,label\n" + rows * 5)
    proc = run_cli("finetune", "model=bert-tiny", "model.vocab_size=300", "dataset.files=[t.csv]",
                   "train.max_steps=2", "device=cpu", cwd=tmp_path)
    assert_one_screen(proc, 2, needle)
    assert "num_labels=1" not in proc.stderr.split("(for numeric")[0], "the user never set num_labels=1"
    assert not list((tmp_path / "outputs" / "finetune").glob("20*")) if (tmp_path / "outputs").exists() else True


# ---- 11. NER tags without a scheme

def test_ner_tags_without_prefixes_are_refused_or_read_as_io_when_declared(tmp_path):
    sentences = ["Peter PER\nlives O\nin O\nParis LOC\n", "Anna PER\nmet O\nTom PER\n"] * 20
    (tmp_path / "ner.txt").write_text("\n".join(sentences))
    args = ["finetune", "objective=token_classification", "dataset=conll", "dataset.files=[ner.txt]", "model=bert-tiny",
            "model.vocab_size=300", "train.max_steps=2", "train.eval_every=2", "train.batch_size=4", "device=cpu"]
    proc = run_cli(*args, cwd=tmp_path)
    assert_one_screen(proc, 2, "lacks a B-/I- prefix", "objective.tag_scheme=IO")
    io = run_cli(*args, "objective.tag_scheme=IO", "train.log_every=1", cwd=tmp_path)
    assert io.returncode == 0, io.stderr
    last = records((tmp_path / "outputs" / "finetune" / "latest").resolve(), "eval")[-1]
    assert "val_f1_PER" in last and "val_f1_LOC" in last and not any(k.endswith("_ER") for k in last)


# ---- 12. a damaged token cache is rebuilt

def test_a_truncated_or_rewritten_token_cache_is_rebuilt(tmp_path):
    cache = tmp_path / "cache"
    env = {"PTCLI_CACHE_DIR": str(cache)}
    args = ["pretrain", *TINY, "train.max_steps=1"]
    assert run_cli(*args, cwd=tmp_path, env=env).returncode == 0
    tokens = next(cache.glob("packed/*/tokens.bin"))
    reference = tokens.read_bytes()
    for damaged in (reference[: len(reference) // 2], bytes(len(reference))):
        tokens.write_bytes(damaged)
        proc = run_cli(*args, cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr
        assert "is damaged" in proc.stderr and "rebuilding" in proc.stderr
        assert next(cache.glob("packed/*/tokens.bin")).read_bytes() == reference


# ---- 14 and 15. values that cannot work: exit 2 at pre-flight; an input error leaves no run directory

@pytest.mark.parametrize(("args", "needle"), [
    (["optim.lr=-1"], "optim.lr must not be negative"),
    (["dataset.seq_len=0"], "dataset.seq_len must be at least 2"),
    (["train.max_steps=0"], "train.max_steps must be positive"),
    (["train.workers=-1"], "train.workers must be 0 or more"),
])
def test_values_that_cannot_work_fail_before_a_run_directory(tmp_path, args, needle):
    for dry in ([], ["--dry-run"]):
        proc = run_cli("pretrain", *dry, *TINY, *args, cwd=tmp_path)
        assert_one_screen(proc, 2, needle)
    assert not (tmp_path / "outputs").exists()


def test_a_wild_memory_estimate_warns(tmp_path):
    proc = run_cli("pretrain", "--dry-run", "model.hidden=1000000", "model.heads=1000", cwd=tmp_path)
    assert proc.returncode == 0 and "far beyond any single machine" in proc.stdout


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path):
    (tmp_path / "cfg" / "model").mkdir(parents=True)
    (tmp_path / "cfg" / "model" / "bad.yaml").write_text("arch: gpt2\nlayers: [1, 2\nheads: 4\n")
    proc = run_cli("pretrain", "--config-dir", str(tmp_path / "cfg"), "model=bad", cwd=tmp_path)
    assert_one_screen(proc, 2, "not valid YAML", "bad.yaml:3")
    assert not (tmp_path / "outputs").exists()


def test_an_input_error_found_while_reading_leaves_no_run_directory(tmp_path):
    (tmp_path / "t.csv").write_text("text,label\ngood,pos\nbad,neg,extra\n")
    first = run_cli("finetune", *TINY_MODEL, "model=bert-tiny", "dataset.files=[t.csv]", "train.max_steps=1",
                    cwd=tmp_path)
    assert_one_screen(first, 2, "row has 3 fields", "t.csv:3")
    assert not list((tmp_path / "outputs" / "finetune").glob("20*"))
    assert not (tmp_path / "outputs" / "finetune" / "latest").exists()


# ---- 16. raw tracebacks no more

def test_a_tokenizer_bigger_than_the_model_is_one_screen(tmp_path, models):
    import shutil

    folder = tmp_path / "mismatched"
    shutil.copytree(models["gpt2"], folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(models["bert"] / name, folder / name)  # 400 WordPiece tokens ...
    config = json.loads((folder / "config.json").read_text())
    config["vocab_size"] = 100  # ... for a model with 100 embeddings
    (folder / "config.json").write_text(json.dumps(config))
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(**{k: v for k, v in config.items() if k in GPT2Config().to_dict()})).save_pretrained(
        folder)
    for verb in ("generate", "evaluate"):
        proc = run_cli(verb, f"model.path={folder}", "prompt=hi" if verb == "generate" else "output=json",
                       "device=cpu", cwd=tmp_path)
        assert_one_screen(proc, 2, "tokens but the model has only 100 embeddings")


def test_binary_data_on_stdin_is_named(tmp_path, models):
    (tmp_path / "prompts.gz").write_bytes(gzip.compress(b"hello\n"))
    with open(tmp_path / "prompts.gz", "rb") as stdin:
        proc = subprocess.run([sys.executable, "-m", "ptcli", "generate", f"model.path={models['gpt2']}", "device=cpu"],
                              stdin=stdin, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert_one_screen(proc, 2, "stdin holds a gzip-compressed file", "gunzip")


def test_a_read_only_output_folder_fails_before_anything(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("root can write anywhere: the check is exercised through a file in the way instead")
        proc = run_cli("pretrain", *TINY, f"run.out_dir={locked}", cwd=tmp_path)
        assert_one_screen(proc, 2, "is not writable", "run.out_dir")
    finally:
        locked.chmod(0o700)


def test_a_file_in_the_way_of_the_output_folder_fails_before_anything(tmp_path):
    (tmp_path / "outputs").write_text("not a folder")
    proc = run_cli("pretrain", *TINY, cwd=tmp_path)
    assert_one_screen(proc, 2, "is a file", "run.out_dir")


# ---- 17. a mistyped local path is local; a Hub name offline fails at once

def test_a_mistyped_run_directory_is_a_local_error_at_once(tmp_path, trained):
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "latest").mkdir()
    started = time.time()
    proc = run_cli("generate", "model.path=outputs/lates", "prompt=hi", cwd=tmp_path)
    assert_one_screen(proc, 2, "'outputs/lates' does not exist", "did you mean 'outputs/latest'")
    offline = run_cli("generate", "model.path=nobody/nothing", "prompt=hi", cwd=tmp_path,
                      env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert_one_screen(offline, 2, "'nobody/nothing'", "cannot be reached")
    assert time.time() - started < 60, "no half-minute of retries"
    assert len(offline.stderr.strip().splitlines()) <= 3


# ---- 18. Hydra's grammar: say how to quote, and show the override corrected

@pytest.mark.parametrize(("name", "arg", "needle"), [
    ("x=y.txt", "dataset.files=[x=y.txt]", "dataset.files=['x=y.txt']"),
    ("café.txt", "dataset.files=[café.txt]", "dataset.files=['café.txt']"),
    ("a,b.txt", "dataset.files=[a,b.txt]", "dataset.files=['a,b.txt']"),
    ("a.txt", "dataset.files=a.txt,b.txt", "dataset.files=[a.txt,b.txt]"),
])
def test_grammar_traps_show_the_corrected_override(tmp_path, name, arg, needle):
    (tmp_path / name).write_text("some text\n")
    proc = run_cli("pretrain", "--dry-run", "dataset=text", arg, cwd=tmp_path)
    assert_one_screen(proc, 2, needle)


# ---- 19. binary files given as text

@pytest.mark.parametrize(("name", "content", "needle"), [
    ("corpus.txt", gzip.compress(b"hello world\n" * 10, mtime=0), "gzip-compressed"),
    ("image.txt", b"\x89PNG\r\n\x1a\n" + bytes(100), "PNG image"),
    ("zeros.txt", bytes(200), "NUL bytes"),
], ids=["gzip", "png", "nul"])  # ids: the same on every xdist worker (gzip's header would carry a timestamp)
def test_a_binary_file_given_as_text_says_what_it_is(tmp_path, name, content, needle):
    (tmp_path / name).write_bytes(content)
    proc = run_cli("pretrain", *TINY_MODEL, "dataset=text", f"dataset.files=[{name}]", "train.max_steps=1",
                   cwd=tmp_path)
    assert_one_screen(proc, 2, needle)
    assert "iconv" not in proc.stderr
