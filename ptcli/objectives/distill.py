"""Knowledge distillation around any task objective: ``distill.teacher=<run dir, folder or Hub name>``.

The task objective (classification, token classification, causal LM, SFT, seq2seq, image or audio classification)
keeps its data, model, metrics and export; distillation adds a frozen teacher (``build_helpers``: placed on the
student's device in the run's precision, sharded or replicated with it, never checkpointed) and changes the loss:

    loss = (1 - alpha) * task + alpha * T^2 * KL(teacher_T || student_T) + hidden_weight * (1 - cos(h_s, h_t))

on the targets the task loss covers (each example for classifiers, each labelled token for language models and
taggers: Hinton et al. 2015; token-level as torchtune's and NeMo's KD recipes), summed and counted like the task loss
so the weighting does not depend on how targets split across micro-batches and processes. Regression distils with
the squared error to the teacher's prediction. The hidden-state term (DistilBERT's cosine loss) compares the last
hidden states of every attended token and needs equal widths. Each term is logged. A causal LM student with
``objective.chunked_loss`` (the default) computes both terms a chunk of positions at a time through both output
layers (``linear_ce.linear_distillation``): neither model's ``batch x seq x vocab`` logits exist at once.

The student sees the same token ids as the teacher, so their tokenizers must agree: a student without its own
tokenizer takes the teacher's; different strings for the same id are refused (torchtune #2119, trl #3028); a vocabulary
that only extends the other's is cut to the shared ids, with a warning. Classifiers must share the label map.
``distill.init_from_teacher=true`` starts the student as the teacher with every other layer (DistilBERT).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ptcli.errors import PtcliError
from ptcli.objectives.base import LossOutput


def distilled(objective, settings):
    """``objective`` with distillation from ``settings`` (the ``distill`` config section): an instance of a
    subclass of its own class, so every declaration (metrics, auto class, inference kind) stays the task's."""
    cls = type(objective)
    mixed = type(f"Distilled{cls.__name__}", (Distillation, cls), {"__module__": __name__})
    student = object.__new__(mixed)
    student.__dict__.update(objective.__dict__)
    student.distill = settings
    student.shared_vocab = None
    return student


