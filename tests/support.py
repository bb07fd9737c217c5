"""Helpers the tests share (no test module imports another): running the CLI as a user would, the real data in
../shared/data, tiny models and data, reading run directories, and the local Slurm cluster."""

from __future__ import annotations

import io
import json
import multiprocessing.process
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# A tiny GPT: with TINY on a small slice of the embedded corpus, each pretraining run takes a few seconds;
# TINY_MODEL is the same without the corpus size (a setting only the embedded corpus has), for dataset=text etc.
TINY_MODEL = ["model.layers=2", "model.heads=2", "model.hidden=64", "model.vocab_size=512", "dataset.seq_len=32",
              "train.batch_size=4", "train.log_every=1", "device=cpu", "device.threads=1"]
TINY = [*TINY_MODEL, "dataset.embedded_bytes=150000"]
# A tiny BERT for fine-tuning on labelled rows.
TINY_FINETUNE = ["model=bert-tiny", "model.layers=2", "model.heads=2", "model.hidden=32", "model.vocab_size=300",
                 "dataset.seq_len=24", "device=cpu", "device.threads=1", "train.log_every=1", "train.epochs=null"]


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600,
            stdin: str | None = None) -> subprocess.CompletedProcess:
    """``python -m ptcli ARGS`` as a user would run it, as a fresh interpreter would; returns the completed process.

    By default the command is forked from a *zygote*: one process per test worker that has imported torch and
    transformers (5-10 s of every CLI test) and then only forks, so that no child inherits threads, OpenMP teams
    or models from tests run in-process (a fork of the test process itself once hung on such state). The child
    gets its own streams, directory, environment, exit handlers, warning filters and a fresh import of ptcli.
    Tests that set environment variables get a fresh interpreter (torch reads some at import), and so does
    everything under ``PTCLI_TEST_FORK=0``.
    """
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("PTCLI_DEBUG", None)
    command = [sys.executable, "-m", "ptcli", *args]
    if env is None and os.environ.get("PTCLI_TEST_FORK", "1") == "1" and sys.platform == "linux":
        return _forked(command, cwd, full_env, timeout, stdin)
    return subprocess.run(command, cwd=cwd, env=full_env, text=True, capture_output=True, timeout=timeout,
                          input=stdin)


_ZYGOTE = []


def _zygote():
    """The forkserver context whose server has imported what every training or inference command imports."""
    if not _ZYGOTE:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["torch", "transformers.modeling_utils", "tests.support"])
        _ZYGOTE.append(context)
    return _ZYGOTE[0]


def _forked(command: list[str], cwd, env: dict, timeout: float, stdin: str | None) -> subprocess.CompletedProcess:
    """``command`` (``python -m ptcli ...``) in a child of the zygote; a timeout kills it (and its process group:
    DataLoader workers, torchrun, servers)."""
    import signal
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ptcli-fork-") as scratch:
        streams = {name: os.path.join(scratch, name) for name in ("in", "out", "err")}
        for name, text in (("in", stdin or ""), ("out", ""), ("err", "")):
            Path(streams[name]).write_text(text)
        child = _zygote().Process(target=_child, daemon=False,
                                  args=(command[3:], str(cwd or os.getcwd()), env, stdin is not None, streams))
        child.start()
        child.join(timeout)
        timed_out = child.exitcode is None
        if timed_out:
            for kill in (lambda: os.killpg(child.pid, signal.SIGKILL), lambda: os.kill(child.pid, signal.SIGKILL)):
                try:
                    kill()
                except (ProcessLookupError, PermissionError):
                    pass
            child.join()
        out, err = (Path(streams[name]).read_bytes().decode(errors="replace") for name in ("out", "err"))
        if timed_out:
            raise subprocess.TimeoutExpired(command, timeout, output=out, stderr=err)
        return subprocess.CompletedProcess(command, child.exitcode, out, err)


