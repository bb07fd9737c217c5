"""Masked-autoencoder pretraining, then fine-tuning its encoder, through the CLI as a user runs them: ``ptcli pretrain
objective=mae`` on the digits learns (images/s, the loss falls), resumes exactly (its masks are the step's) and
exports a plain ViTMAEForPreTraining folder; ``ptcli finetune objective=image_classification model.path=<that run>``
starts from its encoder with a new head and its image processor; both folders load in transformers without ptcli.
A bad mask ratio is an exit-2 config error."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import assert_one_screen, evals, latest, losses_by_step, records, run_cli

pytestmark = pytest.mark.slow

CPU = ["device=cpu", "device.threads=1", "train.log_every=1"]


def test_mae_pretraining_then_fine_tuning_its_encoder(tmp_path):
    from safetensors.torch import load_file

    args = ["objective=mae", "train.max_steps=10", "train.batch_size=32", "train.eval_every=10", "train.save_every=5",
            "train.keep_last=2", "scheduler=constant", "optim.lr=3e-3", *CPU]
    proc = run_cli("pretrain", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    mae = latest(tmp_path, "pretrain")
    losses = losses_by_step(mae)
    assert sorted(losses) == list(range(1, 11)) and "img/s" in proc.stderr
    assert all(r["images_per_s"] > 0 for r in records(mae))
    assert sum(losses[s] for s in (8, 9, 10)) / 3 < losses[1] - 0.1, losses  # it learns to reconstruct
    assert 0 < evals(mae)[-1]["val_loss"] < losses[1]
    config = json.loads((mae / "model" / "config.json").read_text())
    assert config["architectures"] == ["ViTMAEForPreTraining"] and config["mask_ratio"] == 0.75
    assert config["norm_pix_loss"] is True and config["decoder_num_hidden_layers"] == 2

    proc = run_cli("pretrain", *args, f"train.resume={mae / 'checkpoints' / 'step-00000005'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    resumed = losses_by_step(latest(tmp_path, "pretrain"))
    assert sorted(resumed) == [6, 7, 8, 9, 10], "the masks are the step's: a resumed run draws the same ones"
    assert all(abs(resumed[s] - losses[s]) < 1e-6 for s in resumed), (resumed, losses)

    proc = run_cli("finetune", "objective=image_classification", f"model.path={mae}", "train.max_steps=3",
                   "train.batch_size=16", "optim.lr=0.0", *CPU, cwd=tmp_path)  # lr 0: the encoder stays as loaded
    assert proc.returncode == 0, proc.stderr
    assert "from the masked autoencoder" in proc.stderr
    assert "newly initialised: classifier.bias, classifier.weight" in proc.stderr
    tuned = latest(tmp_path)
    assert (tuned / "model" / "preprocessor_config.json").read_text() == \
        (mae / "model" / "preprocessor_config.json").read_text(), "the MAE's image processor is reused"
    encoder = load_file(mae / "model" / "model.safetensors")
    classifier = load_file(tuned / "model" / "model.safetensors")
    shared = [k for k in encoder if k.startswith("vit.")]
    assert len(shared) > 10 and all((classifier[k] == encoder[k]).all() for k in shared)
    assert sorted(set(classifier) - set(shared)) == ["classifier.bias", "classifier.weight"]

    script = ("import sys, torch\nfrom transformers import AutoImageProcessor, AutoModelForPreTraining, pipeline\n"
              "from sklearn.datasets import load_digits\nfrom PIL import Image\nimport numpy as np\n"
              "assert 'ptcli' not in sys.modules\n"
              "image = Image.fromarray((load_digits().images[0] * 255 / 16).astype(np.uint8)).convert('RGB')\n"
              f"model = AutoModelForPreTraining.from_pretrained({str(mae / 'model')!r})\n"
              f"pixels = AutoImageProcessor.from_pretrained({str(mae / 'model')!r})(image, return_tensors='pt')\n"
              "out = model(**pixels)\n"
              "print(type(model).__name__, int(out.mask.sum()), bool(torch.isfinite(out.loss)))\n"
              f"classify = pipeline('image-classification', model={str(tuned / 'model')!r})\n"
              "print(classify(image)[0]['label'])")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-2] == "ViTMAEForPreTraining 12 True"  # 3/4 of the 16 patches hidden
    assert lines[-1] in [str(d) for d in range(10)]


def test_a_mask_ratio_out_of_range_is_a_config_error(tmp_path):
    proc = run_cli("pretrain", "objective=mae", "objective.mask_ratio=1.5", cwd=tmp_path)
    assert_one_screen(proc, 2, "objective.mask_ratio must be in (0, 1), got 1.5")
    assert not (tmp_path / "outputs").exists()
