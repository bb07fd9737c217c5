"""An audit of ptcli against bad input and faults, the way a careful new user and a security reviewer would try it.

Each case runs ptcli in a fresh folder and is judged by the same rules:
  good  the expected exit code, no traceback, one screen (at most 15 lines on stderr), a "ptcli: ..." message (or
        Click's "Error: ..." for a usage error) with every expected phrase (the problem and the fix), no run
        directory left by an input error, nothing lost or run;
  weak  the exit code is right and nothing is lost, but a phrase is missing or the message is long;
  bad   a traceback, a wrong exit code, a file lost or code run, or a run directory left by an input error.

Run: .venv/bin/python scripts/audit_inputs.py [--only NAME] [--markdown docs/hostile-inputs.md]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEADER = """# Hostile inputs: the audit

`scripts/audit_inputs.py` tries ptcli the way a careful new user and a security reviewer would (issue #12): bad
configs, bad data, bad paths, faults (SIGTERM, Ctrl-C, damaged checkpoints and caches) and crafted files (a
pickle in a checkpoint or in FSDP metadata, a `_target_` naming `os.system` in a downloaded run's config, remote
code requested from a preset). Each case runs `python -m ptcli` in a fresh folder and is judged by one rule:

- **good**: the expected exit code (2 for config, usage and input errors, before any run directory exists; 0 or 3
  where the run goes on or stops cleanly), no traceback, at most 15 lines on stderr, a `ptcli: error: ...`
  message (Click's `Error: ...` for an unknown verb) that holds every expected phrase (the problem and the fix),
  no run directory left by an input error, nothing lost and no crafted code run (a marker file is checked);
- **weak**: the exit code is right and nothing is lost, but a phrase is missing or the message is long;
- **bad**: a traceback, a wrong exit code, a lost file, code run, or a run directory left by an input error.

The issue's goal: over 100 cases, no bad one and at most 5% weak. Run it with

```bash
.venv/bin/python scripts/audit_inputs.py --markdown docs/hostile-inputs.md   # about 6 minutes on 2 cores
```

"""
TINY = ["model.layers=2", "model.heads=2", "model.hidden=64", "model.vocab_size=512", "dataset.seq_len=32",
        "train.batch_size=4", "device=cpu", "device.threads=1"]
EMB = [*TINY, "dataset.embedded_bytes=150000"]
BERT = ["model=bert-tiny", "model.layers=2", "model.heads=2", "model.hidden=32", "model.vocab_size=300",
        "dataset.seq_len=24", "device=cpu", "device.threads=1", "train.max_steps=2", "train.batch_size=4"]


@dataclass
class Case:
    name: str
    args: list  # ptcli arguments; "{run}", "{ft}", "{ckpt}", "{tmp}" are filled in
    code: int = 2
    needles: tuple = ()
    files: dict = field(default_factory=dict)  # name -> text or bytes, written into the case's folder
    setup: object = None  # a function(folder, fixtures) run before the case
    check: object = None  # a function(folder, proc) -> str | None: what went wrong beyond the message
    stdin: bytes | None = None
    env: dict = field(default_factory=dict)


def csv(rows: str) -> str:
    return "text,label\n" + rows


GOOD_ROWS = "".join(f"the film was {'good' if i % 2 else 'bad'} {i},{'pos' if i % 2 else 'neg'}\n" for i in range(40))


def pickle_payload(marker: Path) -> bytes:
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    return pickle.dumps(Payload())


def no_marker(folder: Path, proc) -> str | None:
    return "code ran" if (folder / "pwned").exists() else None


def copy_run(name: str):
    def setup(folder: Path, fx: dict) -> None:
        shutil.copytree(fx[name], folder / "copy", symlinks=True)
    return setup


def damage(rel: str, how: str = "truncate"):
    def setup(folder: Path, fx: dict) -> None:
        copy_run("run")(folder, fx)
        path = folder / "copy" / rel
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3] if how == "truncate" else bytes(len(data)))
    return setup


def cases() -> list[Case]:
    lr = ["--dry-run"]
    out = [
        # ---- the command line and the config (pre-flight: nothing runs, no torch)
        Case("unknown key", [*lr, "train.max_stepz=3"], needles=("train.max_steps",)),
        Case("unknown option", [*lr, "model=gpt3"], needles=("unknown model 'gpt3'", "Choose one of")),
        Case("unknown group", [*lr, "modl=gpt2-tiny"], needles=("modl",)),
        Case("wrong type", [*lr, "train.batch_size=abc"], needles=("must be an integer",)),
        Case("negative lr", [*lr, "optim.lr=-1"], needles=("optim.lr must not be negative",)),
        Case("seq_len 0", [*lr, "dataset.seq_len=0"], needles=("dataset.seq_len must be at least 2",)),
        Case("seq_len beyond positions", [*lr, "dataset.seq_len=4096"], needles=("exceeds", "model.max_positions")),
        Case("batch vs accumulation", [*lr, "train.batch_size=30", "train.grad_accum=4"], needles=("divisible",)),
        Case("max_steps 0", [*lr, "train.max_steps=0"], needles=("train.max_steps must be positive",)),
        Case("max_time negative", [*lr, "train.max_time=-5"], needles=("train.max_time must be positive",)),
        Case("epochs 0", [*lr, "train.max_steps=null", "train.epochs=0"], needles=("train.epochs must be positive",)),
        Case("never stops", [*lr, "train.max_steps=null"], needles=("the run never stops",)),
        Case("log_every 0", [*lr, "train.log_every=0"], needles=("train.log_every must be at least 1",)),
        Case("workers -1", [*lr, "train.workers=-1"], needles=("train.workers must be 0 or more",)),
        Case("val_fraction 1.5", [*lr, "dataset.val_fraction=1.5"], needles=("val_fraction must be in [0, 1)",)),
        Case("timeout 0", [*lr, "device.timeout_s=0"], needles=("device.timeout_s must be at least 1",)),
        Case("lora + fsdp", ["finetune", "--dry-run", "+peft=lora", "device.strategy=fsdp", "dataset.files=[t.csv]"],
             files={"t.csv": csv(GOOD_ROWS)}, needles=("device.strategy=ddp",)),
        Case("lora without weights", ["finetune", "--dry-run", "+peft=lora", "model=bert-tiny",
                                      "dataset.files=[t.csv]"],
             files={"t.csv": csv(GOOD_ROWS)}, needles=("set model.path",)),
        Case("mlm on a decoder", [*lr, "objective=mlm", "model=gpt2-tiny"], needles=("needs an encoder",)),
        Case("clm on an encoder", [*lr, "model=bert-tiny"], needles=("needs a decoder", "model=gpt2-tiny")),
        Case("seq2seq on an encoder", ["finetune", "--dry-run", "objective=seq2seq", "model=bert-tiny",
                                       "dataset=jsonl", "dataset.files=[d.jsonl]", "dataset.label_column=y"],
             files={"d.jsonl": '{"text": "a", "y": "b"}\n'}, needles=("encoder-decoder", "model=t5-tiny")),
        Case("sft without a response", ["finetune", "--dry-run", "objective=sft", "model=gpt2-tiny",
                                        "dataset=jsonl", "dataset.files=[d.jsonl]"],
             files={"d.jsonl": '{"text": "a"}\n'}, needles=("dataset.label_column=response",)),
        Case("seq2seq without a target", ["finetune", "--dry-run", "objective=seq2seq", "model=t5-tiny",
                                          "dataset=jsonl", "dataset.files=[d.jsonl]"],
             files={"d.jsonl": '{"text": "a"}\n'}, needles=("dataset.label_column",)),
        Case("text objective on ViT", ["finetune", "--dry-run", "model=vit-tiny", "dataset.files=[t.csv]"],
             files={"t.csv": csv(GOOD_ROWS)}, needles=("needs a text model",)),
        Case("image objective on GPT-2", ["finetune", "--dry-run", "objective=image_classification",
                                          "model=gpt2-tiny"], needles=("needs a vision model", "model=vit-tiny")),
        Case("objective knob typo", [*lr, "objective=mlm", "objective.mask_prb=0.2"],
             needles=("objective.mask_prob",)),
        Case("objective knob type", [*lr, "objective=mlm", "objective.mask_prob=lots"], needles=("must be a number",)),
        Case("objective knob range", [*lr, "objective=mlm", "objective.mask_prob=1.5"], needles=("mask_prob must",)),
        Case("another source's knob", [*lr, "dataset=text", "dataset.files=[a.txt]", "dataset.embedded_bytes=9"],
             files={"a.txt": "text\n"}, needles=("TextFiles has no such setting", "document")),
        Case("text without files", [*lr, "dataset=text"], needles=("dataset.files",)),
        Case("missing file", [*lr, "dataset=text", "dataset.files=[nope.txt]"], needles=("nope.txt", "does not exist")),
        Case("typo in a file name", [*lr, "dataset=text", "dataset.files=[corpsu.txt]"],
             files={"corpus.txt": "text\n"}, needles=("Did you mean", "corpus.txt")),
        Case("glob matching nothing", [*lr, "dataset=text", "dataset.files=[data/*.txt]"],
             files={"data/a.md": "x"}, needles=("matches no files",)),
        Case("empty folder", [*lr, "dataset=text", "dataset.files=[data]"], files={"data/a.md": "x"},
             needles=("has no .txt files",)),
        Case("comma in a file name", [*lr, "dataset=text", "dataset.files=[a,b.txt]"], files={"a,b.txt": "x\n"},
             needles=("dataset.files=['a,b.txt']",)),
        Case("= in a file name", [*lr, "dataset=text", "dataset.files=[x=y.txt]"], files={"x=y.txt": "x\n"},
             needles=("dataset.files=['x=y.txt']",)),
        Case("non-ASCII file name", [*lr, "dataset=text", "dataset.files=[café.txt]"], files={"café.txt": "x\n"},
             needles=("dataset.files=['café.txt']",)),
        Case("a sweep without -m", [*lr, "dataset=text", "dataset.files=a.txt,b.txt"],
             needles=("is a sweep", "dataset.files=[a.txt,b.txt]", "-m")),
        Case("a list given as a word", [*lr, "dataset=text", "dataset.files=a.txt"], files={"a.txt": "x\n"},
             needles=("dataset.files=[a.txt]",)),
        Case("unparsable override", [*lr, "key=[1,2"], needles=("cannot read the override",)),
        Case("YAML syntax error", [*lr, "--config-dir", "cfg", "model=bad"],
             files={"cfg/model/bad.yaml": "arch: gpt2\nlayers: [1, 2\nheads: 4\n"},
             needles=("not valid YAML", "bad.yaml:3")),
        Case("_target_ os.system", [*lr, "objective._target_=os.system"], needles=("not built",)),
        Case("_target_ a ptcli function", [*lr, "objective._target_=ptcli.objectives.lm.documents"],
             needles=("not a registered objective class",)),
        Case("_target_ an abstract class", [*lr, "objective._target_=ptcli.objectives.base.Objective"],
             needles=("not a registered objective class",)),
        Case("optim key typo", [*lr, "optim.lrr=1e-3"], needles=("optim.lr",)),
        Case("optim keyword the optimizer lacks", [*EMB, "+optim.momentum=0.9", "train.max_steps=1"],
             needles=("unknown key 'optim.momentum' for AdamW", "AdamW takes")),
        Case("optim base class", [*EMB, "optim._target_=torch.optim.Optimizer", "train.max_steps=1"],
             needles=("is not a torch optimizer",)),
        Case("remote code from model.extra", ["generate", "model.path={run}", "+model.extra.trust_remote_code=true",
                                              "prompt=hi"], needles=("not honoured",)),
        Case("a file where the outputs go", [*EMB, "train.max_steps=1"], files={"outputs": "a file"},
             needles=("is a file", "run.out_dir")),
        Case("config of an unknown verb", ["config", "pretrainn"], needles=("unknown verb",)),
        Case("an unknown verb", ["pretrian"], needles=("No such command",)),
        Case("resume from nowhere", [*lr, "train.resume=nope"], needles=("train.resume 'nope' does not exist",)),
        Case("best_metric not reported", [*lr, "train.best_metric=accuracy"], needles=("it reports: loss, ppl",)),
        Case("hf without a name", [*lr, "dataset=hf"], needles=("dataset.hf_name",)),
        Case("pkg model not installed", ["finetune", "--dry-run", "model.path=pkg:no_such_pkg/model",
                                         "dataset.files=[t.csv]"], files={"t.csv": csv(GOOD_ROWS)},
             needles=("pip install",)),
        Case("mistyped run directory", ["generate", "model.path=outputs/lates", "prompt=hi"],
             files={"outputs/latest/x": "x"}, needles=("does not exist", "outputs/latest")),
        Case("Hub name offline", ["generate", "model.path=nobody/nothing", "prompt=hi"],
             env={"HF_HUB_OFFLINE": "1"}, needles=("cannot be reached",)),
        Case("cuda without a GPU", [*EMB, "device=cuda", "train.max_steps=1"], needles=("no CUDA device",)),
        Case("a huge model", [*lr, "model.hidden=1000000", "model.heads=1000"], code=0,
             needles=("far beyond any single machine",)),
        # ---- data contents (found while reading: exit 2, no run directory left)
        Case("latin-1 text", [*TINY, "dataset=text", "dataset.files=[l.txt]", "train.max_steps=1"],
             files={"l.txt": "caf\xe9 au lait\n".encode("latin-1") * 50}, needles=("not valid UTF-8", "iconv")),
        Case("gzip as text", [*TINY, "dataset=text", "dataset.files=[c.txt]", "train.max_steps=1"],
             files={"c.txt": gzip.compress(b"hello\n" * 50)}, needles=("gzip-compressed", "gunzip")),
        Case("PNG as text", [*TINY, "dataset=text", "dataset.files=[p.txt]", "train.max_steps=1"],
             files={"p.txt": b"\x89PNG\r\n\x1a\n" + bytes(200)}, needles=("PNG image",)),
        Case("NUL bytes", [*TINY, "dataset=text", "dataset.files=[z.txt]", "train.max_steps=1"],
             files={"z.txt": bytes(300)}, needles=("NUL bytes",)),
        Case("UTF-16 text", [*TINY, "dataset=text", "dataset.files=[u.txt]", "train.max_steps=1"],
             files={"u.txt": ("hello world\n" * 50).encode("utf-16")}, needles=("UTF-16", "iconv")),
        Case("empty file", [*TINY, "dataset=text", "dataset.files=[e.txt]", "train.max_steps=1"],
             files={"e.txt": ""}, needles=("dataset is empty",)),
        Case("blank lines only", [*TINY, "dataset=text", "dataset.files=[e.txt]", "dataset.document=line",
                                  "train.max_steps=1"], files={"e.txt": "\n  \n\n"}, needles=("dataset is empty",)),
        Case("shorter than a block", [*TINY, "dataset=text", "dataset.files=[s.txt]", "dataset.seq_len=256",
                                      "model.max_positions=256", "train.max_steps=1"], files={"s.txt": "short\n"},
             needles=("fewer than one block", "dataset.seq_len")),
        Case("CSV row with a field too many", ["finetune", *BERT, "dataset.files=[t.csv]"],
             files={"t.csv": csv("a,pos\nb,neg,extra\n")}, needles=("row has 3 fields", "t.csv:3")),
        Case("CSV without the label column", ["finetune", *BERT, "dataset.files=[t.csv]",
                                              "dataset.label_column=labell"],
             files={"t.csv": csv(GOOD_ROWS)}, needles=("column 'labell'", "label")),
        Case("CSV without the text column", ["finetune", *BERT, "dataset.files=[t.csv]", "dataset.text_column=txt"],
             files={"t.csv": csv(GOOD_ROWS)}, needles=("column 'txt'", "dataset.text_column=text")),
        Case("empty text rows skipped", ["finetune", *BERT, "dataset.files=[t.csv]"],
             files={"t.csv": csv(GOOD_ROWS + ",pos\n   ,neg\n")}, code=0, needles=("skipped 2",)),
        Case("empty text rows refused", ["finetune", *BERT, "dataset.files=[t.csv]", "dataset.empty_rows=fail"],
             files={"t.csv": csv(GOOD_ROWS + ",pos\n")}, needles=("row has empty text", "dataset.empty_rows=skip")),
        Case("JSONL invalid line", [*TINY, "dataset=jsonl", "dataset.files=[d.jsonl]", "train.max_steps=1"],
             files={"d.jsonl": '{"text": "a"}\n{"text": \n'}, needles=("invalid JSON", "d.jsonl:2")),
        Case("JSONL array line", [*TINY, "dataset=jsonl", "dataset.files=[d.jsonl]", "train.max_steps=1"],
             files={"d.jsonl": '["a"]\n'}, needles=("not an object",)),
        Case("JSON array malformed", ["finetune", *BERT, "dataset=jsonl", "dataset.files=[d.json]"],
             files={"d.json": '[{"text": "a", "label": "x"}'}, needles=("invalid JSON",)),
        Case("JSONL number as text", [*TINY, "dataset=jsonl", "dataset.files=[d.jsonl]", "train.max_steps=1"],
             files={"d.jsonl": '{"text": 5}\n'}, needles=("not text",)),
        Case("CoNLL line without a tag", ["finetune", *BERT, "objective=token_classification", "dataset=conll",
                                          "dataset.files=[n.txt]"], files={"n.txt": "EU B-ORG\nrejects\n"},
             needles=("malformed CoNLL line", "n.txt:2")),
        Case("NER tags without prefixes", ["finetune", *BERT, "objective=token_classification", "dataset=conll",
                                           "dataset.files=[n.txt]"], files={"n.txt": "Peter PER\nlives O\n\n" * 20},
             needles=("lacks a B-/I- prefix", "tag_scheme=IO")),
        Case("NER prefixes mixed", ["finetune", *BERT, "objective=token_classification", "dataset=conll",
                                    "dataset.files=[n.txt]"], files={"n.txt": "Peter B-PER\nParis LOC\n\n" * 20},
             needles=("some NER tag lacks",)),
        Case("one class", ["finetune", *BERT, "dataset.files=[t.csv]"], files={"t.csv": csv("a,pos\nb,pos\n" * 10)},
             needles=("a single label",)),
        Case("two rows", ["finetune", *BERT, "dataset.files=[t.csv]"], files={"t.csv": csv("a,pos\nb,neg\n")},
             needles=("single label",)),
        Case("mixed label kinds", ["finetune", *BERT, "dataset.files=[t.csv]"],
             files={"t.csv": csv("a,0\nb,1\nc,neg\nd,pos\n" * 5)}, needles=("mix numbers",)),
        Case("validation label unseen", ["finetune", *BERT, "dataset.files=[t.csv]", "dataset.val_files=[v.csv]"],
             files={"t.csv": csv(GOOD_ROWS), "v.csv": csv("a,meh\n")}, needles=("'meh' was never seen",)),
        Case("num_labels against the data", ["finetune", *BERT, "dataset.files=[t.csv]", "objective.num_labels=3"],
             files={"t.csv": csv(GOOD_ROWS)}, needles=("num_labels=3 but the training data has 2",)),
        Case("regression on words", ["finetune", *BERT, "dataset.files=[t.csv]", "objective.num_labels=1"],
             files={"t.csv": csv(GOOD_ROWS)}, needles=("is not a number",)),
        Case("SFT template field missing", ["finetune", "objective=sft", "model=gpt2-tiny", "model.layers=2",
                                            "dataset=jsonl", "dataset.files=[d.jsonl]", "dataset.label_column=out",
                                            "objective.prompt_template='{instruction}'", "train.max_steps=1",
                                            "device=cpu"], files={"d.jsonl": '{"question": "a", "out": "b"}\n' * 10},
             needles=("names the field 'instruction'",)),
        Case("SFT messages not a list", ["finetune", "objective=sft", "model=gpt2-tiny", "model.layers=2",
                                         "dataset=jsonl", "dataset.files=[d.jsonl]", "objective.messages_column=m",
                                         "train.max_steps=1", "device=cpu"], files={"d.jsonl": '{"m": "hi"}\n' * 10},
             needles=("must be a list",)),
        # ---- files a run leaves or receives
        Case("damaged newest checkpoint", [*EMB, "train.max_steps=7", "train.resume=auto",
                                           "hydra.run.dir=copy"], code=0,
             setup=damage("checkpoints/step-00000006/model.safetensors"), needles=("is damaged",)),
        Case("damaged named checkpoint", [*EMB, "train.max_steps=9", "train.resume=copy/checkpoints/step-00000006"],
             setup=damage("checkpoints/step-00000006/optimizer.pt", "zero"), needles=("is damaged", "earlier")),
        Case("every checkpoint damaged", [*EMB, "train.max_steps=9", "train.resume=copy"],
             setup=lambda f, fx: [damage("checkpoints/step-00000003/rng.pt")(f, fx),
                                  (f / "copy/checkpoints/step-00000006/rng.pt").write_bytes(b"x")],
             needles=("every checkpoint", "is damaged")),
        Case("crafted sharded metadata", ["export", "copy/checkpoints/step-00000006", "out"],
             setup=lambda f, fx: [copy_run("run")(f, fx), (f / "copy/checkpoints/step-00000006/sharded").mkdir(),
                                  (f / "copy/checkpoints/step-00000006/sharded/.metadata").write_bytes(
                                      pickle_payload(f / "pwned"))],
             needles=("could run code",), check=no_marker),
        Case("crafted optimizer.pt", [*EMB, "train.max_steps=9", "train.resume=copy/checkpoints/step-00000006"],
             setup=lambda f, fx: [copy_run("run")(f, fx), _rewrite_with_digest(
                 f / "copy/checkpoints/step-00000006", "optimizer.pt", pickle_payload(f / "pwned"))],
             needles=("cannot be restored", "never unpickles"), check=no_marker),
        Case("crafted run config target", ["evaluate", "model.path=copy"],
             setup=lambda f, fx: [copy_run("run")(f, fx), _crafted_target(f / "copy", f / "pwned")],
             needles=("not built",), check=no_marker),
        Case("export over a folder's files", ["export", "{ckpt}", "mine"], files={"mine/thesis.txt": "work"},
             needles=("not empty", "--force"), check=lambda f, p: None if (f / "mine/thesis.txt").exists() else "lost"),
        Case("export to the parent", ["export", "{ckpt}", ".."], needles=("would replace it",)),
        Case("export to the run itself", ["export", "{ckpt}", "{run}", "--force"], needles=("would replace it",)),
        Case("export with --force", ["export", "{ckpt}", "mine", "--force"], files={"mine/old.txt": "x"}, code=0,
             check=lambda f, p: None if (f / "mine/config.json").is_file() else "not exported"),
        Case("export from nowhere", ["export", "nope", "out"], needles=("does not exist",)),
        Case("export a folder without checkpoints", ["export", "empty", "out"], files={"empty/x": "x"},
             needles=("no complete checkpoint",)),
        Case("truncated token cache", [*EMB, "train.max_steps=1"], code=0, setup=_damage_cache,
             needles=("is damaged", "rebuilding")),
        Case("damaged tokenizer cache", [*EMB, "train.max_steps=1"], code=0, setup=_damage_tokenizer,
             needles=("unreadable", "retraining")),
        Case("SIGTERM", [*EMB, "train.max_steps=100000", "train.save_every=100000"], code=3,
             needles=("SIGTERM received", "train.resume=auto"), setup="signal:TERM"),
        Case("Ctrl-C", [*EMB, "train.max_steps=100000", "train.save_every=100000"], code=3,
             needles=("Ctrl-C", "train.resume=auto"), setup="signal:INT"),
        # ---- generate and evaluate
        Case("generate: tokenizer bigger than the model", ["generate", "model.path=mis", "prompt=hi", "device=cpu"],
             setup=_mismatched_tokenizer, needles=("embeddings",)),
        Case("generate: gzip on stdin", ["generate", "model.path={run}", "device=cpu"],
             stdin=gzip.compress(b"hi\n"), needles=("gzip-compressed",)),
        Case("generate: folder without a tokenizer", ["generate", "model.path=bare", "prompt=hi", "device=cpu"],
             setup=lambda f, fx: [shutil.copytree(fx["run"] / "model", f / "bare"),
                                  *[(f / "bare" / n).unlink() for n in ("tokenizer.json", "tokenizer_config.json")]],
             needles=("no tokenizer",)),
        Case("generate: a classifier", ["generate", "model.path={ft}", "prompt=hi", "device=cpu"],
             needles=("does not generate",)),
        Case("generate: empty prompt", ["generate", "model.path={run}", "prompt=", "device=cpu"], code=0,
             needles=("no prompts",)),
        Case("generate: temperature 0 sampling", ["generate", "model.path={run}", "prompt=hi", "do_sample=true",
                                                  "temperature=0"], needles=("temperature must be > 0",)),
        Case("generate: missing prompts file", ["generate", "model.path={run}", "prompts_file=nope.txt"],
             needles=("nope.txt",)),
        Case("generate: bad JSONL prompt line", ["generate", "model.path={run}", "prompts_file=p.jsonl", "device=cpu"],
             files={"p.jsonl": '{"prompt": "hi"}\n{"prompt": \n'}, code=1, needles=("invalid JSON", "p.jsonl:2")),
        Case("evaluate: stride beyond seq_len", ["evaluate", "model.path={run}", "stride=1000", "device=cpu"],
             needles=("stride must be between 1 and dataset.seq_len",)),
        Case("evaluate: mlm on a decoder", ["evaluate", "model.path={run}", "objective=mlm", "device=cpu"],
             needles=("needs a fill-mask model",)),
        Case("evaluate: seq_len beyond the context", ["evaluate", "model.path={run}", "dataset.seq_len=100000",
                                                     "device=cpu"], needles=("maximum positions",)),
        Case("evaluate: unseen validation labels", ["evaluate", "model.path={ft}", "dataset.val_files=[v.csv]",
                                                    "device=cpu"], files={"v.csv": csv("a,meh\n")},
             needles=("never seen in training",)),
        Case("tokenizer verb: vocabulary too small", ["tokenizer", "tokenizer.vocab_size=10"],
             needles=("at least 258 tokens",)),
    ]
    for case in out:
        if case.args and case.args[0] not in ("pretrain", "finetune", "generate", "evaluate", "tokenizer", "export",
                                                "config", "pretrian"):
            case.args = ["pretrain", *case.args]
    return out


def _rewrite_with_digest(folder: Path, name: str, data: bytes) -> None:
    """Replace a checkpoint file and record its digest, as a forger would."""
    from ptcli.training.integrity import DIGESTS, file_digests

    (folder / name).write_bytes(data)
    state = json.loads((folder / "state.json").read_text())
    state[DIGESTS] = file_digests(folder, "state.json")
    (folder / "state.json").write_text(json.dumps(state))


def _crafted_target(run: Path, marker: Path) -> None:
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["objective"] = {"_target_": "os.system", "command": f"touch {marker}"}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))


def _damage_cache(folder: Path, fx: dict) -> None:
    tokens = next(Path(fx["cache"]).glob("packed/*/tokens.bin"))
    tokens.write_bytes(tokens.read_bytes()[:100])


def _damage_tokenizer(folder: Path, fx: dict) -> None:
    for path in Path(fx["cache"]).glob("tokenizers/*/tokenizer.json"):
        path.write_text("{not json")


def _mismatched_tokenizer(folder: Path, fx: dict) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(folder / "mis")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(fx["run"] / "tokenizer" / name, folder / "mis" / name)


def fixtures(root: Path) -> dict:
    """A finished tiny pretraining run and a fine-tuned classifier the cases read (and copy before damaging)."""
    env = {**os.environ, "PTCLI_CACHE_DIR": str(root / "cache")}
    run, ft = root / "run", root / "ft"
    subprocess.run([sys.executable, "-m", "ptcli", "pretrain", *EMB, "train.max_steps=6", "train.save_every=3",
                    "train.keep_last=5", f"hydra.run.dir={run}"], check=True, capture_output=True, env=env)
    (root / "t.csv").write_text(csv(GOOD_ROWS))
    subprocess.run([sys.executable, "-m", "ptcli", "finetune", *BERT, f"dataset.files=[{root / 't.csv'}]",
                    f"hydra.run.dir={ft}"], check=True, capture_output=True, env=env)
    return {"run": run, "ft": ft, "ckpt": run / "checkpoints" / "step-00000006", "cache": root / "cache"}


def run_case(case: Case, fx: dict, root: Path) -> tuple[str, str, subprocess.CompletedProcess]:
    folder = Path(tempfile.mkdtemp(dir=root, prefix="case-"))
    for name, content in case.files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    fill = {"{run}": fx["run"], "{ft}": fx["ft"], "{ckpt}": fx["ckpt"], "{tmp}": folder}
    args = []
    for arg in case.args:
        for mark, value in fill.items():
            arg = arg.replace(mark, str(value))
        args.append(arg)
    env = {**os.environ, "PTCLI_CACHE_DIR": str(fx["cache"]), "PYTHONUNBUFFERED": "1", "HF_HOME": str(root / "hf"),
           **case.env}
    env.pop("PTCLI_DEBUG", None)
    if isinstance(case.setup, str) and case.setup.startswith("signal:"):
        proc = _signalled(args, folder, env, case.setup.split(":")[1])
    else:
        if case.setup:
            case.setup(folder, fx)
        proc = subprocess.run([sys.executable, "-m", "ptcli", *args], cwd=folder, env=env, capture_output=True,
                              input=case.stdin, timeout=600)
        proc.stdout, proc.stderr = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    return (*judge(case, folder, proc), proc)


def _signalled(args, folder, env, name):
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "ptcli", *args, "hydra.run.dir=r"], cwd=folder, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not ((folder / "r" / "metrics.jsonl").is_file()
                                          and (folder / "r" / "metrics.jsonl").stat().st_size > 0):
        time.sleep(0.2)
    proc.send_signal(getattr(signal, f"SIG{name}"))
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def judge(case: Case, folder: Path, proc) -> tuple[str, str]:
    err = proc.stderr
    bad, weak = [], []
    if "Traceback" in err:
        bad.append("traceback")
    if proc.returncode != case.code:
        bad.append(f"exit {proc.returncode}, expected {case.code}")
    if case.code == 2 and case.args[0] not in ("export", "config") and "--dry-run" not in case.args:
        left = [p for p in folder.glob("outputs/*/20*")]
        if left:
            bad.append(f"input error left a run directory ({left[0].name})")
    if case.check:
        problem = case.check(folder, proc)
        if problem:
            bad.append(problem)
    text = err + proc.stdout
    missing = [n for n in case.needles if n not in text]
    if missing:
        weak.append(f"message lacks {missing}")
    messages = [line for line in err.strip().splitlines() if line.startswith(("ptcli:", "Error: "))]
    if case.code != 0 and not messages:
        weak.append("no ptcli message")
    if len(err.strip().splitlines()) > 15 and case.code != 0:
        weak.append(f"{len(err.strip().splitlines())} lines on stderr")
    if bad:
        return "bad", "; ".join(bad + weak)
    return ("weak", "; ".join(weak)) if weak else ("good", "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=None)
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    all_cases = [c for c in cases() if args.only is None or args.only in c.name]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fx = fixtures(root)
        rows = []
        for case in all_cases:
            verdict, why, proc = run_case(case, fx, root)
            message = next((line for line in proc.stderr.splitlines() if line.startswith("ptcli: error")), "")
            rows.append((case.name, verdict, why, message))
            print(f"{verdict:5} {case.name}: {why or message[:150]}", flush=True)
    counts = {v: sum(1 for r in rows if r[1] == v) for v in ("good", "weak", "bad")}
    print(f"\n{len(rows)} cases: {counts['good']} good, {counts['weak']} weak, {counts['bad']} bad")
    if args.markdown:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        lines = [HEADER + f"Result on {time.strftime('%Y-%m-%d')} (at commit {commit.stdout.strip() or '?'}): "
                 f"**{counts['good']} good, {counts['weak']} weak, {counts['bad']} bad of {len(rows)} cases**.\n",
                 "| case | verdict | note or message |", "|---|---|---|"]
        lines += [f"| {n} | {v} | {(w or m).replace('|', '/')[:220]} |" for n, v, w, m in rows]
        Path(args.markdown).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
