"""Torch-free dataclass schemas of the config sections that describe things; each default is declared here once.

Sections that build things (``objective``, ``dataset``, ``optim``) name a class with ``_target_``; their settings are
declared beside that class (``ptcli.config.plugins`` finds them). YAML files in ``configs/`` state only the values that
differ from these defaults; ``ptcli config <verb>`` prints the whole composed result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

# Sections that name the class they build with _target_ (their settings live beside the class).
PLUGIN_SECTIONS = ("objective", "dataset", "optim")


@dataclass
class ModelConfig:
    """The network: an architecture and size built from scratch, or a pretrained ``path``."""

    arch: Optional[str] = None  # any Hugging Face model_type: gpt2, llama, bert, t5, vit, ...
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
    trust_remote_code: bool = False  # run the Python files of a model folder (command line only: see README)
    extra: dict[str, Any] = field(default_factory=dict)  # passed to the HF config as is


@dataclass
class TokenizerConfig:
    """Which tokenizer: a saved one (``path``), the model's own, or one trained on the data."""

    path: Optional[str] = None
    kind: Literal["auto", "bpe", "wordpiece"] = "auto"  # auto: the objective's choice (BPE for causal LMs)
    vocab_size: Optional[int] = None  # null: model.vocab_size
    lowercase: bool = False


@dataclass
class DeviceConfig:
    """Where and in which precision the model runs."""

    accelerator: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on GPUs that support it, else fp32
    strategy: Literal["auto", "single", "ddp", "fsdp"] = "auto"  # auto: ddp when started by torchrun or srun
    # torch.compile of the model; auto: on for runs of fixed-shape batches planned at 1,000 steps or more, where the
    # measured speed-up repays the compile time (docs/benchmarks.md), if a compiler is there
    compile: Union[bool, Literal["auto"]] = "auto"
    # swap Hugging Face's written-out activations (GPT-2's gelu_new) for torch's fused kernel of the same function,
    # in memory only: the saved folder is unchanged (ptcli/models/kernels.py)
    fused_kernels: bool = True
    threads: Optional[int] = None  # CPU threads for torch; null: torch's default
    timeout_s: int = 1800  # several processes: how long a collective waits for the others before failing


@dataclass
class SchedulerConfig:
    """The learning-rate schedule: warmup, then cosine, linear or constant."""

    name: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = 0
    warmup_ratio: float = 0.0  # of the planned steps; the larger of the two wins
    min_lr_ratio: float = 0.1  # the rate at the last step, as a fraction of optim.lr


@dataclass
class LoggerConfig:
    """Where metrics go besides metrics.jsonl: experiment trackers, any together (``logger=mlflow
    logger.tensorboard=true``); each gets the resolved config, the metrics, the summary and the final model."""

    tensorboard: bool = False  # event files in <run>/tensorboard, with the config as hparams
    mlflow: bool = False
    wandb: bool = False
    trackio: bool = False
    tracking_uri: Optional[str] = None  # MLflow: null is $MLFLOW_TRACKING_URI, else a file store ./mlruns
    project: str = "ptcli"  # W&B and trackio project
    experiment: str = "ptcli"  # MLflow experiment
    run_name: Optional[str] = None  # null: the run directory's name
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"  # offline: <run>/wandb, `wandb sync` later
    log_model: bool = True  # the final model folder as an artifact (MLflow, W&B, trackio)


@dataclass
class TrainConfig:
    """How long and how the training loop runs (the first stop condition reached ends the run)."""

    max_steps: Optional[int] = None
    max_tokens: Optional[int] = None  # counts the objective's units (tokens; images or seconds for other data)
    max_time: Optional[float] = None  # seconds
    epochs: Optional[float] = None
    batch_size: int = 32  # sequences per optimizer step, over all accumulation steps and processes
    grad_accum: int = 1
    max_grad_norm: Optional[float] = 1.0
    log_every: int = 20
    eval_every: int = 200
    eval_batches: Optional[int] = 20  # batches of train.batch_size per evaluation; null: the whole split
    save_every: int = 200
    keep_last: int = 2
    resume: Optional[str] = None  # auto: newest complete checkpoint of this run dir; or a checkpoint path
    seed: int = 0
    gradient_checkpointing: bool = False
    workers: Optional[int] = None  # DataLoader processes that collate batches; null: 0 on CPU, 2 per GPU
    # steps of alike-length examples (runs of 50 steps sorted by length, the steps shuffled): far less padding for
    # fine-tuning on rows of varied length; text objectives (no effect on packed blocks, images, audio)
    group_by_length: bool = False
    best_metric: str = "loss"  # the validation metric that picks the best evaluation (e.g. accuracy, f1)
    patience: Optional[int] = None  # early stopping: evaluations without improvement before stopping
    export: Literal["last", "best"] = "last"  # which weights become model/
    requeue: bool = False  # on SIGTERM/SIGUSR1 under Slurm: checkpoint, then `scontrol requeue` the job


