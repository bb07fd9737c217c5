"""The objective interface serves what comes next, end to end through the CLI: two models trained together
(one process, DDP and FSDP; checkpointed, resumed, both loss terms logged, the named one exported), a frozen helper
model (placed, in the run's precision, not checkpointed), an image batch (digits into a tiny ViT, images/s), and a
lower-is-better metric picking the best checkpoint. The objectives are tests/plugins/objectives.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support import REPO, TINY, evals, latest, losses_by_step, records, run_cli

pytestmark = pytest.mark.slow

PLUGINS = "tests.plugins.objectives."
ENV = {"PYTHONPATH": str(REPO)}  # the test plug-ins are importable from the repository root
TWO = [*TINY, f"objective._target_={PLUGINS}TwoModels", "train.eval_every=3"]


def torchrun(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **ENV, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                           "-m", "ptcli", "pretrain", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_two_models_are_trained_checkpointed_resumed_logged_and_the_named_one_exported(tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    args = [*TWO, "train.max_steps=6", "train.save_every=3", "train.keep_last=5"]
    straight = run_cli("pretrain", *args, f"hydra.run.dir={tmp_path / 'straight'}", cwd=tmp_path, env=ENV)
    assert straight.returncode == 0, straight.stderr
    run = tmp_path / "straight"
    logged = records(run)
    assert all({"first", "second", "loss"} <= set(r) for r in logged), "both loss terms reach metrics.jsonl"
    for r in logged:  # the loss is their sum (both are means over the same tokens)
        assert r["loss"] == pytest.approx(r["first"] + r["second"], rel=1e-5)
    assert "first " in straight.stderr and "second " in straight.stderr, "and the progress line"
    saved = load_file(str(run / "checkpoints" / "step-00000006" / "model.safetensors"))
    assert any(k.startswith("first.") for k in saved) and any(k.startswith("second.") for k in saved)
    model = AutoModelForCausalLM.from_pretrained(run / "model")  # an ordinary HF folder: the member named 'second'
    for name, tensor in model.state_dict().items():
        if f"second.{name}" in saved:
            assert bool((tensor == saved[f"second.{name}"]).all()), name
    assert any(f"second.{n}" in saved for n in model.state_dict())
    # resumed from step 3 in a new run: the uninterrupted run's losses, bitwise
    resumed = run_cli("pretrain", *args, f"train.resume={run / 'checkpoints' / 'step-00000003'}",
                      f"hydra.run.dir={tmp_path / 'resumed'}", cwd=tmp_path, env=ENV)
    assert resumed.returncode == 0, resumed.stderr
    want, got = losses_by_step(run), losses_by_step(tmp_path / "resumed")
    assert sorted(got) == [4, 5, 6] and all(got[s] == want[s] for s in got)
    # `ptcli export` rebuilds the two models from the checkpoint and writes the named one
    exported = run_cli("export", str(run / "checkpoints" / "step-00000006"), str(tmp_path / "hf"), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    again = load_file(str(tmp_path / "hf" / "model.safetensors"))
    final = load_file(str(run / "model" / "model.safetensors"))
    assert sorted(again) == sorted(final) and all(bool((again[k] == final[k]).all()) for k in final)


@pytest.mark.distributed
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_models_in_two_processes_match_one_process(tmp_path, strategy):
    args = [*TWO, "train.max_steps=4", "train.batch_size=8", "train.eval_every=4", "train.save_every=4"]
    single = run_cli("pretrain", *args, "train.grad_accum=2", f"hydra.run.dir={tmp_path / 'single'}", cwd=tmp_path,
                     env=ENV)
    assert single.returncode == 0, single.stderr
    torchrun(tmp_path, *args, f"device.strategy={strategy}", f"hydra.run.dir={tmp_path / 'two'}")
    one, two = records(tmp_path / "single"), records(tmp_path / "two")
    assert [r["step"] for r in two] == [1, 2, 3, 4]
    for a, b in zip(one, two):
        for key in ("loss", "first", "second"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (key, a["step"])
    sharded = (tmp_path / "two" / "checkpoints" / "step-00000004" / "sharded").is_dir()
    assert sharded == (strategy == "fsdp")
    from safetensors.torch import load_file

    got, want = (load_file(str(d / "model" / "model.safetensors")) for d in (tmp_path / "two", tmp_path / "single"))
    assert sorted(got) == sorted(want)
    assert all(float((got[k] - want[k]).abs().max()) < 1e-4 for k in want)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_frozen_helper_is_placed_in_the_runs_precision_and_never_checkpointed(tmp_path, precision):
    from safetensors.torch import load_file

    proc = run_cli("pretrain", *TINY, f"objective._target_={PLUGINS}WithTeacher", "train.max_steps=3",
                   "train.save_every=3", f"device.precision={precision}", cwd=tmp_path, env=ENV)
    assert proc.returncode == 0, proc.stderr
    run = latest(tmp_path, "pretrain")
    seen = json.loads((run / "helper.json").read_text())
    assert seen == {"device": "cpu", "dtype": "torch.float32" if precision == "fp32" else "torch.bfloat16",
                    "requires_grad": False, "training": False, "class": "GPT2LMHeadModel", "sharded": False}
    assert "kl" in records(run)[-1], "the helper's loss term is logged"
    from transformers import AutoModelForCausalLM

    saved = load_file(str(run / "checkpoints" / "step-00000003" / "model.safetensors"))
    student = AutoModelForCausalLM.from_pretrained(run / "model")
    assert set(saved) <= set(student.state_dict()), "the checkpoint holds the trained model only"
    assert sum(t.numel() for t in saved.values()) == sum(p.numel() for p in student.parameters())
    assert "helpers: teacher" in proc.stderr


@pytest.mark.distributed
def test_a_frozen_helper_is_sharded_with_the_model_under_fsdp(tmp_path):
    torchrun(tmp_path, *TINY, f"objective._target_={PLUGINS}WithTeacher", "train.max_steps=2", "train.batch_size=8",
             "device.strategy=fsdp", f"hydra.run.dir={tmp_path / 'run'}")
    seen = json.loads((tmp_path / "run" / "helper.json").read_text())
    assert seen["sharded"] and not seen["requires_grad"] and not seen["training"]


def test_an_image_batch_flows_end_to_end(tmp_path):
    """scikit-learn's digits through the image processor into a tiny ViT: trained, evaluated with its own metrics,
    throughput in images/s; the folder loads in transformers' image-classification pipeline without ptcli."""
    proc = run_cli("finetune", "objective=image_classification", "train.max_steps=100", "train.batch_size=32",
                   "train.eval_every=50", "optim.lr=3e-3", "optim.weight_decay=0.0", "device=cpu", "device.threads=1",
                   "train.log_every=10", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = latest(tmp_path)
    train = records(run)
    assert all(r["images_per_s"] > 0 for r in train) and "img/s" in proc.stderr
    assert {"val_accuracy", "val_top5", "val_f1_macro"} <= set(evals(run)[-1])
    assert evals(run)[-1]["val_accuracy"] > 0.3, "far better than chance (0.1) after 100 steps"
    assert (run / "model" / "preprocessor_config.json").is_file()
    script = ("import sys\nfrom transformers import pipeline\nfrom sklearn.datasets import load_digits\n"
              "from PIL import Image\nimport numpy as np\nassert 'ptcli' not in sys.modules\n"
              f"classify = pipeline('image-classification', model={str(run / 'model')!r})\n"
              "image = Image.fromarray((load_digits().images[0] * 255 / 16).astype(np.uint8)).convert('RGB')\n"
              "print(classify(image)[0]['label'])")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] in [str(d) for d in range(10)], "id2label holds the class names"
    evaluated = run_cli("evaluate", f"model.path={run}", "output=json", "device=cpu", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)  # the same held-out fifth, with the best evaluation's weights
    best = json.loads((run / "summary.json").read_text())["best_val"]
    assert metrics["objective"] == "image_classification" and metrics["examples"] == 360
    assert metrics["accuracy"] == pytest.approx(best["accuracy"]) and metrics["top5"] == pytest.approx(best["top5"])