def _child(args: list[str], cwd: str, env: dict, has_stdin: bool, streams: dict) -> None:
    """Runs in the zygote's fork: becomes ``python -m ptcli ARGS`` and exits with its code (never returns)."""
    import atexit
    import logging
    import runpy
    import threading
    import traceback
    import warnings

    code = 1
    try:
        os.setpgid(0, 0)
        os.dup2(os.open(streams["in"] if has_stdin else os.devnull, os.O_RDONLY), 0)
        os.dup2(os.open(streams["out"], os.O_WRONLY | os.O_TRUNC), 1)
        os.dup2(os.open(streams["err"], os.O_WRONLY | os.O_TRUNC), 2)
        sys.stdin = io.TextIOWrapper(open(0, "rb", closefd=False))
        sys.stdout = io.TextIOWrapper(open(1, "wb", closefd=False), write_through=True)
        sys.stderr = io.TextIOWrapper(open(2, "wb", closefd=False), write_through=True)
        sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        atexit._clear()  # multiprocessing's exit handlers are not the CLI's
        warnings.filters[:] = _FRESH_WARNING_FILTERS
        warnings.showwarning = warnings._showwarning_orig
        for handler in list(logging.root.handlers):
            logging.root.removeHandler(handler)
        # the CLI is a main process (it starts DataLoader workers and torchrun), not a multiprocessing child
        multiprocessing.process._current_process = _MAIN_PROCESS()
        multiprocessing.process._children = set()
        multiprocessing.process._parent_process = None
        for name in [m for m in sys.modules if m == "ptcli" or m.startswith("ptcli.")]:
            del sys.modules[name]  # ptcli imports afresh: its import-time state (the verb's help) reads argv
        sys.argv = ["ptcli", *args]
        try:
            runpy.run_module("ptcli", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:
            if e.code is None:
                code = 0
            elif isinstance(e.code, int):
                code = e.code
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
        threading._shutdown()  # as the interpreter does at exit: wait for the CLI's own threads
        atexit._run_exitfuncs()
        sys.stdout.flush(), sys.stderr.flush()
    except BaseException:  # noqa: BLE001 - the child must never return into multiprocessing
        try:
            traceback.print_exc()
        except BaseException:  # noqa: BLE001
            pass
    finally:
        os._exit(code)


# What a fresh interpreter's multiprocessing.current_process() is (the class is private to multiprocessing).
_MAIN_PROCESS = type(multiprocessing.process.current_process()) if multiprocessing.parent_process() is None else None

# The warning filters of a fresh interpreter that imported ptcli (taken when pytest imports this module, before a
# test's own filters): a forked CLI shows the warnings `python -m ptcli` would.
_FRESH_WARNING_FILTERS = list(__import__("warnings").filters)


def shared_data(relative: str) -> Path:
    """A file under ../shared/data; skips when absent, fails under PTCLI_REQUIRE_SHARED=1 (CI)."""
    path = SHARED_DATA / relative
    if not path.exists():
        reason = f"{path} is absent (real data lives in ../shared/data beside the repository)"
        if os.environ.get("PTCLI_REQUIRE_SHARED") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def assert_one_screen(proc, code: int, *needles: str) -> None:
    """A ptcli error: the exit code, no traceback, a short message containing every needle."""
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(proc.stderr.strip().splitlines()) <= 25, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr[-3000:])


# ---- reading run directories
def records(run_dir: Path, kind: str = "train") -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def losses_by_step(run_dir: Path) -> dict[int, float]:
    """The last logged loss of every step."""
    return {r["step"]: r["loss"] for r in records(run_dir)}


