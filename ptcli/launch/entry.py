"""Run a verb: pre-flight (compose + validate, no torch), then hand the overrides to a ``hydra.main`` task."""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
from pathlib import Path

from ptcli.config import paths, plugins
from ptcli.config.overrides import normalise, search_path_override
from ptcli.config.validate import validate
from ptcli.errors import PtcliError, report
from ptcli.launch import launchers
from ptcli.launch.compose import complete_overrides, compose, quiet_schema_matching, register_defaults
from ptcli.launch.slurm import apply_slurm_env, env_world_size

# Where each verb's work lives ("module:function").
RUNNERS: dict[str, str] = {
    "pretrain": "ptcli.verbs.train:run",
    "finetune": "ptcli.verbs.train:run",
    "generate": "ptcli.verbs.generate:run",
    "chat": "ptcli.verbs.chat:run",
    "serve": "ptcli.verbs.serve:run",
    "evaluate": "ptcli.verbs.evaluate:run",
    "predict": "ptcli.verbs.predict:run",
    "explain": "ptcli.verbs.explain:run",
    "prune": "ptcli.verbs.prune:run",
    "quantize": "ptcli.verbs.quantize:run",
    "tokenizer": "ptcli.verbs.tokenizer:run",
}


def prepare_args(verb: str, args: list[str], config_dirs=()) -> list[str]:
    """ptcli's reading of the overrides: ``+group=option`` accepted for groups in the defaults list,
    ``generate``'s ``prompt=`` (``predict``'s ``input=``) taken as literal text (Hydra's grammar would split it at
    commas), and a declared setting that the YAML files leave at its default set with ``++`` (Hydra's add-or-set)."""
    from ptcli.config.keys import flag_hint

    hint = flag_hint(verb, list(args))
    if hint:
        raise PtcliError(hint, fix=f"`ptcli {verb} --help` lists the settings; `ptcli config {verb}` prints them all")
    args = normalise(list(args), paths.defaults_groups(verb))
    if verb in LITERAL:
        args = [quote_prompt(a, LITERAL[verb]) for a in args]
    plugins.allow_command_line(args)
    return complete_overrides(verb, args, config_dirs)


LITERAL = {"generate": "prompt", "predict": "input", "explain": "input"}  # the key each verb takes as literal text


def quote_prompt(arg: str, name: str = "prompt") -> str:
    """``prompt=Hello, I'm a model,`` -> ``prompt='Hello, I\'m a model,'``; quoted values and lists pass."""
    key, sep, value = arg.partition("=")
    if key != name or not sep or value[:1] in ("'", '"', "[") or value == "null":
        return arg
    # Hydra unescapes backslashes only before a quote or the closing quote: escape exactly those.
    value = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    value = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, value)
    return f"{name}='{value}'"


def preflight(verb: str, args: list[str], config_dirs=()) -> dict:
    """Compose the first point of the sweep and validate it: config errors surface before any work."""
    return validate(verb, compose(verb, args, config_dirs))


def config_yaml(verb: str, args: list[str], config_dirs=()) -> str:
    """The fully composed, resolved config as YAML, every default filled in and every key's meaning beside it
    (``ptcli config <verb>``)."""
    from omegaconf import OmegaConf

    from ptcli.config.keys import annotated
    from ptcli.config.validate import with_defaults

    cfg = compose(verb, prepare_args(verb, args, config_dirs), config_dirs)
    data = with_defaults(verb, cfg)
    return annotated(verb, data, OmegaConf.to_yaml(OmegaConf.create(data)))


def run_verb(verb: str, args: list[str], *, dry_run=False, multirun=False, config_dirs=()) -> int:
    """The whole verb: returns the exit code (errors are reported here, once)."""
    try:
        args = prepare_args(verb, args, config_dirs)
        if not multirun:
            refuse_sweeps(args)
        data = preflight(verb, args, config_dirs)
        check_writable(data, args)
        from ptcli.config.estimate import warnings_for

        for warning in warnings_for(verb, data) if not dry_run else ():
            print(f"ptcli: {warning}", file=sys.stderr)
        if dry_run:
            print_plan(verb, data)
            return 0
        stable = (data.get("train") or {}).get("resume") == "auto"
        # hydra/launcher=submitit_slurm without sbatch: say so now, not in a traceback mid-launch.
        target = launchers.check_launcher(verb, args, config_dirs) if multirun else None
        return launch(verb, args, multirun=multirun, config_dirs=config_dirs, slurm_dir=stable,
                      submitit=launchers.is_submitit(target))
    except PtcliError as e:
        return report(e)


