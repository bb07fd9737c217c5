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
    from ptcli.data.pipeline import resolve_tokenizer
    from ptcli.training import checkpoint, device, distributed, optim
    from ptcli.training.loop import LoopState, train
    from ptcli.training.metrics_log import MetricsLogger

    wall_start = time.time()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress display is the only one
    dist = distributed.init_from_env(cfg.device.strategy, cfg.device.timeout_s)
    placement = device.resolve(cfg.device, dist.local_rank)
    torch.manual_seed(cfg.train.seed)
    log = MetricsLogger(run_dir, cfg.train.max_steps, enabled=dist.is_rank0, tensorboard=cfg.logger.tensorboard)
    try:
        objective = build(cfg.objective, "objective")
        tokenizer = resolve_tokenizer(cfg, objective, cache_dir(cfg), dist, log.info)
        objective.bind(tokenizer)
        data = prepare_data(cfg, objective, tokenizer, dist, log.info)

        from ptcli.models import build_model
        from ptcli.training import finetune

        torch.manual_seed(cfg.train.seed)  # the same initial weights whatever ran before
        model = build_model(cfg.model, objective.head, tokenizer, log=log.info, **objective.head_kwargs())
        if getattr(objective, "labelled", False):
            objective.finish_model(model)
        tune = cfg.get("tune")
        if tune is not None:
            finetune.freeze(model, tune, log.info)
        if cfg.get("peft") is not None:
            model = finetune.apply_peft(model, cfg.peft, objective.head, log.info)
        if cfg.train.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        model.to(placement.device)
        # DDP wraps the model; FSDP shards it in place (new parameters): before the optimizer is built over them
        train_model = distributed.wrap(model, dist, placement)
        n_params = sum(p.numel() for p in model.parameters())
        n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log.info(f"model: {model.config.model_type}, {n_params / 1e6:.2f}M parameters"
                 + (f" ({n_trainable / 1e6:.2f}M trainable)" if n_trainable != n_params else "")
                 + f", on {placement.device} in {placement.precision}"
                 + (f", {dist.world} processes" if dist.enabled else ""))
        optimizer = optim.build_optimizer(cfg.optim, model, placement.device.type,
                                          layer_decay=tune.layer_lr_decay if tune is not None else None)
        total_steps = planned_steps(cfg, data.n_train)
        scheduler = optim.build_scheduler(cfg.scheduler, optimizer, total_steps or 0)
        scaler = placement.scaler()
        batches = data.batches(cfg, dist)
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

        if cfg.device.compile:
            train_model = torch.compile(train_model)
        tokens_per_step = None if data.labelled else cfg.train.batch_size * cfg.dataset.seq_len

        def evaluate() -> dict:
            return validation_metrics(train_model, objective, data, cfg, dist, placement)

        def on_best(state) -> None:
            if cfg.train.export != "best":
                return
            plain = distributed.plain_copy(model, dist)  # FSDP: every process helps gather the weights
            if dist.is_rank0:
                checkpoint.export_model(plain, tokenizer, run_dir / "best")
                (run_dir / "best" / "ptcli_best.json").write_text(json.dumps(
                    {"step": state.step, "metric": cfg.train.best_metric, "value": state.best_metric}) + "\n")

        log.begin(total_steps, state.step)
        from ptcli.training.preempt import Preemption

        with Preemption() as preemption:
            state = train(train_model, objective, batches, optimizer, scheduler, scaler, placement, dist, ckpt,
                          log, cfg.train, state, total_steps, tokens_per_step,
                          evaluate=evaluate if data.n_val else None, on_best=on_best, preemption=preemption)
        if state.preempted:
            stopped(cfg, run_dir, state, preemption.signal_name, dist, log.info)
        summary = {}
        plain = distributed.plain_copy(model, dist)
        if dist.is_rank0:
            final = finetune.export_final(plain, tokenizer, run_dir, cfg, log.info)
            summary = write_summary(run_dir, cfg, state, data, n_params, time.time() - wall_start)
            log.info(f"done: {state.step} steps, final model in {final}")
        return summary
    except Exception as e:
        failure = distributed.peer_failure(e, dist, run_dir)
        if failure is None:
            raise
        dist.broken = True
        raise failure from None
    finally:
        log.close()
        if dist.enabled and not dist.broken:  # tearing down a group with a dead member can block
            import torch.distributed as tdist

            tdist.destroy_process_group()


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


