"""objective=contrastive end to end through the CLI: a dual encoder learns digits from templated captions (loss down,
zero-shot accuracy well above chance), `ptcli evaluate` on the run gives the best evaluation's metrics again, the
folder loads in transformers' zero-shot-image-classification pipeline without ptcli, `ptcli export` rebuilds it from
a checkpoint, `generate` refuses it; and captions from the data give retrieval metrics."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import REPO, assert_one_screen, evals, latest, records, run_cli

pytestmark = pytest.mark.slow

CPU = ["device=cpu", "device.threads=1"]
PIPELINE = """
import sys
import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from transformers import AutoProcessor, pipeline
assert 'ptcli' not in sys.modules
classify = pipeline('zero-shot-image-classification', model=sys.argv[1])
image = Image.fromarray((load_digits().images[0] * 255 / 16).astype(np.uint8)).convert('RGB')
out = classify(image, candidate_labels=[str(d) for d in range(10)], hypothesis_template='a photo of a {}')
print(type(AutoProcessor.from_pretrained(sys.argv[1])).__name__)
print(round(sum(r['score'] for r in out), 4), out[0]['label'])
"""


def test_digits_from_templated_captions_evaluate_pipeline_export(tmp_path):
    proc = run_cli("finetune", "objective=contrastive", "train.epochs=null", "train.max_steps=150",
                   "train.batch_size=32", "train.eval_every=75", "train.log_every=10", "optim.lr=1e-3", *CPU,
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "this tests the machinery, not open-vocabulary retrieval" in proc.stderr
    run = latest(tmp_path)
    train = records(run)
    assert all(r["images_per_s"] > 0 for r in train) and all("temperature" in r for r in train)
    assert train[-1]["loss"] < train[0]["loss"] - 0.3, [r["loss"] for r in train]
    last = evals(run)[-1]
    assert {"val_loss", "val_zeroshot_accuracy", "val_i2t_r1", "val_i2t_r5", "val_t2i_r1", "val_t2i_r5"} <= set(last)
    assert last["val_zeroshot_accuracy"] > 0.2, "well above chance (0.1) after 150 steps"
    assert (run / "model" / "processor_config.json").is_file() and (run / "model" / "tokenizer.json").is_file()

    evaluated = run_cli("evaluate", f"model.path={run}", "output=json", "batch_size=32", *CPU, cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = json.loads(evaluated.stdout)  # the held-out fifth, with the best evaluation's weights
    best = json.loads((run / "summary.json").read_text())["best_val"]
    assert metrics["objective"] == "contrastive" and metrics["examples"] == 360
    for key in ("zeroshot_accuracy", "i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5"):
        assert metrics[key] == pytest.approx(best[key]), key
    assert metrics["loss"] == pytest.approx(best["loss"], rel=1e-4)  # the same batches of 32: the same negatives

    out = subprocess.run([sys.executable, "-c", PIPELINE, str(run / "model")], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    processor, scores = out.stdout.strip().splitlines()[-2:]
    assert processor == "VisionTextDualEncoderProcessor"
    total, label = scores.split()
    assert float(total) == pytest.approx(1.0, abs=1e-3) and label in [str(d) for d in range(10)]

    exported = run_cli("export", str(run), str(tmp_path / "hf"), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr[-3000:]
    from safetensors.torch import load_file
    from transformers import AutoModel

    step = sorted((run / "checkpoints").iterdir())[-1]  # the newest checkpoint, as the module named its weights
    again, saved = AutoModel.from_pretrained(tmp_path / "hf").state_dict(), load_file(str(step / "model.safetensors"))
    assert sorted(again) == sorted(saved) and all(bool((again[k] == saved[k]).all()) for k in saved)

    refused = run_cli("generate", f"model.path={run}", "prompt=hello", *CPU, cwd=tmp_path)
    assert_one_screen(refused, 2, "image-text dual encoder")


def test_captions_from_the_data_give_retrieval_metrics(tmp_path):
    if not (REPO / "configs" / "dataset" / "image-captions.yaml").is_file():
        pytest.skip("needs dataset=image-captions")
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    words = "zero one two three four five six seven eight nine".split()
    (tmp_path / "img").mkdir()
    with (tmp_path / "captions.jsonl").open("w") as f:
        for i in range(120):
            Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8)).save(tmp_path / "img" / f"{i}.png")
            f.write(json.dumps({"image": f"img/{i}.png", "caption": f"a handwritten {words[digits.target[i]]}"}) + "\n")
    proc = run_cli("finetune", "objective=contrastive", "dataset=image-captions",
                   f"dataset.files=[{tmp_path / 'captions.jsonl'}]", "dataset.val_fraction=0.25", "train.epochs=null",
                   "train.max_steps=4", "train.batch_size=16", "train.eval_every=4", "optim.lr=1e-3", *CPU,
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not open-vocabulary" not in proc.stderr  # real captions
    last = evals(latest(tmp_path))[-1]
    assert {"val_i2t_r1", "val_t2i_r5"} <= set(last) and "val_zeroshot_accuracy" not in last
    evaluated = run_cli("evaluate", f"model.path={latest(tmp_path)}", "output=json", *CPU, cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = json.loads(evaluated.stdout)
    assert metrics["examples"] == 30 and 0 <= metrics["t2i_r1"] <= 1
    assert metrics["i2t_r5"] == pytest.approx(last["val_i2t_r5"])  # recall does not depend on the batch size