def refuse_sweeps(args: list[str]) -> None:
    """A comma in a value makes a sweep in Hydra's grammar; without -m that is a mistake more often than not."""
    from hydra.errors import OverrideParseException

    from ptcli.config.overrides import corrected, sweeps

    try:
        found = sweeps([a for a in args if not a.startswith("hydra")])
    except OverrideParseException:
        return  # compose reports it with its own hint
    if found:
        arg = found[0].lstrip("+")
        key, _, value = arg.partition("=")
        raise PtcliError(f"{arg!r} is a sweep in Hydra's grammar (a comma separates the values to sweep over)",
                         fix=f"For a list write {key}=[{value}]; for one value with a comma, quote it: "
                             f"{corrected(arg)}; to run once per value, add -m")


def check_writable(data: dict, args: list[str]) -> None:
    """The run directory can be made: its nearest existing folder is writable (else Hydra fails with a traceback)."""
    explicit = next((a.split("=", 1)[1] for a in args if a.lstrip("+").startswith("hydra.run.dir=")), None)
    target = Path(explicit or data["run"]["out_dir"]).expanduser()
    probe = target
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.is_file() or not os.access(probe, os.W_OK | os.X_OK):
        why = "is a file" if probe.is_file() else "is not writable"
        raise PtcliError(f"cannot make the run directory under '{target}': '{probe}' {why}",
                         fix="Choose a writable folder with run.out_dir=<folder> (or hydra.run.dir=<folder>)")


def print_plan(verb: str, data: dict) -> None:
    """``--dry-run``: the resolved config and a size/memory estimate (as YAML comments), on stdout."""
    from omegaconf import OmegaConf

    from ptcli.config.estimate import plan

    print(OmegaConf.to_yaml(OmegaConf.create(data)), end="")
    print(f"# dry run of `ptcli {verb}`: config valid, nothing was run")
    for line in plan(verb, data):
        print(f"# {line}")


@contextlib.contextmanager
def swapped_argv(argv: list[str]):
    """``hydra.main`` reads sys.argv; hand it ours and restore the real one afterwards."""
    saved = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved


