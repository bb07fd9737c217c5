"""Instruction tuning (SFT) of causal LMs: the loss covers response tokens only.

Records hold a prompt (``dataset.text_column``, or ``prompt_template`` formatted with the record's fields) and
a response (``dataset.label_column``), or chat ``messages`` formatted with the tokenizer's chat template (a
default ChatML template when it has none; then assistant turns are the targets).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ptcli.data.records import column, text_field
from ptcli.errors import PtcliError
from ptcli.objectives.base import LossOutput
from ptcli.objectives.labelled import LabelledObjective

DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
DEFAULT_PROMPT_SUFFIX = "\n"  # between the prompt and the response


def unescape(template: str) -> str:
    """"\\n" typed on a command line or in single-quoted YAML means a newline (and "\\t" a tab)."""
    return template.replace("\\n", "\n").replace("\\t", "\t")


def before_response(prompt: str) -> str:
    """The prompt as training writes it before the response: followed by the separator (nothing when empty).
    ``generate`` on an SFT run writes plain prompts the same way."""
    return prompt + DEFAULT_PROMPT_SUFFIX if prompt else ""


@dataclass(eq=False)
class SFT(LabelledObjective):
    """Prompt -> response pairs, or chat messages; the loss counts the response (assistant) tokens only."""

    prompt_template: Optional[str] = None  # e.g. "{instruction}\n\n{input}" (Alpaca); null: dataset.text_column
    messages_column: Optional[str] = None  # chat records: a list of {role, content}
    packing: bool = False  # several examples per sequence (attention still flows across them)
    chunked_loss: bool = True  # the loss a chunk of positions at a time: never all the logits (linear_ce.py)

    name = "sft"
    auto_class = "AutoModelForCausalLM"
    inference = "causal"
    peft_config = {"task_type": "CAUSAL_LM"}
    tokenizer_kind = "bpe"
    needs_shape = "decoder"

    def __post_init__(self):
        if self.prompt_template:
            self.prompt_template = unescape(self.prompt_template)

    @classmethod
    def prompt_format(cls, objective: dict, dataset: dict) -> str | None:
        """The template a model this trained expects its prompts in (``generate`` fills it): the prompt template,
        else the text column alone; None for chat messages (the tokenizer's chat template formats those)."""
        if objective.get("messages_column"):
            return None
        template = objective.get("prompt_template")
        return unescape(template) if template else "{" + str(dataset.get("text_column") or "text") + "}"

    @classmethod
    def config_problems(cls, cfg: dict, model_config: dict | None) -> list[str]:
        problems = super().config_problems(cfg, model_config)
        if not (cfg.get("objective") or {}).get("messages_column") and not (cfg.get("dataset") or {}).get(
                "label_column"):
            problems.append("objective=sft needs the response column (or chat messages): set "
                            "dataset.label_column=response, or objective.messages_column=messages")
        return problems

    def check_processors(self, processors) -> None:
        tokenizer = processors.tokenizer
        if self.messages_column and not getattr(tokenizer, "chat_template", None):
            tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE  # saved with the tokenizer: generate uses it too
        if tokenizer.eos_token_id is None:
            raise PtcliError("the tokenizer has no end-of-sequence token, which SFT appends to every response",
                             fix="use a causal LM tokenizer with an eos token")

    def learn(self, train_rows, log) -> None:
        if not self.messages_column and not self.data.label_column:
            raise PtcliError("objective=sft needs the response column (or chat messages)",
                             fix="set dataset.label_column=response, or objective.messages_column=messages")

    def prompt_text(self, record: dict, where: str) -> str:
        if self.prompt_template:
            try:
                return self.prompt_template.format(**record)
            except KeyError as e:
                raise PtcliError(f"objective.prompt_template names the field {e}, which the record lacks; the "
                                 f"fields are: {', '.join(record)}", where=where,
                                 fix="use {field} names that every record has") from None
        return text_field(record, self.data.text_column, "dataset.text_column", where)

    def segments(self, record: dict, where: str) -> list[tuple[str, bool]]:
        """(text, is_target) pieces in order."""
        if self.messages_column:
            messages = column(record, self.messages_column, "objective.messages_column", where)
            if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
                raise PtcliError(f"'{self.messages_column}' must be a list of {{role, content}} objects",
                                 where=where, fix="write messages like [{\"role\": \"user\", \"content\": \"...\"}]")
            render = self.tokenizer.apply_chat_template
            pieces, before = [], ""
            for i, message in enumerate(messages):
                text = render(messages[: i + 1], tokenize=False)
                if message["role"] == "assistant":  # the header is prompt, the content and end mark are target
                    header = render(messages[:i], tokenize=False, add_generation_prompt=True)
                    pieces += [(header[len(before):], False), (text[len(header):], True)]
                else:
                    pieces.append((text[len(before):], False))
                before = text
            return pieces
        prompt = self.prompt_text(record, where)
        response = text_field(record, self.data.label_column, "dataset.label_column", where)
        if not response.strip():
            return []
        return [(before_response(prompt), False), (response, True)]

    def encode(self, records: list, wheres: list) -> list:
        eos = self.tokenizer.eos_token_id
        out = []
        for record, where in zip(records, wheres):
            pieces = self.segments(record, where)
            if not any(target and text.strip() for text, target in pieces):
                out.append(None)
                continue
            ids, labels = [], []
            for text, target in pieces:
                piece = self.tokenizer(text, add_special_tokens=False)["input_ids"]
                ids += piece
                labels += piece if target else [-100] * len(piece)
            if not self.messages_column:
                ids, labels = ids + [eos], labels + [eos]
            out.append({"input_ids": ids[: self.max_len], "labels": labels[: self.max_len]})
        return out

    def postprocess(self, examples: list) -> list:
        """With ``packing``, concatenate examples into sequences of up to seq_len tokens (fewer pad tokens)."""
        if not self.packing:
            return examples
        packed, ids, labels = [], [], []
        for e in examples:
            if ids and len(ids) + len(e["input_ids"]) > self.max_len:
                packed.append({"input_ids": ids, "labels": labels})
                ids, labels = [], []
            ids, labels = ids + e["input_ids"], labels + e["labels"]
        if ids:
            packed.append({"input_ids": ids, "labels": labels})
        return packed

    def collate(self, examples, generator=None) -> dict:
        pad = self.tokenizer.pad_token_id
        pad = self.tokenizer.eos_token_id if pad is None else pad
        return {"input_ids": self.pad([e["input_ids"] for e in examples], pad),
                "attention_mask": self.pad([[1] * len(e["input_ids"]) for e in examples], 0),
                "labels": self.pad([e["labels"] for e in examples], -100)}

    def lm_inputs(self, batch) -> tuple:
        """(labels shifted by one, model inputs)."""
        import torch.nn.functional as F

        return (F.pad(batch["labels"][:, 1:], (0, 1), value=-100),
                {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})

    def loss(self, model, batch) -> LossOutput:
        from ptcli.objectives.linear_ce import causal_lm_loss

        labels, inputs = self.lm_inputs(batch)
        return causal_lm_loss(model, labels, self.chunked_loss and not self.full_logits, **inputs)
