"""`ptcli pretrain` end to end on tiny models: outputs, HF compatibility, caching, sweeps, exact resume, DDP."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.support import TINY, losses_by_step, records, run_cli

pytestmark = pytest.mark.slow



def test_pretrain_writes_a_complete_run(tmp_path):
    proc = run_cli("pretrain", *TINY, "train.max_steps=6", "train.eval_every=3", "train.save_every=3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    latest = tmp_path / "outputs" / "pretrain" / "latest"
    run = latest.resolve()
    assert latest.is_symlink() and run.parent == tmp_path / "outputs" / "pretrain"
    assert {"config.yaml", "metrics.jsonl", "summary.json", "model", "checkpoints", "tokenizer"} <= {
        p.name for p in run.iterdir()}
    assert "hidden: 64" in (run / "config.yaml").read_text()
    train = records(run)
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "tokens", "elapsed"} <= set(train[0])
    assert [r["step"] for r in records(run, "eval")] == [3, 6]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["tokens"] == 6 * 4 * 32
    assert summary["final_val_loss"] == records(run, "eval")[-1]["val_loss"]
    assert 0 < summary["corpus_entropy_bits_per_char"] < 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000003", "step-00000006"]
    assert "step 6/6" in proc.stderr, "plain progress lines on stderr when it is not a terminal"
    assert proc.stdout == f"{run}\n", "stdout has only the product, the run directory (for $(ptcli pretrain ...))"


def test_exported_model_loads_without_ptcli_and_matches(tmp_path):
    proc = run_cli("pretrain", *TINY, "train.max_steps=3", "train.save_every=3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = (tmp_path / "outputs" / "pretrain" / "latest").resolve()
    # Reference: ptcli's own model code with the last checkpoint's in-memory weights.
    import torch
    from omegaconf import OmegaConf
    from safetensors.torch import load_model

    from ptcli.models.build import build_model
    from ptcli.processing.loading import load_tokenizer

    cfg = OmegaConf.load(run / "config.yaml")
    tokenizer = load_tokenizer(str(run / "tokenizer"))
    model = build_model(cfg.model, "AutoModelForCausalLM", tokenizer)
    load_model(model, str(run / "checkpoints" / "step-00000003" / "model.safetensors"))
    ids = torch.tensor([tokenizer("Once upon a time, there was a cat.")["input_ids"]])
    expected = model.eval()(input_ids=ids).logits
    script = ("import sys, torch\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
              "assert 'ptcli' not in sys.modules\n"
              f"d = {str(run / 'model')!r}\ntok = AutoTokenizer.from_pretrained(d)\n"
              "m = AutoModelForCausalLM.from_pretrained(d).eval()\n"
              "ids = torch.tensor([tok('Once upon a time, there was a cat.')['input_ids']])\n"
              f"torch.save(m(input_ids=ids).logits, {str(tmp_path / 'logits.pt')!r})\n"
              "assert 'ptcli' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # The weights are bit-identical; the logits only up to summation order (the subprocess may use another
    # number of threads than this xdist worker).
    from safetensors.torch import load_file
    exported = load_file(str(run / "model" / "model.safetensors"))
    shared = [name for name in model.state_dict() if name in exported]
    assert len(shared) >= len(exported) - 1, "the exported names are the model's own (a tied head may be left out)"
    for name in shared:
        assert torch.equal(exported[name], model.state_dict()[name]), name
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), expected, rtol=1e-5, atol=1e-6)


def test_mlm_pretraining_gives_a_masked_lm_folder(tmp_path):
    proc = run_cli("pretrain", "+objective=mlm", *TINY, "train.max_steps=3", "objective.whole_word=true",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = (tmp_path / "outputs" / "pretrain" / "latest").resolve()
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["model_type"] == "bert" and config["architectures"] == ["BertForMaskedLM"]
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run / "model")
    model = AutoModelForMaskedLM.from_pretrained(run / "model")
    inputs = tokenizer("The cat sat on the [MASK].", return_tensors="pt")
    assert model(**inputs).logits.shape[-1] == model.config.vocab_size


def test_second_run_reuses_tokenizer_and_packed_corpus(tmp_path):
    env = {"PTCLI_CACHE_DIR": str(tmp_path / "cache")}
    first = run_cli("pretrain", *TINY, "train.max_steps=1", cwd=tmp_path, env=env)
    second = run_cli("pretrain", *TINY, "train.max_steps=1", cwd=tmp_path, env=env)
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    assert "trained bpe tokenizer" in first.stderr and "packed" in first.stderr
    assert "reusing cached bpe tokenizer" in second.stderr and "reusing packed corpus" in second.stderr


def test_multirun_sweep_makes_one_directory_per_point(tmp_path):
    proc = run_cli("pretrain", "-m", *TINY, "train.max_steps=1", "optim.lr=1e-3,3e-4", "hydra/launcher=basic",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    sweeps = list((tmp_path / "outputs" / "pretrain" / "multirun").iterdir())
    assert len(sweeps) == 1
    points = sorted(p for p in sweeps[0].iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in points] == ["0", "1"]
    lrs = sorted(json.loads(json.dumps(__import__("yaml").safe_load((p / "config.yaml").read_text())))["optim"]["lr"]
                 for p in points)
    assert lrs == [3e-4, 1e-3]
    assert all((p / "summary.json").is_file() for p in points)
    import csv

    rows = list(csv.DictReader((sweeps[0] / "sweep_summary.csv").open()))
    assert [float(r["optim.lr"]) for r in rows] == [1e-3, 3e-4] and [r["status"] for r in rows] == ["done", "done"]
    losses = [float(r["best_val_loss"]) for r in rows]
    assert [r["best"] for r in rows] == ["*" if v == min(losses) else "" for v in losses]
    table = (sweeps[0] / "sweep_summary.md").read_text()
    assert "| point | best | optim.lr |" in table and "Best point (*) by `best_metric` (lower is better)" in table


def test_killed_run_resumes_bitwise(tmp_path):
    """SIGKILL after a checkpoint, resume with train.resume=auto: every later loss equals the uninterrupted run."""
    args = [*TINY, "train.max_steps=14", "train.save_every=4", "dataset.embedded_bytes=60000"]
    straight = run_cli("pretrain", *args, f"hydra.run.dir={tmp_path / 'straight'}", cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr
    run = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ptcli", "pretrain", *args, f"hydra.run.dir={run}"], cwd=tmp_path,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run / "checkpoints" / "step-00000008" / "state.json").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before its second checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "summary.json").exists(), "killed before the end"
    resumed = run_cli("pretrain", *args, f"hydra.run.dir={run}", "train.resume=auto", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    expected, got = losses_by_step(tmp_path / "straight"), losses_by_step(run)
    assert sorted(got) == list(range(1, 15))
    assert got == expected  # bitwise: the same floats, not approximately
    again = run_cli("pretrain", *args, f"hydra.run.dir={run}", "train.resume=auto", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert max(losses_by_step(run)) == 14 and json.loads((run / "summary.json").read_text())["steps"] == 14, \
        "resuming a finished run trains no further"


@pytest.mark.distributed
@pytest.mark.parametrize(("strategy", "precision"), [("ddp", "fp32"), ("fsdp", "fp32"), ("fsdp", "bf16")])
def test_two_cpu_processes_match_one_process(tmp_path, strategy, precision):
    """torchrun --nproc_per_node=2 (gloo), DDP or FSDP, and one process with grad_accum=2 see the same global
    batches and give the same losses. bf16: FSDP gathers bf16 weights (its mixed-precision policy) where one
    process casts under autocast: equal to bf16's precision."""
    args = [*TINY, "train.max_steps=5", "train.batch_size=8", "train.eval_every=5", f"device.precision={precision}"]
    rel, weights_tol = (1e-5, 1e-4) if precision == "fp32" else (2e-3, 1e-2)
    single = run_cli("pretrain", *args, "train.grad_accum=2", f"hydra.run.dir={tmp_path / 'single'}", cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                          "-m", "ptcli", "pretrain", *args, f"device.strategy={strategy}"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    runs = [p for p in (tmp_path / "outputs" / "pretrain").iterdir() if p.name != "latest"]
    assert len(runs) == 1, "one run directory for the whole torchrun job"
    assert len(re.findall(r"^step 5/5", ddp.stderr, re.M)) == 1, "only rank 0 logs"
    single_losses, ddp_losses = losses_by_step(tmp_path / "single"), losses_by_step(runs[0])
    assert sorted(ddp_losses) == [1, 2, 3, 4, 5]
    for step, loss in single_losses.items():
        assert ddp_losses[step] == pytest.approx(loss, rel=rel, abs=1e-6)
    single_val = records(tmp_path / "single", "eval")[-1]["val_loss"]
    assert records(runs[0], "eval")[-1]["val_loss"] == pytest.approx(single_val, rel=rel)
    # the exported folder is whole (FSDP gathers its shards): the same weights as the 1-process run's
    from safetensors.torch import load_file

    got, want = (load_file(str(d / "model" / "model.safetensors")) for d in (runs[0], tmp_path / "single"))
    assert sorted(got) == sorted(want)
    for name, tensor in want.items():
        assert got[name].shape == tensor.shape and got[name].dtype == tensor.dtype, name
        assert (got[name] - tensor).abs().max() < weights_tol, name


@pytest.mark.distributed
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_checkpoints_move_between_one_and_two_processes(tmp_path, strategy):
    """A 2-process checkpoint (DDP: whole; FSDP: sharded) continues in 1 process (grad_accum=2: the same global
    batches) and a 1-process checkpoint continues in 2, each with the losses of the uninterrupted run."""
    args = [*TINY, "train.max_steps=6", "train.batch_size=8", "train.save_every=3", "train.eval_every=6",
            f"device.strategy={strategy}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}

    def torchrun(*extra):
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                               "-m", "ptcli", "pretrain", *args, *extra], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]

    def single(*extra):
        proc = run_cli("pretrain", *args, "train.grad_accum=2", *extra, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr

    torchrun(f"hydra.run.dir={tmp_path / 'ddp'}")
    single(f"hydra.run.dir={tmp_path / 'one'}")
    single(f"train.resume={tmp_path / 'ddp' / 'checkpoints' / 'step-00000003'}", f"hydra.run.dir={tmp_path / 'to1'}")
    torchrun(f"train.resume={tmp_path / 'one' / 'checkpoints' / 'step-00000003'}", f"hydra.run.dir={tmp_path / 'to2'}")
    sharded = (tmp_path / "ddp" / "checkpoints" / "step-00000003" / "sharded").is_dir()
    assert sharded == (strategy == "fsdp"), "FSDP writes sharded checkpoints, DDP whole ones"
    # `ptcli export` gathers the 2-process final checkpoint in one process: the run's own model/ exactly
    exported = run_cli("export", str(tmp_path / "ddp" / "checkpoints" / "step-00000006"), str(tmp_path / "hf"),
                       cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    from safetensors.torch import load_file

    got, want = (load_file(str(d / "model.safetensors")) for d in (tmp_path / "hf", tmp_path / "ddp" / "model"))
    assert sorted(got) == sorted(want) and all(bool((got[k] == want[k]).all()) for k in want)
    assert (tmp_path / "hf" / "tokenizer.json").is_file()
    for resumed, reference in (("to1", "ddp"), ("to2", "one")):
        expected, got = losses_by_step(tmp_path / reference), losses_by_step(tmp_path / resumed)
        assert sorted(got) == [4, 5, 6], resumed
        for step in (4, 5, 6):
            assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), (resumed, step)


def test_compile_trains_like_eager_and_auto_says_why_it_stays_off(tmp_path):
    """device.compile=true compiles the model (inductor on this CPU) and gives eager's losses; the default, auto,
    leaves a short run eager and says why."""
    base = [*TINY, "device=cpu", "device.threads=1", "train.max_steps=3", "train.log_every=1", "train.eval_every=3"]
    eager = run_cli("pretrain", *base, "run.out_dir=eager", cwd=tmp_path)
    assert eager.returncode == 0, eager.stderr
    assert "compile: auto -> off (3 planned steps; compiling repays its time from about 1,000)" in eager.stderr
    compiled = run_cli("pretrain", *base, "device.compile=true", "run.out_dir=compiled", cwd=tmp_path)
    assert compiled.returncode == 0, compiled.stderr
    assert "compile: auto" not in compiled.stderr
    want = losses_by_step(tmp_path / "eager" / "pretrain" / "latest")
    got = losses_by_step(tmp_path / "compiled" / "pretrain" / "latest")
    assert sorted(got) == [1, 2, 3]
    for step in (1, 2, 3):
        assert got[step] == pytest.approx(want[step], rel=1e-4), step


def test_fused_kernels_train_like_the_written_out_gelu_and_save_the_same_folder(tmp_path):
    """device.fused_kernels (on by default) runs GPT-2's gelu_new as torch's fused kernel: the losses of the
    written-out form to fp32 rounding, and the saved model still names gelu_new."""
    base = [*TINY, "device=cpu", "device.threads=1", "train.max_steps=3", "train.log_every=1", "train.eval_every=3"]
    fused = run_cli("pretrain", *base, "run.out_dir=fused", cwd=tmp_path)
    assert fused.returncode == 0, fused.stderr
    assert "fused kernels: 2 tanh-GELU activations run as torch's fused kernel" in fused.stderr  # 2 blocks
    plain = run_cli("pretrain", *base, "device.fused_kernels=false", "run.out_dir=plain", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert "fused kernels" not in plain.stderr
    want = losses_by_step(tmp_path / "plain" / "pretrain" / "latest")
    got = losses_by_step(tmp_path / "fused" / "pretrain" / "latest")
    assert sorted(got) == [1, 2, 3]
    for step in (1, 2, 3):
        assert got[step] == pytest.approx(want[step], rel=1e-5), step
    config = json.loads((tmp_path / "fused" / "pretrain" / "latest" / "model" / "config.json").read_text())
    assert config["activation_function"] == "gelu_new"
