"""`distill.teacher=<run>`: a student fine-tuned against a frozen teacher, on the task objective's own data and
metrics; the teacher never enters a checkpoint; teachers that cannot teach this student are refused; a causal LM
distils token by token."""

from __future__ import annotations

import pytest

from tests.support import TINY_FINETUNE, assert_one_screen, evals, latest, records, run_cli, sentiment_rows, tiny_models

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher")
    (root / "train.csv").write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in sentiment_rows(300)))
    proc = run_cli("finetune", *TINY_FINETUNE, "dataset=csv", "dataset.files=[train.csv]", "dataset.val_fraction=0.2",
                   "train.max_steps=40", "optim.lr=3e-3", "train.log_every=20", cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root, latest(root)


def student_args(root):
    return [*TINY_FINETUNE, "dataset=csv", f"dataset.files=[{root / 'train.csv'}]", "dataset.val_fraction=0.2",
            "train.max_steps=6", "train.save_every=6", "train.eval_every=6", "optim.lr=3e-3"]


def test_a_half_depth_student_learns_from_the_teacher_and_checkpoints_only_itself(teacher, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    root, run = teacher
    proc = run_cli("finetune", *student_args(root), f"distill.teacher={run}", "distill.init_from_teacher=true",
                   "distill.alpha=0.7", "distill.hidden_weight=0.5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    student = latest(tmp_path)
    assert "the student uses the teacher's tokenizer" in proc.stderr and "layers [0]" in proc.stderr
    last = records(student)[-1]
    assert {"task_loss", "kd_loss", "hidden_loss"} <= set(last)
    assert last["loss"] == pytest.approx(0.3 * last["task_loss"] + 0.7 * 4 * last["kd_loss"]
                                         + 0.5 * last["hidden_loss"], rel=1e-3)
    assert "val_accuracy" in evals(student)[-1], "the task's own metrics"
    model = AutoModelForSequenceClassification.from_pretrained(student / "model")
    assert model.config.num_hidden_layers == 1 and model.config.id2label == {0: "neg", 1: "pos"}
    saved = load_file(str(student / "checkpoints" / "step-00000006" / "model.safetensors"))
    assert sum(t.numel() for t in saved.values()) == sum(p.numel() for p in model.parameters()), \
        "the frozen teacher is not checkpointed"


def test_a_teacher_with_other_tokens_is_refused_with_the_fix(teacher, tmp_path):
    root, run = teacher
    other = tiny_models(tmp_path)["bert"]  # a model whose own tokenizer was trained on other text
    proc = run_cli("finetune", *student_args(root), f"model.path={other}", f"distill.teacher={run}", cwd=tmp_path)
    assert_one_screen(proc, 2, "tokenizers differ", f"tokenizer.path={run}")


def test_bad_distillation_settings_stop_before_any_run_directory(teacher, tmp_path):
    root, run = teacher
    proc = run_cli("finetune", *student_args(root), f"distill.teacher={run}", "distill.alpha=1.5",
                   "distill.temperature=0", cwd=tmp_path)
    assert_one_screen(proc, 2, "distill.alpha", "distill.temperature")
    missing = run_cli("finetune", *student_args(root), f"distill.teacher={tmp_path}/nope", cwd=tmp_path)
    assert_one_screen(missing, 2, "distill.teacher")
    assert not (tmp_path / "outputs").exists()


def test_a_causal_lm_distils_token_by_token(tmp_path):
    common = ["model=gpt2-tiny", "model.layers=2", "model.hidden=32", "model.heads=2", "dataset.seq_len=32",
              "train.batch_size=4", "device=cpu", "device.threads=1", "train.log_every=1"]
    proc = run_cli("pretrain", *common, "train.max_steps=4", "run.out_dir=teacher", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    teacher_run = tmp_path / "teacher" / "pretrain" / "latest"
    proc = run_cli("pretrain", *common, "model.layers=1", "train.max_steps=3", f"distill.teacher={teacher_run}",
                   f"tokenizer.path={teacher_run}", "run.out_dir=student", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    last = records(tmp_path / "student" / "pretrain" / "latest")[-1]
    assert last["kd_loss"] > 0 and last["task_loss"] > 0
    assert last["loss"] == pytest.approx(0.5 * last["task_loss"] + 0.5 * 4 * last["kd_loss"], rel=1e-3)


@pytest.mark.distributed
@pytest.mark.parametrize("strategy", ["fsdp"])  # DDP replicates it the same way (parallelize.place_helpers)
def test_the_teacher_is_replicated_or_sharded_with_the_student(tmp_path, strategy):
    import os
    import subprocess
    import sys

    common = ["model=gpt2-tiny", "model.layers=2", "model.hidden=32", "model.heads=2", "dataset.seq_len=32",
              "train.batch_size=8", "device=cpu", "device.threads=1", "train.log_every=1",
              "dataset.embedded_bytes=150000"]
    proc = run_cli("pretrain", *common, "train.max_steps=2", "run.out_dir=teacher", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    teacher_run = tmp_path / "teacher" / "pretrain" / "latest"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                           "-m", "ptcli", "pretrain", *common, "model.layers=1", "train.max_steps=2",
                           f"distill.teacher={teacher_run}", f"tokenizer.path={teacher_run}",
                           f"device.strategy={strategy}", f"hydra.run.dir={tmp_path / 'student'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = records(tmp_path / "student")[-1]
    assert last["kd_loss"] > 0 and "helpers: teacher" in proc.stderr