@dataclass
class TuneConfig:
    """Fine-tuning controls: freezing and layer-wise learning-rate decay."""

    freeze_embeddings: bool = False
    freeze_layers: int = 0  # freeze the embeddings and the first N transformer blocks
    head_only: bool = False  # train the task head only (with BERT's pooler: a probe)
    trainable: list[str] = field(default_factory=list)  # train only these modules (e.g. [classifier]); others frozen
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
class DistillConfig:
    """Knowledge distillation: the task objective's loss mixed with a frozen teacher's softened outputs."""

    teacher: Optional[str] = None  # a run dir, model folder or Hub name; null: no distillation
    temperature: float = 2.0  # T: both distributions softened by it; the soft term is scaled by T^2
    alpha: float = 0.5  # weight of the soft term; the task loss gets 1 - alpha
    hidden_weight: float = 0.0  # weight of (1 - cosine) between last hidden states (DistilBERT); needs equal widths
    init_from_teacher: bool = False  # start the student as the teacher with every other layer (DistilBERT)


@dataclass
class AdversarialConfig:
    """Adversarial training on the input embeddings (classification, token classification): +adversarial=fgm."""

    method: Literal["fgm", "pgd", "freelb"] = "fgm"
    epsilon: float = 1.0  # FGM: the perturbation's L2 norm per example; PGD, FreeLB: the ball it stays in (0: none)
    steps: int = 3  # PGD, FreeLB: ascent steps K (each one more forward and backward pass)
    step_size: float = 0.3  # PGD: the step of each ascent; FreeLB: its adv-lr (0.1 in the paper)
    init_mag: float = 0.6  # FreeLB: the size of the random start (the paper's adv-init-mag)


@dataclass
class PrivacyConfig:
    """Differentially private training (DP-SGD through Opacus) of a classifier or tagger: +privacy=dp."""

    method: Literal["dp"] = "dp"
    epsilon: Optional[float] = 8.0  # the budget spent by the end of the planned steps (null: give noise_multiplier)
    delta: float = 1e-5  # keep it below 1 / the number of training rows
    max_grad_norm: float = 1.0  # each example's gradient is clipped to this L2 norm before the batch sums them
    noise_multiplier: Optional[float] = None  # null: found from epsilon, delta, the sample rate and planned steps
    accountant: Literal["rdp", "prv", "gdp"] = "rdp"  # Opacus's accountants: Renyi DP, PRV (tighter), Gaussian DP


@dataclass
class RunConfig:
    """Where a run writes its outputs and caches."""

    out_dir: str = "outputs"
    cache_dir: Optional[str] = None  # null: $PTCLI_CACHE_DIR or ~/.cache/ptcli


@dataclass
class TrainVerbConfig:
    """``pretrain`` and ``finetune``: the same loop, different defaults."""

    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    objective: Any = None  # a _target_ section: the objective class and its settings
    dataset: Any = None  # a _target_ section: the data source and its settings
    device: DeviceConfig = field(default_factory=DeviceConfig)
    optim: Any = None  # a _target_ section: the optimizer (torch.optim.AdamW, ...) and its keyword arguments
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    tune: Optional[TuneConfig] = None  # finetune.yaml sets it
    peft: Optional[PeftConfig] = None  # +peft=lora
    distill: DistillConfig = field(default_factory=DistillConfig)  # distill.teacher=<run> switches it on
    adversarial: Optional[AdversarialConfig] = None  # +adversarial=fgm|pgd|freelb
    privacy: Optional[PrivacyConfig] = None  # +privacy=dp


