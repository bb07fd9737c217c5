"""Generate completions for a batch of prompts with ``model.generate``: causal LMs and seq2seq models.

Sampling draws each row's tokens from its own generator, seeded by (seed, prompt index, sequence index), so a
prompt's completion depends on the seed only, not on the batch it landed in. Stop strings end a row as soon
as its completion contains one; the completion is cut before it (finish_reason "stop").
"""

from __future__ import annotations

from dataclasses import dataclass

from ptcli.data.loader import row_seed
from ptcli.errors import PtcliError
from ptcli.inference.prompts import BadPrompt, Prompt


@dataclass
class Completion:
    """One generated sequence for a prompt."""

    prompt: Prompt
    text: str
    new_tokens: int
    finish_reason: str  # stop | eos | length
    index: int = 0  # which of the num_return_sequences


def check_settings(cfg) -> None:
    """Decoding settings that cannot work together, as one clear error before the model is loaded."""
    problems = []
    n, beams = cfg.get("num_return_sequences", 1), cfg.get("num_beams", 1)  # chat has neither (nor batch_size)
    if cfg.get("batch_size", 1) < 1 or n < 1 or beams < 1 or cfg.max_new_tokens < 1:
        problems.append("batch_size, num_return_sequences, num_beams and max_new_tokens must be at least 1")
    if n > 1 and not cfg.do_sample and beams < n:
        problems.append(f"num_return_sequences={n} needs do_sample=true or num_beams >= {n} "
                        "(greedy decoding has one answer)")
    if cfg.do_sample and cfg.temperature <= 0:
        problems.append(f"temperature must be > 0 when sampling, got {cfg.temperature} (use do_sample=false)")
    if cfg.top_p is not None and not 0 < cfg.top_p <= 1:
        problems.append(f"top_p must be in (0, 1], got {cfg.top_p}")
    if cfg.top_k is not None and cfg.top_k < 1:
        problems.append(f"top_k must be at least 1, got {cfg.top_k}")
    if any(not s for s in cfg.stop):
        problems.append("stop strings must not be empty")
    if problems:
        raise PtcliError("; ".join(problems), fix="Change the decoding settings on the command line")


class SeededSampler:
    """A logits processor that samples each row from its own ``torch.Generator`` (temperature, top-k, top-p
    first) and leaves only the drawn token: ``generate`` then runs greedily and picks exactly that token."""

    def __init__(self, seeds: list[int], temperature: float, top_k: int | None, top_p: float | None):
        import torch
        from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.warpers = []
        if temperature != 1.0:
            self.warpers.append(TemperatureLogitsWarper(temperature))
        if top_k:
            self.warpers.append(TopKLogitsWarper(top_k))
        if top_p is not None and top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p))

    def __call__(self, input_ids, scores):
        import torch

        for warp in self.warpers:
            scores = warp(input_ids, scores)
        probs = torch.softmax(scores.float(), dim=-1)
        draws = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in self.generators])
        cdf = probs.double().cumsum(dim=-1)
        # inverse-CDF sampling: the first token whose cumulative probability passes the draw
        chosen = (cdf < draws.to(cdf.device)[:, None] * cdf[:, -1:]).sum(dim=-1).clamp(max=scores.shape[-1] - 1)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, chosen[:, None], 0.0)


