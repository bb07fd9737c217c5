"""Adversarial attacks on a text classifier, for ``ptcli evaluate +attack=chars|hotflip|bae``.

Built in, because TextAttack cannot be installed here in reasonable time and downloads NLTK data and embeddings at
run time. Every attack is TextAttack's greedy search over word importance ("greedy-WIR"): words are ranked by how
much the true label's probability drops when the word is deleted (``importance=loo``) or by the gradient's norm on
the word's embeddings (``importance=gradient``); then, most important first, each word is replaced by the candidate
that lowers that probability most, until the prediction changes or ``max_fraction`` of the words are changed.

- ``chars`` (DeepWordBug, Gao et al. 2018): one character edit per word: swap two neighbours, delete, insert or
  substitute a letter, at random positions (seeded per example and word, so a run repeats exactly);
- ``hotflip`` (Ebrahimi et al. 2018): word swaps within the model's own vocabulary, ranked by the first-order change
  of the loss ``(e_v - e_w) . dL/de_w`` and then checked by a forward pass;
- ``bae`` (BAE-R, Garg & Ramakrishnan 2020): the word is masked and a masked LM (``attack.mlm``) proposes
  replacements.

The gold label is never touched: an attack succeeds when the model's prediction leaves it. Word swaps skip stop
words; the sentence-encoder and embedding-distance constraints TextAttack adds are not applied, so success rates of
hotflip and bae are an upper bound (a swap may change what the sentence means).

The metrics are TextAttack's: clean accuracy, accuracy under attack, attack success rate (of the examples the model
got right), the mean fraction of words perturbed (over successful attacks) and queries per example.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from ptcli.errors import PtcliError

STOP_WORDS = frozenset(
    "a an and are as at be been but by for from had has have he her his i if in into is it its me my no nor not of on "
    "or our she so than that the their them then there these they this those to too very was we were what when which "
    "who will with you your 's n't".split())
LETTERS = "abcdefghijklmnopqrstuvwxyz"
WORD = re.compile(r"[A-Za-z]+")


def words_of(text: str) -> list[str]:
    return text.split()


def char_edits(word: str, count: int, rng: random.Random) -> list[str]:
    """Up to ``count`` distinct one-edit variants of ``word``'s letters (swap, delete, insert, substitute in turn)."""
    match = WORD.search(word)
    if match is None or len(match.group()) < 2:
        return []
    start, core = match.start(), match.group()
    seen, out = {core}, []
    for attempt in range(count * 6):
        kind, n = attempt % 4, len(core)
        i = rng.randrange(n)
        if kind == 0 and n >= 2:  # swap a neighbouring pair
            i = rng.randrange(n - 1)
            new = core[:i] + core[i + 1] + core[i] + core[i + 2:]
        elif kind == 1 and n >= 3:  # delete one letter
            new = core[:i] + core[i + 1:]
        elif kind == 2:  # insert one letter
            new = core[:i] + rng.choice(LETTERS) + core[i:]
        else:  # substitute one letter
            new = core[:i] + rng.choice(LETTERS.replace(core[i].lower(), "")) + core[i + 1:]
        if new not in seen:
            seen.add(new)
            out.append(word[:start] + new + word[start + len(core):])
            if len(out) == count:
                break
    return out


@dataclass
class Outcome:
    """One attacked example, as attacks.jsonl writes it."""

    index: int
    text: str
    label: int
    prediction: int
    attacked: str | None = None
    attacked_prediction: int | None = None
    result: str = "skipped"  # skipped (the clean prediction was already wrong), success, failed
    changed: list = field(default_factory=list)  # (position, original word, new word)
    words: int = 0
    queries: int = 0

    def record(self, names: list[str]) -> dict:
        return {"index": self.index, "result": self.result, "label": names[self.label],
                "prediction": names[self.prediction], "text": self.text, "attacked": self.attacked,
                "attacked_prediction": None if self.attacked_prediction is None else names[self.attacked_prediction],
                "changed": [{"position": i, "from": a, "to": b} for i, a, b in self.changed],
                "perturbed_fraction": round(len(self.changed) / max(self.words, 1), 4), "queries": self.queries}