def test_a_lower_is_better_metric_picks_the_lowest_evaluation(tmp_path):
    proc = run_cli("pretrain", *TINY, f"objective._target_={PLUGINS}LowerIsBetter", "train.max_steps=6",
                   "train.eval_every=1", "train.save_every=1", "train.keep_last=10", "optim.lr=3e-2",
                   "train.best_metric=surprise", "train.export=best", cwd=tmp_path, env=ENV)
    assert proc.returncode == 0, proc.stderr
    run = latest(tmp_path, "pretrain")
    surprise = {r["step"]: r["val_surprise"] for r in evals(run)}
    best = min(surprise, key=surprise.get)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_step"] == best and summary["best_metric_higher_is_better"] is False
    assert max(surprise, key=surprise.get) != best, "the metric moved: picking the highest would differ"
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, GPT2LMHeadModel

    exported = AutoModelForCausalLM.from_pretrained(run / "model").state_dict()
    config = AutoModelForCausalLM.from_pretrained(run / "model").config
    reference = GPT2LMHeadModel(config)
    reference.load_state_dict(load_file(str(run / "checkpoints" / f"step-{best:08d}" / "model.safetensors")),
                              strict=False)
    reference.tie_weights()
    compared = [k for k in exported if k in reference.state_dict()]
    assert compared == list(exported) and all(bool((exported[k] == reference.state_dict()[k]).all())
                                              for k in compared)