class StopOnStrings:
    """A stopping criterion: a row is done once the text generated after ``start`` contains a stop string."""

    def __init__(self, tokenizer, stops: list[str], start: int):
        self.tokenizer, self.stops, self.start = tokenizer, list(stops), start
        # a token holds at least one byte: this many trailing tokens always cover the longest stop string
        self.window = 4 * max(len(s) for s in stops) + 2
        self.stopped_at: dict[int, int] = {}  # row -> tokens generated when its stop string appeared

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        done = []
        length = input_ids.shape[1]
        tail_start = max(self.start, length - self.window)
        for r, row in enumerate(input_ids[:, tail_start:].tolist()):
            if r in self.stopped_at:
                done.append(True)
                continue
            text = self.tokenizer.decode(row, skip_special_tokens=True)
            hit = any(s in text for s in self.stops)
            if hit:
                self.stopped_at[r] = length - self.start
            done.append(hit)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class TokenPrinter:
    """A streamer for one row on a terminal: prints the completion as it grows, holding back text that may
    turn into a stop string or an unfinished character, and nothing after a stop string."""

    def __init__(self, text_of, write, stops: list[str]):
        self.text_of, self.write, self.stops = text_of, write, list(stops)
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.ids: list[int] = []
        self.printed, self.started, self.stopped = 0, False, False

    def put(self, value) -> None:
        if not self.started:  # the first call carries the prompt (or the decoder's start token)
            self.started = True
            return
        self.ids.extend(value.reshape(-1).tolist())
        self._show(final=False)

    def end(self) -> None:
        self._show(final=True)
        self.write("\n")

    def _show(self, final: bool) -> None:
        if self.stopped:
            return
        text = self.text_of(self.ids)
        cut = first_stop(text, self.stops)
        if cut is not None:
            text, self.stopped, final = text[:cut], True, True
        safe = len(text) if final else max(self.printed, len(text.rstrip("\ufffd")) - self.hold)
        if safe > self.printed:
            self.write(text[self.printed:safe])
            self.printed = safe


