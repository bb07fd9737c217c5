"""Speech recognition with CTC (wav2vec2 and any ``AutoModelForCTC``): audio clips -> their transcripts, spelled
in characters.

The character vocabulary is built from the training transcripts (lowercased unless ``objective.lowercase=false``;
a space becomes the word delimiter ``|``; ``<pad>`` is CTC's blank, ``<unk>`` any character the training
transcripts never had) and saved as the model's ``Wav2Vec2CTCTokenizer``; a ``model.path`` that has a CTC tokenizer
keeps its own. The loss is ``torch.nn.functional.ctc_loss`` summed over clips and divided by the target characters
(a per-character loss, the same however clips split across micro-batches and processes); a clip too short for its
transcript (fewer output frames than characters plus repeats) has no alignment and an infinite loss, which
``objective.zero_infinity`` (on) makes 0 instead of NaN, and the fraction of such clips is logged as
``ctc_infeasible``. Validation decodes greedily (the best character per frame, repeats merged, blanks removed) and
reports word and character error rates (lower is better: best-checkpoint selection knows) and the exact-transcript
rate. ``model/`` holds the feature extractor and tokenizer, so ``transformers.pipeline("automatic-speech-recognition",
model=<run>/model)`` transcribes without ptcli.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ptcli.data.records import column
from ptcli.data.wav import seconds
from ptcli.errors import PtcliError
from ptcli.objectives.audio import AudioObjective
from ptcli.objectives.base import LOSS, Context, LossOutput, Metric, MetricEvaluator

__all__ = ["CTC", "ctc_summed", "greedy_decode", "valid_frames"]

BLANK, UNKNOWN, DELIMITER = "<pad>", "<unk>", "|"


@dataclass(eq=False)
class CTC(AudioObjective):
    """Characters per audio frame, aligned by CTC; transcripts from the data source's ``transcript`` field."""

    name = "ctc"
    auto_class = "AutoModelForCTC"
    inference = "transcribe"
    metrics = (LOSS, Metric("cer", higher_is_better=False), Metric("wer", higher_is_better=False),
               Metric("exact"))
    model_hint = "a CTC model's model.path"

    max_seconds: float = 10.0  # longer training clips are left out (a crop would cut words off their transcript)
    lowercase: bool = True  # transcripts lowercased before spelling (the vocabulary and the metrics)
    zero_infinity: bool = True  # a clip too short for its transcript adds 0 to the loss, not inf (then NaN)

    @classmethod
    def config_problems(cls, cfg: dict, model_config: dict | None) -> list[str]:
        problems = super().config_problems(cfg, model_config)
        dataset = cfg.get("dataset") or {}
        if "transcript_column" not in dataset:
            problems.append("objective=ctc needs transcripts, which this dataset has none of: use "
                            "dataset=audio-manifest dataset.transcript_column=<column> (or dataset=tone-words)")
        elif not dataset.get("transcript_column"):
            problems.append("objective=ctc needs transcripts: set dataset.transcript_column=<the column with the "
                            "text spoken>")
        return problems

    # ---- processors: the feature extractor and a character tokenizer
    def load_processors(self, ctx: Context):
        from ptcli.processing.loading import Processors

        processors = Processors(feature_extractor=self.feature_extractor(ctx))
        tokenizer = self.saved_tokenizer(ctx)
        if tokenizer is None:
            tokenizer = character_tokenizer(self.normalise(record.get("transcript") or "")
                                            for _, record in ctx.source.records("train", ctx.log))
            ctx.log(f"characters: {len(tokenizer) - 3} from the training transcripts, plus {BLANK} (blank), "
                    f"{UNKNOWN} and {DELIMITER} (between words): "
                    + "".join(t for t in tokenizer.get_vocab() if t not in (BLANK, UNKNOWN, DELIMITER)))
        processors["tokenizer"] = tokenizer
        return processors

    def saved_tokenizer(self, ctx: Context):
        """model.path's CTC tokenizer (continuing a CTC model), else None (a new character vocabulary)."""
        if not ctx.cfg.model.path:
            return None
        from ptcli.processing.loading import load_tokenizer

        try:
            tokenizer = load_tokenizer(str(ctx.cfg.model.path))
        except PtcliError:
            return None
        if getattr(tokenizer, "word_delimiter_token", None) is None:
            ctx.log("the tokenizer at model.path is no CTC character tokenizer: building one from the transcripts "
                    "(a new CTC head)")
            return None
        return tokenizer

    def check_processors(self, processors) -> None:
        super().check_processors(processors)
        tokenizer = processors.get("tokenizer")
        if tokenizer is None or tokenizer.pad_token_id is None:
            raise PtcliError("the model has no CTC tokenizer (a vocabulary with a <pad> blank)",
                             fix="Evaluate a CTC model saved by ptcli (objective=ctc), or save its tokenizer with it")

    def normalise(self, text: str) -> str:
        text = " ".join(str(text).split())
        return text.lower() if self.lowercase else text

    @property
    def blank(self) -> int:
        return int(self.tokenizer.pad_token_id)

    # ---- data
    def encode(self, records: list, wheres: list) -> list:
        out = []
        for record, where in zip(records, wheres):
            audio = column(record, self.audio_column, "dataset.audio_column", where)
            text = self.normalise(column(record, "transcript", "dataset.transcript_column", where) or "")
            if audio is None or not text:
                out.append(None)  # an empty transcript: skipped and counted (or refused: dataset.empty_rows)
                continue
            labels = self.tokenizer(text)["input_ids"]
            out.append({"audio": audio, "labels": labels, "where": where, "seconds": seconds(audio)})
        return out

    def prepare(self, ctx: Context, processors):
        prepared = super().prepare(ctx, processors)
        kept = [e for e in prepared.train if e["seconds"] <= self.max_seconds]
        if len(kept) < len(prepared.train):
            ctx.log(f"note: left out {len(prepared.train) - len(kept)} of {len(prepared.train)} training clips longer "
                    f"than objective.max_seconds={self.max_seconds:g} (validation clips are kept whole)")
            if not kept:
                raise PtcliError(f"every training clip is longer than objective.max_seconds={self.max_seconds:g}",
                                 fix="raise objective.max_seconds")
            prepared.train = kept
            prepared.facts["train_examples"] = len(kept)
        return prepared

    def collate(self, examples, generator=None, augmented: bool = True) -> dict:
        from ptcli.processing.audio import features

        clips = self.clips(examples, generator if augmented else None, crop=False)
        batch = features(self.processors["feature_extractor"], clips, self.rate)
        batch["labels"] = self.pad([e["labels"] for e in examples], -100)
        batch["seconds"] = sum(len(c) for c in clips) / self.rate
        return batch

    # ---- the model
    def build_model(self, ctx: Context, processors):
        from ptcli.models.build import build_model

        tokenizer = processors.tokenizer
        head = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
                "ctc_zero_infinity": self.zero_infinity}
        model = build_model(ctx.cfg.model, self.auto_class, None, log=ctx.log, **head)
        for key, value in head.items():
            setattr(model.config, key, value)
        return model

    def logits_and_frames(self, model, batch):
        """The frame logits (fp32) and each clip's number of valid frames."""
        from ptcli.models.modules import export_model_of

        inputs = {k: batch[k] for k in ("input_values", "attention_mask") if k in batch}
        logits = model(**inputs).logits.float()
        return logits, valid_frames(export_model_of(model), batch.get("attention_mask"), logits)

    def loss(self, model, batch) -> LossOutput:
        logits, frames = self.logits_and_frames(model, batch)
        return ctc_summed(logits, frames, batch["labels"], self.blank, self.zero_infinity)

    def evaluator(self):
        return CTCEvaluator(self)

    def decode(self, logits, frames) -> list[str]:
        return greedy_decode(self.tokenizer, logits, frames)


