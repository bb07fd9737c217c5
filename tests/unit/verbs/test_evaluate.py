"""`evaluate` in process: perplexity against an independent computation, masked-LM metrics, where the objective
and data come from, and the outputs. Tiny models come from tests/unit/test_generation.py."""

from __future__ import annotations

import io
import json
import math
import shutil

import pytest
import yaml

from ptcli.errors import PtcliError
from tests.support import TEXT, Terminal

BASE = ["device=cpu", "device.threads=1"]


def evaluate(tmp_path, *overrides: str, stdout=None):
    """Run the evaluate verb in process as the command line ``overrides`` would; returns (metrics, stderr)."""
    from omegaconf import OmegaConf

    from ptcli.config.validate import validate
    from ptcli.launch.compose import compose
    from ptcli.verbs.evaluate import run

    args = [*BASE, *overrides]
    cfg = OmegaConf.create(validate("evaluate", compose("evaluate", args)))
    out, err = stdout if stdout is not None else io.StringIO(), io.StringIO()
    metrics = run(cfg, tmp_path / "eval", stdout=out, stderr=err, overrides=args)
    evaluate.stdout = out.getvalue()
    return metrics, err.getvalue()


def reference_nll(model, ids, max_length: int, stride: int) -> tuple[float, int]:
    """Hugging Face's perplexity-guide loop on plain transformers/torch, with the count of scored tokens exact
    (the guide weights each window's mean loss by trg_len - 1; the model's loss averages over the tokens whose
    shifted label is not -100)."""
    import torch

    nll_sum, n_tokens, prev_end = 0.0, 0, 0
    seq_len = ids.size(1)
    for begin in range(0, seq_len, stride):
        end = min(begin + max_length, seq_len)
        trg_len = end - prev_end
        input_ids = ids[:, begin:end]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            loss = model(input_ids, labels=target_ids).loss
        scored = int((target_ids[:, 1:] != -100).sum())
        nll_sum += loss.item() * scored
        n_tokens += scored
        prev_end = end
        if end == seq_len:
            break
    return nll_sum, n_tokens


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "story.txt"
    path.write_text(TEXT * 6)
    return path


@pytest.mark.parametrize("stride", [8, 32])
def test_perplexity_equals_the_guide_computed_with_plain_transformers(models, text_file, tmp_path, stride):  # noqa: F811
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    metrics, err = evaluate(tmp_path, f"model.path={models['gpt2']}", "dataset=text", f"dataset.files=[{text_file}]",
                            "dataset.seq_len=32", f"stride={stride}", "batch_size=3")
    text = text_file.read_text()  # evaluate counts the text as given, its final newline too (as the guide does)
    tokenizer = AutoTokenizer.from_pretrained(models["gpt2"])
    model = AutoModelForCausalLM.from_pretrained(models["gpt2"]).eval()
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    assert ids.shape[1] > 100, "several windows"
    nll, n = reference_nll(model, ids, 32, stride)
    windows = math.ceil(ids.shape[1] / 32)
    # overlapping windows score every token but the first; side by side ones lose each window's first token
    assert metrics["tokens"] == n == (ids.shape[1] - 1 if stride < 32 else ids.shape[1] - windows)
    assert metrics["loss"] == pytest.approx(nll / n, rel=1e-5)
    assert metrics["perplexity"] == pytest.approx(math.exp(nll / n), rel=1e-5)
    assert metrics["bits_per_byte"] == pytest.approx(nll / math.log(2) / len(text.encode()), rel=1e-5)
    assert metrics["stride"] == stride and "(all of it)" in metrics["data"]


def test_long_documents_tokenize_in_pieces_exactly_as_whole(models, monkeypatch):  # noqa: F811
    from ptcli.objectives import perplexity
    from ptcli.processing.loading import load_tokenizer

    tokenizer = load_tokenizer(str(models["gpt2"]))
    text = (TEXT + "  indented line\n\n\nafter blank lines\n") * 40
    whole = tokenizer(text)["input_ids"]
    monkeypatch.setattr(perplexity, "TOKENIZE_CHUNK", 200)
    assert len(list(perplexity.pieces(text, 200))) > 10
    stream = perplexity.token_stream([text, "second doc"], tokenizer, sep_id=tokenizer.eos_token_id)
    assert stream.ids.tolist() == whole + [tokenizer.eos_token_id] + tokenizer("second doc")["input_ids"]
    assert stream.n_bytes == len(text.encode()) + 1 + len("second doc") and stream.n_docs == 2


