"""`ptcli predict`: image paths or texts in, a classifier's labels out, as a pipe or a table; bad inputs reported
while the others are labelled; the labels agree with transformers' own pipeline."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import TINY_FINETUNE, latest, run_cli

pytestmark = pytest.mark.slow
CPU = ["device=cpu", "device.threads=1"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A tiny ViT fine-tuned on scikit-learn's digits for 60 steps, and ten of the digits as PNG files."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("digits")
    proc = run_cli("finetune", "objective=image_classification", "train.max_steps=60", "train.batch_size=32",
                   "train.eval_every=60", "optim.lr=3e-3", *CPU, "train.log_every=30", cwd=root)
    assert proc.returncode == 0, proc.stderr
    digits = load_digits()
    paths = []
    for i in range(10):
        path = root / f"digit-{i}.png"
        Image.fromarray(np.round(digits.images[i] * 255 / 16).astype(np.uint8), mode="L").save(path)
        paths.append(path)
    return latest(root), paths


def test_image_paths_on_stdin_become_json_lines_like_the_pipeline(digits_run, tmp_path):
    run, paths = digits_run
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    stdin = "\n".join([str(paths[0]), str(tmp_path / "missing.png"), str(broken), *map(str, paths[1:])]) + "\n"
    proc = run_cli("predict", f"model.path={run}", "top_k=3", *CPU, cwd=tmp_path, stdin=stdin)
    assert proc.returncode == 1, "a failed input makes the run fail after the others"
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["input"] for line in lines] == list(map(str, paths)), "input order, bad ones left out"
    assert "missing.png" in proc.stderr and "broken.png" in proc.stderr and "Traceback" not in proc.stderr
    for line in lines:
        scores = [t["score"] for t in line["top"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True) and sum(scores) <= 1 + 1e-6
        assert line["label"] == line["top"][0]["label"] in [str(d) for d in range(10)]
    script = ("import json, sys\nfrom transformers import pipeline\n"
              f"p = pipeline('image-classification', model={str(run / 'model')!r})\n"
              f"print(json.dumps([p(x, top_k=1)[0] for x in {list(map(str, paths))!r}]))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    reference = json.loads(out.stdout.strip().splitlines()[-1])
    assert [r["label"] for r in reference] == [line["label"] for line in lines]
    assert [r["score"] for r in reference] == pytest.approx([line["score"] for line in lines], abs=1e-4)


def test_a_jsonl_inputs_file_carries_its_fields_and_a_table_is_readable(digits_run, tmp_path):
    run, paths = digits_run
    listing = tmp_path / "inputs.jsonl"
    listing.write_text("".join(json.dumps({"input": str(p), "id": i}) + "\n" for i, p in enumerate(paths[:3])))
    proc = run_cli("predict", f"model.path={run}", f"inputs_file={listing}", *CPU, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["id"] for line in proc.stdout.splitlines()] == [0, 1, 2]
    table = run_cli("predict", f"model.path={run}", f"input={paths[0].name}", "output=table", *CPU,
                    cwd=paths[0].parent)
    assert table.returncode == 0 and "label" in table.stdout and "digit-0.png" in table.stdout


def test_a_text_classifier_labels_texts(tmp_path, sentiment):
    proc = run_cli("finetune", *TINY_FINETUNE, f"dataset.files=[{sentiment}]", "optim.lr=3e-3",
                   "train.max_steps=30", "train.batch_size=16", "train.eval_every=30", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = latest(tmp_path)
    proc = run_cli("predict", f"model.path={run}", "input=[the plot was superb, the cast was awful]", "top_k=2",
                   *CPU, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["label"] for line in lines] == ["pos", "neg"]
    assert all(len(line["top"]) == 2 for line in lines)


def test_a_language_model_is_refused_before_anything_runs(tmp_path):
    import transformers

    folder = tmp_path / "lm"
    transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=50)) \
        .save_pretrained(folder)
    proc = run_cli("predict", f"model.path={folder}", "input=hello", *CPU, cwd=tmp_path)
    assert proc.returncode == 2 and "GPT2LMHeadModel" in proc.stderr and "ptcli generate" in proc.stderr
    assert not (tmp_path / "outputs").exists()