def valid_frames(model, attention_mask, logits):
    """Each clip's number of output frames that hold audio (the feature encoder's lengths of its unpadded samples;
    every frame when the extractor gives no attention mask), as a long tensor."""
    if attention_mask is None:
        return logits.new_full((logits.shape[0],), logits.shape[1]).long()
    return model._get_feat_extract_output_lengths(attention_mask.sum(-1)).clamp(max=logits.shape[1]).long()


def greedy_decode(tokenizer, logits, frames) -> list[str]:
    """Greedy CTC decoding: the best token per valid frame, repeats merged, blanks dropped."""
    best = logits.argmax(-1).cpu().tolist()
    return [tokenizer.decode(ids[:n]) for ids, n in zip(best, frames.cpu().tolist())]


def ctc_summed(logits, frames, labels, blank: int, zero_infinity: bool = True) -> LossOutput:
    """CTC's negative log-likelihood summed over clips, counted in target characters (labels -100 are padding);
    ``ctc_infeasible`` logs the clips with fewer frames than their transcript needs (its length plus one blank
    between each pair of repeated characters)."""
    import torch
    import torch.nn.functional as F

    mask = labels >= 0
    lengths = mask.sum(-1)
    log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # (frames, batch, vocabulary)
    with torch.backends.cudnn.flags(enabled=False):  # cuDNN's CTC takes fewer layouts and lengths
        total = F.ctc_loss(log_probs, labels.masked_select(mask), frames, lengths, blank=blank, reduction="sum",
                           zero_infinity=zero_infinity)
    repeats = ((labels[:, 1:] == labels[:, :-1]) & mask[:, 1:]).sum(-1)
    infeasible = (frames < lengths + repeats).sum().to(total.dtype)
    return LossOutput(total, lengths.sum(), logs={"ctc_infeasible": (infeasible, float(len(labels)))})


def character_tokenizer(transcripts):
    """A ``Wav2Vec2CTCTokenizer`` over the characters of ``transcripts`` (sorted; blank 0, unknown 1, delimiter 2)."""
    from transformers import Wav2Vec2CTCTokenizer

    chars = sorted({c for text in transcripts for c in text if c != " "} - {DELIMITER})
    if not chars:
        raise PtcliError("the training transcripts are all empty", fix="check dataset.transcript_column and the files")
    vocab = {BLANK: 0, UNKNOWN: 1, DELIMITER: 2, **{c: i + 3 for i, c in enumerate(chars)}}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "vocab.json"
        path.write_text(json.dumps(vocab, ensure_ascii=False))
        return Wav2Vec2CTCTokenizer(str(path), unk_token=UNKNOWN, pad_token=BLANK, word_delimiter_token=DELIMITER,
                                    bos_token=None, eos_token=None, do_lower_case=False)


class CTCEvaluator(MetricEvaluator):
    """The loss, and word/character error rates of greedy transcripts against the references (streamed)."""

    def __init__(self, objective):
        from ptcli.metrics.text import ErrorRates

        super().__init__(objective, ErrorRates())

    def update(self, model, batch) -> None:
        obj = self.objective
        logits, frames = obj.logits_and_frames(model, batch)
        self.add_loss(ctc_summed(logits, frames, batch["labels"], obj.blank, obj.zero_infinity))
        references = [obj.tokenizer.decode([t for t in row if t >= 0], group_tokens=False)
                      for row in batch["labels"].cpu().tolist()]
        self.metric.update(obj.decode(logits, frames), references)