def torchrun(tmp_path: Path, name: str, *args: str, verb: str = "pretrain") -> None:
    """``ptcli <verb> *args`` in two CPU processes (torchrun, gloo) into ``tmp_path / name``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                           "-m", "ptcli", verb, *args, f"hydra.run.dir={tmp_path / name}"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def latest(cwd: Path, verb: str = "finetune") -> Path:
    return (cwd / "outputs" / verb / "latest").resolve()


def evals(run: Path) -> list[dict]:
    return records(run, "eval")


# ---- tiny labelled data
POS, NEG = ["good", "great", "lovely", "superb"], ["bad", "awful", "dull", "poor"]
NOUNS = ["movie", "film", "plot", "cast", "story", "ending"]


def sentiment_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        adj = rng.choice(POS if label == "pos" else NEG)
        rows.append((f"the {rng.choice(NOUNS)} was {adj}", label))
    return rows


def sentiment_csv(folder: Path, n: int) -> Path:
    """``folder/train.csv`` with ``n`` sentiment rows (text,label): the data of the fine-tuning e2e tests."""
    path = folder / "train.csv"
    path.write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in sentiment_rows(n)))
    return path


# ---- tiny models for generate/evaluate
TEXT = ("Once upon a time there was a little cat. The cat liked to sit in the sun.\n"
        "One day the cat saw a bird. The bird sang a song, and the cat was happy.\n")
_BUILT: dict[str, Path] = {}
TEXT = ("Once upon a time there was a little cat. The cat liked to sit in the sun.\n"
        "One day the cat saw a bird. The bird sang a song, and the cat was happy.\n")


def tiny_models(root: Path) -> dict[str, Path]:
    """Build (once per process) tiny GPT-2, T5 and BERT folders with tokenizers, plus a GPT-2 without one."""
    if _BUILT:
        return _BUILT
    import torch
    import transformers

    from ptcli.data.corpus import generate_corpus
    from ptcli.processing.tokenizers import train_tokenizer

    docs = generate_corpus(0, 60_000).documents
    bpe, wordpiece = train_tokenizer(docs, "bpe", 400), train_tokenizer(docs, "wordpiece", 400)
    special = {"bos_token_id": bpe.eos_token_id, "eos_token_id": bpe.eos_token_id, "pad_token_id": bpe.pad_token_id}
    torch.manual_seed(0)
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=2, n_positions=128, vocab_size=len(bpe), **special))
    t5 = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=len(bpe), d_model=32, d_ff=64, d_kv=16, num_layers=2, num_heads=2,
        pad_token_id=bpe.pad_token_id, eos_token_id=bpe.eos_token_id, decoder_start_token_id=bpe.pad_token_id))
    bert = transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=len(wordpiece), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128, pad_token_id=wordpiece.pad_token_id))
    for name, model, tokenizer in (("gpt2", gpt2, bpe), ("t5", t5, bpe), ("bert", bert, wordpiece)):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        _BUILT[name] = root / name
    (root / "no-tokenizer").mkdir()
    for f in ("config.json", "generation_config.json", "model.safetensors"):
        shutil.copy(root / "gpt2" / f, root / "no-tokenizer" / f)
    _BUILT["no-tokenizer"] = root / "no-tokenizer"
    return _BUILT



class Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True



# ---- the local Slurm cluster (scripts/slurm/local-cluster.sh)
JOB_TIMEOUT = 600  # seconds from submission to the end of the job, queueing included
DONE_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
               "BOOT_FAIL", "DEADLINE"}


def slurm_missing() -> str | None:
    """Why no job can run here, or None when sbatch exists and the cluster has a node to run on."""
    hint = "start one with `bash scripts/slurm/local-cluster.sh start`"
    if not shutil.which("sbatch"):
        return f"Slurm is not installed (no sbatch on PATH); {hint}"
    conf = os.environ.get("SLURM_CONF")
    if conf and not os.path.isfile(conf):  # sinfo would spend a minute before saying so
        return f"SLURM_CONF={conf} does not exist (was the cluster stopped?); {hint}"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:  # e.g. no slurm.conf: sinfo then looks for a controller in DNS
        return f"`sinfo` did not answer within 20 s (no slurm.conf? SLURM_CONF unset?); {hint}"
    if proc.returncode != 0:
        return f"`sinfo` failed: {proc.stderr.strip()[:300]}; {hint}"
    states = proc.stdout.split()
    if not any(s.rstrip("*~#") in {"idle", "mixed", "allocated", "completing"} for s in states):
        return f"no Slurm node can run jobs (sinfo states: {states or 'none'}); {hint}"
    return None


def job_state(job: str) -> str | None:
    """JobState from `scontrol show job`, or None once Slurm has forgotten the job."""
    proc = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, timeout=30)
    found = re.search(r"\bJobState=(\S+)", proc.stdout)
    return found.group(1) if found else None


def wait_for_job(job: str, timeout: float) -> str:
    """Poll until the job ends; cancel it and fail past ``timeout``. Returns the final state."""
    deadline = time.time() + timeout
    state = None
    while time.time() < deadline:
        state = job_state(job)
        if state is None or state in DONE_STATES:
            return state or "GONE"
        time.sleep(1)
    subprocess.run(["scancel", job], capture_output=True, timeout=30)
    pytest.fail(f"Slurm job {job} did not finish within {timeout:.0f} s (last state {state}); cancelled")


def fake_run(root: Path, objective: str = "ptcli.objectives.classification.SequenceClassification") -> Path:
    """A finished finetune run's files (config, summary, overrides, a model folder) without training one."""
    run = root / "outputs" / "finetune" / "2026-12-01_00-00-00"
    (run / "model").mkdir(parents=True)
    (run / ".hydra").mkdir()
    (run / "model" / "config.json").write_text(json.dumps({
        "model_type": "bert", "architectures": ["BertForSequenceClassification"],
        "id2label": {"0": "neg", "1": "pos"}}))
    (run / "model" / "model.safetensors").write_bytes(b"0" * 1000)
    (run / "config.yaml").write_text(f"objective:\n  _target_: {objective}\nmodel:\n  path: pkg:minilm/model\n"
                                     "dataset:\n  _target_: ptcli.data.sources.files.CsvFiles\n"
                                     "  files: [/data/sst2/train.tsv]\n  val_files: null\n")
    (run / ".hydra" / "overrides.yaml").write_text("- model=minilm\n- dataset.files=[train.tsv]\n- optim.lr=5e-5\n")
    (run / "summary.json").write_text(json.dumps({
        "steps": 120, "parameters": 22_700_000, "best_val": {"loss": 0.31, "accuracy": 0.8912, "note": "x"},
        "final_val": {"loss": 0.35, "accuracy": 0.88}, "best_step": 100}))
    return run
