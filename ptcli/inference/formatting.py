"""How a prompt becomes the text the model sees: the tokenizer's chat template (chat models, ``messages`` lines),
the prompt template an SFT run was trained with (its ``config.yaml`` records it), a plain ``User:``/``Assistant:``
transcript (``ptcli chat`` with a model that has no chat template), or the prompt as it is."""

from __future__ import annotations

import json
import string
from dataclasses import dataclass

from ptcli.errors import PtcliError

ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}
TRANSCRIPT_STOP = "\nUser:"  # a transcript reply ends where the model starts the user's next turn


def transcript(messages: list[dict]) -> str:
    """A conversation as plain text for a model without a chat template, ending where the assistant speaks."""
    lines = [f"{ROLES.get(m['role'], str(m['role']).title())}: {m['content']}" for m in messages]
    return "\n".join(lines + ["Assistant:"])


def plain_messages(messages: list[dict]) -> list[dict]:
    """Only role and content: what a chat template is given (a transcript's own marks stay in the transcript)."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def messages_problem(messages) -> str | None:
    """Why a ``messages`` value is not a conversation (a list of {role, content} strings), or None."""
    if not isinstance(messages, list) or not messages:
        return "\"messages\" must be a non-empty list of {\"role\": ..., \"content\": ...} objects"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            return f"messages[{i}] must be an object with \"role\" and \"content\" strings"
    return None


def template_fields(template: str) -> tuple[str, ...]:
    """The record fields a ``str.format`` template names, in order (``{a[0]}`` and ``{a.b}`` name ``a``)."""
    names = []
    for _, name, _, _ in string.Formatter().parse(template):
        root = (name or "").split(".")[0].split("[")[0]
        if root and root not in names:
            names.append(root)
    return tuple(names)


@dataclass
class RunTemplate:
    """The prompt format an SFT run was trained with: its template over the record's fields, then the separator."""

    template: str
    fields: tuple[str, ...]

    def prompt(self, values: dict) -> str:
        """The template filled from ``values`` (fields they lack are empty), as training's ``str.format``."""
        return self.template.format(**{f: "" for f in self.fields} | dict(values))

    def fill(self, values: dict) -> str:
        """The text before the response, exactly as training wrote it."""
        from ptcli.objectives.sft import before_response

        return before_response(self.prompt(values))

    def values_of(self, text: str) -> dict | None:
        """A prompt that is a JSON object with the template's fields gives them; None for plain text."""
        return json_object_with(text, self.fields)

    def text(self, prompt_text: str) -> str:
        values = self.values_of(prompt_text)
        return self.fill(values if values is not None else {self.fields[0]: prompt_text} if self.fields else {})


def run_template(run_cfg: dict | None) -> RunTemplate | None:
    """The prompt format of the run that trained the model (an SFT run without chat messages), else None."""
    if not run_cfg:
        return None
    from ptcli.inference.loading import objective_class

    cls = objective_class(run_cfg.get("objective"))
    prompt_format = getattr(cls, "prompt_format", None)
    template = prompt_format(run_cfg.get("objective") or {}, run_cfg.get("dataset") or {}) if prompt_format else None
    return RunTemplate(template, template_fields(template)) if template else None


def chat_mode(tokenizer, kind: str, cfg, log) -> bool:
    """Whether plain prompts go through the tokenizer's chat template (``chat``: auto uses it when a causal LM's
    tokenizer has one; on insists; off never), said once in the log."""
    template = getattr(tokenizer, "chat_template", None)
    if cfg.chat == "on" and not template:
        raise PtcliError("chat=on, but the model's tokenizer has no chat template",
                         fix="Use chat=off (prompts as they are), or a model whose tokenizer has a chat_template")
    chat = bool(template) and cfg.chat != "off" and (kind == "causal" or cfg.chat == "on")
    if cfg.system and not chat:
        raise PtcliError("system= needs a chat template, and this model's prompts go to it as they are",
                         fix="Leave system unset, or use an instruct model whose tokenizer has a chat template")
    if chat:
        log("chat: each prompt goes to the model as a user turn of the tokenizer's chat template"
            + (", after the system message" if cfg.system else "") + " (chat=off sends prompts as they are)")
    return chat