class Distillation:
    """The mixin ``distilled`` puts in front of the task objective's class."""

    full_logits = True  # the soft targets compare the student's logits with the teacher's at every position

    distill: Any
    shared_vocab: int | None

    # ---- set-up
    def _teacher_ctx(self, ctx, **model):
        from omegaconf import OmegaConf

        return dataclasses.replace(ctx, cfg=OmegaConf.merge(ctx.cfg, model))

    def load_processors(self, ctx):
        cfg = ctx.cfg
        if not cfg.tokenizer.path and (self.distill.init_from_teacher or not cfg.model.path):
            ctx.log(f"distill: the student uses the teacher's tokenizer ({self.distill.teacher})")
            ctx = self._teacher_ctx(ctx, tokenizer={"path": str(self.distill.teacher)})
        return super().load_processors(ctx)

    def build_model(self, ctx, processors):
        if not self.distill.init_from_teacher:
            return super().build_model(ctx, processors)
        if ctx.cfg.model.path:
            ctx.log(f"distill: init_from_teacher: the student is built from the teacher, not model.path "
                    f"({ctx.cfg.model.path})")
        model = super().build_model(self._teacher_ctx(ctx, model={"path": str(self.distill.teacher)}), processors)
        kept = keep_every_other_layer(model)
        ctx.log(f"distill: the student is the teacher with layers {kept} (every other one)")
        return model

    def build_helpers(self, ctx, processors) -> dict:
        import transformers

        from ptcli.models.build import load_pretrained

        helpers = dict(super().build_helpers(ctx, processors))
        teacher = load_pretrained(getattr(transformers, self.auto_class), str(self.distill.teacher), log=ctx.log)
        teacher.eval().requires_grad_(False)
        self._check_labels(teacher.config)
        self.shared_vocab = self._check_vocab(processors.tokenizer, ctx.log)
        helpers["teacher"] = teacher
        ctx.log(f"distill: teacher {self.distill.teacher} ({sum(p.numel() for p in teacher.parameters()) / 1e6:.2f}M "
                f"parameters), T={self.distill.temperature:g}, alpha={self.distill.alpha:g}"
                + (f", hidden_weight={self.distill.hidden_weight:g}" if self.distill.hidden_weight else ""))
        return helpers

    def _check_labels(self, teacher_config) -> None:
        labels = getattr(self, "labels", None)
        if labels is None or not hasattr(labels, "id2label"):
            return
        mine = {int(k): str(v) for k, v in labels.id2label().items()}
        theirs = {int(k): str(v) for k, v in (getattr(teacher_config, "id2label", None) or {}).items()}
        if mine != theirs:
            raise PtcliError(f"the teacher's labels {theirs} are not the student's {mine} (from the data)",
                             where="distill.teacher",
                             fix="Distil from a teacher fine-tuned on the same labels (the same label column)")

    def _check_vocab(self, tokenizer, log) -> int | None:
        """The number of leading token ids both vocabularies map to the same strings (None: the same tokenizer)."""
        if tokenizer is None:
            return None
        from ptcli.processing.loading import load_tokenizer

        teacher = load_tokenizer(str(self.distill.teacher))
        mine, theirs = tokenizer.convert_ids_to_tokens(range(len(tokenizer))), \
            teacher.convert_ids_to_tokens(range(len(teacher)))
        shared = min(len(mine), len(theirs))
        differ = [i for i in range(shared) if mine[i] != theirs[i]]
        if differ:
            i = differ[0]
            raise PtcliError(f"the student's and the teacher's tokenizers differ: token id {i} is {mine[i]!r} for the "
                             f"student and {theirs[i]!r} for the teacher ({len(differ)} of the first {shared} ids "
                             "differ), so the teacher would read other tokens than the student",
                             where="distill.teacher",
                             fix="Train the student with the teacher's tokenizer: "
                                 f"tokenizer.path={self.distill.teacher}")
        if len(mine) != len(theirs):
            log(f"warning: distill: the student's vocabulary has {len(mine)} tokens and the teacher's {len(theirs)}; "
                f"the first {shared} are the same strings, so the soft targets use those {shared} ids only")
            return shared
        return None

    # ---- every step
    def loss(self, model, batch: dict) -> LossOutput:
        import torch

        if getattr(self, "chunked_loss", False) and hasattr(self, "lm_inputs"):  # CLM, SFT
            chunked = self.chunked_loss_of(model, batch)
            if chunked is not None:
                return chunked
        seen = {}
        hidden = self.distill.hidden_weight > 0

        def before(module, args, kwargs):
            return (args, {**kwargs, "output_hidden_states": True}) if hidden else None

        def after(module, args, kwargs, output):
            seen.setdefault("call", (args, kwargs, output))

        hooks = [model.register_forward_pre_hook(before, with_kwargs=True),
                 model.register_forward_hook(after, with_kwargs=True)]
        try:
            task = super().loss(model, batch)
        finally:
            for hook in hooks:
                hook.remove()
        if "call" not in seen:
            raise PtcliError(f"distill: the {self.name} objective's loss did not call the model",
                             fix="Distillation needs an objective whose loss runs the student once")
        args, kwargs, output = seen["call"]
        with torch.no_grad():
            teacher_out = self.helpers["teacher"](*args, **kwargs)
        soft = self.soft_sum(output.logits, teacher_out.logits, batch)
        alpha, t2 = self.distill.alpha, self.distill.temperature ** 2
        total = (1 - alpha) * task.sum + alpha * t2 * soft
        logs = {**task.logs, "task_loss": (task.sum.detach(), task.count), "kd_loss": (soft.detach(), task.count)}
        if hidden:
            cos = self.hidden_sum(output, teacher_out, batch, task.count)
            total = total + self.distill.hidden_weight * cos
            logs["hidden_loss"] = (cos.detach(), task.count)
        return LossOutput(total, task.count, logs)

    def chunked_loss_of(self, model, batch: dict) -> LossOutput | None:
        """A causal LM's task and soft terms through both output layers a chunk of positions at a time
        (``linear_ce.linear_distillation``): neither model's full logits exist. None where either model's logits are
        not its output layer applied to its last hidden state (FSDP, adapted heads, soft-capping): the plain path."""
        import torch

        from ptcli.objectives.linear_ce import agreeing_head, linear_distillation, may_chunk

        teacher = self.helpers["teacher"]
        if not (may_chunk(model) and may_chunk(teacher)):
            return None
        labels, inputs = self.lm_inputs(batch)
        output = model(**inputs, output_hidden_states=True, logits_to_keep=1)
        with torch.no_grad():
            teacher_out = teacher(**inputs, output_hidden_states=True, logits_to_keep=1)
        head, teacher_head = agreeing_head(model, output), agreeing_head(teacher, teacher_out)
        if head is None or teacher_head is None:
            return None
        alpha, T = self.distill.alpha, self.distill.temperature
        total, task, soft, count = linear_distillation(
            output.hidden_states[-1], head, labels, teacher_out.hidden_states[-1], teacher_head, T,
            task_weight=1 - alpha, soft_weight=alpha * T ** 2, cut=self.shared_vocab)
        logs = {"task_loss": (task, count), "kd_loss": (soft, count)}
        if self.distill.hidden_weight > 0:
            cos = self.hidden_sum(output, teacher_out, batch, count)
            total = total + self.distill.hidden_weight * cos
            logs["hidden_loss"] = (cos.detach(), count)
        return LossOutput(total, count, logs)

    def soft_sum(self, student, teacher, batch):
        """Sum over the task's targets of KL(teacher || student) at temperature T (squared error for regression)."""
        import torch.nn.functional as F

        student, teacher = student.float(), teacher.float()
        if student.shape[-1] == 1 and student.dim() == 2:  # regression
            return F.mse_loss(student, teacher, reduction="sum")
        cut = min(student.shape[-1], teacher.shape[-1], self.shared_vocab or student.shape[-1])
        student, teacher = student[..., :cut], teacher[..., :cut]
        mask = self.target_mask(batch, student)
        if mask is not None:
            student, teacher = student[mask], teacher[mask]
        T = self.distill.temperature
        kl = F.kl_div(F.log_softmax(student / T, -1), F.log_softmax(teacher / T, -1), log_target=True,
                      reduction="none")
        return kl.sum()

    def target_mask(self, batch, logits):
        """Which positions of (batch, seq, classes) logits the task loss scores: labelled tokens, shifted by one for
        causal LMs (position t predicts token t+1); None for one prediction per example."""
        import torch.nn.functional as F

        if logits.dim() == 2:
            return None
        if self.auto_class == "AutoModelForCausalLM":
            labels = batch.get("labels", batch["input_ids"])
            return F.pad(labels[:, 1:], (0, 1), value=-100) != -100
        return batch["labels"] != -100

    def hidden_sum(self, student_out, teacher_out, batch, count):
        """(1 - cosine) between the last hidden states of every attended token, as a mean per token times the task's
        target count (so it weighs like the other terms)."""
        import torch.nn.functional as F

        s = last_hidden(student_out)
        t = last_hidden(teacher_out)
        if s.shape[-1] != t.shape[-1]:
            raise PtcliError(f"distill.hidden_weight compares hidden states, but the student is {s.shape[-1]} wide and "
                             f"the teacher {t.shape[-1]}", fix="Set distill.hidden_weight=0, or a student as wide")
        mask = batch.get("attention_mask")
        cos = 1 - F.cosine_similarity(s.float(), t.float(), dim=-1)
        if mask is not None:
            cos = cos[mask.bool()]
        return cos.mean() * count


def last_hidden(output):
    for key in ("decoder_hidden_states", "hidden_states"):
        states = getattr(output, key, None)
        if states:
            return states[-1]
    raise PtcliError("distill.hidden_weight needs the models' hidden states, which this model does not return",
                     fix="Set distill.hidden_weight=0")


def keep_every_other_layer(model) -> list[int]:
    """Drop the odd-numbered transformer layers in place (config updated); returns the teacher layers kept."""
    import torch.nn as nn

    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layer", "layers", "h", "block"):
            found = (name, module)
            break
    if found is None:
        raise PtcliError(f"distill.init_from_teacher: no list of transformer layers found in {type(model).__name__}",
                         fix="Set distill.init_from_teacher=false and choose the student with model=...")
    name, layers = found
    kept = list(range(0, len(layers), 2))
    new = nn.ModuleList([layers[i] for i in kept])
    for index, layer in enumerate(new):
        for sub in layer.modules():
            if hasattr(sub, "layer_idx"):
                sub.layer_idx = index
    parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    setattr(parent, name.rsplit(".", 1)[-1], new)
    config = model.config
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if hasattr(config, key):
            setattr(config, key, len(kept))
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = [config.layer_types[i] for i in kept]
    return kept