class TrainData:
    """What the loop trains and validates on: packed blocks (pretraining) or labelled examples (fine-tuning)."""

    def __init__(self, corpus=None, examples=None):
        self.corpus, self.examples = corpus, examples
        self.labelled = examples is not None
        self.n_train = len(examples.train) if self.labelled else len(corpus.train_indices)
        self.n_val = len(examples.val) if self.labelled else len(corpus.val_indices)

    def batches(self, cfg, dist):
        from ptcli.data.examples import ExampleBatches
        from ptcli.data.loader import BlockBatches

        args = (cfg.train.batch_size, cfg.train.seed, dist.rank, dist.world, cfg.train.grad_accum)
        if self.labelled:
            return ExampleBatches(self.examples.train, range(self.n_train), *args)
        return BlockBatches(self.corpus.train_blocks, self.corpus.train_indices, *args)

    def val_batches(self, micro: int, limit: int | None, dist):
        from ptcli.data.examples import example_batches
        from ptcli.data.loader import eval_batches

        if self.labelled:
            return example_batches(self.examples.val, micro, limit, dist.rank, dist.world)
        return eval_batches(self.corpus.val_blocks, self.corpus.val_indices, micro, limit, dist.rank, dist.world)


def prepare_data(cfg, objective, tokenizer, dist, log) -> TrainData:
    """Packed blocks for language modelling, encoded labelled examples for fine-tuning objectives."""
    if getattr(objective, "labelled", False):
        from ptcli.data.examples import prepare_examples

        return TrainData(examples=prepare_examples(cfg, objective, log if dist.is_rank0 else (lambda _m: None)))
    from ptcli.data.pipeline import prepare_corpus

    return TrainData(corpus=prepare_corpus(cfg, objective, tokenizer, cache_dir(cfg), dist, log))


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


def validation_metrics(model, objective, data, cfg, dist, placement) -> dict:
    """The objective's validation metrics (loss first) over (up to eval_batches of) the validation data, all
    processes together. Streaming: only counts are kept, never logits."""
    import itertools

    import torch

    from ptcli.errors import RunFailure
    from ptcli.training.loop import step_generator

    micro = cfg.train.batch_size // (cfg.train.grad_accum * dist.world)
    # eval_batches counts batches of train.batch_size: the same validation data whatever grad_accum and the
    # number of processes, which only cut them into smaller micro-batches.
    limit = cfg.train.eval_batches and cfg.train.eval_batches * cfg.train.grad_accum * dist.world
    evaluator = objective.evaluator()
    model.eval()
    batches = iter(data.val_batches(micro, limit, dist))
    batch = None
    with torch.no_grad():
        for i in itertools.count():
            items = next(batches, None)
            if dist.sharded and not dist.all_true(items is None):
                # FSDP's forward is collective: a process out of batches repeats its last one, uncounted,
                # while the others finish theirs.
                if items is None:
                    if batch is None:
                        raise RunFailure("the validation set has fewer batches than processes",
                                         fix="Add validation data or lower train.batch_size")
                    with placement.autocast():
                        objective.evaluator().update(model, batch)
                    continue
            elif items is None:
                break
            # A fixed generator per batch: masked-LM validation sees the same masks at every evaluation.
            # Seeded by the global batch index, so 1 or N processes mask the same way.
            batch = objective.collate(items, step_generator(cfg.train.seed + 1, 0, 0, i * dist.world + dist.rank))
            batch = {k: v.to(placement.device) for k, v in batch.items()}
            with placement.autocast():
                evaluator.update(model, batch)
    model.train()
    states = dist.gather_objects(evaluator.state())
    for other in states[:dist.rank] + states[dist.rank + 1:]:
        evaluator.merge(other)
    metrics = evaluator.compute()
    if not data.labelled:
        metrics["ppl"] = math.exp(min(metrics["loss"], 50))
    return metrics


def write_summary(run_dir: Path, cfg, state, data, n_params: int, wall: float) -> dict:
    """``summary.json``: what a person (or a Makefile) wants to know about the finished run."""
    if data.labelled:
        return write_finetune_summary(run_dir, cfg, state, data, n_params, wall)
    corpus = data.corpus
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


def write_finetune_summary(run_dir: Path, cfg, state, data, n_params: int, wall: float) -> dict:
    summary = {
        "steps": state.step,
        "parameters": n_params,
        "final_val": state.last_val,
        "best_val": state.best_val,
        "best_step": state.best_step,
        "best_metric": state.best_metric,
        "best_metric_name": cfg.train.best_metric,
        "stopped_early": state.stopped_early,
        "train_seconds": round(state.elapsed, 2),
        "wall_seconds": round(wall, 2),
        "train_examples": data.n_train,
        "val_examples": data.n_val,
        "model_dir": str(run_dir / "model"),
        "run_dir": str(run_dir),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