class Refused(Exception):
    """A prompt this model cannot take (the caller reports it for that prompt only)."""


class Formatter:
    """Turns a prompt into (text for the model, whether the tokenizer adds its special tokens).

    ``generate``: plain prompts fill the SFT run's template (``template=auto|on|off``), or become user turns of the
    chat template (``chat``), or go as they are; ``messages`` need the chat template. ``conversation=True``
    (``ptcli chat``): every prompt is a conversation; without a chat template (or with chat=off) a transcript."""

    def __init__(self, tokenizer, kind: str, cfg, log, run_cfg: dict | None = None, conversation: bool = False):
        self.tokenizer, self.cfg, self.conversation = tokenizer, cfg, conversation
        self.has_template = bool(getattr(tokenizer, "chat_template", None))
        self.run = None
        if conversation:
            if cfg.chat == "on" and not self.has_template:
                raise PtcliError("chat=on, but the model's tokenizer has no chat template",
                                 fix="Leave chat=auto (a plain User:/Assistant: transcript), or use a chat model")
            self.chat = self.has_template and cfg.chat != "off"
            if not self.chat:
                why = "the model's tokenizer has no chat template" if not self.has_template else "chat=off"
                log(f"{why}: the conversation goes to it as a plain 'User: ... / Assistant: ...' transcript")
            return
        setting = cfg.get("template", "auto")
        self.run = run_template(run_cfg) if kind == "causal" and setting != "off" else None
        if setting == "on" and self.run is None:
            raise PtcliError("template=on, but model.path is not an SFT run that records a prompt format",
                             fix="Point model.path at a `ptcli finetune objective=sft` run, or leave template=auto")
        if self.run is not None and cfg.chat == "on":
            if setting == "on":
                raise PtcliError("template=on and chat=on ask for two prompt formats", fix="Choose one of them")
            self.run = None
        if self.run is not None:
            if cfg.system:
                raise PtcliError("system= needs the chat template, and this SFT run's prompts use the template it "
                                 "was trained with", fix="Leave system unset, or use chat=on (the chat template)")
            self.chat = False
            shown = self.run.template.replace("\n", "\\n")
            many = (f"; a plain prompt fills {{{self.run.fields[0]}}} (the other fields empty), a JSON prompt with "
                    f"the fields fills them" if len(self.run.fields) > 1 else "")
            log(f"template: prompts are written as the SFT run's training wrote them ('{shown}' then a newline)"
                f"{many} (template=off sends them as they are)")
        else:
            self.chat = chat_mode(tokenizer, kind, cfg, log)

    def text(self, prompt) -> tuple[str, bool]:
        """What the model sees for ``prompt`` and whether special tokens are added (never around a template, as
        neither a chat template nor SFT training adds them); raises Refused for a conversation it cannot format."""
        messages = getattr(prompt, "messages", None)
        if self.conversation:
            if self.chat:
                return self.render(plain_messages(messages)), False
            return transcript(messages), True
        if messages is not None:
            if not self.has_template or self.cfg.chat == "off":
                raise Refused("the line holds chat \"messages\", which need the tokenizer's chat template, and "
                              + ("chat=off is set (leave chat=auto)" if self.has_template else
                                 "this model's tokenizer has none (use a chat model, or a \"prompt\" line)"))
            return self.render(plain_messages(messages)), False
        if getattr(prompt, "values", None) is not None and self.run is not None:
            return self.run.fill(prompt.values), False
        if self.run is not None:
            return self.run.text(prompt.text), False
        if self.chat:
            system = [{"role": "system", "content": self.cfg.system}] if self.cfg.system else []
            return self.render(system + [{"role": "user", "content": prompt.text}]), False
        return prompt.text, True

    def render(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def json_object_with(text: str, keys) -> dict | None:
    """``text`` as a JSON object when it is one holding at least one of ``keys``; None otherwise (plain text)."""
    if not text.lstrip().startswith("{"):
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and any(k in record for k in keys) else None