class Victim:
    """The classifier under attack: class probabilities for batches of texts (counted as queries), and the gradient
    of the true label's loss on each word's input embeddings."""

    def __init__(self, model, tokenizer, device, batch_size: int, max_len: int):
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.batch_size, self.max_len, self.queries = batch_size, max_len, 0

    def encode(self, texts: list[str]):
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_len, return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    def probs(self, texts: list[str]):
        import torch

        self.queries += len(texts)
        out = []
        with torch.inference_mode():
            for s in range(0, len(texts), self.batch_size):
                out.append(self.model(**self.encode(texts[s:s + self.batch_size])).logits.float().softmax(-1).cpu())
        return torch.cat(out)

    def word_gradients(self, words: list[str], label: int):
        """(pieces' input embeddings' gradients of the label's loss, the word index of each piece), for one text."""
        import torch
        import torch.nn.functional as F

        enc = self.tokenizer(words, is_split_into_words=True, truncation=True, max_length=self.max_len,
                             return_tensors="pt")
        word_ids = enc.word_ids(0)
        inputs = {k: v.to(self.device) for k, v in enc.items() if k in ("attention_mask", "token_type_ids")}
        embeds = self.model.get_input_embeddings()(enc["input_ids"].to(self.device)).detach().requires_grad_()
        with torch.enable_grad():
            logits = self.model(inputs_embeds=embeds, **inputs).logits.float()
            loss = F.cross_entropy(logits, torch.tensor([label], device=self.device))
            grad, = torch.autograd.grad(loss, embeds)
        self.queries += 1
        return grad[0], enc["input_ids"][0], word_ids


