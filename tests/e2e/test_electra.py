"""ELECTRA end to end: pretrained on the embedded corpus (both loss terms logged, the loss falling), resumed exactly,
the discriminator exported as model/ (an ElectraForPreTraining in plain transformers) and the generator as
generator/, `evaluate` reproducing validation, `finetune objective=classification` starting from the discriminator,
and two DDP processes matching one process with grad_accum=2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import TINY, evals, latest, losses_by_step, records, run_cli, torchrun

pytestmark = pytest.mark.slow

ELECTRA = ["objective=electra", *TINY, "train.eval_every=5", "optim.lr=2e-3"]


def test_electra_pretrains_resumes_exports_evaluates_and_finetunes(tmp_path, sentiment):
    from safetensors.torch import load_file

    args = [*ELECTRA, "train.max_steps=10", "train.save_every=5", "train.keep_last=5"]
    proc = run_cli("pretrain", *args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "run"
    logged = records(run)
    assert all({"gen_loss", "disc_loss", "disc_acc", "loss"} <= set(r) for r in logged)
    for r in logged:  # the loss is the generator's mean CE plus 50 x the discriminator's mean BCE
        assert r["loss"] == pytest.approx(r["gen_loss"] + 50 * r["disc_loss"], rel=1e-4)
    assert logged[-1]["loss"] < logged[0]["loss"] and all(r["loss"] == r["loss"] for r in logged)
    assert {"val_gen_loss", "val_disc_loss", "val_disc_accuracy", "val_disc_auc"} <= set(evals(run)[-1])
    saved = load_file(str(run / "checkpoints" / "step-00000010" / "model.safetensors"))
    shared = [k for k in saved if "embeddings.word_embeddings" in k]
    assert len(shared) == 1, f"the shared embedding is stored once: {shared}"
    # resumed from step 5 in a new run: the uninterrupted run's losses, bitwise
    resumed = run_cli("pretrain", *args, f"train.resume={run / 'checkpoints' / 'step-00000005'}",
                      f"hydra.run.dir={tmp_path / 'resumed'}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    want, got = losses_by_step(run), losses_by_step(tmp_path / "resumed")
    assert sorted(got) == list(range(6, 11)) and all(got[s] == want[s] for s in got)
    # model/ is the discriminator, generator/ the generator, both plain transformers folders sharing embeddings
    script = ("import sys\n"
              "from transformers import ElectraForPreTraining, ElectraForMaskedLM, AutoModelForPreTraining\n"
              "assert 'ptcli' not in sys.modules\n"
              f"d = AutoModelForPreTraining.from_pretrained({str(run / 'model')!r})\n"
              f"g = ElectraForMaskedLM.from_pretrained({str(run / 'generator')!r})\n"
              "assert isinstance(d, ElectraForPreTraining)\n"
              "assert (g.electra.embeddings.word_embeddings.weight == d.electra.embeddings.word_embeddings.weight)"
              ".all()\nprint(type(d).__name__, g.config.hidden_size, d.config.hidden_size)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-3:] == ["ElectraForPreTraining", "16", "64"]
    # evaluate reproduces the last validation (fixed masks and sampling noise per block)
    evaluated = run_cli("evaluate", f"model.path={run}", "output=json", "device=cpu", "device.threads=1",
                        cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    metrics, last = json.loads(evaluated.stdout), evals(run)[-1]
    for key in ("loss", "gen_loss", "disc_loss", "disc_accuracy", "disc_auc"):
        assert metrics[key] == pytest.approx(last[f"val_{key}"], rel=1e-5), key
    # generate on the discriminator: each token's replaced probability (JSON Lines); the generator fills masks
    judged = run_cli("generate", f"model.path={run}", "prompt=the cat sat on the mat", "device=cpu", cwd=tmp_path)
    assert judged.returncode == 0, judged.stderr[-2000:]
    line = json.loads(judged.stdout.splitlines()[0])
    assert line["prompt"] == "the cat sat on the mat" and line["tokens"]
    assert all(0 <= t["replaced"] <= 1 and isinstance(t["token_id"], int) for t in line["tokens"])
    import torch
    from transformers import AutoTokenizer, ElectraForPreTraining

    tokenizer = AutoTokenizer.from_pretrained(run / "model")
    ids = tokenizer("the cat sat on the mat", return_tensors="pt")
    with torch.no_grad():
        want = torch.sigmoid(ElectraForPreTraining.from_pretrained(run / "model").eval()(**ids).logits[0])
    special = set(tokenizer.all_special_ids)
    want = [round(float(p), 6) for t, p in zip(ids["input_ids"][0].tolist(), want) if t not in special]
    assert [t["replaced"] for t in line["tokens"]] == pytest.approx(want, abs=1e-5)
    filled = run_cli("generate", f"model.path={run / 'generator'}", "prompt=the [MASK] sat", "device=cpu",
                     cwd=tmp_path)
    assert filled.returncode == 0 and '"masks"' in filled.stdout, filled.stderr[-2000:]
    # fine-tuning a classifier starts from the discriminator
    tuned = run_cli("finetune", "objective=classification", f"model.path={run}", f"dataset.files=[{sentiment}]",
                    "train.epochs=null", "train.max_steps=3", "train.batch_size=8", "dataset.seq_len=32",
                    "optim.lr=0.0", "device=cpu", "device.threads=1", cwd=tmp_path)
    assert tuned.returncode == 0, tuned.stderr
    config = json.loads((latest(tmp_path) / "model" / "config.json").read_text())
    assert config["architectures"] == ["ElectraForSequenceClassification"]
    weights = load_file(str(latest(tmp_path) / "model" / "model.safetensors"))
    disc = load_file(str(run / "model" / "model.safetensors"))
    key = "electra.encoder.layer.0.attention.self.query.weight"
    assert bool((weights[key] == disc[key]).all()), "lr 0: the encoder is the discriminator's"


def test_electra_refuses_a_bad_setting_before_running(tmp_path):
    proc = run_cli("pretrain", *ELECTRA, "objective.mask_prob=1.5", "objective.disc_weight=0", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "mask_prob" in proc.stderr and "disc_weight" in proc.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.distributed
def test_electra_under_fsdp_equals_ddp_with_its_shared_embeddings(tmp_path):
    """Two processes (gloo), DDP and FSDP: the same losses and weights, one embedding in both exports, and an FSDP
    resume as exact as an uninterrupted run. (Not compared with one process at grad_accum=2: each micro-batch's
    masks come from a generator seeded by (seed, step, rank, micro), so those layouts draw different masks; the
    micro-batch split itself is tested exactly in tests/unit/objectives/test_electra.py.)"""
    from safetensors.torch import load_file

    args = [*ELECTRA, "train.max_steps=4", "train.batch_size=8", "train.eval_every=4", "train.save_every=2"]
    torchrun(tmp_path, "ddp", *args, "device.strategy=ddp")
    torchrun(tmp_path, "fsdp", *args, "device.strategy=fsdp")
    ddp, fsdp = records(tmp_path / "ddp"), records(tmp_path / "fsdp")
    assert [r["step"] for r in fsdp] == [1, 2, 3, 4]
    for a, b in zip(ddp, fsdp):
        assert b["loss"] == pytest.approx(a["gen_loss"] + 50 * a["disc_loss"], rel=1e-4)
        for key in ("loss", "gen_loss", "disc_loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (key, a["step"])
    assert fsdp[-1]["loss"] < fsdp[0]["loss"]
    assert (tmp_path / "fsdp" / "checkpoints" / "step-00000004" / "sharded").is_dir()
    key = "electra.embeddings.word_embeddings.weight"
    for name in ("model", "generator"):
        got, want = (load_file(str(tmp_path / run / name / "model.safetensors")) for run in ("fsdp", "ddp"))
        assert sorted(got) == sorted(want) and all(float((got[k] - want[k]).abs().max()) < 1e-5 for k in want)
    for run in ("ddp", "fsdp"):
        gen, disc = (load_file(str(tmp_path / run / name / "model.safetensors")) for name in ("generator", "model"))
        assert bool((gen[key] == disc[key]).all()), f"still one embedding after {run} training"
    torchrun(tmp_path, "resumed", *args, "device.strategy=fsdp",
             f"train.resume={tmp_path / 'fsdp' / 'checkpoints' / 'step-00000002'}")
    want, got = losses_by_step(tmp_path / "fsdp"), losses_by_step(tmp_path / "resumed")
    assert sorted(got) == [3, 4] and all(got[s] == want[s] for s in got)
