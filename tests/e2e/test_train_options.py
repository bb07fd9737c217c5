"""`ptcli pretrain` training options end to end: stop conditions, grad accumulation, gradient checkpointing,
Llama, file datasets, TensorBoard, schedules and bf16 autocast, each through the real CLI in a subprocess.

Every CLI process pays several seconds of torch/transformers import, so runs that differ in one option are
sweep points of one `ptcli pretrain -m` process, and the processes this module's selected tests need are
started together when the first of them runs, two at a time (one per core), each in its own folder; every
test then waits for its own process and checks it.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import random
import re
import subprocess
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support import TINY, TINY_MODEL, losses_by_step, records, run_cli

pytestmark = pytest.mark.slow

LR = 2e-3  # optim.lr in configs/pretrain.yaml
STEP_TOKENS = 4 * 32  # TINY: train.batch_size x dataset.seq_len
LLAMA = ["model=llama-tiny", "model.layers=2", "model.hidden=64", "model.heads=2", "model.kv_heads=1",
         "model.intermediate=128"]
FILES = ["dataset.files=[train.txt]", "dataset.val_files=[val.txt]"]


def tiny(*extra: str) -> list[str]:
    """TINY with ``extra`` overrides; a key set in ``extra`` replaces TINY's (Hydra wants each key once). Another
    dataset than the embedded corpus drops the corpus size, a setting only the embedded corpus has."""
    keys = {e.split("=", 1)[0].lstrip("+~") for e in extra}
    base = TINY_MODEL if "dataset" in keys else TINY
    return [a for a in base if a.split("=", 1)[0] not in keys] + list(extra)


# Every CLI process the tests below use: name -> pretrain arguments ("-m": a sweep, one point per value).
RUNS: dict[str, list[str]] = {
    "max_time": tiny("train.max_steps=1000", "train.max_time=3", "train.log_every=5", "train.eval_every=1000",
                     "train.save_every=1000"),
    "epochs": tiny("train.max_steps=null", "train.epochs=0.05", "dataset.embedded_bytes=30000"),
    # max_tokens=700 plans ceil(700 / 128) = 6 steps, the steps both schedules decay over
    "max_tokens": ["-m", *tiny("train.max_steps=null", "train.max_tokens=700", "scheduler=constant,linear",
                               "scheduler.warmup_steps=3")],
    # one point without either option, one with each (and one with both); eval_batches=2 evaluates fewer
    # blocks than the 37 validation blocks, so which blocks are evaluated shows in val_loss
    "memory": ["-m", *tiny("train.max_steps=3", "train.eval_batches=2", "train.grad_accum=1,2",
                           "train.gradient_checkpointing=false,true")],
    "bf16": tiny("device.precision=bf16", "train.max_steps=2"),
    "llama": tiny(*LLAMA, "train.max_steps=2"),
    "text": tiny("dataset=text", *FILES, "dataset.document=line", "train.max_steps=2"),
    # a folder holding .txt, .jsonl and .csv files: each source reads only its own kind
    "jsonl_csv": ["-m", *tiny("dataset=jsonl,csv", "dataset.files=[data]", "train.max_steps=2")],
    "tensorboard": tiny("logger=tensorboard", "train.max_steps=2"),
}

WORDS = {
    "who": ["the old miller", "a small fox", "my sister", "the captain", "a quiet robot", "the baker's son",
            "an owl", "the river pilot", "two grey cats", "the teacher"],
    "did": ["carried", "painted", "forgot", "found", "counted", "mended", "hid", "sold", "watched", "sang about"],
    "what": ["a blue lantern", "seven apples", "the broken clock", "an old map", "the winter coats",
             "a wooden boat", "three letters", "the garden gate", "a jar of honey", "the last candle"],
    "where": ["near the bridge", "before dawn", "in the market", "under the stairs", "at the harbour",
              "after supper", "behind the mill", "on the hill", "during the storm", "by the well"],
}


def sentences(n: int, seed: int) -> list[str]:
    """``n`` varied English sentences (about 45 characters each), the same for the same seed."""
    rng = random.Random(seed)
    return [f"{rng.choice(WORDS['who']).capitalize()} {rng.choice(WORDS['did'])} {rng.choice(WORDS['what'])} "
            f"{rng.choice(WORDS['where'])}." for _ in range(n)]


def write_data(folder: Path) -> None:
    """The files the dataset runs read: train/val text (one sentence pair per line), JSON Lines and CSV."""
    lines = [" ".join(pair) for pair in zip(*[iter(sentences(240, seed=1))] * 2)]  # 120 lines, ~11 KB
    (folder / "train.txt").write_text("\n".join(lines[:90]) + "\n\n" + "\n".join(lines[90:]) + "\n")
    (folder / "val.txt").write_text("\n".join(" ".join(p) for p in zip(*[iter(sentences(80, seed=2))] * 2)) + "\n")
    docs = [" ".join(sentences(6, seed=100 + i)) for i in range(40)]  # 40 documents, ~11 KB
    data = folder / "data"
    data.mkdir()
    (data / "train.txt").write_text("generated generated generated\n")
    (data / "train.jsonl").write_text("".join(json.dumps({"id": i, "text": d}) + "\n" for i, d in enumerate(docs)))
    with open(data / "train.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text", "source"])
        writer.writerows([i, d.replace(". ", ", then, "), "generated"] for i, d in enumerate(docs))


@dataclass
class Run:
    proc: subprocess.CompletedProcess
    cwd: Path

    @property
    def dir(self) -> Path:
        return (self.cwd / "outputs" / "pretrain" / "latest").resolve()

    def ok(self) -> Run:
        assert self.proc.returncode == 0, self.proc.stderr[-3000:]
        return self

    def summary(self) -> dict:
        return json.loads((self.dir / "summary.json").read_text())

    def records(self, kind: str = "train") -> list[dict]:
        return records(self.dir, kind)

    def point(self, **settings) -> Run:
        """The sweep point whose config has these ``section__key=value`` settings."""
        found = []
        for folder in sorted((self.cwd / "outputs" / "pretrain" / "multirun").glob("*/[0-9]*")):
            cfg = yaml.safe_load((folder / "config.yaml").read_text())
            if all(cfg[k.split("__", 1)[0]][k.split("__", 1)[1]] == v for k, v in settings.items()):
                found.append(folder)
        assert len(found) == 1, f"{len(found)} sweep points match {settings}"
        return SweepPoint(self.proc, self.cwd, found[0])


class SweepPoint(Run):
    def __init__(self, proc, cwd, folder: Path):
        super().__init__(proc, cwd)
        self.folder = folder

    @property
    def dir(self) -> Path:
        return self.folder


class Runs:
    """The runs of this module, started in the background; ``get(name)`` waits for one."""

    def __init__(self, root: Path, names: list[str]):
        self.root = root
        self.pool = ThreadPoolExecutor(max_workers=2)
        self.futures: dict[str, Future] = {}
        for name in names:
            self._submit(name)

    def _submit(self, name: str) -> None:
        if name not in self.futures:
            cwd = self.root / name
            cwd.mkdir()
            write_data(cwd)
            self.futures[name] = self.pool.submit(lambda: Run(run_cli("pretrain", *RUNS[name], cwd=cwd), cwd))

    def get(self, name: str) -> Run:
        self._submit(name)
        return self.futures[name].result()


def uses(*names: str):
    """Name the runs a test reads, so the module fixture starts them all up front."""
    def mark(test):
        test.runs = names
        return test
    return mark


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    wanted: list[str] = []
    for item in request.session.items:
        if getattr(item, "module", None) is request.module:
            wanted += [n for n in getattr(getattr(item, "function", None), "runs", ()) if n not in wanted]
    started = Runs(tmp_path_factory.mktemp("train-options"), wanted)
    yield started
    started.pool.shutdown(wait=True, cancel_futures=True)


# ---- 1. stop conditions


@uses("max_tokens")
def test_max_tokens_stops_at_the_step_that_reaches_it(runs):
    sweep = runs.get("max_tokens").ok()
    expected = math.ceil(700 / STEP_TOKENS)  # 6 steps: 768 tokens, the first count >= 700
    assert expected == 6
    for name in ("constant", "linear"):
        run = sweep.point(scheduler__name=name)
        summary = run.summary()
        assert summary["steps"] == expected and summary["tokens"] == expected * STEP_TOKENS
        assert [r["step"] for r in run.records()] == list(range(1, expected + 1))
        assert run.records()[-1]["tokens"] == expected * STEP_TOKENS
    assert len(re.findall(rf"^step {expected}/{expected} ", sweep.proc.stderr, re.M)) == 2, \
        "the progress total is the planned step count"


@uses("epochs")
def test_epochs_stop_at_the_planned_step_count(runs):
    run = runs.get("epochs").ok()
    summary = run.summary()
    planned = math.ceil(0.05 * summary["train_blocks"] / 4)
    assert 2 <= planned <= 6, f"the tiny corpus should plan a few steps, not {planned}"
    assert summary["steps"] == planned
    train = run.records()
    assert [r["step"] for r in train] == list(range(1, planned + 1))
    # the epoch column: blocks consumed / training blocks, just past 0.05 at the end
    assert train[-1]["epoch"] == pytest.approx(planned * 4 / summary["train_blocks"], abs=1e-4)
    assert 0.05 <= train[-1]["epoch"] < 0.05 + 4 / summary["train_blocks"] + 1e-4
    assert [r["step"] for r in run.records("eval")] == [planned], "a final evaluation at the last step"


@uses("max_time")
def test_max_time_stops_long_before_max_steps_at_a_log_step(runs):
    run = runs.get("max_time").ok()
    summary = run.summary()
    steps = summary["steps"]
    assert 5 <= steps < 1000, "stopped by train.max_time, not train.max_steps"
    assert steps % 5 == 0, f"max_time is agreed at log steps (log_every=5), but it stopped at step {steps}"
    assert summary["train_seconds"] >= 3, "it must not stop before max_time"
    assert [r["step"] for r in run.records()] == list(range(5, steps + 1, 5))
    assert (run.dir / "checkpoints" / f"step-{steps:08d}").is_dir(), "a final checkpoint where it stopped"
    assert (run.dir / "model" / "config.json").is_file()


# ---- 2. gradient accumulation and 4. gradient checkpointing change memory, not results


@uses("memory")
def test_grad_accum_gives_the_same_losses(runs):
    sweep = runs.get("memory").ok()
    base = sweep.point(train__grad_accum=1, train__gradient_checkpointing=False)
    accum = sweep.point(train__grad_accum=2, train__gradient_checkpointing=False)
    expected, got = losses_by_step(base.dir), losses_by_step(accum.dir)
    assert sorted(got) == [1, 2, 3]
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, rel=1e-5, abs=1e-6), f"step {step}"
    assert [r["grad_norm"] for r in accum.records()] == pytest.approx([r["grad_norm"] for r in base.records()],
                                                                      rel=1e-4)
    # validation of the same weights: the same blocks, whatever the micro-batch size
    assert accum.summary()["final_val_loss"] == pytest.approx(base.summary()["final_val_loss"], rel=1e-5)


@uses("memory")
def test_gradient_checkpointing_gives_the_same_losses(runs):
    sweep = runs.get("memory").ok()
    base = sweep.point(train__grad_accum=1, train__gradient_checkpointing=False)
    ckpt = sweep.point(train__grad_accum=1, train__gradient_checkpointing=True)
    expected, got = losses_by_step(base.dir), losses_by_step(ckpt.dir)
    assert sorted(got) == [1, 2, 3]
    assert got[1] == pytest.approx(expected[1], rel=1e-6)
    # later steps depend on the gradients: recomputed activations must give the same ones
    for step in (2, 3):
        assert got[step] == pytest.approx(expected[step], rel=1e-5), f"step {step}"
    assert [r["grad_norm"] for r in ckpt.records()] == pytest.approx([r["grad_norm"] for r in base.records()],
                                                                     rel=1e-4)


# ---- 3. Llama


@uses("llama")
def test_llama_tiny_trains_and_loads_with_plain_transformers(runs):
    run = runs.get("llama").ok()
    assert "model: llama" in run.proc.stderr
    assert sorted(losses_by_step(run.dir)) == [1, 2]
    config = json.loads((run.dir / "model" / "config.json").read_text())
    assert config["model_type"] == "llama" and config["architectures"] == ["LlamaForCausalLM"]
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"],
            config["num_key_value_heads"], config["intermediate_size"]) == (2, 64, 2, 1, 128)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(run.dir / "model")
    model = AutoModelForCausalLM.from_pretrained(run.dir / "model").eval()
    assert type(model).__name__ == "LlamaForCausalLM"
    ids = torch.tensor([tok("Once upon a time, there was a cat.")["input_ids"]])
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids)
    assert torch.isfinite(out.loss) and out.logits.shape == (1, ids.shape[1], 512)


# ---- 5. file datasets


def block_count(tokenizer_dir: Path, lines: list[str], seq_len: int = 32) -> int:
    """Blocks of ``seq_len`` cut from the documents joined with one separator after each (CLM packing)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    ids = tok([line for line in lines if line.strip()], add_special_tokens=False)["input_ids"]
    return sum(len(i) + 1 for i in ids) // seq_len


