"""`ptcli quantize`: a fine-tuned classifier and a pretrained GPT in int8, smaller on disk, measured before and
after, and a run directory that evaluate, predict and generate load as it is."""

from __future__ import annotations

import json

import pytest

from tests.support import TINY, TINY_FINETUNE, assert_one_screen, latest, run_cli

pytestmark = pytest.mark.slow
CPU = ["device=cpu", "device.threads=1"]
QUICK = ["output=json", "latency.repeats=2", "latency.warmup=1", "latency.batch_sizes=[1,8]", *CPU]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, sentiment):
    """A tiny BERT fine-tuned on the sentiment CSV for a few steps."""
    root = tmp_path_factory.mktemp("classifier")
    proc = run_cli("finetune", *TINY_FINETUNE, f"dataset.files=[{sentiment}]", "optim.lr=3e-3", "train.max_steps=8",
                   "train.batch_size=16", "train.eval_every=8", cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return latest(root)


def clean(stderr: str) -> None:
    """No tracebacks, no torch/torchao import noise."""
    for noise in ("Traceback", "Failed to load", "_pytree.py", "DeprecationWarning", "Detected no triton"):
        assert noise not in stderr, stderr[-3000:]


@pytest.mark.parametrize("method", ["dynamic-int8", "int8-weight"])
def test_a_quantized_classifier_is_smaller_and_evaluates_and_predicts(classifier, tmp_path, method, sentiment):
    from ptcli.models.quantized import torchao_available

    if method != "dynamic-int8" and not torchao_available():
        pytest.skip("torchao is not installed")
    proc = run_cli("quantize", f"model.path={classifier}", f"method={method}", *QUICK, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    clean(proc.stderr)
    run = latest(tmp_path, "quantize")
    report = json.loads((run / "compression.json").read_text())
    assert json.loads(proc.stdout) == report
    before, after = report["before"], report["after"]
    assert report["method"] == method and report["layers_quantized"] > 0
    assert after["file_bytes"] < before["file_bytes"]
    assert "accuracy" in before["metrics"] and "accuracy" in after["metrics"]
    assert abs(after["metrics"]["accuracy"] - before["metrics"]["accuracy"]) <= 0.2
    assert {"latency_ms_b1", "latency_ms_b8"} <= set(after)
    recipe = json.loads((run / "model" / "ptcli_recipe.json").read_text())
    assert recipe["kind"] == "quantized" and recipe["method"] == method
    if method != "dynamic-int8":
        return  # "after" above is the reloaded folder, evaluated; the verbs below load it the same way

    proc = run_cli("evaluate", f"model.path={run}", "output=json", *CPU, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    clean(proc.stderr)
    assert json.loads(proc.stdout)["accuracy"] == pytest.approx(after["metrics"]["accuracy"])

    proc = run_cli("predict", f"model.path={run}", "input=[the plot was superb, the cast was awful]", *CPU,
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    clean(proc.stderr)
    labels = [json.loads(line)["label"] for line in proc.stdout.splitlines()]
    assert len(labels) == 2 and set(labels) <= {"pos", "neg"}

    proc = run_cli("finetune", *TINY_FINETUNE, f"model.path={run}", f"dataset.files=[{sentiment}]",
                   "train.max_steps=1", cwd=tmp_path)
    assert_one_screen(proc, 2, "int8 model", "fine-tune the model it was made from")


def test_a_quantized_gpt_generates(tmp_path):
    proc = run_cli("pretrain", *TINY, "train.max_steps=2", "train.eval_every=2", "train.save_every=2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    source = latest(tmp_path, "pretrain")
    proc = run_cli("quantize", f"model.path={source}", *QUICK, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    clean(proc.stderr)
    report = json.loads(proc.stdout)
    assert report["layers_fp32"] == ["lm_head"], "tied to the token embeddings: kept in fp32"
    assert report["after"]["file_bytes"] < report["before"]["file_bytes"]
    assert "perplexity" in report["after"]["metrics"]
    run = latest(tmp_path, "quantize")
    proc = run_cli("generate", f"model.path={run}", "prompt=hi", "max_new_tokens=3", *CPU, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    clean(proc.stderr)
    assert proc.stdout.strip()
