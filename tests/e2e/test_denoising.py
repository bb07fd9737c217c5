"""Denoising-autoencoder pretraining end to end: T5 span corruption and BART denoising on the embedded corpus, then
evaluate (the same loss as training's validation), generate (sentinel fills, reconstructions) and seq2seq
fine-tuning from the pretrained run."""

from __future__ import annotations

import json

import pytest

from tests.support import latest, losses_by_step, records, run_cli, torchrun

pytestmark = pytest.mark.slow

SMALL = ["model.layers=2", "model.heads=2", "model.hidden=64", "model.vocab_size=512", "dataset.seq_len=32",
         "dataset.embedded_bytes=150000", "train.batch_size=8", "train.log_every=1", "optim.lr=3e-3",
         "scheduler.warmup_steps=2", "device=cpu", "device.threads=1"]


def summaries(path):
    rows = [{"dialogue": f"#Person1#: shall we meet at {h} o'clock? #Person2#: yes, see you at {h}.",
             "summary": f"They meet at {h}."} for h in range(1, 13)] * 2
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def pretrain_then_finetune(tmp_path, objective: str, arch: str, prompt: str) -> dict:
    proc = run_cli("pretrain", f"objective={objective}", *SMALL, "train.max_steps=12", "train.eval_every=12",
                   "train.save_every=6", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = latest(tmp_path, "pretrain")
    losses = losses_by_step(run)
    assert sorted(losses) == list(range(1, 13))
    assert sum(losses[s] for s in (10, 11, 12)) < sum(losses[s] for s in (1, 2, 3)), losses
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["model_type"] == arch and config["architectures"][0].endswith("ForConditionalGeneration")

    # evaluate on the held-out blocks: the validation loss training reported, with the same fixed noise
    proc = run_cli("evaluate", f"model.path={run}", "device=cpu", "device.threads=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    assert measured["loss"] == pytest.approx(json.loads((run / "summary.json").read_text())["final_val_loss"],
                                             rel=1e-6)
    assert measured["loss"] == pytest.approx(records(run, "eval")[-1]["val_loss"], rel=1e-6)

    proc = run_cli("generate", f"model.path={run}", f"prompt='{prompt}'", "max_new_tokens=12", "device=cpu",
                   "device.threads=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    completion = json.loads(proc.stdout.strip().splitlines()[-1])

    summaries(tmp_path / "s.jsonl")
    proc = run_cli("finetune", "objective=seq2seq", f"model.path={run}", "dataset=jsonl", "dataset.files=[s.jsonl]",
                   "dataset.text_column=dialogue", "dataset.label_column=summary", "dataset.val_fraction=0.2",
                   "dataset.seq_len=32", "objective.max_new_tokens=8", "train.max_steps=3", "train.batch_size=4",
                   "train.eval_every=3", "train.epochs=null", "device=cpu", "device.threads=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    from transformers import AutoModelForSeq2SeqLM

    assert AutoModelForSeq2SeqLM.from_pretrained(latest(tmp_path) / "model").config.model_type == arch
    return {"run": run, "completion": completion}


def test_span_corruption_pretrains_t5_evaluates_generates_and_finetunes(tmp_path):
    out = pretrain_then_finetune(tmp_path, "span_corruption", "t5", "Once upon a <extra_id_0>, there was a cat.")
    # every target starts with the first sentinel: even a briefly trained model opens its fill with it
    assert out["completion"]["completion"].startswith("<extra_id_0>"), out["completion"]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out["run"] / "model")
    assert len(tokenizer("<extra_id_0> <extra_id_99>", add_special_tokens=False)["input_ids"]) == 3


def test_span_corruption_resumes_exactly(tmp_path):
    args = ["pretrain", "objective=span_corruption", *SMALL, "train.max_steps=6", "train.save_every=3",
            "dataset.embedded_bytes=60000"]
    proc = run_cli(*args, f"hydra.run.dir={tmp_path / 'straight'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    checkpoint = tmp_path / "straight" / "checkpoints" / "step-00000003"
    proc = run_cli(*args, f"hydra.run.dir={tmp_path / 'resumed'}", f"train.resume={checkpoint}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    expected, got = losses_by_step(tmp_path / "straight"), losses_by_step(tmp_path / "resumed")
    assert {s: got[s] for s in (4, 5, 6)} == {s: expected[s] for s in (4, 5, 6)}  # bitwise


def test_bart_denoising_pretrains_evaluates_generates_and_finetunes(tmp_path):
    out = pretrain_then_finetune(tmp_path, "denoising", "bart", "Once upon a <mask>, there was a cat.")
    assert out["completion"]["new_tokens"] >= 1


def test_a_decoder_only_model_is_refused_before_the_run(tmp_path):
    proc = run_cli("pretrain", "objective=span_corruption", "model=gpt2-tiny", "device=cpu", cwd=tmp_path)
    assert proc.returncode == 2
    assert "needs an encoder-decoder model" in proc.stderr and "decoder-only" in proc.stderr
    proc = run_cli("pretrain", "objective=denoising", "objective.mask=1.5", "device=cpu", cwd=tmp_path)
    assert proc.returncode == 2 and "objective.mask" in proc.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.distributed
@pytest.mark.parametrize(("objective", "other"), [("span_corruption", "ddp"), ("denoising", "fsdp")])
def test_two_processes_train_like_each_other_and_resume_exactly(tmp_path, objective, other):
    """Two processes (gloo) under DDP and under FSDP see the same noised blocks (the noise is a pure function of
    seed, step, rank and micro-step) and give the same losses and weights; an FSDP or DDP checkpoint resumes with
    the uninterrupted run's losses (BART's noised inputs differ in length from rank to rank, so dropout draws
    differ too: each rank restores its own RNG state). (Not compared with one process at grad_accum=2: those
    layouts draw their noise from other (rank, micro-step) pairs.)"""
    from safetensors.torch import load_file

    args = ["objective=" + objective, *SMALL, "dataset.embedded_bytes=60000", "train.max_steps=4",
            "train.eval_every=4", "train.save_every=2"]
    torchrun(tmp_path, "ddp", *args, "device.strategy=ddp")
    torchrun(tmp_path, "fsdp", *args, "device.strategy=fsdp")
    ddp, fsdp = losses_by_step(tmp_path / "ddp"), losses_by_step(tmp_path / "fsdp")
    assert sorted(fsdp) == [1, 2, 3, 4] and fsdp[4] < fsdp[1]
    assert all(fsdp[s] == pytest.approx(ddp[s], rel=1e-5, abs=1e-6) for s in ddp), (ddp, fsdp)
    got, want = (load_file(str(tmp_path / run / "model" / "model.safetensors")) for run in ("fsdp", "ddp"))
    assert sorted(got) == sorted(want) and all(float((got[k] - want[k]).abs().max()) < 1e-4 for k in want)
    torchrun(tmp_path, "resumed", *args, f"device.strategy={other}",
             f"train.resume={tmp_path / other / 'checkpoints' / 'step-00000002'}")
    reference, resumed = losses_by_step(tmp_path / other), losses_by_step(tmp_path / "resumed")
    assert sorted(resumed) == [3, 4] and all(resumed[s] == pytest.approx(reference[s], rel=1e-6) for s in resumed), (
        resumed, reference)
