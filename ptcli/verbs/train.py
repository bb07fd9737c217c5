"""``pretrain`` and ``finetune``: the objective sets up what it trains, the loop trains it, the objective exports it."""

from __future__ import annotations

import os
import time
from pathlib import Path


def cache_dir(cfg) -> Path:
    """Tokenizers and packed corpora are cached here across runs."""
    path = cfg.run.cache_dir or os.environ.get("PTCLI_CACHE_DIR") or "~/.cache/ptcli"
    return Path(path).expanduser()


def run(cfg, run_dir: Path) -> dict:
    """Train as ``cfg`` says, writing everything into ``run_dir``; returns the summary."""
    import sys

    import torch
    from transformers.utils import logging as hf_logging

    from ptcli.config.build import build
    from ptcli.models.placement import resolve
    from ptcli.objectives.base import Context
    from ptcli.training import finetune, parallel
    from ptcli.training.failures import peer_failure
    from ptcli.training.loop import train
    from ptcli.training.metrics_log import MetricsLogger
    from ptcli.training.parallelize import gathered
    from ptcli.training.parts import assemble, write_summary
    from ptcli.training.preempt import Preemption

    wall_start = time.time()
    hf_logging.disable_progress_bar()  # our own progress display is the only one
    dist = parallel.init_from_env(cfg.device.strategy, cfg.device.timeout_s)
    placement = resolve(cfg.device, dist.local_rank)
    torch.manual_seed(cfg.train.seed)
    from omegaconf import OmegaConf

    from ptcli.training.trackers import from_config

    # progress and logs on stderr, like every verb: stdout is for data (here, at the end, the run directory)
    log = MetricsLogger(run_dir, cfg.train.max_steps, enabled=dist.is_rank0, stream=sys.stderr,
                        trackers=from_config(cfg.logger), config=OmegaConf.to_container(cfg, resolve=True))
    try:
        objective = build(cfg.objective, "objective")
        if cfg.distill.teacher:
            from ptcli.objectives.distill import distilled

            objective = distilled(objective, cfg.distill)
        if cfg.get("adversarial") is not None:
            from ptcli.objectives.adversarial import adversarial

            objective = adversarial(objective, cfg.adversarial)
        ctx = Context(cfg, build(cfg.dataset, "dataset"), cache_dir(cfg), dist, log.info)
        setup = objective.setup(ctx)
        parts, state = assemble(cfg, objective, setup, ctx, placement, log, run_dir)
        log.begin(parts.total_steps, state.step, cfg.train.max_time, state.elapsed)
        with Preemption() as preemption:
            parts.preemption = preemption
            state = train(parts, cfg.train, state)
        if state.preempted:
            stopped(cfg, run_dir, state, preemption.signal_name, dist, log.info)
        summary = {}
        plain = gathered(parts.model, dist)
        if dist.is_rank0:
            final = finetune.export_final(plain, setup.processors, objective, run_dir, cfg, log.info)
            n_params = sum(p.numel() for p in plain.parameters())
            extras = end_of_run(run_dir, cfg, placement)
            if parts.privacy is not None:
                extras |= private_card(parts.privacy, state.step, final, log.info)
            summary = write_summary(run_dir, cfg, objective, state, setup.data, n_params, time.time() - wall_start,
                                    extras=extras)
            log.finish(summary, final)  # the experiment trackers get the summary and the final model folder
            log.info(f"done: {state.step} steps, final model in {final}")
            from ptcli.training.report import show_summary

            show_summary(summary, objective.unit)
            print(run_dir, flush=True)  # the product, for a shell: ptcli finetune model.path=$(ptcli pretrain ...)
        return summary
    except Exception as e:
        failure = peer_failure(e, dist, run_dir)
        if failure is None:
            raise
        dist.broken = True
        raise failure from None
    finally:
        log.close()
        if dist.enabled and not dist.broken:  # tearing down a group with a dead member can block
            import torch.distributed as tdist

            tdist.destroy_process_group()


def end_of_run(run_dir: Path, cfg, placement) -> dict:
    """What summary.json adds at the end: the peak memory, the mean MFU and the curves' picture."""
    import statistics

    from ptcli.training.report import peak_memory, plot_curves, read_metrics

    extras = peak_memory(placement.device)
    mfus = [r["mfu"] for r in read_metrics(run_dir)[0] if isinstance(r.get("mfu"), (int, float))]
    extras["mfu"] = round(statistics.median(mfus), 4) if mfus else None
    curves = plot_curves(run_dir, cfg.train.best_metric, title=f"ptcli {run_dir.parent.name}: {run_dir}")
    extras["curves"] = str(curves) if curves else None
    return extras


def private_card(privacy, steps: int, model_dir: Path, log) -> dict:
    """+privacy=dp: the epsilon spent (and how) for summary.json, and a section of the model folder's README.md."""
    from ptcli.training.privacy import card_section

    facts = privacy.facts(steps)
    readme = model_dir / "README.md"
    text = readme.read_text() if readme.is_file() else "# A model trained with ptcli\n"
    readme.write_text(text + card_section(facts))
    p = facts["privacy"]
    log(f"privacy: spent epsilon {p['epsilon']:.3f} at delta {p['delta']:g} over {steps} steps")
    return facts


def stopped(cfg, run_dir: Path, state, signal_name: str | None, dist, log) -> None:
    """After a signal: the checkpoint is written; requeue under Slurm if asked, then exit with EXIT_PREEMPTED."""
    from ptcli.errors import Preempted

    requeued = False
    if cfg.train.requeue and dist.is_rank0:
        from ptcli.training.preempt import requeue

        requeued = requeue(log)
    how = "the requeued job resumes" if requeued else "resume"
    why = f"{signal_name} received" if signal_name else "another process received a signal"
    raise Preempted(f"{why}: stopped after step {state.step} with a checkpoint",
                    where=str(run_dir),
                    fix=f"{how} with train.resume=auto hydra.run.dir={run_dir} (same overrides otherwise)")
