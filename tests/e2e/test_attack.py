"""`ptcli evaluate +attack=chars|hotflip|bae` on a small trained classifier: TextAttack's metrics agree with the
attacked examples in attacks.jsonl, the gold labels are the data's, a run repeats exactly, word swaps change at most
the budget of words into non-stop words; settings it cannot use stop before any run directory."""

from __future__ import annotations

import csv
import json

import pytest

from ptcli.inference.attacks import STOP_WORDS
from tests.support import TINY_FINETUNE, assert_one_screen, run_cli, sentiment_rows

pytestmark = pytest.mark.slow
CPU = ["device=cpu", "device.threads=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("attack")
    (root / "train.csv").write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in sentiment_rows(300)))
    proc = run_cli("finetune", *TINY_FINETUNE, "dataset=csv", "dataset.files=[train.csv]", "dataset.val_fraction=0.2",
                   "train.max_steps=60", "optim.lr=3e-3", "train.log_every=30", "run.out_dir=clf", cwd=root)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("pretrain", "+objective=mlm", "model=bert-tiny", "model.layers=2", "model.heads=2",
                   "model.hidden=32", "dataset.seq_len=32", "dataset.embedded_bytes=150000", "train.max_steps=10",
                   *CPU, "run.out_dir=mlm", cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root, root / "clf" / "finetune" / "latest", root / "mlm" / "pretrain" / "latest"


def attacked(root, run, *extra):
    proc = run_cli("evaluate", f"model.path={run}", *extra, "attack.examples=24", *CPU, "output=json", cwd=root)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)
    folder = root / "outputs" / "evaluate"
    newest = max(folder.iterdir(), key=lambda p: p.stat().st_mtime)
    rows = [json.loads(line) for line in (newest / "attacks.jsonl").read_text().splitlines()]
    return metrics, rows


def test_character_attacks_report_textattacks_metrics_and_repeat_exactly(trained):
    root, run, _ = trained
    metrics, rows = attacked(root, run, "+attack=chars")
    gold = {r["text"]: r["label"] for r in csv.DictReader(open(root / "train.csv"))}
    assert len(rows) == metrics["examples"] == 24
    assert all(r["label"] == gold[r["text"]] for r in rows), "the gold label is the data's"
    results = [r["result"] for r in rows]
    assert metrics["clean_accuracy"] == round(1 - results.count("skipped") / 24, 4) >= 0.8
    assert metrics["attacked_accuracy"] == round(results.count("failed") / 24, 4)
    assert metrics["attack_success_rate"] > 0.5, "a tiny keyword classifier falls to misspelt keywords"
    for r in rows:
        if r["result"] == "success":
            assert r["attacked_prediction"] != r["label"] and r["attacked"] != r["text"]
            assert 1 <= len(r["changed"]) <= max(1, int(0.2 * len(r["text"].split())))
    again, rows_again = attacked(root, run, "+attack=chars")
    assert rows_again == rows and {k: v for k, v in again.items() if k != "seconds"} == \
        {k: v for k, v in metrics.items() if k != "seconds"}


@pytest.mark.parametrize("method", ["hotflip", "bae"])
def test_word_swaps_put_whole_non_stop_words_in(trained, method):
    root, run, mlm = trained
    metrics, rows = attacked(root, run, f"+attack={method}", f"attack.mlm={mlm}")
    assert metrics["attack"] == method and metrics["examples"] == 24
    swaps = [c for r in rows for c in r["changed"]]
    assert swaps, "some word was swapped"
    for c in swaps:
        assert c["to"].isalpha() and c["to"] not in STOP_WORDS and c["from"] not in STOP_WORDS
        assert c["to"] != c["from"]


def test_attack_settings_it_cannot_use_stop_before_any_run_directory(trained, tmp_path):
    _, run, _ = trained
    proc = run_cli("evaluate", f"model.path={run}", "+attack=bae", *CPU, cwd=tmp_path)
    assert_one_screen(proc, 2, "attack=bae needs a masked LM", "attack.mlm=")
    proc = run_cli("evaluate", f"model.path={run}", "+attack=chars", "attack.max_fraction=2", "attack.candidates=0",
                   f"attack.mlm={tmp_path}/nope", *CPU, cwd=tmp_path)
    assert_one_screen(proc, 2, "attack.max_fraction", "attack.candidates", "attack.mlm")
    assert not (tmp_path / "outputs").exists()