def test_masked_lm_metrics_are_fixed_by_the_seed_not_the_batch(models, text_file, tmp_path):  # noqa: F811
    args = [f"model.path={models['bert']}", "dataset=text", f"dataset.files=[{text_file}]", "dataset.seq_len=32"]
    one, err = evaluate(tmp_path, *args, "batch_size=1")
    four, _ = evaluate(tmp_path, *args, "batch_size=4")
    other, _ = evaluate(tmp_path, *args, "batch_size=4", "seed=1")
    assert "objective: mlm (from the model's kind)" in err
    assert one["masked_tokens"] == four["masked_tokens"] > 10
    assert one["loss"] == pytest.approx(four["loss"], rel=1e-5) and one["accuracy"] == four["accuracy"]
    assert (other["masked_tokens"], other["loss"]) != (four["masked_tokens"], four["loss"])
    assert one["loss"] == pytest.approx(math.log(one["perplexity"]), rel=1e-9) and 0 <= one["accuracy"] <= 1
    partial, _ = evaluate(tmp_path, *args, "batch_size=1", "max_batches=2")
    assert partial["partial"] is True and partial["masked_tokens"] < one["masked_tokens"]
    run = make_run_dir(tmp_path, models, text_file, objective="mlm")  # the held-out blocks of an MLM run
    held_out, err = evaluate(tmp_path, f"model.path={run}")
    assert "objective: the run's" in err and "held out (dataset.val_fraction=0.25" in held_out["data"]
    assert 0 < held_out["masked_tokens"] < one["masked_tokens"]


def make_run_dir(tmp_path, models, text_file, objective: str = "clm"):  # noqa: F811
    """A ptcli run directory as pretrain leaves it: config.yaml (composed by ptcli) and model/."""
    from ptcli.config.validate import validate
    from ptcli.launch.compose import compose

    run = tmp_path / "run"
    shutil.copytree(models["bert" if objective == "mlm" else "gpt2"], run / "model")
    verb = "finetune" if objective == "classification" else "pretrain"
    cfg = validate(verb, compose(verb, ["dataset=text", f"dataset.files=[{text_file}]", "dataset.seq_len=16",
                                        "dataset.val_fraction=0.25", f"objective={objective}"]),
                   check_files=False)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    return run


def test_run_directory_brings_its_objective_and_held_out_data(models, text_file, tmp_path):  # noqa: F811
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = make_run_dir(tmp_path, models, text_file)
    metrics, err = evaluate(tmp_path, f"model.path={run}", "output=json")
    assert "objective: the run's" in err and "dataset: the run's (config.yaml)" in err
    assert "the part training held out (dataset.val_fraction=0.25, dataset.seq_len=16)" in metrics["data"]
    # independently: the document + end-of-text cut into blocks of 16, the last quarter of them
    tokenizer = AutoTokenizer.from_pretrained(run / "model")
    stream = tokenizer(text_file.read_text().rstrip("\n"))["input_ids"] + [tokenizer.eos_token_id]
    n = len(stream) // 16
    tail = torch.tensor([stream[(n - math.ceil(n * 0.25)) * 16:n * 16]])
    nll, count = reference_nll(AutoModelForCausalLM.from_pretrained(run / "model").eval(), tail, 16, 16)
    assert metrics["tokens"] == count and metrics["loss"] == pytest.approx(nll / count, rel=1e-5)
    saved = yaml.safe_load((tmp_path / "eval" / "config.yaml").read_text())
    assert saved["dataset"]["files"] == [str(text_file)] and saved["objective"]["_target_"].endswith("CausalLM")
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == metrics
    assert json.loads(evaluate.stdout) == metrics and evaluate.stdout.count("\n") == 1
    # one key of the run's dataset changed on the command line; the rest is still the run's
    shorter, err = evaluate(tmp_path, f"model.path={run}", "dataset.seq_len=8")
    assert "with seq_len from the command line" in err and "dataset.seq_len=8" in shorter["data"]
    # a whole dataset named on the command line: all of its files, not a held-out part
    named, _ = evaluate(tmp_path, f"model.path={run}/model", "dataset=text", f"dataset.files=[{text_file}]",
                        "dataset.seq_len=16")
    assert "(all of it)" in named["data"] and named["tokens"] > 3 * metrics["tokens"]


