"""Torch-free dataclass schemas for every config section; validate.py checks composed configs against them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional


@dataclass
class ModelConfig:
    """The network: an architecture and size built from scratch, or a pretrained ``path``."""

    arch: Optional[str] = "gpt2"  # any Hugging Face model_type: gpt2, llama, bert, ...
    path: Optional[str] = None  # a ptcli run dir, a HF model folder or a Hub name; overrides the sizes
    layers: Optional[int] = None
    heads: Optional[int] = None
    kv_heads: Optional[int] = None  # grouped-query attention (llama); null: = heads
    hidden: Optional[int] = None
    intermediate: Optional[int] = None  # null: 4 x hidden
    max_positions: Optional[int] = None
    vocab_size: Optional[int] = None
    dropout: Optional[float] = None
    tie_embeddings: Optional[bool] = None
    extra: dict[str, Any] = field(default_factory=dict)  # passed to the HF config as is


@dataclass
class TokenizerConfig:
    """Which tokenizer: a saved one (``path``), the model's own, or one trained on the data."""

    path: Optional[str] = None
    kind: Literal["auto", "bpe", "wordpiece"] = "auto"
    vocab_size: Optional[int] = None  # null: model.vocab_size
    lowercase: bool = False


@dataclass
class DatasetConfig:
    """Where the text comes from and how it is cut into training sequences."""

    source: Literal["embedded", "text", "jsonl", "csv", "conll", "hf"] = "embedded"
    files: list[str] = field(default_factory=list)
    val_files: list[str] = field(default_factory=list)
    val_fraction: float = 0.02
    seq_len: int = 128
    text_column: str = "text"
    text_pair_column: Optional[str] = None
    label_column: Optional[str] = None  # fine-tuning: the label, tag list (NER), target text or response
    document: Literal["file", "line", "paragraph"] = "file"
    encoding_errors: Literal["fail", "skip"] = "fail"
    empty_rows: Literal["skip", "fail"] = "skip"  # fine-tuning rows with empty text: skipped and counted
    hf_name: Optional[str] = None
    hf_config: Optional[str] = None
    hf_split: Optional[str] = "train"
    embedded_seed: int = 0
    embedded_bytes: int = 3_000_000


@dataclass
class DeviceConfig:
    """Where and in which precision the model runs."""

    accelerator: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    strategy: Literal["auto", "single", "ddp", "fsdp"] = "auto"
    compile: bool = False
    threads: Optional[int] = None
    timeout_s: int = 1800  # several processes: how long a collective waits for the others before failing


@dataclass
class OptimConfig:
    """The optimizer (AdamW) and its hyperparameters."""

    name: Literal["adamw"] = "adamw"
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.1


@dataclass
class SchedulerConfig:
    """The learning-rate schedule: warmup, then cosine, linear or constant."""

    name: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = 0
    warmup_ratio: float = 0.0  # of the planned steps; the larger of the two wins
    min_lr_ratio: float = 0.1


@dataclass
class LoggerConfig:
    """Where metrics go besides metrics.jsonl."""

    tensorboard: bool = False


@dataclass
class TrainConfig:
    """How long and how the training loop runs (the first stop condition reached ends the run)."""

    max_steps: Optional[int] = None
    max_tokens: Optional[int] = None
    max_time: Optional[float] = None
    epochs: Optional[float] = None
    batch_size: int = 32
    grad_accum: int = 1
    max_grad_norm: Optional[float] = 1.0
    log_every: int = 20
    eval_every: int = 200
    eval_batches: Optional[int] = 20
    save_every: int = 200
    keep_last: int = 2
    resume: Optional[str] = None
    seed: int = 0
    gradient_checkpointing: bool = False
    best_metric: str = "loss"  # the validation metric that picks the best evaluation (e.g. accuracy, f1)
    patience: Optional[int] = None  # early stopping: evaluations without improvement before stopping
    export: Literal["last", "best"] = "last"  # which weights become model/
    requeue: bool = False  # on SIGTERM/SIGUSR1 under Slurm: checkpoint, then `scontrol requeue` the job


@dataclass
class TuneConfig:
    """Fine-tuning controls: freezing and layer-wise learning-rate decay."""

    freeze_embeddings: bool = False
    freeze_layers: int = 0  # freeze the embeddings and the first N transformer blocks
    head_only: bool = False  # train the task head only (a linear probe)
    layer_lr_decay: Optional[float] = None  # e.g. 0.9: each block below the head trains 0.9x slower


@dataclass
class PeftConfig:
    """Parameter-efficient fine-tuning through the peft library (LoRA)."""

    method: Literal["lora"] = "lora"
    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    target_modules: Optional[list[str]] = None  # null: peft's defaults for the architecture
    merge: bool = False  # also write the merged model into model/ (adapter/ always holds the adapter)


