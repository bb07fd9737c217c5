"""ELECTRA discriminators in ``generate``: for every token of a prompt, the probability that it was replaced
(the discriminator's sigmoid), as ``objective=electra`` trained it to tell."""

from __future__ import annotations

from dataclasses import dataclass

from ptcli.inference.fill_mask import right_padded
from ptcli.inference.prompts import BadPrompt, Prompt

THRESHOLD = 0.5  # a token counts as replaced above this probability


@dataclass
class Detected:
    """A prompt's tokens with their replaced probabilities, and the text with the likely replacements marked."""

    prompt: Prompt
    text: str  # the prompt's tokens, each one judged replaced in [brackets]
    tokens: list  # [{"token", "token_id", "replaced"}] without special tokens


class ReplacedTokens:
    """Per-token replaced probabilities for batches of prompts (right-padded)."""

    def __init__(self, loaded, truncate: str, log):
        self.model, self.tokenizer, self.placement = loaded.model, loaded.tokenizer, loaded.placement
        self.budget, self.truncate, self.log = loaded.context, truncate, log

    def detect(self, prompts: list[Prompt]) -> list[Detected | BadPrompt]:
        import torch

        kept, ids_list, out = [], [], []
        for prompt, ids in zip(prompts, self.tokenizer([p.text for p in prompts])["input_ids"]):
            if self.budget is not None and len(ids) > self.budget:
                if self.truncate == "fail":
                    out.append(BadPrompt(prompt.where, f"the prompt has {len(ids)} tokens, more than the model's "
                                                       f"{self.budget} (truncate=left keeps its end)"))
                    continue
                ids = ids[:1] + ids[len(ids) - self.budget + 1:]
                self.log(f"warning: {prompt.where}: the prompt was cut to its last {self.budget} tokens")
            kept.append(prompt)
            ids_list.append(list(ids))
        if not kept:
            return out
        input_ids, mask = right_padded(ids_list, self.tokenizer.pad_token_id or 0)
        with torch.inference_mode(), self.placement.autocast():
            logits = self.model(input_ids=input_ids.to(self.placement.device),
                                attention_mask=mask.to(self.placement.device)).logits
        probs = torch.sigmoid(logits.float()).cpu().tolist()
        special = set(self.tokenizer.all_special_ids)
        for row, prompt in enumerate(kept):
            tokens = [{"token": self.tokenizer.convert_ids_to_tokens(t), "token_id": t, "replaced": round(p, 6)}
                      for t, p in zip(ids_list[row], probs[row]) if t not in special]
            text = " ".join(f"[{t['token']}]" if t["replaced"] > THRESHOLD else t["token"] for t in tokens)
            out.append(Detected(prompt, text, tokens))
        out.sort(key=lambda r: r.prompt.index if isinstance(r, Detected) else -1)
        return out
