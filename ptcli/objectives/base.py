"""The objective interface: everything the loop, ``generate`` and ``evaluate`` ask of a task, with defaults.

An objective is a dataclass of its settings (the ``objective`` config section; each default declared here, once)
and owns what it trains. A training run calls ``setup(ctx)``, which runs the steps below in this order:

1. ``load_processors(ctx)``  the tokenizer (or image processor, feature extractor, several): loaded or trained;
2. ``prepare(ctx, processors)``  records from the data source -> ``Prepared(train, val)`` datasets (cached on disk
   where expensive); what the data teaches (a label map) is kept on the objective;
3. ``build_model(ctx, processors)``  the ``nn.Module`` it trains: one Hugging Face model, or a ``ModelSet``;
4. ``build_helpers(ctx, processors)``  frozen models it uses (a teacher): placed on the device, in the run's precision,
   sharded or replicated with the model, never checkpointed; the loop puts them in ``self.helpers``.

Then, every step: ``collate(examples, generator)`` in DataLoader workers (``eval_collate`` for validation),
``units(batch)`` for throughput, ``loss(model, batch)`` -> ``LossOutput``. Validation: ``evaluator()``. At the end:
``export(model, processors, folder)`` writes ``model/``. ``evaluate`` calls ``setup_evaluation`` and drives
``evaluator()`` over ``evaluation_batches``.
Declared on the class: ``metrics`` (with their direction), ``auto_class``, ``inference`` (how generate/evaluate use
its models), ``unit`` and ``peft_config``. See docs/architecture.md for how to add one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


@dataclass(frozen=True)
class Metric:
    """A validation metric an objective reports: its name, its direction, and whether the progress line shows it."""

    name: str
    higher_is_better: bool = True
    shown: bool = True


LOSS = Metric("loss", higher_is_better=False)


@dataclass
class LossOutput:
    """A summed loss and how many targets it covers, so the loop takes a token-weighted mean over accumulation
    steps and processes (a mean of means is biased when batches hold different counts). ``logs``: more terms to
    report, each ``name -> (sum, count)``, averaged the same way (metrics.jsonl and the progress line)."""

    sum: Any  # scalar tensor
    count: Any  # scalar tensor (number of predicted tokens/labels)
    logs: dict = field(default_factory=dict)


@dataclass
class Context:
    """What an objective may read while it sets up a run."""

    cfg: Any  # the run's resolved config (attribute access): model, tokenizer, dataset, train, ...
    source: Any  # the data source built from cfg.dataset (ptcli.data.sources)
    cache: Path  # on-disk cache for tokenizers and packed corpora
    dist: Any  # this process's place in the job (rank, world, is_rank0, barrier)
    log: Callable[[str], None] = print
    split: str = "val"  # evaluate: val (validation data), train (all of the named data) or heldout (the held-out part)


@dataclass
class Prepared:
    """The training and validation datasets (``len`` and ``[i]`` or ``fetch(indices)``) and what is known about them.

    ``units_per_example``: set when every example counts the same (packed blocks), so the loop knows the global
    count of each step without asking the other processes. ``facts``: extras for summary.json."""

    train: Any
    val: Any
    units_per_example: int | None = None
    facts: dict = field(default_factory=dict)


@dataclass
class Setup:
    """What ``Objective.setup`` hands the training run."""

    processors: Any
    data: Prepared
    model: Any
    helpers: dict = field(default_factory=dict)


class Objective:
    """Base class of every objective; subclasses are dataclasses of their settings."""

    ptcli_kind = "objective"
    abstract = True
    name: ClassVar[str] = ""  # its option in configs/objective/ (clm, mlm, classification, ...)
    auto_class: ClassVar[str] = "AutoModelForCausalLM"  # the transformers auto class of the model it trains
    inference: ClassVar[str | None] = None  # causal | seq2seq | fill-mask | classify: how generate/evaluate use it
    metrics: ClassVar[tuple] = (LOSS,)
    unit: ClassVar[str] = "tokens"  # what throughput counts: tokens, images, seconds
    peft_config: ClassVar[dict | None] = None  # peft LoraConfig arguments for LoRA on its model (None: unsupported)
    full_logits: ClassVar[bool] = False  # a wrapper reads the model's logits (distillation): no chunked loss

    # ---- declarations read before anything runs (torch-free)
    @classmethod
    def metric_names(cls) -> list[str]:
        return [m.name for m in cls.metrics]

    @classmethod
    def direction(cls, name: str) -> bool | None:
        """True when a larger ``name`` is better; None for a metric the objective does not declare."""
        return next((m.higher_is_better for m in cls.metrics if m.name == name), None)

    @classmethod
    def config_problems(cls, cfg: dict, model_config: dict | None) -> list[str]:
        """Problems with the rest of the config for this objective (the model's shape, say), as sentences."""
        return []

    # ---- a training run
    def setup(self, ctx: Context) -> Setup:
        """Everything a training run needs from the objective, in this order."""
        import torch

        processors = self.load_processors(ctx)
        data = self.prepare(ctx, processors)
        torch.manual_seed(ctx.cfg.train.seed)  # the same initial weights whatever ran before
        model = self.build_model(ctx, processors)
        return Setup(processors, data, model, self.build_helpers(ctx, processors))

    def load_processors(self, ctx: Context):
        raise NotImplementedError

    def prepare(self, ctx: Context, processors) -> Prepared:
        raise NotImplementedError

    def build_model(self, ctx: Context, processors):
        raise NotImplementedError

    def build_helpers(self, ctx: Context, processors) -> dict:
        """Frozen models the loss uses (a teacher), by name. Placed by the run and given back in ``self.helpers``."""
        return {}

    helpers: dict = {}

    # ---- every step
    def collate(self, examples, generator) -> dict:
        raise NotImplementedError

    def eval_collate(self, examples, generator) -> dict:
        """Validation batches during training: ``collate`` (with a generator seeded per batch, for MLM's fixed
        masks); objectives that augment their training data leave augmentation out here."""
        return self.collate(examples, generator)

    def example_length(self, example) -> int | None:
        """One training example's length along the dimension batches pad (``train.group_by_length``); None where
        examples have none to group by (packed blocks, images, audio)."""
        ids = example.get("input_ids") if isinstance(example, dict) else None
        return len(ids) if isinstance(ids, (list, tuple)) else None

    def units(self, batch: dict) -> int:
        """How much of the objective's ``unit`` a batch holds (CPU tensors): unpadded tokens by default."""
        mask = batch.get("attention_mask")
        return int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())

    def loss(self, model, batch: dict) -> LossOutput:
        raise NotImplementedError

    def evaluator(self) -> Evaluator:
        """Streaming validation state; the default scores the loss only."""
        return Evaluator(self)

    # ---- the end of a run
    def export(self, model, processors, folder: Path) -> Path:
        """Write the trained model as an ordinary Hugging Face folder (with its processors), atomically."""
        from ptcli.models.export import save_folder
        from ptcli.models.modules import export_model_of

        return save_folder(export_model_of(model), processors, folder)

    def flops_per_unit(self, model, ctx_len: int) -> float | None:
        """Model FLOPs per unit for MFU (forward and backward): 6N + 12·L·H·T per token (PaLM, appendix B)."""
        from ptcli.models.export import transformer_shape

        shape = transformer_shape(model)
        if shape is None:
            return None
        n, layers, hidden = shape
        return 6 * n + 12 * layers * hidden * ctx_len

    # ---- the evaluate verb
    def setup_evaluation(self, ctx: Context, loaded) -> Iterable:
        """Batches to evaluate ``loaded.model`` on (the objective restores what training taught it from the model's
        config first). Returns an ``EvalData``."""
        raise NotImplementedError


