"""Adversarial training around a classifier or tagger: ``+adversarial=fgm|pgd|freelb``.

The task objective keeps its data, model, metrics and export; its training loss is computed on perturbed input
embeddings as well. ``e`` is the word embeddings of the batch (``get_input_embeddings()(input_ids)``; the model adds
its position and segment embeddings itself), ``L(e)`` the task's summed loss, norms are L2 over each example's
attended tokens x hidden units, padding is never perturbed:

- FGM (Miyato et al. 2017): ``r = epsilon * g / ||g||`` with ``g = dL/de``; loss ``(L(e) + L(e + r)) / 2``.
- PGD (Madry et al. 2018): ``K`` ascent steps ``d <- proj_epsilon(d + step_size * g / ||g||)`` from ``d = 0``;
  loss ``(L(e) + L(e + d_K)) / 2``.
- FreeLB (Zhu et al. 2020): ``d_0`` uniform with norm about ``init_mag`` (0.6 in the paper), then ``K`` ascent steps
  of ``step_size`` (the paper's adv-lr, 0.1) whose parameter gradients are all kept: loss ``mean_t L(e + d_t)``;
  ``epsilon`` > 0 projects each ``d_t`` onto that ball (0: unbounded, the paper's GLUE setting).

Everything happens inside ``loss``, so the loop's backward, gradient accumulation, clipping, AMP and DDP are the
plain ones: the ascent steps run the unwrapped model (their gradients go to ``d`` only, through
``torch.autograd.grad``), and the last forward runs the DDP module, so its gradient reduction fires once per step.
Validation and ``evaluate`` score the clean loss. The extra passes are counted in the MFU figure (``cost``).
"""

from __future__ import annotations

from typing import Any

from ptcli.errors import PtcliError
from ptcli.objectives.base import LossOutput

SUPPORTED = ("classification", "token_classification")


def adversarial(objective, settings):
    """``objective`` trained adversarially with ``settings`` (the ``adversarial`` config section): an instance of a
    subclass of its own class, so every declaration (metrics, auto class, inference kind) stays the task's."""
    cls = type(objective)
    if cls.name not in SUPPORTED:
        raise PtcliError(f"+adversarial={settings.method} perturbs the input embeddings of a classifier or tagger; "
                         f"objective={cls.name} is neither", fix="Use objective=classification or "
                         "objective=token_classification, or leave +adversarial out")
    mixed = type(f"Adversarial{cls.__name__}", (Adversarial, cls), {"__module__": __name__})
    trained = object.__new__(mixed)
    trained.__dict__.update(objective.__dict__)
    trained.adversarial = settings
    return trained


def cost(method: str, steps: int) -> float:
    """A step's compute relative to a plain one (forward = 1, a backward to the inputs only = 1, a full backward = 2;
    a plain step is 3): FGM 2 forwards, 1 input backward, 2 full; PGD K+1 forwards, K input, 2 full; FreeLB K
    forwards, K-1 input, K full."""
    forwards, to_inputs, full = {"fgm": (2, 1, 2), "pgd": (steps + 1, steps, 2),
                                 "freelb": (steps, steps - 1, steps)}[method]
    return (forwards + to_inputs + 2 * full) / 3


def example_norms(x, mask):
    """The L2 norm of each example's (tokens x hidden) slice of ``x`` over its attended tokens: shape (batch, 1, 1)."""
    return (x.float() * mask).flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1)


def ascent(delta, grad, mask, step: float, epsilon: float):
    """One normalised ascent step ``delta + step * g / ||g||`` (per example), projected onto the ball of radius
    ``epsilon`` (0: not projected); padding stays zero."""
    moved = (delta.float() + step * grad.float() * mask / example_norms(grad, mask)) * mask
    if epsilon > 0:
        moved = moved * (epsilon / example_norms(moved, mask)).clamp(max=1.0)
    return moved.to(delta.dtype)


def freelb_init(like, mask, magnitude: float, generator=None):
    """FreeLB's start: uniform in [-1, 1] on attended tokens, scaled by ``magnitude / sqrt(tokens * hidden)`` per
    example (so its norm is about ``magnitude / sqrt(3)``)."""
    import torch

    noise = torch.rand(like.shape, generator=generator, device="cpu").to(like.device) * 2 - 1
    dims = mask.flatten(1).sum(1).clamp_min(1) * like.shape[-1]
    return (noise * mask * (magnitude / dims.sqrt()).view(-1, 1, 1)).to(like.dtype)


