"""Images end to end: class folders with mixed modes and sizes, an unknown validation class, Hugging Face data with
Image features, DDP equal to one process, and the exported ViT reloaded in plain transformers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.support import evals, latest, records, run_cli

pytestmark = pytest.mark.slow
CPU = ["device=cpu", "device.threads=1"]
SMALL_VIT = ["model=vit-tiny", "train.log_every=5", "optim.lr=3e-3", "optim.weight_decay=0.0", "train.epochs=null"]
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def coloured(path, colour, size, mode, seed):
    """A noisy picture of one colour, saved in ``mode`` (grey ones keep a brightness that tells them apart)."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour)[None, None, :] + rng.normal(0, 25, (size[1], size[0], 3)), 0, 255)
    picture = Image.fromarray(pixels.astype(np.uint8), "RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    (picture.convert(mode) if mode != "RGB" else picture).save(path)


def make_folders(root, per_class=24, val_per_class=6):
    modes, sizes = ("RGB", "RGBA", "RGB", "P"), ((16, 16), (20, 12), (9, 9), (31, 17))
    n = 0
    for split, count in (("train", per_class), ("validation", val_per_class)):
        for name, colour in COLOURS.items():
            for i in range(count):
                coloured(root / split / name / f"{i:03d}.png", colour, sizes[i % 4], modes[i % 4], n)
                n += 1
    return root


def test_class_folders_of_mixed_images_train_and_reload_in_transformers(tmp_path):
    folders = make_folders(tmp_path / "images")
    (folders / "train" / "red" / "README.txt").write_text("not an image")
    proc = run_cli("finetune", "objective=image_classification", *SMALL_VIT, *CPU, "dataset=imagefolder",
                   f"dataset.path={folders}", "train.max_steps=30", "train.batch_size=16", "train.eval_every=30",
                   "objective.crop_scale=0.5", "objective.flip=true", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "labels: 3 (blue, green, red)" in proc.stderr and "without an image suffix" in proc.stderr
    run = latest(tmp_path)
    assert evals(run)[-1]["val_accuracy"] >= 0.9, evals(run)
    assert all(r["images_per_s"] > 0 for r in records(run))
    script = f"""
import json, sys, torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification
assert 'ptcli' not in sys.modules
model = AutoModelForImageClassification.from_pretrained({str(run / 'model')!r}).eval()
processor = AutoImageProcessor.from_pretrained({str(run / 'model')!r})
image = Image.open({str(folders / 'validation' / 'blue' / '001.png')!r}).convert('RGB')
with torch.no_grad():
    logits = model(**processor(image, return_tensors='pt')).logits[0]
print(json.dumps({{'logits': logits.tolist(), 'labels': model.config.id2label}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    plain = json.loads(out.stdout.strip().splitlines()[-1])
    assert plain["labels"] == {"0": "blue", "1": "green", "2": "red"}

    import dataclasses

    import torch
    from omegaconf import OmegaConf

    from ptcli.config.schema import DeviceConfig, ModelConfig
    from ptcli.inference.loading import load_for_inference
    from ptcli.processing.images import rgb

    model_cfg = OmegaConf.create(dataclasses.asdict(ModelConfig(path=str(run))))
    device_cfg = OmegaConf.create(dataclasses.asdict(DeviceConfig(accelerator="cpu", threads=1)))
    loaded = load_for_inference(model_cfg, device_cfg, "classify", lambda m: None,
                                auto_class="AutoModelForImageClassification")
    pixels = loaded.processors["image_processor"](rgb(str(folders / "validation" / "blue" / "001.png")),
                                                  return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        ours = loaded.model(pixel_values=pixels).logits[0].tolist()
    assert ours == pytest.approx(plain["logits"], abs=1e-6), "ptcli and plain transformers agree"


def test_a_validation_class_training_never_saw_is_named(tmp_path):
    folders = make_folders(tmp_path / "images", per_class=4, val_per_class=2)
    coloured(folders / "validation" / "purple" / "0.png", (120, 20, 120), (8, 8), "RGB", 0)
    proc = run_cli("finetune", "objective=image_classification", *SMALL_VIT, *CPU, "dataset=imagefolder",
                   f"dataset.path={folders}", "train.max_steps=2", cwd=tmp_path)
    assert proc.returncode == 2 and "'purple' was never seen in training" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_hugging_face_dataset_with_image_features(tmp_path):
    """A parquet file written by `datasets` with an Image column (decoded to PIL images by its features)."""
    import datasets

    rows = {"img": [], "label": []}
    for i in range(48):
        name = list(COLOURS)[i % 3]
        coloured(tmp_path / "tmp.png", COLOURS[name], (12, 12), "RGB", i)
        rows["img"].append(Image.open(tmp_path / "tmp.png").copy())
        rows["label"].append(name)
    data = datasets.Dataset.from_dict(rows).cast_column("img", datasets.Image())
    data.to_parquet(str(tmp_path / "colours.parquet"))
    proc = run_cli("finetune", "objective=image_classification", *SMALL_VIT, *CPU, "dataset=hf",
                   "dataset.hf_name=parquet", f"dataset.files=[{tmp_path / 'colours.parquet'}]",
                   "dataset.image_column=img", "dataset.val_fraction=0.25", "train.max_steps=20",
                   "train.batch_size=12", "train.eval_every=20", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "labels: 3 (blue, green, red)" in proc.stderr
    assert evals(latest(tmp_path))[-1]["val_accuracy"] >= 0.9


@pytest.mark.distributed
def test_two_processes_equal_one_process_with_accumulation(tmp_path):
    args = ["objective=image_classification", *SMALL_VIT, "train.max_steps=4", "train.batch_size=16",
            "train.eval_every=4", "train.log_every=1"]
    single = run_cli("finetune", *args, *CPU, "train.grad_accum=2", f"hydra.run.dir={tmp_path / 'one'}",
                     cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", "-m",
                          "ptcli", "finetune", *args, "device=cpu", f"hydra.run.dir={tmp_path / 'two'}"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    one, both = records(tmp_path / "one"), records(tmp_path / "two")
    assert [r["step"] for r in both] == [1, 2, 3, 4]
    for a, b in zip(one, both):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5), a["step"]
    assert evals(tmp_path / "two")[-1]["val_accuracy"] == pytest.approx(evals(tmp_path / "one")[-1]["val_accuracy"])


def test_a_resumed_run_sees_the_same_augmented_batches(tmp_path):
    """Crops and flips are drawn from the step's seed: resumed from the step-3 checkpoint, a run logs the losses of
    the uninterrupted one."""
    folders = make_folders(tmp_path / "images", per_class=8, val_per_class=2)
    args = ["objective=image_classification", *SMALL_VIT, *CPU, "dataset=imagefolder", f"dataset.path={folders}",
            "train.max_steps=6", "train.batch_size=8", "train.eval_every=6", "train.save_every=3",
            "train.log_every=1", "objective.crop_scale=0.3", "objective.flip=true", "train.keep_last=2"]
    whole = run_cli("finetune", *args, f"hydra.run.dir={tmp_path / 'whole'}", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    resumed = run_cli("finetune", *args, f"train.resume={tmp_path / 'whole' / 'checkpoints' / 'step-00000003'}",
                      f"hydra.run.dir={tmp_path / 'resumed'}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    want = {r["step"]: r["loss"] for r in records(tmp_path / "whole")}
    got = {r["step"]: r["loss"] for r in records(tmp_path / "resumed")}
    assert [s for s in got if s > 3] == [4, 5, 6]
    assert all(got[s] == want[s] for s in (4, 5, 6)), (got, want)
