"""LoRA runs ptcli itself uses: generate, evaluate, predict and finetune load a `+peft=lora` run (its base with the
adapter merged in), checkpoints hold only the trainable parameters and resume exactly, `ptcli export --merge`
writes the merged model, and a base model that moved is named with the fix. Tiny models, CPU, one thread."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.support import assert_one_screen, evals, latest, losses_by_step, run_cli

pytestmark = pytest.mark.slow
CPU = ["device=cpu", "device.threads=1"]
SFT = ["objective=sft", "+peft=lora", "dataset=jsonl", "dataset.text_column=prompt",
       "dataset.label_column=response", "dataset.seq_len=32", "train.epochs=null", "train.batch_size=4",
       "train.log_every=1", "optim.lr=1e-2", *CPU]


def _sft_rows(folder: Path) -> None:
    rows = [{"prompt": f"say {w}", "response": f"{w} {w} {w}"} for w in ["cat", "dog", "sun", "bird", "tree"] * 8]
    (folder / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    SFT.append(f"dataset.files=[{folder / 'sft.jsonl'}]")  # absolute: evaluate reads the run's data from elsewhere


@pytest.fixture(scope="module")
def causal_run(models, tmp_path_factory):
    """An SFT LoRA run on a tiny GPT-2 whose model.path is relative to the directory it was started in."""
    here = tmp_path_factory.mktemp("causal-lora")
    shutil.copytree(models["gpt2"], here / "base-gpt2")
    _sft_rows(here)
    proc = run_cli("finetune", *SFT, "model.path=base-gpt2", "train.max_steps=4", "train.eval_every=4",
                   "train.save_every=2", "train.keep_last=5", cwd=here)
    assert proc.returncode == 0, proc.stderr
    return here, latest(here)


def test_generate_and_evaluate_load_a_causal_lora_run_from_anywhere(causal_run, tmp_path):
    here, run = causal_run
    assert (run / "model" / "adapter_config.json").is_file() and not (run / "model" / "config.json").exists()
    recorded = json.loads((run / "model" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert recorded == str((here / "base-gpt2").resolve())  # absolute: a later command may run anywhere
    proc = run_cli("generate", f"model.path={run}", "prompt=say cat", "max_new_tokens=3", *CPU, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "merged into its base model" in proc.stderr
    assert json.loads(proc.stdout.splitlines()[0])["new_tokens"] == 3
    proc = run_cli("evaluate", f"model.path={run}", *CPU, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert abs(result["loss"] - evals(run)[-1]["val_loss"]) < 1e-5  # the adapter training validated


def test_lora_checkpoints_hold_only_the_adapter_and_resume_exactly(causal_run):
    here, run = causal_run
    ckpt = run / "checkpoints" / "step-00000002"
    assert {p.name for p in ckpt.iterdir()} == {"trainable.safetensors", "optimizer.pt", "rng.pt", "state.json"}
    full = (here / "base-gpt2" / "model.safetensors").stat().st_size  # what a full checkpoint's weights weigh
    assert (ckpt / "trainable.safetensors").stat().st_size * 10 < full
    proc = run_cli("finetune", *SFT, "model.path=base-gpt2", "train.max_steps=4", "train.eval_every=4",
                   "train.save_every=2", f"train.resume={ckpt}", cwd=here)
    assert proc.returncode == 0, proc.stderr
    assert "resumed from" in proc.stderr
    resumed, straight = losses_by_step(latest(here)), losses_by_step(run)
    assert sorted(resumed) == [3, 4] and all(resumed[s] == straight[s] for s in (3, 4))  # bitwise


def test_export_merge_equals_the_adapter_model_and_refuses_a_full_run(causal_run, models, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    here, run = causal_run
    proc = run_cli("export", "--merge", str(run), str(tmp_path / "merged"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (tmp_path / "merged").iterdir()}
    ids = torch.tensor([[1, 5, 9, 30, 7, 2]])
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()(ids).logits
        base = AutoModelForCausalLM.from_pretrained(here / "base-gpt2")
        adapter = PeftModel.from_pretrained(base, run / "model").eval()
        adapted = adapter(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(here / "base-gpt2").eval()(ids).logits
    assert torch.allclose(merged, adapted, atol=1e-5)
    assert not torch.allclose(merged, plain, atol=1e-5)  # the adapter trained: merging changed the weights
    proc = run_cli("export", "--merge", str(models["gpt2"]), str(tmp_path / "nothing"), cwd=tmp_path)
    assert_one_screen(proc, 2, "holds no LoRA adapter", "+peft=lora")
    assert not (tmp_path / "nothing").exists()


def test_finetune_continues_from_a_lora_run_on_its_merged_weights(causal_run):
    here, run = causal_run
    proc = run_cli("finetune", *SFT, f"model.path={run}", "train.max_steps=1", "train.eval_every=1", cwd=here)
    assert proc.returncode == 0, proc.stderr
    assert "merged into its base model" in proc.stderr
    second = latest(here)
    assert json.loads((second / "model" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        run / "model")  # the new adapter's base is the first run's (loaded merged, in turn)
    proc = run_cli("generate", f"model.path={second}", "prompt=say sun", "max_new_tokens=2", *CPU, cwd=here)
    assert proc.returncode == 0, proc.stderr


def test_a_missing_base_is_named_with_the_fix_before_any_run_directory(causal_run, tmp_path):
    here, run = causal_run
    moved = tmp_path / "run-copy"
    shutil.copytree(run, moved, symlinks=True)
    config = json.loads((moved / "model" / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone")
    (moved / "model" / "adapter_config.json").write_text(json.dumps(config))
    (moved / "config.yaml").write_text((moved / "config.yaml").read_text().replace("base-gpt2", str(tmp_path / "also")))
    for verb in ("generate", "evaluate"):
        proc = run_cli(verb, f"model.path={moved}", "prompt=hi", *CPU, cwd=tmp_path) if verb == "generate" else \
            run_cli(verb, f"model.path={moved}", *CPU, cwd=tmp_path)
        assert_one_screen(proc, 2, "needs its base model", str(tmp_path / "gone"), str(tmp_path / "also"),
                          "base_model_name_or_path")
    assert not (tmp_path / "outputs").exists()


@pytest.fixture(scope="module")
def classifier_run(models, sentiment, tmp_path_factory):
    here = tmp_path_factory.mktemp("classifier-lora")
    proc = run_cli("finetune", f"model.path={models['bert']}", "+peft=lora", f"dataset.files=[{sentiment}]",
                   "dataset.seq_len=16", "train.epochs=null", "train.max_steps=4", "train.batch_size=8",
                   "train.eval_every=4", "train.save_every=4", "optim.lr=1e-2", *CPU, cwd=here)
    assert proc.returncode == 0, proc.stderr
    assert "bert.pooler.dense, classifier" in proc.stderr  # new in the base: trained and saved in full
    return latest(here)


def test_classification_lora_run_predicts_and_evaluates(classifier_run, tmp_path):
    run = classifier_run
    proc = run_cli("predict", f"model.path={run}", "input=the film was superb", *CPU, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[0])["label"] in ("pos", "neg")  # the label names came back
    proc = run_cli("evaluate", f"model.path={run}", *CPU, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert abs(json.loads(proc.stdout.splitlines()[-1])["loss"] - evals(run)[-1]["val_loss"]) < 1e-5


def test_quantize_merges_a_lora_run_first(classifier_run, tmp_path):
    proc = run_cli("quantize", f"model.path={classifier_run}", *CPU, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "merged into its base model" in proc.stderr
