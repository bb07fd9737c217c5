"""The one training loop: micro-steps, token-weighted loss, clipping, schedule, logging, eval and checkpoints.

Read top to bottom. Device values are read back only at log, eval and save steps (never per step), so
the GPU (or the CPU's thread pool) is never stalled waiting for Python.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ptcli.errors import RunFailure
from ptcli.models.modules import unwrap
from ptcli.training.parallelize import local_value, no_sync


@dataclass
class LoopState:
    """Everything the loop needs to continue exactly where it stopped."""

    step: int = 0
    tokens: int = 0  # units of the objective seen (tokens, images, seconds)
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


@dataclass
class Parts:
    """What the loop runs: assembled by ``ptcli.training.parts.assemble``."""

    model: Any  # the module as called (wrapped by DDP/FSDP, compiled)
    objective: Any
    batches: Any  # ptcli.data.loader.TrainBatches
    optimizer: Any
    scheduler: Any
    scaler: Any
    placement: Any  # ptcli.models.placement.Placement
    dist: Any  # ptcli.training.parallel.Dist
    checkpoints: Any  # ptcli.training.checkpoint.CheckpointManager
    log: Any  # ptcli.training.metrics_log.MetricsLogger
    total_steps: int | None
    units_per_step: int | None = None  # set when every step counts the same (packed blocks): exact without a collective
    evaluate: Callable[[], dict] | None = None
    on_best: Callable[[LoopState], None] | None = None
    preemption: Any = None
    flops_per_unit: float | None = None
    peak_flops: float | None = None
    privacy: Any = None  # ptcli.training.privacy.Privacy (+privacy=dp): its epsilon is logged at log steps


def train(parts: Parts, cfg, state: LoopState) -> LoopState:
    """Train until the first stop condition of ``cfg`` (the ``train`` config); returns the final state.

    ``parts.evaluate()`` returns validation metrics; ``parts.on_best(state)`` runs when ``cfg.best_metric`` improves.
    A signal (``parts.preemption.requested``) stops the run after the current step, with a checkpoint: the state
    returned then has ``preempted`` set.
    """
    import torch

    model, objective, dist, log = parts.model, parts.objective, parts.dist, parts.log
    device = parts.placement.device
    params = [p for p in model.parameters() if p.requires_grad]
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    window = Window(device)
    started = time.time()
    if parts.total_steps and state.step >= parts.total_steps:  # resumed from the final checkpoint: nothing left
        return state
    parts.batches.start(state.step)
    model.train()
    first_step = state.step + 1  # this process's first: its loss is shown at once, not after log_every steps
    while True:
        # ---- one optimizer step: grad_accum micro-batches, summed losses, one normalisation
        step_sum = torch.zeros((), device=device)
        step_count = torch.zeros((), device=device)
        step_units, terms = 0, {}
        micro_batches = parts.batches.next_step()
        # One micro-batch in one process: its own count is the step's, so backward takes the mean at once and the
        # gradients need no scaling pass (one multiply per parameter tensor saved, about 1% of a MiniLM step)
        mean_now = len(micro_batches) == 1 and dist.world == 1 and parts.privacy is None
        for i, (batch, units) in enumerate(micro_batches):
            step_units += units
            batch = to_device(batch, device)
            last = i == len(micro_batches) - 1
            # DDP/FSDP reduce gradients on every backward unless told not to: only on the last micro-step.
            with contextlib.nullcontext() if last else no_sync(model, dist):
                with parts.placement.autocast():
                    out = objective.loss(model, batch)
                loss = out.sum / torch.as_tensor(out.count).clamp(min=1) if mean_now else out.sum
                parts.scaler.scale(loss).backward()
            if parts.privacy is not None and not last:  # DP-SGD: clip this micro-batch's examples, free them
                parts.privacy.accumulate(parts.optimizer)
            step_sum += out.sum.detach().float()
            step_count += out.count
            for name, (term_sum, term_count) in out.logs.items():
                total, count = terms.get(name, (0.0, 0.0))
                terms[name] = (total + term_sum.detach().float(), count + term_count)
        # Token-weighted mean over micro-steps and processes: DDP averaged the gradients over processes,
        # so multiply by world / global count (all-reduce is a collective, not a host sync).
        parts.scaler.unscale_(parts.optimizer)
        if not mean_now:
            global_count = dist.reduce_sum(step_count.clone()).clamp(min=1)
            torch._foreach_mul_([p.grad for p in params if p.grad is not None], dist.world / global_count)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm or float("inf"))
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
        lr = parts.scheduler.get_last_lr()[0]  # the rate this step used (a Python float: no device read)
        parts.scheduler.step()
        parts.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        step_units = parts.units_per_step if parts.units_per_step is not None else step_units * dist.world
        state.tokens += step_units
        window.add(step_sum, step_count, step_units, terms)
        nonfinite |= ~torch.isfinite(step_sum)
        log.advance(state.step)

        done, log_now = stop_rules(state, cfg, parts, started)
        # ---- logging: the only place (with eval and save) that reads device values
        if log_now:
            if nonfinite.item():  # a sync point, at log steps only
                raise _nonfinite_failure(state.step, parts.checkpoints)
            log.log("train", state.step, lr=lr, grad_norm=local_value(grad_norm), tokens=state.tokens,
                    epoch=round(parts.batches.epoch, 4), **window.flush(dist, parts),
                    **(parts.privacy.step_metrics(state.step) if parts.privacy is not None else {}))
        elif state.step == first_step and dist.is_rank0:  # shown only (one device read, this process's loss)
            log.peek(state.step, window.local_loss())
        if parts.evaluate is not None and (state.step % cfg.eval_every == 0 or (done and not state.preempted)):
            metrics = parts.evaluate()
            log.log("eval", state.step, **{f"val_{k}": v for k, v in metrics.items()})
            done = track_best(state, metrics, cfg, objective, parts.on_best) or done
        if state.step % cfg.save_every == 0 or done:
            if nonfinite.item():
                raise _nonfinite_failure(state.step, parts.checkpoints)
            state.data = parts.batches.state_dict()
            snapshot = state.to_dict() | {"elapsed": state.elapsed + time.time() - started}
            parts.checkpoints.save(unwrap(model), parts.optimizer, parts.scheduler, parts.scaler, snapshot, dist)
            dist.barrier()
        if done:
            state.elapsed += time.time() - started
            return state


def stop_rules(state: LoopState, cfg, parts: Parts, started: float) -> tuple[bool, bool]:
    """(stop now, log now) after a step. ``max_steps`` and (with a fixed count per step) ``max_tokens`` are exact;
    a varying unit count and ``max_time`` are agreed at log steps, so that every process stops together; a signal
    to any process stops them all after this step (one small CPU all-reduce when distributed)."""
    dist = parts.dist
    done = bool(parts.total_steps and state.step >= parts.total_steps)
    exact_units = parts.units_per_step is not None
    done = done or bool(exact_units and cfg.max_tokens and state.tokens >= cfg.max_tokens)
    log_now = done or state.step % cfg.log_every == 0
    if log_now and cfg.max_tokens and not exact_units:
        done = done or not dist.all_true(state.tokens < cfg.max_tokens)
    preempted = parts.preemption is not None and not dist.all_true(not parts.preemption.requested)
    state.preempted = preempted and not done
    done = done or preempted
    log_now = log_now or done
    if log_now and cfg.max_time:
        done = done or not dist.all_true(state.elapsed + time.time() - started < cfg.max_time)
    return done, log_now


class Window:
    """Device-side sums between two log steps: the loss, the objective's extra terms and the units seen."""

    def __init__(self, device):
        import torch

        self.device, self.sum, self.count = device, torch.zeros((), device=device), torch.zeros((), device=device)
        self.terms: dict = {}
        self.units, self.start = 0, time.time()

    def add(self, step_sum, step_count, units: int, terms: dict) -> None:
        self.sum += step_sum
        self.count += step_count
        self.units += units
        for name, (total, count) in terms.items():
            old_total, old_count = self.terms.get(name, (0.0, 0.0))
            self.terms[name] = (old_total + total, old_count + count)

    def local_loss(self) -> float:
        """This process's mean loss so far in the window (a device read; the window goes on)."""
        return float(self.sum) / max(float(self.count), 1.0)

    def flush(self, dist, parts: Parts) -> dict:
        """The window's means over all processes, throughput and MFU; then start a new window (a device read)."""
        import torch

        names = sorted(self.terms)
        stacked = [self.sum, self.count] + [torch.as_tensor(v, dtype=torch.float32, device=self.device)
                                            for n in names for v in self.terms[n]]
        totals = dist.reduce_sum(torch.stack(stacked)).tolist()
        now = time.time()
        rate = self.units / max(now - self.start, 1e-9)
        out = {"loss": totals[0] / max(totals[1], 1)}
        out |= {name: totals[2 + 2 * i] / max(totals[3 + 2 * i], 1) for i, name in enumerate(names)}
        out[f"{parts.objective.unit}_per_s"] = rate
        if parts.flops_per_unit and parts.peak_flops:
            out["mfu"] = rate * parts.flops_per_unit / parts.peak_flops
        self.sum.zero_(), self.count.zero_()
        self.terms, self.units, self.start = {}, 0, now
        return out


def to_device(batch: dict, device) -> dict:
    """The batch's tensors on the model's device (non-blocking from pinned memory); other values as they are."""
    return {k: v.to(device, non_blocking=True) if hasattr(v, "to") else v for k, v in batch.items()}


def track_best(state: LoopState, metrics: dict, cfg, objective, on_best=None) -> bool:
    """Record an evaluation; call ``on_best`` when ``cfg.best_metric`` improved (in the direction the objective
    declares for it). True: stop early (no improvement in ``cfg.patience`` evaluations)."""
    val_loss = metrics["loss"]
    state.last_val_loss, state.last_val = val_loss, metrics
    if state.best_val_loss is None or val_loss < state.best_val_loss:
        state.best_val_loss = val_loss
    name = cfg.best_metric
    if name not in metrics:
        raise RunFailure(f"train.best_metric '{name}' is not a validation metric of this objective; "
                         f"it reports: {', '.join(metrics)}", fix="set train.best_metric to one of those")
    value, sign = metrics[name], 1 if objective.direction(name) else -1  # pre-flight: best_metric is declared
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
