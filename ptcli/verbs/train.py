"""``pretrain`` and ``finetune``: assemble tokenizer, data, model and optimizer, run the one loop, export."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path


def cache_dir(cfg) -> Path:
    """Tokenizers and packed corpora are cached here across runs."""
    path = cfg.run.cache_dir or os.environ.get("PTCLI_CACHE_DIR") or "~/.cache/ptcli"
    return Path(path).expanduser()


def run(cfg, run_dir: Path) -> dict:
    """Train as ``cfg`` says, writing everything into ``run_dir``; returns the summary."""
    import torch

    from ptcli.config.build import build
    from ptcli.data.pipeline import prepare_corpus, resolve_tokenizer
    from ptcli.training import checkpoint, device, distributed, optim
    from ptcli.training.loop import LoopState, train
    from ptcli.training.metrics_log import MetricsLogger

    wall_start = time.time()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress display is the only one
    dist = distributed.init_from_env(cfg.device.strategy)
    placement = device.resolve(cfg.device, dist.local_rank)
    torch.manual_seed(cfg.train.seed)
    log = MetricsLogger(run_dir, cfg.train.max_steps, enabled=dist.is_rank0, tensorboard=cfg.logger.tensorboard)
    try:
        objective = build(cfg.objective, "objective")
        tokenizer = resolve_tokenizer(cfg, objective, cache_dir(cfg), dist, log.info)
        objective.bind(tokenizer)
        corpus = prepare_corpus(cfg, objective, tokenizer, cache_dir(cfg), dist, log.info)

        from ptcli.models import build_model

        torch.manual_seed(cfg.train.seed)  # the same initial weights whatever ran before
        model = build_model(cfg.model, objective.head, tokenizer)
        if cfg.train.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        model.to(placement.device)
        n_params = sum(p.numel() for p in model.parameters())
        log.info(f"model: {model.config.model_type}, {n_params / 1e6:.2f}M parameters, on {placement.device} "
                 f"in {placement.precision}" + (f", {dist.world} processes" if dist.enabled else ""))
        optimizer = optim.build_optimizer(cfg.optim, model, placement.device.type)
        total_steps = planned_steps(cfg, len(corpus.train_indices))
        scheduler = optim.build_scheduler(cfg.scheduler, optimizer, total_steps or 0)
        scaler = placement.scaler()

        from ptcli.data.loader import BlockBatches

        batches = BlockBatches(corpus.train_blocks, corpus.train_indices, cfg.train.batch_size, cfg.train.seed,
                               dist.rank, dist.world, cfg.train.grad_accum)
        ckpt = checkpoint.CheckpointManager(run_dir, cfg.train.keep_last)
        state = LoopState()
        found = checkpoint.find_checkpoint(cfg.train.resume, run_dir)
        if found is not None:
            state = LoopState(**checkpoint.load(found, model, optimizer, scheduler, scaler))
            batches.load_state_dict(state.data)
            log.info(f"resumed from {found} at step {state.step}")
        elif cfg.train.resume == "auto":
            log.info("train.resume=auto: no checkpoint in this run directory yet, starting fresh")
        (run_dir / "tokenizer").mkdir(exist_ok=True)
        if dist.is_rank0:
            tokenizer.save_pretrained(run_dir / "tokenizer")

        train_model = distributed.apply_ddp(model, dist, placement.device)
        if cfg.device.compile:
            train_model = torch.compile(train_model)
        tokens_per_step = cfg.train.batch_size * cfg.dataset.seq_len

        def evaluate() -> float:
            return validation_loss(train_model, objective, corpus, cfg, dist, placement)

        log.begin(total_steps, state.step)
        state = train(train_model, objective, batches, optimizer, scheduler, scaler, placement, dist, ckpt, log,
                      cfg.train, state, total_steps, tokens_per_step,
                      evaluate=evaluate if len(corpus.val_indices) else None)
        summary = {}
        if dist.is_rank0:
            checkpoint.export_model(model, tokenizer, run_dir / "model")
            summary = write_summary(run_dir, cfg, state, corpus, n_params, time.time() - wall_start)
            log.info(f"done: {state.step} steps, final model in {run_dir / 'model'}")
        return summary
    finally:
        log.close()
        if dist.enabled:
            import torch.distributed as tdist

            tdist.destroy_process_group()


def planned_steps(cfg, n_train_blocks: int) -> int | None:
    """The step count the schedule decays over: the earliest of max_steps, epochs and max_tokens."""
    candidates = []
    if cfg.train.max_steps:
        candidates.append(cfg.train.max_steps)
    if cfg.train.epochs:
        candidates.append(math.ceil(cfg.train.epochs * n_train_blocks / cfg.train.batch_size))
    if cfg.train.max_tokens:
        candidates.append(math.ceil(cfg.train.max_tokens / (cfg.train.batch_size * cfg.dataset.seq_len)))
    return min(candidates) if candidates else None


def validation_loss(model, objective, corpus, cfg, dist, placement) -> float:
    """Token-weighted mean loss over (up to eval_batches of) the validation blocks, all processes together."""
    import torch

    from ptcli.data.loader import eval_batches
    from ptcli.training.loop import step_generator

    micro = cfg.train.batch_size // (cfg.train.grad_accum * dist.world)
    # eval_batches counts batches of train.batch_size blocks: the same validation blocks whatever grad_accum
    # and the number of processes, which only cut them into smaller micro-batches.
    limit = cfg.train.eval_batches and cfg.train.eval_batches * cfg.train.grad_accum * dist.world
    totals = torch.zeros(2, device=placement.device)
    model.eval()
    with torch.no_grad():
        for i, blocks in enumerate(eval_batches(corpus.val_blocks, corpus.val_indices, micro, limit,
                                                dist.rank, dist.world)):
            # A fixed generator per batch: masked-LM validation sees the same masks at every evaluation.
            # Seeded by the global batch index, so 1 or N processes mask the same way.
            batch = objective.collate(blocks, step_generator(cfg.train.seed + 1, 0, 0, i * dist.world + dist.rank))
            batch = {k: v.to(placement.device) for k, v in batch.items()}
            with placement.autocast():
                out = objective.loss(model, batch)
            totals[0] += out.sum.float()
            totals[1] += out.count
    model.train()
    totals = dist.reduce_sum(totals)
    return (totals[0] / totals[1].clamp(min=1)).item()


def write_summary(run_dir: Path, cfg, state, corpus, n_params: int, wall: float) -> dict:
    """``summary.json``: what a person (or a Makefile) wants to know about the finished run."""
    summary = {
        "steps": state.step,
        "tokens": state.tokens,
        "parameters": n_params,
        "final_val_loss": state.last_val_loss,
        "best_val_loss": state.best_val_loss,
        "final_val_ppl": math.exp(min(state.last_val_loss, 50)) if state.last_val_loss is not None else None,
        "val_bits_per_char": (state.last_val_loss * corpus.val_tokens_per_char / math.log(2)
                              if state.last_val_loss is not None and corpus.val_tokens_per_char else None),
        "corpus_entropy_bits_per_char": corpus.entropy_bits_per_char,
        "train_seconds": round(state.elapsed, 2),
        "wall_seconds": round(wall, 2),
        "tokens_per_second": round(state.tokens / state.elapsed, 1) if state.elapsed else None,
        "train_blocks": len(corpus.train_indices),
        "val_blocks": len(corpus.val_indices),
        "model_dir": str(run_dir / "model"),
        "run_dir": str(run_dir),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