@dataclass
class EvalData:
    """What ``evaluate`` measures on: batches (dicts of tensors), a description, and a hook that adds facts about
    the data (bytes, windows) to the evaluator's metrics."""

    batches: Iterable
    description: str
    finish: Callable[[Any], dict] = lambda evaluator: evaluator.compute()  # the evaluator -> the metrics reported
    total: int | None = None  # batches, for the progress bar (None: unknown)


class Evaluator:
    """Streaming validation state: ``update(model, batch)`` per micro-batch, ``state()``/``merge`` across
    processes, ``compute()`` at the end. Only counts are kept, never logits."""

    def __init__(self, objective):
        self.objective = objective
        self.loss_sum = 0.0
        self.count = 0.0

    def update(self, model, batch) -> None:
        self.add_loss(self.objective.loss(model, batch))

    def add_loss(self, out: LossOutput) -> None:
        self.loss_sum += float(out.sum)
        self.count += float(out.count)

    def state(self) -> dict:
        return {"loss_sum": self.loss_sum, "count": self.count}

    def merge(self, state: dict) -> None:
        self.loss_sum += state["loss_sum"]
        self.count += state["count"]

    def compute(self) -> dict:
        return {"loss": self.loss_sum / max(self.count, 1)}


class MetricEvaluator(Evaluator):
    """The loss plus one streaming metric object (``update``/``merge``/``state_dict``/``compute``)."""

    def __init__(self, objective, metric):
        super().__init__(objective)
        self.metric = metric

    def state(self) -> dict:
        return super().state() | {"metric": self.metric.state_dict()}

    def merge(self, state: dict) -> None:
        import copy

        super().merge(state)
        other = copy.deepcopy(self.metric)
        other.load_state_dict(state["metric"])
        self.metric.merge(other)

    def compute(self) -> dict:
        return super().compute() | {k: v for k, v in self.metric.compute().items() if k != "count"}


def summed_cross_entropy(logits, labels) -> LossOutput:
    """Sum of cross-entropy over positions whose label is not -100, and their count."""
    import torch.nn.functional as F

    flat_labels = labels.reshape(-1)
    total = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), flat_labels, ignore_index=-100,
                            reduction="sum")
    return LossOutput(total, (flat_labels != -100).sum())