@dataclass
class RunConfig:
    """Where a run writes its outputs and caches."""

    out_dir: str = "outputs"
    cache_dir: Optional[str] = None


@dataclass
class CLMConfig:
    """Causal language modelling (next-token prediction)."""

    _target_: str = "ptcli.objectives.clm.CausalLM"


@dataclass
class MLMConfig:
    """Masked language modelling with dynamic masking."""

    _target_: str = "ptcli.objectives.mlm.MaskedLM"
    mask_prob: float = 0.15
    replace_mask: float = 0.8
    replace_random: float = 0.1
    whole_word: bool = False


@dataclass
class ClassificationConfig:
    """Sequence classification, or regression with one label."""

    _target_: str = "ptcli.objectives.classification.SequenceClassification"
    num_labels: Optional[int] = None


@dataclass
class TokenClassificationConfig:
    """Token classification (NER): one label per word, on its first sub-word token."""

    _target_: str = "ptcli.objectives.token_classification.TokenClassification"
    label_all_tokens: bool = False  # label every sub-word piece instead of the first only


@dataclass
class Seq2SeqConfig:
    """Encoder-decoder training (summarization, translation): input text -> target text."""

    _target_: str = "ptcli.objectives.seq2seq.Seq2Seq"
    max_target_len: int = 128
    source_prefix: str = ""  # e.g. "summarize: " for T5
    generate_metrics: bool = True  # ROUGE/BLEU on generated outputs at validation
    num_beams: int = 1
    max_new_tokens: int = 64


@dataclass
class SFTConfig:
    """Instruction tuning of causal LMs: loss on response tokens only."""

    _target_: str = "ptcli.objectives.sft.SFT"
    prompt_template: Optional[str] = None  # e.g. "{instruction}\n\n{input}"; null: dataset.text_column
    messages_column: Optional[str] = None  # chat records: a list of {role, content}
    packing: bool = False  # several examples per sequence (attention still flows across them)


# Objectives are plug-ins named by _target_; the built-in ones have schemas, a user's own is checked at build.
OBJECTIVE_SCHEMAS: dict[str, type] = {
    s._target_: s  # type: ignore[attr-defined]
    for s in (CLMConfig, MLMConfig, ClassificationConfig, TokenClassificationConfig, Seq2SeqConfig, SFTConfig)
}


@dataclass
class TrainVerbConfig:
    """``pretrain`` and ``finetune``: the same loop, different defaults."""

    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    objective: Any = None  # schema chosen by _target_ (OBJECTIVE_SCHEMAS)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    tune: Optional[TuneConfig] = None  # finetune.yaml sets it
    peft: Optional[PeftConfig] = None  # +peft=lora


@dataclass
class GenerateVerbConfig:
    """``generate``: prompts in, completions out (causal LMs, seq2seq models, masked-LM fill-mask)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    decoding: Optional[str] = None  # the decoding preset applied (decoding/<name>.yaml), recorded for the run
    prompt: Any = None  # a string or a list of strings
    prompts_file: Optional[str] = None  # .txt (one prompt per line) or .jsonl ("prompt" + fields carried through)
    output: Literal["auto", "text", "jsonl"] = "auto"
    kind: Literal["auto", "causal", "seq2seq", "fill-mask"] = "auto"  # auto: from the model's config
    truncate: Literal["left", "fail"] = "left"  # a prompt longer than the model's context
    batch_size: int = 8
    max_new_tokens: int = 50
    do_sample: bool = False
    temperature: float = 1.0
    top_k: Optional[int] = None  # sampling; fill-mask: candidates per mask (null: 5)
    top_p: Optional[float] = None
    num_beams: int = 1
    num_return_sequences: int = 1
    repetition_penalty: Optional[float] = None
    no_repeat_ngram_size: Optional[int] = None
    stop: list[str] = field(default_factory=list)
    seed: int = 0
    run: RunConfig = field(default_factory=RunConfig)


@dataclass
class EvaluateVerbConfig:
    """``evaluate``: a model's metrics on a dataset (a run directory brings its own objective and data)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    objective: Any = None  # null: the run's objective, else clm or mlm from the model's kind
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    batch_size: int = 8
    stride: Optional[int] = None  # perplexity's sliding-window stride; null: dataset.seq_len (no overlap)
    max_batches: Optional[int] = None
    seed: int = 0  # masked-LM evaluation: the masking seed
    output: Literal["auto", "table", "json"] = "auto"
    run: RunConfig = field(default_factory=RunConfig)


@dataclass
class TokenizerVerbConfig:
    """``tokenizer``: train a tokenizer alone."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    run: RunConfig = field(default_factory=RunConfig)


VERB_SCHEMAS: dict[str, type] = {
    "pretrain": TrainVerbConfig,
    "finetune": TrainVerbConfig,
    "generate": GenerateVerbConfig,
    "evaluate": EvaluateVerbConfig,
    "tokenizer": TokenizerVerbConfig,
}