def test_effective_config_rules():
    from ptcli.verbs.evaluate_config import command_line_keys, effective_config

    cfg = {"objective": None, "dataset": {"files": ["cli.txt"], "seq_len": 64, "source": "text"}}
    run = {"objective": {"_target_": "ptcli.objectives.mlm.MaskedLM"},
           "dataset": {"files": ["run.txt"], "seq_len": 32, "source": "text"}}
    eff, _, named = effective_config(cfg, run, set(), "fill-mask")
    assert eff["dataset"]["files"] == ["run.txt"] and eff["objective"] == run["objective"] and not named
    eff, _, named = effective_config(cfg, run, command_line_keys(["dataset.seq_len=64"]), "fill-mask")
    assert (eff["dataset"]["files"], eff["dataset"]["seq_len"], named) == (["run.txt"], 64, False)
    eff, _, named = effective_config(cfg, run, command_line_keys(["+dataset=text", "dataset.files=[x]"]), "fill-mask")
    assert eff["dataset"]["files"] == ["cli.txt"] and named
    eff, _, _ = effective_config({**cfg, "objective": {"_target_": "x.Y"}}, run, {"objective"}, "causal")
    assert eff["objective"] == {"_target_": "x.Y"}
    eff, notes, _ = effective_config(cfg, None, set(), "causal")
    assert eff["objective"]["_target_"].endswith("CausalLM") and "evaluate.yaml's default" in notes[1]
    with pytest.raises(PtcliError, match="cannot tell which objective"):
        effective_config(cfg, None, set(), "seq2seq")


def test_fine_tuned_objectives_are_evaluated_by_their_objective(models, tmp_path):  # noqa: F811
    """A classification run directory: evaluate builds the run's objective, loads the model with the objective's
    auto class, restores the label map from the model and drives its evaluator over the held-out rows."""
    import transformers

    rows = "".join(f"the cat {'sat' if i % 2 else 'ran'} {i},{'pos' if i % 2 else 'neg'}\n" for i in range(40))
    data = tmp_path / "rows.csv"
    data.write_text("text,label\n" + rows)
    run = tmp_path / "run"
    model = transformers.GPT2ForSequenceClassification.from_pretrained(
        models["gpt2"], num_labels=2, id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})
    model.config.pad_token_id = model.config.eos_token_id
    model.save_pretrained(run / "model")
    shutil.copy(models["gpt2"] / "tokenizer.json", run / "model")
    shutil.copy(models["gpt2"] / "tokenizer_config.json", run / "model")
    cfg = validate_finetune([f"dataset.files=[{data}]", "dataset.val_fraction=0.25", "model=gpt2-tiny",
                             "dataset.seq_len=16"])
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    metrics, err = evaluate(tmp_path, f"model.path={run}")
    assert "objective: the run's" in err and metrics["objective"] == "classification"
    assert metrics["examples"] == 10 and 0 <= metrics["accuracy"] <= 1 and "f1" in metrics and "loss" in metrics


def validate_finetune(args):
    from ptcli.config.validate import validate
    from ptcli.launch.compose import compose

    return validate("finetune", compose("finetune", args), check_files=False)


def test_table_output_on_a_terminal(models, text_file, tmp_path):  # noqa: F811
    metrics, _ = evaluate(tmp_path, f"model.path={models['gpt2']}", "dataset=text", f"dataset.files=[{text_file}]",
                          "dataset.seq_len=32", stdout=Terminal())
    assert "perplexity" in evaluate.stdout and "bits_per_byte" in evaluate.stdout
    assert f"{metrics['loss']:.6g}" in evaluate.stdout
    with pytest.raises(PtcliError, match="stride must be between 1 and dataset.seq_len"):
        evaluate(tmp_path, f"model.path={models['gpt2']}", "dataset=text", f"dataset.files=[{text_file}]",
                 "dataset.seq_len=32", "stride=64")
