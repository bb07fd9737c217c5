"""Assemble what the loop runs from the objective's ``Setup``: the model made ready (transforms, device, wrap), its
helpers placed, optimizer and schedule, batches, checkpoints (resumed), validation and the best-model export."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ptcli.training.loop import LoopState, Parts


def assemble(cfg, objective, setup, ctx, placement, log, run_dir: Path) -> tuple[Parts, LoopState]:
    """The loop's parts for this run and the state it starts from (a checkpoint's when resuming)."""
    from ptcli.data.loader import TrainBatches
    from ptcli.errors import PtcliError
    from ptcli.training import checkpoint, optim
    from ptcli.training.mfu import peak_flops
    from ptcli.training.parallelize import compile_decision, place_helpers, prepare_model

    dist, data = ctx.dist, setup.data
    total_steps = planned_steps(cfg, len(data.train), data.units_per_example)
    compile_model, why = compile_decision(cfg.device.compile, total_steps, bool(data.units_per_example),
                                          cfg.get("privacy") is not None, placement.device.type)
    if why:
        log.info(why)
    module, model = prepare_model(setup.model, cfg, objective, dist, placement, log.info, compile_model)
    objective.helpers = place_helpers(setup.helpers, dist, placement, cfg.device.get("fused_kernels", True))
    n_params = sum(p.numel() for p in module.parameters())
    n_trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    log.info(f"model: {describe(module)}, {n_params / 1e6:.2f}M parameters"
             + (f" ({n_trainable / 1e6:.2f}M trainable)" if n_trainable != n_params else "")
             + f", on {placement.device} in {placement.precision}"
             + (f", {dist.world} processes" if dist.enabled else "")
             + (f"; helpers: {', '.join(objective.helpers)}" if objective.helpers else ""))
    tune = cfg.get("tune")
    optimizer = optim.build_optimizer(cfg.optim, module, placement.device.type,
                                      layer_decay=tune.layer_lr_decay if tune is not None else None)
    privacy = None
    if cfg.get("privacy") is not None:  # DP-SGD: per-example gradients, Poisson batches, a noisy optimizer
        from ptcli.training.privacy import Privacy

        if dist.enabled:
            raise PtcliError("+privacy=dp trains in one process (the noise is added once, to the sum); this run "
                             f"has {dist.world}", fix="start it without torchrun/srun, or device.strategy=single")
        privacy = Privacy(cfg.privacy, len(data.train), cfg.train.batch_size, total_steps, log.info)
        model = privacy.wrap_model(module, log.info)
    scheduler = optim.build_scheduler(cfg.scheduler, optimizer, total_steps or 0)
    scaler = placement.scaler()
    workers = cfg.train.workers if cfg.train.workers is not None else (2 if placement.device.type == "cuda" else 0)
    batches = TrainBatches(data.train, objective.collate, objective.units, cfg.train.batch_size, cfg.train.seed,
                           dist.rank, dist.world, cfg.train.grad_accum, workers, placement.device.type == "cuda",
                           poisson=privacy is not None,
                           lengths=train_lengths(data.train, objective, cfg.train.batch_size, cfg.train.seed, log.info)
                           if cfg.train.get("group_by_length") else None)
    checkpoints = checkpoint.CheckpointManager(run_dir, cfg.train.keep_last)
    state = LoopState()
    found = resume_point(cfg.train.resume, run_dir, checkpoints, dist, log.info)
    if found is not None:
        state = LoopState(**checkpoint.load(found, module, optimizer, scheduler, scaler))
        batches.load_state_dict(state.data)
        log.info(f"resumed from {found} at step {state.step}")
    elif cfg.train.resume == "auto":
        log.info("train.resume=auto: no checkpoint in this run directory yet, starting fresh")
    if privacy is not None:
        optimizer = privacy.wrap_optimizer(optimizer)
    folder = run_dir / setup.processors.folder_name
    folder.mkdir(exist_ok=True)
    if dist.is_rank0:
        setup.processors.save_pretrained(folder)
    seq_len = getattr(ctx.source, "seq_len", 0)
    peak, how = peak_flops(placement)
    flops = objective.flops_per_unit(module, seq_len)
    if flops and peak:
        log.info(f"MFU: {how}")
    log.show(objective.metrics, objective.unit)
    parts = Parts(model=model, objective=objective, batches=batches, optimizer=optimizer, scheduler=scheduler,
                  scaler=scaler, placement=placement, dist=dist, checkpoints=checkpoints, log=log,
                  total_steps=total_steps,
                  units_per_step=data.units_per_example * cfg.train.batch_size if data.units_per_example else None,
                  evaluate=(lambda: validation_metrics(model, objective, data.val, cfg, dist, placement))
                  if len(data.val) else None,
                  on_best=best_exporter(model, objective, setup.processors, cfg, dist, run_dir),
                  flops_per_unit=flops, peak_flops=peak, privacy=privacy)
    return parts, state


def resume_point(resume, run_dir: Path, checkpoints, dist, log):
    """The checkpoint to resume from (None: start fresh), chosen by rank 0 (it cleans up what a killed run left and
    checks digests) and agreed by every process; an error is raised in every process alike."""
    from ptcli.errors import PtcliError
    from ptcli.training import checkpoint

    answer = None
    if dist.is_rank0:
        try:
            checkpoints.clean(log)
            found = checkpoint.find_checkpoint(resume, run_dir, log)
            answer = ("ok", str(found) if found else None)
        except PtcliError as e:
            answer = ("error", (e.what, e.fix, e.where))
    kind, value = dist.gather_objects(answer)[0]
    if kind == "error":
        raise PtcliError(value[0], fix=value[1], where=value[2])
    return Path(value) if value else None


def describe(module) -> str:
    """The model's family (or its members' families) for the log."""
    from ptcli.models.modules import hf_members

    members = hf_members(module)
    if not members:
        return type(module).__name__
    return ", ".join(f"{name} {m.config.model_type}" if name else m.config.model_type for name, m in members.items())


def planned_steps(cfg, n_train: int, units_per_example: int | None) -> int | None:
    """The step count the schedule decays over: the earliest of max_steps, epochs and max_tokens."""
    candidates = []
    if cfg.train.max_steps:
        candidates.append(cfg.train.max_steps)
    if cfg.train.epochs:
        candidates.append(math.ceil(cfg.train.epochs * n_train / cfg.train.batch_size))
    if cfg.train.max_tokens and units_per_example:
        candidates.append(math.ceil(cfg.train.max_tokens / (cfg.train.batch_size * units_per_example)))
    return min(candidates) if candidates else None


def validation_metrics(model, objective, val, cfg, dist, placement) -> dict:
    """The objective's validation metrics (loss first) over (up to eval_batches of) the validation data, all
    processes together. Streaming: only counts are kept, never logits."""
    import torch

    from ptcli.data.loader import eval_batches
    from ptcli.errors import RunFailure
    from ptcli.training.loop import to_device

    micro = cfg.train.batch_size // (cfg.train.grad_accum * dist.world)
    # eval_batches counts batches of train.batch_size: the same validation data whatever grad_accum and the
    # number of processes, which only cut them into smaller micro-batches.
    limit = cfg.train.eval_batches and cfg.train.eval_batches * cfg.train.grad_accum * dist.world
    evaluator = objective.evaluator()
    model.eval()
    batches = iter(eval_batches(val, objective.eval_collate, objective.units, micro, limit, cfg.train.seed + 1,
                                dist.rank, dist.world))
    batch = None
    with torch.no_grad():
        while True:
            item = next(batches, None)
            if dist.sharded and not dist.all_true(item is None):
                # FSDP's forward is collective: a process out of batches repeats its last one, uncounted,
                # while the others finish theirs.
                if item is None:
                    if batch is None:
                        raise RunFailure("the validation set has fewer batches than processes",
                                         fix="Add validation data or lower train.batch_size")
                    with placement.autocast():
                        objective.evaluator().update(model, batch)
                    continue
            elif item is None:
                break
            batch = to_device(item, placement.device)
            with placement.autocast():
                evaluator.update(model, batch)
    model.train()
    states = dist.gather_objects(evaluator.state())
    for other in states[:dist.rank] + states[dist.rank + 1:]:
        evaluator.merge(other)
    return evaluator.compute()


def best_exporter(model, objective, processors, cfg, dist, run_dir: Path):
    """With train.export=best: the objective's export of the best evaluation's weights into ``best/``."""
    if cfg.train.export != "best":
        return None
    from ptcli.training.parallelize import gathered

    def on_best(state) -> None:
        plain = gathered(model, dist)  # FSDP: every process helps gather the weights
        if dist.is_rank0:
            objective.export(plain, processors, run_dir / "best")
            (run_dir / "best" / "ptcli_best.json").write_text(json.dumps(
                {"step": state.step, "metric": cfg.train.best_metric, "value": state.best_metric}) + "\n")

    return on_best


def write_summary(run_dir: Path, cfg, objective, state, data, n_params: int, wall: float,
                  extras: dict | None = None) -> dict:
    """``summary.json``: what a person (or a Makefile) wants to know about the finished run."""
    facts = dict(data.facts)
    per_char = facts.pop("val_tokens_per_char", None)
    last = state.last_val_loss
    summary = {
        "steps": state.step,
        objective.unit: state.tokens,
        "parameters": n_params,
        "final_val_loss": last,
        "best_val_loss": state.best_val_loss,
        "final_val_ppl": math.exp(min(last, 50)) if last is not None and objective.unit == "tokens" else None,
        "final_val": state.last_val,
        "best_val": state.best_val,
        "best_step": state.best_step,
        "best_metric": state.best_metric,
        "best_metric_name": cfg.train.best_metric,
        "best_metric_higher_is_better": bool(objective.direction(cfg.train.best_metric)),
        "stopped_early": state.stopped_early,
        "train_seconds": round(state.elapsed, 2),
        "wall_seconds": round(wall, 2),
        f"{objective.unit}_per_second": round(state.tokens / state.elapsed, 1) if state.elapsed else None,
        "model_dir": str(run_dir / "model"),
        "run_dir": str(run_dir),
    }
    if per_char is not None:
        summary["val_bits_per_char"] = last * per_char / math.log(2) if last is not None else None
    summary |= facts
    summary |= extras or {}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def train_lengths(data, objective, global_batch: int, seed: int, info):
    """Each training example's length for ``train.group_by_length``, or None (said in the log) where grouping has
    nothing to do; logs how many padded tokens the first epoch's steps hold with grouping and without."""
    import numpy as np

    from ptcli.data.loader import StepOrder

    if not hasattr(data, "__getitem__"):
        info("train.group_by_length: no effect, the training examples are packed blocks of one length")
        return None
    lengths = [objective.example_length(data[i]) for i in range(len(data))]
    if not lengths or any(n is None for n in lengths):
        info(f"train.group_by_length: no effect, {type(objective).__name__}'s examples have no token length")
        return None
    lengths = np.asarray(lengths)

    def padded(order: StepOrder) -> tuple[int, int]:  # (padded, real) tokens of the epoch's whole steps
        steps = [order.micro_batches(p)[0] for p in range(0, len(lengths) - global_batch + 1, global_batch)]
        return int(sum(lengths[s].max() * len(s) for s in steps)), int(sum(lengths[s].sum() for s in steps))

    plain, real = padded(StepOrder(range(len(lengths)), global_batch, seed))
    grouped, _ = padded(StepOrder(range(len(lengths)), global_batch, seed, lengths=lengths))
    info(f"train.group_by_length: the first epoch's steps pad to {grouped:,} tokens instead of {plain:,} "
         f"({grouped / max(plain, 1) - 1:+.0%}; their examples hold {real:,})")
    return lengths
