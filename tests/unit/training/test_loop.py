"""The loop in process: bitwise equal to a bare PyTorch loop doing the same math; stop rules; best tracking by the
direction an objective declares."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from ptcli.data.loader import Blocks, StepOrder, TrainBatches  # noqa: E402
from ptcli.models.placement import Placement  # noqa: E402
from ptcli.objectives.base import LOSS, Metric, Objective  # noqa: E402
from ptcli.objectives.clm import CausalLM  # noqa: E402
from ptcli.training import optim  # noqa: E402
from ptcli.training.checkpoint import CheckpointManager  # noqa: E402
from ptcli.training.loop import LoopState, Parts, stop_rules, track_best, train  # noqa: E402
from ptcli.training.parallel import Dist  # noqa: E402

STEPS, BATCH, ACCUM, SEQ, VOCAB = 5, 4, 2, 16, 64


class QuietLog:
    def __init__(self):
        self.records = []

    def advance(self, step):
        pass

    def log(self, kind, step, **values):
        self.records.append((kind, step, values))

    def peek(self, step, loss):
        self.records.append(("peek", step, {"loss": loss}))


def loop_cfg(**overrides):
    base = dict(max_grad_norm=1.0, log_every=1, eval_every=10_000, save_every=10_000, max_tokens=None,
                max_time=None, best_metric="loss", patience=None)
    return SimpleNamespace(**{**base, **overrides})


def tiny_model():
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=SEQ, vocab_size=VOCAB,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel(config)


def blocks():
    return np.random.default_rng(0).integers(0, VOCAB, size=(40, SEQ)).astype(np.uint16)


def optimizer_and_schedule(model):
    adamw = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-2, "betas": [0.9, 0.95], "eps": 1e-8,
             "weight_decay": 0.1}
    opt = optim.build_optimizer(adamw, model, "cpu")
    sched = optim.build_scheduler(SimpleNamespace(name="cosine", warmup_steps=2, warmup_ratio=0.0, min_lr_ratio=0.1),
                                  opt, STEPS)
    return opt, sched


def loop_parts(model, log, checkpoints, keep: int = 1, grad_accum: int = ACCUM) -> Parts:
    """The loop's parts for ``model`` as a causal LM on ``blocks()``: AdamW, cosine, fp32 on the CPU, one process."""
    objective = CausalLM(chunked_loss=False)  # the bare loops compare with the plain loss, bit for bit
    opt, sched = optimizer_and_schedule(model)
    return Parts(model=model, objective=objective,
                 batches=TrainBatches(Blocks(blocks()), objective.collate, objective.units, BATCH, seed=3,
                                      grad_accum=grad_accum),
                 optimizer=opt, scheduler=sched, scaler=torch.amp.GradScaler("cpu", enabled=False),
                 placement=Placement(torch.device("cpu"), "fp32"), dist=Dist(),
                 checkpoints=CheckpointManager(checkpoints, keep), log=log, total_steps=STEPS,
                 units_per_step=BATCH * SEQ)