def first_stop(text: str, stops: list[str]) -> int | None:
    """Where the earliest stop string starts in ``text``, or None."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


class Decoder:
    """Turns batches of prompts into completions with the settings of a ``generate`` (or ``chat``) config."""

    def __init__(self, loaded, cfg, log, conversation: bool = False):
        from ptcli.inference.formatting import Formatter
        from ptcli.inference.loading import run_config

        self.model, self.tokenizer, self.kind = loaded.model, loaded.tokenizer, loaded.kind
        self.placement, self.cfg, self.log = loaded.placement, cfg, log
        self.stops = list(cfg.stop)
        self.beams, self.n = cfg.get("num_beams", 1), cfg.get("num_return_sequences", 1)
        self.budget = None
        if loaded.context:
            self.budget = loaded.context - (cfg.max_new_tokens if self.kind == "causal" else 0)
            if self.budget < 1:
                raise PtcliError(f"max_new_tokens={cfg.max_new_tokens} leaves no room for a prompt in the model's "
                                 f"context of {loaded.context} tokens",
                                 fix=f"Lower max_new_tokens below {loaded.context}")
        gen = self.model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self.pad_id = self.tokenizer.pad_token_id
        self.seeded = cfg.do_sample and self.beams == 1  # else beam sampling: torch's global generator
        self.format = Formatter(self.tokenizer, self.kind, cfg, log, run_config(loaded.path), conversation)

    def token_ids(self, prompt: Prompt) -> list[int]:
        """The prompt's token ids before any cut, of the text ``formatting.Formatter`` makes of it (a chat template,
        an SFT run's template, or as it is); raises formatting.Refused for a prompt the model cannot take."""
        text, special = self.format.text(prompt)
        # a chat template writes its own special tokens (BOS, turn markers), SFT training added none: none on top
        return self.tokenizer(text, add_special_tokens=special)["input_ids"]

    # -- prompts to padded tensors -------------------------------------------------------------------------
    def encode(self, prompts: list[Prompt]) -> tuple[list[Prompt], list[list[int]], list[BadPrompt]]:
        """Token ids per prompt, cut to the context budget (from the left) or refused, as ``truncate`` says."""
        from ptcli.inference.formatting import Refused

        kept, ids_list, bad = [], [], []
        special = set(self.tokenizer.all_special_ids)
        for prompt in prompts:
            try:
                ids = self.token_ids(prompt)
            except Refused as e:
                bad.append(BadPrompt(prompt.where, str(e)))
                continue
            if self.budget is not None and len(ids) > self.budget:
                if self.cfg.truncate == "fail":
                    bad.append(BadPrompt(prompt.where, f"the prompt has {len(ids)} tokens, more than the "
                                                       f"{self.budget} that fit the model's context"
                                                       f"{' with max_new_tokens' if self.kind == 'causal' else ''}"
                                                       " (truncate=left keeps its end)"))
                    continue
                lead = next((i for i, t in enumerate(ids) if t not in special), 0)  # keep a leading BOS/CLS
                ids = ids[:lead] + ids[len(ids) - (self.budget - lead):]
                self.log(f"warning: {prompt.where}: the prompt was cut to its last {self.budget} tokens to fit the "
                         f"model's context (truncate=fail refuses such prompts instead)")
            if not ids:
                bad.append(BadPrompt(prompt.where, "the prompt has no tokens"))
                continue
            kept.append(prompt)
            ids_list.append(list(ids))
        return kept, ids_list, bad

    def pad(self, ids_list: list[list[int]], repeat: int = 1):
        """input_ids and attention_mask, left-padded for decoder-only models, each row ``repeat`` times."""
        import torch

        rows = [ids for ids in ids_list for _ in range(repeat)]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            span = slice(width - len(r), width) if self.tokenizer.padding_side == "left" else slice(0, len(r))
            input_ids[i, span] = torch.tensor(r)
            mask[i, span] = 1
        return input_ids.to(self.placement.device), mask.to(self.placement.device)

    # -- generation -----------------------------------------------------------------------------------------
    def generation_config(self):
        import copy

        cfg = self.cfg
        gen = copy.deepcopy(self.model.generation_config)
        native_sampling = cfg.do_sample and not self.seeded
        gen.update(max_new_tokens=cfg.max_new_tokens, max_length=None, min_length=None, do_sample=native_sampling,
                   num_beams=self.beams, num_return_sequences=1 if self.seeded else self.n,
                   repetition_penalty=cfg.repetition_penalty, no_repeat_ngram_size=cfg.no_repeat_ngram_size,
                   temperature=cfg.temperature if native_sampling else None,
                   top_k=cfg.top_k if native_sampling else None, top_p=cfg.top_p if native_sampling else None,
                   pad_token_id=self.pad_id, eos_token_id=sorted(self.eos_ids) or None)
        return gen

    def variant(self, **changes) -> Decoder:
        """This decoder with some decoding settings changed (``max_new_tokens``, ``do_sample``, ``temperature``,
        ``top_p``, ``top_k``, ``stop``, ...): the same model, tokenizer and prompt format; raises PtcliError when
        the new ``max_new_tokens`` leaves no room for a prompt."""
        import copy

        other = copy.copy(self)
        other.cfg = copy.deepcopy(self.cfg)
        for key, value in changes.items():
            other.cfg[key] = value
        if "stop" in changes:
            other.stops = list(changes["stop"])
        other.seeded = other.cfg.do_sample and other.beams == 1
        if other.budget is not None and "max_new_tokens" in changes and self.kind == "causal":
            context = self.budget + self.cfg.max_new_tokens
            other.budget = context - other.cfg.max_new_tokens
            if other.budget < 1:
                raise PtcliError(f"max_new_tokens={other.cfg.max_new_tokens} leaves no room for a prompt in the "
                                 f"model's context of {context} tokens", fix=f"Lower max_new_tokens below {context}")
        return other

    def generate(self, prompts: list[Prompt], printer_write=None) -> list[Completion | BadPrompt]:
        """Completions for ``prompts`` (num_return_sequences each, in order) and the prompts refused.

        ``printer_write``: stream the only row's text through this function as it is generated.
        """
        kept, ids_list, bad = self.encode(prompts)
        if not kept:
            return list(bad)
        streamer = None
        if printer_write is not None and len(kept) * self.n == 1 and self.beams == 1:
            streamer = TokenPrinter(lambda ids: self.completion_text(ids_list[0], ids), printer_write, self.stops)
        return list(bad) + self.generate_encoded(kept, ids_list, streamer)

    def generate_encoded(self, kept: list[Prompt], ids_list: list[list[int]], streamer=None,
                         criteria=()) -> list[Completion]:
        """Completions for prompts already encoded (``encode``), sorted by prompt and sequence. ``streamer``: given
        every step's tokens (``put``) as ``generate`` does; ``criteria``: more stopping criteria (per row)."""
        import torch

        cfg = self.cfg
        n = self.n
        input_ids, mask = self.pad(ids_list, repeat=n if self.seeded else 1)
        start = input_ids.shape[1] if self.kind == "causal" else 1
        processors = []
        if self.seeded:  # a prompt's own seed (a server request's), else the run's seed and the prompt's index
            seeds = [row_seed(cfg.seed, p.index, j) if p.seed is None else row_seed(p.seed, 0, j)
                     for p in kept for j in range(n)]
            processors.append(SeededSampler(seeds, cfg.temperature, cfg.top_k, cfg.top_p))
        elif cfg.do_sample:
            torch.manual_seed(row_seed(cfg.seed, kept[0].index))
        stop_rule = StopOnStrings(self.tokenizer, self.stops, start) if self.stops else None
        from transformers import LogitsProcessorList, StoppingCriteriaList

        with torch.inference_mode(), self.placement.autocast():
            sequences = self.model.generate(
                input_ids=input_ids, attention_mask=mask, generation_config=self.generation_config(),
                logits_processor=LogitsProcessorList(processors),
                stopping_criteria=StoppingCriteriaList([*([stop_rule] if stop_rule else []), *criteria]),
                streamer=streamer)
        rows = sequences[:, start:].tolist()
        stopped = stop_rule.stopped_at if stop_rule is not None and self.beams == 1 else {}
        out: list[Completion] = []
        for r, generated in enumerate(rows):
            prompt_no = r // n
            out.append(self.finish(kept[prompt_no], ids_list[prompt_no], generated, r % n, stopped.get(r)))
        out.sort(key=lambda c: (c.prompt.index, c.index))
        return out

    def finish(self, prompt: Prompt, prompt_ids: list[int], generated: list[int], index: int,
               stopped_at: int | None = None) -> Completion:
        """The completion text, its token count and why it ended (``stopped_at``: the number of tokens
        generated when a stop string ended the row)."""
        reason, end = "length", len(generated)
        if stopped_at is not None:
            reason, end = "stop", stopped_at
        else:
            if self.pad_id not in self.eos_ids:  # beam search pads finished beams
                while end and generated[end - 1] == self.pad_id:
                    end -= 1
            for i, token in enumerate(generated[:end]):
                if token in self.eos_ids:
                    reason, end = "eos", i + 1
                    break
        text = self.completion_text(prompt_ids, [t for t in generated[:end] if t not in self.eos_ids])
        cut = first_stop(text, self.stops) if self.stops else None
        if cut is not None:
            text, reason = text[:cut], "stop"
        return Completion(prompt, text, end, reason, index)

    def completion_text(self, prompt_ids: list[int], generated: list[int]) -> str:
        """The generated text alone. For decoder-only models decode prompt + completion and drop the prompt's
        text, as transformers' pipeline does: a completion decoded alone may lose its leading space."""
        decode = self.tokenizer.decode
        if self.kind != "causal":
            return decode_with_sentinels(self.tokenizer, generated)
        prefix = decode(prompt_ids, skip_special_tokens=True)
        full = decode(prompt_ids + generated, skip_special_tokens=True)
        return full[len(prefix):] if full.startswith(prefix) else decode(generated, skip_special_tokens=True)


def decode_with_sentinels(tokenizer, ids: list[int]) -> str:
    """A seq2seq model's output without its special tokens, except the sentinels (T5's ``<extra_id_N>``, the
    tokenizer's extra special tokens) that say which span a span-corruption model fills."""
    names = getattr(tokenizer, "extra_special_tokens", None) or []
    sentinels = {i for i in tokenizer.convert_tokens_to_ids([str(t) for t in names]) if i is not None}
    if not sentinels & set(ids):
        return tokenizer.decode(ids, skip_special_tokens=True)
    parts, run = [], []
    for token in ids:
        if token in sentinels:
            parts += [tokenizer.decode(run, skip_special_tokens=True), tokenizer.convert_ids_to_tokens(token)]
            run = []
        else:
            run.append(token)
    return "".join(parts + [tokenizer.decode(run, skip_special_tokens=True)])