@dataclass
class DecodingVerbConfig:
    """What ``generate`` and ``chat`` share: the model, where it runs, the chat template and how text is decoded."""

    model: ModelConfig = field(default_factory=ModelConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    chat: Literal["auto", "on", "off"] = "auto"  # auto: a causal LM whose tokenizer has a chat template gets it
    system: Optional[str] = None  # a system message: before every prompt (generate), the conversation's (chat)
    truncate: Literal["left", "fail"] = "left"  # a prompt longer than the model's context: keep its end, or refuse
    max_new_tokens: int = 50
    do_sample: bool = False  # false: greedy (or beam search with num_beams > 1)
    temperature: float = 1.0
    top_k: Optional[int] = None  # sampling; fill-mask: candidates per mask (null: 5)
    top_p: Optional[float] = None
    repetition_penalty: Optional[float] = None
    no_repeat_ngram_size: Optional[int] = None
    stop: list[str] = field(default_factory=list)  # the completion ends before the first one (finish_reason "stop")
    seed: int = 0  # sampling: the same seed gives the same completions whatever batch_size


@dataclass
class GenerateVerbConfig(DecodingVerbConfig):
    """``generate``: prompts in, completions out (causal LMs, seq2seq models, masked-LM fill-mask)."""

    decoding: Optional[str] = None  # the decoding preset applied (decoding/<name>.yaml), recorded for the run
    prompt: Any = None  # a string or a list of strings
    prompts_file: Optional[str] = None  # .txt (one prompt per line) or .jsonl ("prompt" or "messages" + fields)
    output: Literal["auto", "text", "jsonl"] = "auto"  # auto: text on a terminal, jsonl otherwise
    # auto: from the model (or run); transcribe: WAV paths in, transcripts out (CTC or Whisper-style models)
    kind: Literal["auto", "causal", "seq2seq", "fill-mask", "replaced", "transcribe"] = "auto"
    template: Literal["auto", "on", "off"] = "auto"  # auto: an SFT run's prompts are written as its training did
    batch_size: int = 8  # prompts per forward pass (left-padded for decoder-only models)
    num_beams: int = 1
    num_return_sequences: int = 1
    run: RunConfig = field(default_factory=RunConfig)


@dataclass
class ChatVerbConfig(DecodingVerbConfig):
    """``chat``: a multi-turn conversation on the terminal (user lines from stdin, streamed replies to stdout)."""

    run: RunConfig = field(default_factory=RunConfig)


@dataclass
class ServeVerbConfig(DecodingVerbConfig):
    """``serve``: an OpenAI-compatible HTTP server; the decoding settings are defaults that requests override."""

    host: str = "127.0.0.1"  # 0.0.0.0: every interface (there is no authentication)
    port: int = 8000  # 0: any free port (the startup line says which)
    model_name: Optional[str] = None  # the id in /v1/models and requests; null: the model folder's name
    max_batch_size: int = 8  # requests with the same settings generated together
    batch_wait_ms: float = 10.0  # how long the first waiting request waits for others to join its batch
    run: RunConfig = field(default_factory=RunConfig)


@dataclass
class PredictVerbConfig:
    """``predict``: image paths or texts in, a classifier's labels out (one JSON line each, or a table)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    input: Any = None  # one input (an image path or a text) or a list of them
    inputs_file: Optional[str] = None  # .txt (one input per line) or .jsonl ("input" + fields carried through)
    top_k: int = 5  # labels per input, best first
    batch_size: int = 32  # inputs per forward pass
    output: Literal["auto", "table", "jsonl"] = "auto"  # auto: a table on a terminal, JSON Lines otherwise
    run: RunConfig = field(default_factory=RunConfig)


@dataclass
class ExplainVerbConfig:
    """``explain``: token attributions (integrated gradients, attention rollout) and attention maps for texts: a
    text classifier's class, a token classifier's tags or a causal LM's next token; pictures, HTML, JSON lines."""

    model: ModelConfig = field(default_factory=ModelConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    input: Any = None  # one text or a list of them (as predict's input=)
    inputs_file: Optional[str] = None  # .txt (one text per line) or .jsonl ("input" + fields carried through)
    method: Literal["ig", "rollout", "both"] = "both"
    steps: int = 50  # integrated gradients' interpolation steps (captum's n_steps)
    baseline: Literal["pad", "mask"] = "pad"  # the reference: pad (or [MASK]) at every non-special token
    target: Any = "auto"  # auto: the prediction; a label name or index; a token position (token classifier)
    batch_size: int = 25  # integrated gradients: interpolated inputs per forward pass (bounds memory)
    max_inputs: Optional[int] = None  # explain at most this many inputs; null: all
    index: int = 0  # the input whose layer x head attention grid is drawn
    layers: Optional[list[int]] = None  # the attention grid's layers (null: all)
    heads: Optional[list[int]] = None  # the attention grid's heads (null: all)
    output: Literal["auto", "json", "html", "png"] = "auto"  # auto: PNGs + HTML, a table or JSON lines; json: no files
    run: RunConfig = field(default_factory=RunConfig)


@dataclass
class AttackConfig:
    """A robustness (chars, hotflip, bae) or privacy (membership) evaluation of a text classifier:
    evaluate +attack=chars|hotflip|bae|membership."""

    method: Literal["chars", "hotflip", "bae", "membership"] = "chars"
    examples: Optional[int] = 200  # the first N evaluation rows are attacked (membership: N of each side); null: all
    importance: Literal["loo", "gradient"] = "loo"  # word order: leave-one-out deletion, or the gradient's norm
    max_fraction: float = 0.2  # the most words an attack may change, as a fraction of the sentence's (at least 1)
    candidates: int = 8  # replacements tried per word: character edits, vocabulary swaps or masked-LM proposals
    mlm: Optional[str] = None  # bae: the masked LM that proposes words (a run dir, model folder or Hub name)


@dataclass
class EvaluateVerbConfig:
    """``evaluate``: a model's metrics on a dataset (a run directory brings its own objective and data)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    objective: Any = None  # null: the run's objective, else clm or mlm from the model's kind
    dataset: Any = None  # a _target_ section (a run directory brings its own)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    batch_size: int = 8  # windows (causal LM), blocks (masked LM) or examples per forward pass
    stride: Optional[int] = None  # perplexity's sliding-window stride; null: dataset.seq_len (no overlap)
    max_batches: Optional[int] = None  # stop after this many batches (a quick estimate); null: all of the data
    seed: int = 0  # masked-LM evaluation: the masking seed (the same masks whatever batch_size)
    output: Literal["auto", "table", "json"] = "auto"  # auto: a table on a terminal, one JSON object otherwise
    attack: Optional[AttackConfig] = None  # +attack=chars|hotflip|bae: accuracy under attack; membership: leakage
    run: RunConfig = field(default_factory=RunConfig)


@dataclass
class LatencyConfig:
    """How compression commands time a model: forward passes on the CPU, median of ``repeats`` after warm-up."""

    batch_sizes: list[int] = field(default_factory=lambda: [1, 32])
    seq_len: Optional[int] = None  # text models: tokens per input; null: the dataset's seq_len (else 128)
    repeats: int = 10
    warmup: int = 2
    threads: Optional[int] = None  # torch threads while timing; null: the run's (the same for before and after)


@dataclass
class PruneVerbConfig:
    """``prune``: remove weights (magnitude: zeros), attention heads or feed-forward neurons (sliced out)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    objective: Any = None  # null: the run's objective (for importance scores and the metric before and after)
    dataset: Any = None  # null: the run's dataset
    device: DeviceConfig = field(default_factory=DeviceConfig)
    method: Literal["magnitude", "heads", "ffn"] = "heads"
    amount: float = 0.25  # the fraction of weights (magnitude), heads or intermediate neurons to remove
    scope: Literal["global", "layer"] = "layer"  # rank across the whole model, or remove amount in every layer
    importance: Literal["gradient", "norm"] = "gradient"  # heads/ffn: |gradient x mask| (Michel et al.) or norms
    importance_batches: int = 8  # training batches the gradient importance is summed over
    batch_size: int = 32  # examples per batch for importance and evaluation
    max_batches: Optional[int] = None  # evaluation: stop after this many batches; null: all of the validation data
    seed: int = 0
    evaluate: bool = True  # measure the task metric before and after
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    output: Literal["auto", "table", "json"] = "auto"
    run: RunConfig = field(default_factory=RunConfig)


@dataclass
class QuantizeVerbConfig:
    """``quantize``: int8 weights (and activations) for Linear layers; stored with the recipe that re-applies it."""

    model: ModelConfig = field(default_factory=ModelConfig)
    objective: Any = None
    dataset: Any = None
    device: DeviceConfig = field(default_factory=DeviceConfig)
    method: Literal["dynamic-int8", "int8-weight", "int8-dynamic"] = "dynamic-int8"
    batch_size: int = 32
    max_batches: Optional[int] = None
    seed: int = 0
    evaluate: bool = True
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    output: Literal["auto", "table", "json"] = "auto"
    run: RunConfig = field(default_factory=RunConfig)


@dataclass
class TokenizerVerbConfig:
    """``tokenizer``: train a tokenizer alone."""

    dataset: Any = None
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    run: RunConfig = field(default_factory=RunConfig)


VERB_SCHEMAS: dict[str, type] = {
    "pretrain": TrainVerbConfig,
    "finetune": TrainVerbConfig,
    "generate": GenerateVerbConfig,
    "chat": ChatVerbConfig,
    "serve": ServeVerbConfig,
    "evaluate": EvaluateVerbConfig,
    "predict": PredictVerbConfig,
    "explain": ExplainVerbConfig,
    "prune": PruneVerbConfig,
    "quantize": QuantizeVerbConfig,
    "tokenizer": TokenizerVerbConfig,
}