class Adversarial:
    """The mixin ``adversarial`` puts in front of the task objective's class."""

    adversarial: Any

    def setup(self, ctx):
        setup = super().setup(ctx)
        from ptcli.models.modules import unwrap

        if unwrap(setup.model).get_input_embeddings() is None:
            raise PtcliError(f"+adversarial={self.adversarial.method}: this model has no input embeddings to perturb",
                             fix="Use a transformer whose get_input_embeddings() is its word embedding layer")
        a = self.adversarial
        how = {"fgm": f"epsilon {a.epsilon:g}",
               "pgd": f"{a.steps} steps of {a.step_size:g} within epsilon {a.epsilon:g}",
               "freelb": f"{a.steps} steps of {a.step_size:g} from a start of {a.init_mag:g}"
                         + (f" within epsilon {a.epsilon:g}" if a.epsilon > 0 else "")}[a.method]
        ctx.log(f"adversarial: {a.method} on the input embeddings, {how}; a step costs about "
                f"{cost(a.method, a.steps):.1f}x a plain one (counted in MFU)")
        return setup

    def flops_per_unit(self, model, ctx_len: int):
        plain = super().flops_per_unit(model, ctx_len)
        return plain * cost(self.adversarial.method, self.adversarial.steps) if plain else plain

    # ---- every step
    def loss(self, model, batch: dict) -> LossOutput:
        import torch

        if not torch.is_grad_enabled():  # validation: the clean loss
            return super().loss(model, batch)
        from ptcli.models.modules import unwrap

        raw = unwrap(model)
        words = raw.get_input_embeddings()(batch["input_ids"])
        rest = {k: v for k, v in batch.items() if k != "input_ids"}
        attended = batch.get("attention_mask")
        mask = (attended if attended is not None else torch.ones_like(batch["input_ids"])).unsqueeze(-1).float()
        a = self.adversarial

        def at(delta, module, keep_words=True):
            embeds = (words if keep_words else words.detach()) + delta
            return super(Adversarial, self).loss(module, {**rest, "inputs_embeds": embeds})

        def gradient(out, delta, retain: bool):
            return torch.autograd.grad(out.sum, delta, retain_graph=retain)[0]

        if a.method == "freelb":
            delta = freelb_init(words, mask, a.init_mag).requires_grad_()
            if a.epsilon > 0:
                delta = (delta * (a.epsilon / example_norms(delta, mask)).clamp(max=1.0)).detach().requires_grad_()
            total, outs = 0, []
            for t in range(a.steps):
                last = t == a.steps - 1
                out = at(delta, model if last else raw)
                outs.append(out)
                total = total + out.sum / a.steps
                if not last:
                    delta = ascent(delta, gradient(out, delta, True), mask, a.step_size, a.epsilon)
                    delta = delta.detach().requires_grad_()
            clean, adv, norm = outs[0], outs[-1], example_norms(delta.detach(), mask)
        else:
            zero = torch.zeros_like(words, requires_grad=True)
            clean = at(zero, raw)
            grad = gradient(clean, zero, True)
            if a.method == "fgm":
                delta = ascent(torch.zeros_like(words), grad, mask, a.epsilon, 0.0)
            else:
                delta = torch.zeros_like(words)
                for k in range(a.steps):
                    delta = ascent(delta, grad, mask, a.step_size, a.epsilon)
                    if k < a.steps - 1:  # the next ascent direction, on a graph freed at once
                        probe = delta.detach().requires_grad_()
                        grad = gradient(at(probe, raw, keep_words=False), probe, False)
            adv = at(delta.detach(), model)
            total, norm = (clean.sum + adv.sum) / 2, example_norms(delta, mask)
        count = clean.count
        logs = {**clean.logs, "adv_loss": (adv.sum.detach(), count),
                "adv_norm": (norm.sum().detach().to(clean.sum.dtype), count.new_tensor(norm.numel()))}
        if a.method != "freelb":  # FreeLB never runs the clean input
            logs["clean_loss"] = (clean.sum.detach(), count)
        return LossOutput(total, count, logs)
