"""The one training loop: micro-steps, token-weighted loss, clipping, schedule, logging, eval and checkpoints.

Read top to bottom. Device values are read back only at log, eval and save steps (never per step), so
the GPU (or the CPU's thread pool) is never stalled waiting for Python.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

from ptcli.errors import RunFailure
from ptcli.training.distributed import local_value, no_sync, unwrap


@dataclass
class LoopState:
    """Everything the loop needs to continue exactly where it stopped."""

    step: int = 0
    tokens: int = 0
    elapsed: float = 0.0  # training seconds before this process (resume)
    best_val_loss: float | None = None
    last_val_loss: float | None = None
    last_val: dict | None = None  # every validation metric of the last evaluation
    best_val: dict | None = None  # ... and of the best one by train.best_metric
    best_metric: float | None = None
    best_step: int | None = None
    bad_evals: int = 0  # evaluations since the best one (early stopping)
    stopped_early: bool = False
    preempted: bool = False
    data: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def step_generator(seed: int, step: int, rank: int, micro: int):
    """A generator for one micro-batch's randomness (MLM masks): a pure function of where we are, so a resumed
    run draws exactly what an uninterrupted one would."""
    import torch

    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 1_009 + rank * 101 + micro)


def train(model, objective, batches, optimizer, scheduler, scaler, placement, dist, ckpt, log, cfg, state,
          total_steps, tokens_per_step, evaluate=None, on_best=None, preemption=None) -> LoopState:
    """Train until the first stop condition of ``cfg`` (the ``train`` config); returns the final state.

    ``tokens_per_step`` None: count the (unpadded) tokens of each batch instead (labelled examples vary in
    length). ``evaluate()`` returns validation metrics; ``on_best(state)`` runs when ``cfg.best_metric`` improves.
    ``preemption.requested`` (a signal) stops the run after the current step, with a checkpoint: the state
    returned then has ``preempted`` set.
    """
    import torch

    device = placement.device
    params = [p for p in model.parameters() if p.requires_grad]
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    window_sum = torch.zeros((), device=device)
    window_count = torch.zeros((), device=device)
    started, window_start, window_tokens = time.time(), time.time(), 0
    if total_steps and state.step >= total_steps:  # resumed from the final checkpoint: nothing left to do
        return state
    model.train()
    while True:
        # ---- one optimizer step: grad_accum micro-batches, summed losses, one normalisation
        micro_batches = batches.next_step()
        step_sum = torch.zeros((), device=device)
        step_count = torch.zeros((), device=device)
        step_tokens = 0
        for i, blocks in enumerate(micro_batches):
            batch = objective.collate(blocks, step_generator(cfg.seed, state.step, dist.rank, i))
            if tokens_per_step is None:  # on the CPU tensors, before the copy: no device sync
                mask = batch.get("attention_mask")
                step_tokens += int(mask.sum()) if mask is not None else batch["input_ids"].numel()
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            last = i == len(micro_batches) - 1
            # DDP/FSDP reduce gradients on every backward unless told not to: only on the last micro-step.
            sync = contextlib.nullcontext() if last else no_sync(model, dist)
            with sync:
                with placement.autocast():
                    out = objective.loss(model, batch)
                scaler.scale(out.sum).backward()
            step_sum += out.sum.detach().float()
            step_count += out.count
        # Token-weighted mean over micro-steps and processes: DDP averaged the gradients over processes,
        # so multiply by world / global count (all-reduce is a collective, not a host sync).
        global_count = dist.reduce_sum(step_count.clone()).clamp(min=1)
        scaler.unscale_(optimizer)
        torch._foreach_mul_([p.grad for p in params if p.grad is not None], dist.world / global_count)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm or float("inf"))
        scaler.step(optimizer)
        scaler.update()
        lr = scheduler.get_last_lr()[0]  # the rate this step used (a Python float: no device read)
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        step_tokens = tokens_per_step if tokens_per_step is not None else step_tokens * dist.world
        state.tokens += step_tokens
        window_tokens += step_tokens
        window_sum += step_sum
        window_count += step_count
        nonfinite |= ~torch.isfinite(step_sum)
        log.advance(state.step)

        # ---- stop conditions (max_time is agreed at log steps so that every process stops together)
        done = bool(total_steps and state.step >= total_steps)
        exact_tokens = tokens_per_step is not None  # else each process counts its own (agreed at log steps)
        done = done or bool(exact_tokens and cfg.max_tokens and state.tokens >= cfg.max_tokens)
        log_now = done or state.step % cfg.log_every == 0
        if log_now and cfg.max_tokens and not exact_tokens:
            done = done or not dist.all_true(state.tokens < cfg.max_tokens)
        # a signal to any process stops them all after this step (one small CPU all-reduce when distributed)
        preempted = preemption is not None and not dist.all_true(not preemption.requested)
        state.preempted = preempted and not done
        done = done or preempted
        log_now = log_now or done
        if log_now and cfg.max_time:
            done = done or not dist.all_true(state.elapsed + time.time() - started < cfg.max_time)

        # ---- logging: the only place (with eval and save) that reads device values
        if log_now:
            if nonfinite.item():  # a sync point, at log steps only
                raise _nonfinite_failure(state.step, ckpt)
            totals = dist.reduce_sum(torch.stack([window_sum, window_count]))
            now = time.time()
            log.log("train", state.step, loss=(totals[0] / totals[1].clamp(min=1)).item(),
                    lr=lr, grad_norm=local_value(grad_norm),
                    tokens_per_s=window_tokens / max(now - window_start, 1e-9), tokens=state.tokens,
                    epoch=round(batches.epoch, 4))
            window_sum.zero_(), window_count.zero_()
            window_start, window_tokens = now, 0
        if evaluate is not None and (state.step % cfg.eval_every == 0 or (done and not state.preempted)):
            metrics = evaluate()
            log.log("eval", state.step, **{f"val_{k}": v for k, v in metrics.items()})
            done = track_best(state, metrics, cfg, on_best) or done
        if state.step % cfg.save_every == 0 or done:
            if nonfinite.item():
                raise _nonfinite_failure(state.step, ckpt)
            state.data = batches.state_dict()
            snapshot = state.to_dict() | {"elapsed": state.elapsed + time.time() - started}
            ckpt.save(unwrap(model), optimizer, scheduler, scaler, snapshot, dist)  # FSDP: every rank writes
            dist.barrier()
        if done:
            state.elapsed += time.time() - started
            return state


def track_best(state: LoopState, metrics: dict, cfg, on_best=None) -> bool:
    """Record an evaluation; call ``on_best`` when ``cfg.best_metric`` improved. True: stop early (no improvement
    in ``cfg.patience`` evaluations)."""
    from ptcli.metrics import higher_is_better

    val_loss = metrics["loss"]
    state.last_val_loss, state.last_val = val_loss, metrics
    if state.best_val_loss is None or val_loss < state.best_val_loss:
        state.best_val_loss = val_loss
    name = cfg.best_metric
    if name not in metrics:
        raise RunFailure(f"train.best_metric '{name}' is not a validation metric of this objective; "
                         f"it reports: {', '.join(metrics)}", fix="set train.best_metric to one of those")
    value, sign = metrics[name], 1 if higher_is_better(name) else -1
    if state.best_metric is None or sign * (value - state.best_metric) > 0:
        state.best_metric, state.best_step, state.best_val, state.bad_evals = value, state.step, metrics, 0
        if on_best is not None:
            on_best(state)
        return False
    state.bad_evals += 1
    if cfg.patience and state.bad_evals >= cfg.patience:
        state.stopped_early = True
        return True
    return False


def _nonfinite_failure(step: int, ckpt) -> RunFailure:
    last = ckpt.latest()
    kept = f"; the last good checkpoint is {last}" if last else "; no checkpoint was written before it"
    return RunFailure(f"the loss became NaN or infinite at or before step {step}{kept}",
                      fix="Lower optim.lr, keep train.max_grad_norm set, or use device.precision=fp32, "
                          "then resume with train.resume=<checkpoint>")