@pytest.mark.parametrize("grad_accum", [ACCUM, 1])
def test_the_loop_equals_a_bare_pytorch_loop_bitwise(tmp_path, grad_accum):
    """Summed loss backward per micro-batch, gradients scaled by 1/tokens, clipped, AdamW, cosine schedule; with
    one micro-batch (in one process) the backward takes the mean at once and nothing scales the gradients."""
    model = tiny_model()
    bare = copy.deepcopy(model)
    log = QuietLog()
    state = train(loop_parts(model, log, tmp_path, grad_accum=grad_accum), loop_cfg(), LoopState())
    assert state.step == STEPS and state.tokens == STEPS * BATCH * SEQ

    bare_opt, bare_sched = optimizer_and_schedule(bare)
    order, data = StepOrder(range(40), BATCH, seed=3, grad_accum=grad_accum), blocks()
    params = [p for p in bare.parameters() if p.requires_grad]
    bare.train()
    losses = []
    for step in range(STEPS):
        total, count = torch.zeros(()), torch.zeros(())
        for indices in order.micro_batches(step * BATCH):
            ids = torch.from_numpy(data[np.sort(indices)].astype(np.int64))
            logits = bare(input_ids=ids).logits
            labels = torch.nn.functional.pad(ids[:, 1:], (0, 1), value=-100)
            loss_sum = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB).float(), labels.reshape(-1),
                                                         ignore_index=-100, reduction="sum")
            tokens = (labels != -100).sum()
            (loss_sum / tokens.clamp(min=1) if grad_accum == 1 else loss_sum).backward()
            total, count = total + loss_sum.detach(), count + tokens
        if grad_accum > 1:
            torch._foreach_mul_([p.grad for p in params], 1 / count.clamp(min=1))
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        bare_opt.step()
        bare_sched.step()
        bare_opt.zero_grad(set_to_none=True)
        losses.append(total.item() / count.item())
    for (name, a), b in zip(model.state_dict().items(), bare.state_dict().values()):
        assert torch.equal(a, b), name
    assert [values["loss"] for kind, _, values in log.records if kind == "train"] == losses
    assert (tmp_path / "checkpoints" / f"step-{STEPS:08d}").is_dir(), "the last step is saved"


def test_the_first_steps_loss_is_shown_at_once_and_the_log_steps_keep_their_means(tmp_path):
    def run(log_every):
        log = QuietLog()
        parts = loop_parts(tiny_model(), log, tmp_path / str(log_every), keep=100)
        train(parts, loop_cfg(log_every=log_every, save_every=100), LoopState())
        return log.records

    every = run(1)
    sparse = run(4)
    assert [(kind, step) for kind, step, _ in sparse] == [("peek", 1), ("train", 4), ("train", 5)]
    assert sparse[0][2]["loss"] == pytest.approx(every[0][2]["loss"], rel=1e-6), "the first step's own loss"
    first_four = [values["loss"] for _, _, values in every[:4]]
    assert sparse[1][2]["loss"] == pytest.approx(sum(first_four) / 4, rel=1e-2), "a mean over the window"
    assert not [r for r in every if r[0] == "peek"], "log_every=1 logs the first step itself"


def test_stop_rules_are_exact_for_steps_and_fixed_unit_counts():
    parts = SimpleNamespace(dist=Dist(), total_steps=10, units_per_step=100, preemption=None)
    cfg = loop_cfg(log_every=4, max_tokens=350)
    state = LoopState(step=3, tokens=300)
    assert stop_rules(state, cfg, parts, 0.0) == (False, False)
    state = LoopState(step=4, tokens=400)
    assert stop_rules(state, cfg, parts, 0.0) == (True, True), "max_tokens reached: stop, and log the last step"
    signalled = SimpleNamespace(dist=Dist(), total_steps=10, units_per_step=100,
                                preemption=SimpleNamespace(requested=True))
    state = LoopState(step=2, tokens=200)
    assert stop_rules(state, loop_cfg(), signalled, 0.0) == (True, True) and state.preempted


class Declares(Objective):
    metrics = (LOSS, Metric("wer", higher_is_better=False), Metric("accuracy"))


def test_best_tracking_follows_the_declared_direction():
    """A lower-is-better metric (wer) keeps the lowest evaluation; a higher-is-better one the highest."""
    for name, values, best in (("wer", [0.5, 0.3, 0.4], 2), ("accuracy", [0.5, 0.7, 0.6], 2)):
        state, chosen = LoopState(), []
        for step, value in enumerate(values, 1):
            state.step = step
            track_best(state, {"loss": 1.0, name: value}, loop_cfg(best_metric=name), Declares(),
                       on_best=lambda s, seen=chosen: seen.append(s.step))
        assert state.best_step == best and chosen[-1] == best, name
    state = LoopState()
    cfg = loop_cfg(best_metric="wer", patience=2)
    stops = [track_best(state, {"loss": 1.0, "wer": v}, cfg, Declares()) for v in (0.3, 0.4, 0.5)]
    assert stops == [False, False, True] and state.stopped_early
