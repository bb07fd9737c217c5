"""Masked LMs in ``generate``: the top-k candidates, with probabilities, for every [MASK] in a prompt."""

from __future__ import annotations

from dataclasses import dataclass

from ptcli.inference.prompts import BadPrompt, Prompt

LITERAL_MASK = "[MASK]"  # accepted in prompts whatever the model's own mask token (e.g. RoBERTa's <mask>)


@dataclass
class Filled:
    """A prompt with its masks filled: per mask position, the candidates; the text with the best ones."""

    prompt: Prompt
    text: str  # the prompt with every mask replaced by its top candidate
    masks: list  # [{"position": token index, "candidates": [{"token", "token_id", "score"}]}]


def right_padded(ids_list: list[list[int]], pad_id: int):
    """input_ids and attention_mask of right-padded rows (encoders read a batch this way)."""
    import torch

    width = max(len(ids) for ids in ids_list)
    input_ids = torch.full((len(ids_list), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for i, ids in enumerate(ids_list):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        mask[i, :len(ids)] = 1
    return input_ids, mask


class MaskFiller:
    """Fill masks in batches of prompts (right-padded), ``top_k`` candidates per mask."""

    def __init__(self, loaded, top_k: int | None, truncate: str, log):
        self.model, self.tokenizer, self.placement = loaded.model, loaded.tokenizer, loaded.placement
        self.top_k = top_k or 5
        self.budget, self.truncate, self.log = loaded.context, truncate, log
        self.mask_id = self.tokenizer.mask_token_id

    def encode(self, prompts: list[Prompt]):
        kept, ids_list, bad = [], [], []
        mask_token = self.tokenizer.mask_token
        texts = [p.text.replace(LITERAL_MASK, mask_token) if mask_token != LITERAL_MASK else p.text for p in prompts]
        for prompt, ids in zip(prompts, self.tokenizer(texts)["input_ids"]):
            if self.budget is not None and len(ids) > self.budget:
                if self.truncate == "fail":
                    bad.append(BadPrompt(prompt.where, f"the prompt has {len(ids)} tokens, more than the model's "
                                                       f"{self.budget} (truncate=left keeps its end)"))
                    continue
                ids = ids[:1] + ids[len(ids) - self.budget + 1:]  # keep [CLS]
                self.log(f"warning: {prompt.where}: the prompt was cut to its last {self.budget} tokens to fit the "
                         "model's context (truncate=fail refuses such prompts instead)")
            if self.mask_id not in ids:
                shown = LITERAL_MASK if mask_token == LITERAL_MASK else f"{LITERAL_MASK} or {mask_token}"
                bad.append(BadPrompt(prompt.where, f"the prompt has no mask token to fill (write {shown} where a "
                                                   "word is missing)"))
                continue
            kept.append(prompt)
            ids_list.append(list(ids))
        return kept, ids_list, bad

    def fill(self, prompts: list[Prompt]) -> list[Filled | BadPrompt]:
        import torch

        kept, ids_list, bad = self.encode(prompts)
        out: list[Filled | BadPrompt] = list(bad)
        if not kept:
            return out
        input_ids, mask = right_padded(ids_list, self.tokenizer.pad_token_id)
        with torch.inference_mode(), self.placement.autocast():
            logits = self.model(input_ids=input_ids.to(self.placement.device),
                                attention_mask=mask.to(self.placement.device)).logits
        where = (input_ids == self.mask_id).nonzero().tolist()
        probs = torch.softmax(logits[[r for r, _ in where], [c for _, c in where]].float(), dim=-1)
        k = min(self.top_k, probs.shape[-1])
        scores, token_ids = probs.topk(k, dim=-1)
        per_row: dict[int, list] = {}
        for (row, col), s, t in zip(where, scores.tolist(), token_ids.tolist()):
            candidates = [{"token": self.tokenizer.decode([tid]).strip(), "token_id": tid, "score": round(sc, 6)}
                          for sc, tid in zip(s, t)]
            per_row.setdefault(row, []).append({"position": col, "candidates": candidates})
        for row, prompt in enumerate(kept):
            best = list(ids_list[row])
            for entry in per_row[row]:
                best[entry["position"]] = entry["candidates"][0]["token_id"]
            text = self.tokenizer.decode(best, skip_special_tokens=True)
            out.append(Filled(prompt, text, per_row[row]))
        out.sort(key=lambda r: r.prompt.index if isinstance(r, Filled) else -1)
        return out
