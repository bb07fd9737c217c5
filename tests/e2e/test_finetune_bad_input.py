"""Fine-tuning input errors: one screen naming the problem and the fix, a non-zero exit, no traceback."""

from __future__ import annotations

import pytest

from tests.support import TINY_FINETUNE as TINY
from tests.support import latest, run_cli, sentiment_rows

pytestmark = pytest.mark.slow
FAST = [*TINY, "train.max_steps=2", "train.batch_size=4", "train.eval_every=2"]


def one_screen_error(proc, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) < 25
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def write_csv(path, rows, header="text,label"):
    path.write_text(header + "\n" + "".join(f"{t},{lab}\n" for t, lab in rows))


def test_missing_label_column_names_the_columns(tmp_path):
    write_csv(tmp_path / "train.csv", sentiment_rows(20))
    proc = run_cli("finetune", *FAST, "dataset.files=[train.csv]", "dataset.label_column=labels", cwd=tmp_path)
    one_screen_error(proc, "column 'labels'", "the columns are: text, label", "Did you mean dataset.label_column=label",
                     "train.csv:2")


def test_empty_text_rows_are_skipped_and_counted_or_refused(tmp_path):
    rows = sentiment_rows(30)
    rows[3] = ("", "pos")
    rows[7] = ("  ", "neg")
    write_csv(tmp_path / "train.csv", rows)
    proc = run_cli("finetune", *FAST, "dataset.files=[train.csv]", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "skipped 2 training and 0 validation rows with empty text" in proc.stdout + proc.stderr
    proc = run_cli("finetune", *FAST, "dataset.files=[train.csv]", "dataset.empty_rows=fail",
                   "dataset.val_fraction=0", cwd=tmp_path)
    one_screen_error(proc, "row has empty text", "train.csv:5", "dataset.empty_rows=skip")


def test_validation_label_never_seen_in_training(tmp_path):
    write_csv(tmp_path / "train.csv", sentiment_rows(20))
    write_csv(tmp_path / "val.csv", [("the film was fine", "neutral")])
    proc = run_cli("finetune", *FAST, "dataset.files=[train.csv]", "dataset.val_files=[val.csv]", cwd=tmp_path)
    one_screen_error(proc, "label 'neutral' was never seen in training", "neg, pos", "val.csv:2")


def test_num_labels_differing_from_the_checkpoint_reinitialises_the_head(tmp_path):
    write_csv(tmp_path / "two.csv", sentiment_rows(20))
    assert run_cli("finetune", *FAST, "dataset.files=[two.csv]", cwd=tmp_path).returncode == 0
    first = latest(tmp_path)
    three = [(t, lab) for t, lab in sentiment_rows(30)] + [("the story was fine", "mixed")] * 5
    write_csv(tmp_path / "three.csv", three)
    proc = run_cli("finetune", *[a for a in FAST if not a.startswith("model")], f"model.path={first}",
                   "dataset.files=[three.csv]", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "the checkpoint's head has 2 labels but the data has 3: re-initialising the classification head" \
        in proc.stderr
    import json

    assert json.loads((latest(tmp_path) / "model" / "config.json").read_text())["id2label"] == {
        "0": "mixed", "1": "neg", "2": "pos"}


def test_declared_num_labels_must_match_the_data(tmp_path):
    write_csv(tmp_path / "train.csv", sentiment_rows(20))
    proc = run_cli("finetune", *FAST, "dataset.files=[train.csv]", "objective.num_labels=3", cwd=tmp_path)
    one_screen_error(proc, "objective.num_labels=3 but the training data has 2 labels", "num_labels=2 or null")


def test_malformed_conll_line_names_file_and_line(tmp_path):
    (tmp_path / "ner.txt").write_text("EU B-ORG\nrejects O\n\nPeter B-PER\nBlackburn\n")
    proc = run_cli("finetune", *FAST, "objective=token_classification", "dataset=conll", "dataset.files=[ner.txt]",
                   cwd=tmp_path)
    one_screen_error(proc, "malformed CoNLL line 'Blackburn'", "ner.txt:5")


def test_lora_needs_pretrained_weights_and_seq2seq_needs_a_target(tmp_path):
    write_csv(tmp_path / "train.csv", sentiment_rows(20))
    proc = run_cli("finetune", *FAST, "+peft=lora", "dataset.files=[train.csv]", cwd=tmp_path)
    one_screen_error(proc, "peft=lora adapts pretrained weights", "model=minilm")
    (tmp_path / "s.jsonl").write_text('{"text": "a b c", "summary": "a"}\n' * 10)
    proc = run_cli("finetune", "objective=seq2seq", "model=t5-tiny", "model.vocab_size=300", "dataset=jsonl",
                   "dataset.files=[s.jsonl]", "device=cpu", "train.max_steps=1", "train.epochs=null", cwd=tmp_path)
    one_screen_error(proc, "objective=seq2seq needs the target text column", "dataset.label_column")


def test_mean_pooling_on_a_model_it_cannot_fold_into_is_refused_before_the_run(tmp_path):
    write_csv(tmp_path / "train.csv", sentiment_rows(20))
    proc = run_cli("finetune", *FAST, "model=gpt2-tiny", "objective.pooling=mean", "dataset.files=[train.csv]",
                   cwd=tmp_path)
    one_screen_error(proc, "objective.pooling=mean folds mean pooling into a BERT encoder, but the model is 'gpt2'",
                     "objective.pooling=model")
    assert not (tmp_path / "outputs").exists()