class Attack:
    """The greedy word-importance search, with a transformation that proposes replacements for one word."""

    def __init__(self, settings, victim: Victim, mlm=None, seed: int = 0):
        self.settings, self.victim, self.mlm, self.seed = settings, victim, mlm, seed
        self.method = settings.method
        if self.method == "hotflip":
            self.swappable = whole_word_ids(victim.tokenizer, victim.model.get_input_embeddings().weight.shape[0])
        if self.method == "bae":
            if mlm is None:
                raise PtcliError("attack=bae needs a masked LM to propose words", where="attack.mlm",
                                 fix="Set attack.mlm=<a masked LM: a ptcli pretrain +objective=mlm run, a model "
                                     "folder or a Hub name>")
            self.mlm_swappable = whole_word_ids(mlm[1], mlm[0].get_output_embeddings().weight.shape[0])

    # ---- importance
    def ranking(self, words: list[str], label: int, p_label: float) -> list[int]:
        if self.settings.importance == "gradient":
            grad, _, word_ids = self.victim.word_gradients(words, label)
            scores = [0.0] * len(words)
            for piece, w in enumerate(word_ids):
                if w is not None:
                    scores[w] += float(grad[piece].norm())
        else:
            deleted = [" ".join(words[:i] + words[i + 1:]) for i in range(len(words))]
            drops = self.victim.probs(deleted)[:, label] if len(words) > 1 else [p_label]
            scores = [p_label - float(d) for d in drops]
        return sorted(range(len(words)), key=lambda i: (-scores[i], i))

    # ---- transformations
    def candidates(self, words: list[str], i: int, label: int, index: int) -> list[str]:
        word, k = words[i], self.settings.candidates
        if self.method == "chars":
            return char_edits(word, k, random.Random(f"{self.seed}:{index}:{i}"))
        if word.lower() in STOP_WORDS or WORD.fullmatch(word) is None:
            return []
        if self.method == "hotflip":
            return self.hotflip(words, i, label, k)
        return self.bae(words, i, k)

    def hotflip(self, words, i, label, k) -> list[str]:
        import torch

        grad, ids, word_ids = self.victim.word_gradients(words, label)
        pieces = [p for p, w in enumerate(word_ids) if w == i]
        if not pieces:
            return []
        table = self.victim.model.get_input_embeddings().weight.detach()
        g = grad[pieces].mean(0)
        current = table[ids[pieces]].mean(0)
        scores = (table - current) @ g  # first-order increase of the loss when the word becomes token v
        scores[~self.swappable.to(scores.device)] = -torch.inf
        scores[ids[pieces].to(scores.device)] = -torch.inf
        tokens = self.victim.tokenizer.convert_ids_to_tokens(scores.topk(k).indices.tolist())
        return [t for t in tokens if t.lower() != words[i].lower()]

    def bae(self, words, i, k) -> list[str]:
        import torch

        model, tokenizer = self.mlm
        masked = " ".join(words[:i] + [tokenizer.mask_token] + words[i + 1:])
        enc = tokenizer(masked, truncation=True, max_length=self.victim.max_len, return_tensors="pt")
        where = (enc["input_ids"][0] == tokenizer.mask_token_id).nonzero()
        if not len(where):
            return []
        device = next(model.parameters()).device
        with torch.inference_mode():
            logits = model(**{k_: v.to(device) for k_, v in enc.items()
                              if k_ in ("input_ids", "attention_mask", "token_type_ids")}).logits[0, where[0, 0]]
            logits = logits.float().masked_fill(~self.mlm_swappable.to(logits.device), -torch.inf)
        tokens = tokenizer.convert_ids_to_tokens(logits.topk(k + 1).indices.tolist())
        return [t for t in tokens if t.lower() != words[i].lower()][:k]

    # ---- the search
    def run(self, index: int, text: str, label: int) -> Outcome:
        words = words_of(text)
        before = self.victim.queries
        probs = self.victim.probs([" ".join(words)])[0]
        outcome = Outcome(index, text, label, int(probs.argmax()), words=len(words))
        if outcome.prediction != label or not words:
            outcome.queries = self.victim.queries - before
            return outcome
        budget = max(1, int(self.settings.max_fraction * len(words)))
        current, p = list(words), float(probs[label])
        prediction = label
        for i in self.ranking(current, label, p):
            if len(outcome.changed) >= budget:
                break
            options = self.candidates(current, i, label, index)
            if not options:
                continue
            texts = [" ".join(current[:i] + [c] + current[i + 1:]) for c in options]
            scored = self.victim.probs(texts)
            best = int(scored[:, label].argmin())
            if float(scored[best, label]) >= p:
                continue
            outcome.changed.append((i, words[i], options[best]))
            current[i], p = options[best], float(scored[best, label])
            prediction = int(scored[best].argmax())
            if prediction != label:
                break
        outcome.attacked, outcome.attacked_prediction = " ".join(current), prediction
        outcome.result = "success" if prediction != label else "failed"
        outcome.queries = self.victim.queries - before
        return outcome


def whole_word_ids(tokenizer, size: int):
    """A boolean mask over the model's ``size`` token ids: tokens that are a whole alphabetic word of 2+ letters (no
    subword pieces, no special tokens or stop words, none past the tokenizer's vocabulary): what word swaps may put
    in a sentence."""
    import torch

    tokens = tokenizer.convert_ids_to_tokens(list(range(min(len(tokenizer), size))))
    special = set(tokenizer.all_special_ids)
    mask = torch.zeros(size, dtype=torch.bool)
    mask[:len(tokens)] = torch.tensor([i not in special and t is not None and t.isalpha() and len(t) >= 2
                                       and t.lower() == t and t not in STOP_WORDS for i, t in enumerate(tokens)])
    return mask


def summarize(outcomes: list[Outcome]) -> dict:
    """TextAttack's metrics over the attacked examples."""
    n = len(outcomes)
    success = [o for o in outcomes if o.result == "success"]
    attacked = [o for o in outcomes if o.result != "skipped"]
    return {"examples": n,
            "clean_accuracy": round(len(attacked) / max(n, 1), 4),
            "attacked_accuracy": round(sum(o.result == "failed" for o in outcomes) / max(n, 1), 4),
            "attack_success_rate": round(len(success) / max(len(attacked), 1), 4),
            "perturbed_word_fraction": round(sum(len(o.changed) / max(o.words, 1) for o in success)
                                             / max(len(success), 1), 4),
            "queries_per_example": round(sum(o.queries for o in outcomes) / max(n, 1), 1)}
