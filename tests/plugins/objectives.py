"""Test-only objectives: two models trained together (as ELECTRA's generator and discriminator will be), a frozen
helper model (as a distillation teacher will be) and a lower-is-better metric. Allowed by naming them on the
command line (``objective._target_=tests.plugins.objectives.TwoModels``)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ptcli.objectives.base import LOSS, Evaluator, LossOutput, Metric, summed_cross_entropy
from ptcli.objectives.clm import CausalLM


@dataclass(eq=False)
class TwoModels(CausalLM):
    """Two tiny GPT-2s on the same blocks with a summed loss; ``second`` is exported as model/."""

    second_weight: float = 1.0

    name = "two_models"
    peft_config = None

    def build_model(self, ctx, processors):
        import torch

        from ptcli.models.modules import ModelSet

        first = super().build_model(ctx, processors)
        torch.manual_seed(ctx.cfg.train.seed + 1)  # a different initialisation for the second model
        second = super().build_model(ctx, processors)
        return ModelSet({"first": first, "second": second}, export="second")

    def loss(self, model, batch) -> LossOutput:
        return model(self.both, batch)  # one forward pass through the wrappers (DDP, FSDP) for both models

    def both(self, members, batch) -> LossOutput:
        first = CausalLM.loss(self, members["first"], batch)
        second = CausalLM.loss(self, members["second"], batch)
        return LossOutput(first.sum + self.second_weight * second.sum, first.count,
                          logs={"first": (first.sum, first.count), "second": (second.sum, second.count)})

    def evaluator(self) -> Evaluator:
        return Evaluator(self)


@dataclass(eq=False)
class WithTeacher(CausalLM):
    """Causal LM plus a frozen teacher whose logits it is pulled towards (a KL term); records where the teacher
    was placed in ``helper.json`` of the run directory."""

    name = "with_teacher"

    def build_helpers(self, ctx, processors) -> dict:
        import torch

        torch.manual_seed(123)
        return {"teacher": CausalLM.build_model(self, ctx, processors)}

    def loss(self, model, batch) -> LossOutput:
        import torch
        import torch.nn.functional as F

        ids = batch["input_ids"]
        logits = model(input_ids=ids).logits.float()
        out = summed_cross_entropy(logits, F.pad(ids[:, 1:], (0, 1), value=-100))
        teacher = self.helpers["teacher"]
        with torch.no_grad():
            target = teacher(input_ids=ids).logits.float()
        kl = F.kl_div(F.log_softmax(logits, -1), F.log_softmax(target, -1), log_target=True, reduction="sum")
        n = batch["input_ids"].numel()
        self.seen = {"device": str(next(teacher.parameters()).device),
                     "dtype": str(next(teacher.parameters()).dtype),
                     "requires_grad": any(p.requires_grad for p in teacher.parameters()),
                     "training": teacher.training, "class": type(teacher).__name__,
                     "sharded": type(teacher).__name__.startswith("FSDP")}
        return LossOutput(out.sum + 0.01 * kl * out.count / n, out.count, logs={"kl": (kl, n)})

    def export(self, model, processors, folder):
        written = super().export(model, processors, folder)
        (folder.parent / "helper.json").write_text(json.dumps(getattr(self, "seen", {})))
        return written


@dataclass(eq=False)
class LowerIsBetter(CausalLM):
    """Causal LM that also reports ``surprise`` (twice the validation loss), declared lower-is-better."""

    name = "lower_is_better"
    metrics = (LOSS, Metric("surprise", higher_is_better=False))

    def evaluator(self) -> Evaluator:
        return SurpriseEvaluator(self)


class SurpriseEvaluator(Evaluator):
    def compute(self) -> dict:
        loss = super().compute()["loss"]
        return {"loss": loss, "surprise": 2 * loss}