@uses("text")
def test_text_files_with_explicit_validation_file(runs):
    run = runs.get("text").ok()
    summary = run.summary()
    train_lines = (run.cwd / "train.txt").read_text().splitlines()
    val_lines = (run.cwd / "val.txt").read_text().splitlines()
    assert summary["val_blocks"] == block_count(run.dir / "tokenizer", val_lines) > 0
    # with val_files, every training block trains (no val_fraction carved off)
    assert summary["train_blocks"] == block_count(run.dir / "tokenizer", train_lines)
    evals = run.records("eval")
    assert [r["step"] for r in evals] == [2] and math.isfinite(evals[0]["val_loss"])
    assert summary["final_val_loss"] == evals[-1]["val_loss"]
    assert summary["steps"] == 2


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
@uses("jsonl_csv")
def test_jsonl_and_csv_text_column_pretrain(runs, kind):
    cls = {"jsonl": "JsonlFiles", "csv": "CsvFiles"}[kind]
    run = runs.get("jsonl_csv").ok().point(dataset___target_=f"ptcli.data.sources.files.{cls}")
    summary = run.summary()
    assert summary["steps"] == 2 and summary["train_blocks"] > 4
    losses = losses_by_step(run.dir)
    assert sorted(losses) == [1, 2] and all(math.isfinite(v) for v in losses.values())
    # the tokenizer was trained on the text column of its own files only: not on other columns, nor on
    # data/train.txt (nothing but "generated")
    vocab = json.loads((run.dir / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"]
    assert any("lantern" in token for token in vocab) or any("harbour" in token for token in vocab)
    assert not any("generated" in token for token in vocab)


# ---- 6. TensorBoard


@uses("tensorboard")
def test_tensorboard_logger(runs):
    run = runs.get("tensorboard")
    if importlib.util.find_spec("tensorboard") is None:
        assert run.proc.returncode == 2, run.proc.stderr[-3000:]
        errors = [line for line in run.proc.stderr.splitlines() if line.startswith("ptcli: error:")]
        assert len(errors) == 1 and "pip install tensorboard" in errors[0], run.proc.stderr
        assert "Traceback" not in run.proc.stderr
        assert not (run.dir / "config.yaml").exists(), "caught before any run directory is made"
    else:
        run.ok()
        events = list((run.dir / "tensorboard").rglob("events.out.tfevents.*"))
        assert events and all(e.stat().st_size > 0 for e in events)
        assert sorted(losses_by_step(run.dir)) == [1, 2]


# ---- 7. schedules: the lr column after each step


def split_at_peak(lrs: list[float], last: bool) -> tuple[list[float], list[float]]:
    """The lr column split at the first (or last) step where it peaks: the warmup, then the rest."""
    peak = max(range(len(lrs)), key=lambda i: (lrs[i], i if last else -i))
    return lrs[:peak], lrs[peak:]


@uses("max_tokens")
def test_constant_schedule_holds_the_lr_after_warmup(runs):
    lrs = [r["lr"] for r in runs.get("max_tokens").ok().point(scheduler__name="constant").records()]
    assert len(lrs) == 6
    warmup, rest = split_at_peak(lrs, last=False)
    assert warmup and lrs[0] < LR, f"warmup_steps=3: the lr starts below optim.lr: {lrs}"
    assert warmup == sorted(warmup), lrs
    assert len(rest) >= 3 and rest == [pytest.approx(LR, rel=1e-9)] * len(rest), lrs


@uses("max_tokens")
def test_linear_schedule_decreases_in_equal_steps(runs):
    lrs = [r["lr"] for r in runs.get("max_tokens").ok().point(scheduler__name="linear").records()]
    assert len(lrs) == 6
    warmup, rest = split_at_peak(lrs, last=True)
    assert warmup and lrs[0] < LR and warmup == sorted(warmup), lrs
    assert rest[0] == pytest.approx(LR, rel=1e-9) and len(rest) >= 3, lrs
    drops = [a - b for a, b in zip(rest, rest[1:])]
    assert all(d > 0 for d in drops), lrs
    assert drops == pytest.approx([drops[0]] * len(drops), rel=1e-6), f"not linear: {lrs}"
    assert 0 <= rest[-1] < LR / 2, f"decays towards min_lr_ratio x lr (0) over the planned steps: {lrs}"


# ---- 8. bf16 autocast on the CPU


@uses("bf16", "memory")
def test_bf16_autocast_on_cpu(runs):
    run = runs.get("bf16").ok()
    assert "on cpu in bf16" in run.proc.stderr
    losses = losses_by_step(run.dir)
    assert sorted(losses) == [1, 2] and all(math.isfinite(v) for v in losses.values())
    assert math.isfinite(run.summary()["final_val_loss"])
    base = runs.get("memory").ok().point(train__grad_accum=1, train__gradient_checkpointing=False)
    fp32 = losses_by_step(base.dir)[1]
    # the same model and batch at step 1: close to fp32, but computed in bf16 (not bit-identical)
    assert losses[1] == pytest.approx(fp32, abs=0.05) and losses[1] != fp32