def launch(verb: str, args: list[str], *, multirun=False, config_dirs=(), slurm_dir=False, submitit=False) -> int:
    """Hand the overrides to ``hydra.main`` (sweeps, launchers and run dirs are Hydra's), return the exit code.

    ``slurm_dir`` (train.resume=auto): inside a Slurm job the run directory is named after the job, so a
    requeued job finds its own checkpoints. ``submitit``: the sweep's points run as submitit jobs; what goes
    wrong there (a failed point, a refused submission) is reported here, in ptcli's words."""
    import hydra

    apply_slurm_env()  # srun's tasks: RANK/WORLD_SIZE/MASTER_* from SLURM_*, before any rank check below
    extra = search_path_override(paths.user_config_dirs(config_dirs))
    own_dir = multirun or any(a.startswith("hydra.run.dir=") for a in args)
    job = os.environ.get("SLURM_JOB_ID")
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
    if slurm_dir and job and not own_dir:
        extra.append(f"hydra.run.dir=${{run.out_dir}}/{verb}/slurm-{job}")
    elif env_world_size() > 1 and not own_dir:
        # One run directory for the whole torchrun job: every process takes rank 0's timestamp.
        from datetime import datetime

        stamp = agree_on_run_stamp(datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f"))
        extra.append(f"hydra.run.dir=${{run.out_dir}}/{verb}/{stamp}")
    argv = [f"ptcli-{verb}", *(["--multirun"] if multirun else []), *args, *extra, f"hydra.job.name={verb}"]
    quiet_schema_matching()
    register_defaults()
    if submitit:
        launchers.prepare_submitit_env()
    task = hydra.main(config_path=str(paths.packaged_config_dir()), config_name=verb, version_base="1.3")(run_task)
    with swapped_argv(argv), launchers.errors_reach_ptcli(submitit):
        try:
            task()
        except SystemExit as e:
            if multirun and e.code:
                summarise_stopped_sweep()
            return e.code if isinstance(e.code, int) else 1
        except Exception as e:  # only with `submitit`: Hydra passes errors on instead of printing them
            code = report(e)
            summarise_stopped_sweep()
            return code
    return 0


def summarise_stopped_sweep() -> None:
    """A sweep that ended on a failed point: the summary of the points there are, failed ones marked."""
    from ptcli.launch.sweep import CURRENT, write_summary

    sweep_dir = CURRENT.pop("dir", None)
    if sweep_dir is not None and sweep_dir.is_dir():
        with contextlib.suppress(Exception):
            if write_summary(sweep_dir):
                print(f"ptcli: sweep summary (failed points marked) in {sweep_dir / 'sweep_summary.md'}",
                      file=sys.stderr)


def run_task(cfg) -> None:
    """The ``hydra.main`` task: one run (or one sweep point) in its own directory."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    hydra_cfg = HydraConfig.get()
    verb = hydra_cfg.job.name
    plugins.allow_command_line(hydra_cfg.overrides.task)
    run_dir = Path(hydra_cfg.runtime.output_dir)
    # A sweep point in a submitit job: srun's tasks get their ranks here (launch() ran in the submitting process).
    submitit_point = launchers.is_submitit_point(hydra_cfg)
    if submitit_point:
        apply_slurm_env()
    data, previous = None, None
    from hydra.types import RunMode

    single = hydra_cfg.mode == RunMode.RUN
    try:
        data = validate(verb, cfg)
        resolved = OmegaConf.create(data)
        if is_rank0():
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
            previous = update_latest(Path(data["run"]["out_dir"]) / verb, run_dir)
            print(f"ptcli {verb}: run directory {run_dir}", file=sys.stderr)
        module, _, func = RUNNERS[verb].partition(":")
        getattr(importlib.import_module(module), func)(resolved, run_dir)
    except SystemExit as e:
        if submitit_point and e.code:
            raise launchers.point_outcome(e.code if isinstance(e.code, int) else 1, run_dir, data) from None
        raise
    except KeyboardInterrupt:
        print(interrupted(run_dir), file=sys.stderr)
        if submitit_point:
            raise launchers.point_outcome(130, run_dir, data) from None
        raise SystemExit(130) from None
    except BaseException as e:  # one screen for the user, the traceback only with --debug
        code = report(e)
        if code == 2 and single and is_rank0() and data is not None:  # bad input: as if nothing had been started
            undo_run_dir(run_dir, Path(data["run"]["out_dir"]) / verb, previous)
        elif code != 2:
            print(f"ptcli: run directory {run_dir}", file=sys.stderr)
        if submitit_point:  # in the job's log above; and back to the waiting `ptcli -m`
            raise launchers.point_outcome(code, run_dir, data, e) from None
        raise SystemExit(code) from None


BOOKKEEPING = {".hydra", "config.yaml", "metrics.jsonl"}


def undo_run_dir(run_dir: Path, verb_dir: Path, previous: str | None) -> None:
    """After an input error (exit 2), remove the run directory when it holds nothing but ptcli's and Hydra's
    bookkeeping (the config, an empty metrics file), and point ``latest`` back where it pointed."""
    import shutil

    entries = {p.name: p for p in run_dir.iterdir()} if run_dir.is_dir() else {}
    metrics = entries.get("metrics.jsonl")
    if set(entries) - BOOKKEEPING or (metrics is not None and metrics.stat().st_size):
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    link = verb_dir / "latest"
    with contextlib.suppress(OSError):
        if previous is None:
            link.unlink()
        else:
            tmp = verb_dir / f".latest.{os.getpid()}"
            os.symlink(previous, tmp)
            os.replace(tmp, link)


def interrupted(run_dir: Path) -> str:
    """What a second Ctrl-C leaves: the step in progress is lost, the last checkpoint is intact."""
    from ptcli.training.checkpoint import CheckpointManager

    last = CheckpointManager(run_dir, 0).latest()
    if last is None:
        return f"ptcli: interrupted; no checkpoint had been written (run directory {run_dir})"
    return (f"ptcli: interrupted at once (a second Ctrl-C): the last checkpoint, {last.name}, is intact; resume with "
            f"train.resume=auto hydra.run.dir={run_dir}")


def agree_on_run_stamp(stamp: str) -> str:
    """Every process takes rank 0's timestamp, so a torchrun (or srun) job writes one run directory, not one per rank
    (Hydra resolves ${now:} in each process separately: hydra#2070)."""
    import torch.distributed as dist

    from ptcli.training.parallel import init_process_group

    init_process_group()
    holder = [stamp]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def is_rank0() -> bool:
    """True in the process that writes files (rank 0, or the only process)."""
    return int(os.environ.get("RANK", "0")) == 0


def update_latest(verb_dir: Path, run_dir: Path) -> str | None:
    """Point ``<out_dir>/<verb>/latest`` at ``run_dir`` atomically, so Makefiles can chain verbs; returns where it
    pointed before (None: nowhere)."""
    verb_dir.mkdir(parents=True, exist_ok=True)
    link = verb_dir / "latest"
    previous = os.readlink(link) if link.is_symlink() else None
    tmp = verb_dir / f".latest.{os.getpid()}"
    target = os.path.relpath(run_dir.resolve(), verb_dir.resolve())
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)
    return previous
