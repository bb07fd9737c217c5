"""What ``explain`` computes for one text: token attributions by integrated gradients (captum's
``LayerIntegratedGradients`` on the word embeddings) and by attention rollout, and the attention maps themselves.

Models: a text classifier (the predicted class, or a named one), a token classifier (each token's predicted tag, or
one position) and a causal LM (the next token after the text). F, the function explained, is the target's logit:
integrated gradients' completeness holds in those terms (the attributions sum to F(x) - F(baseline), up to the
reported convergence delta). The baseline keeps the special tokens ([CLS], [SEP], a BOS) and puts the pad (or
[MASK]) token at every other position. Rollout (Abnar & Zuidema 2020): per layer the heads' mean attention plus the
identity (the residual), rows renormalised, multiplied from the first layer up; the row of the token the head reads
(an encoder's first token, a decoder's last, a token classifier's position) is each token's relevance.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ptcli.errors import PtcliError

CLASSIFY, TOKEN, CAUSAL = "classify", "token", "causal"
AUTO_CLASSES = {CLASSIFY: "AutoModelForSequenceClassification", TOKEN: "AutoModelForTokenClassification",
                CAUSAL: "AutoModelForCausalLM"}


class NoTokens(PtcliError):
    """A text that is nothing but special tokens once tokenized: that input is reported, the others go on."""


def explain_kind(config) -> str:
    """classify, token or causal, from the model's config (its architectures); anything else is refused."""
    from ptcli.models.families import shape

    archs = getattr(config, "architectures", None) or []
    model_type = getattr(config, "model_type", None)
    if any(a.endswith("ForSequenceClassification") for a in archs) and shape(model_type) != "audio":
        return CLASSIFY
    if any(a.endswith("ForTokenClassification") for a in archs):
        return TOKEN
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return CAUSAL
    shown = archs[0] if archs else model_type or "unknown"
    raise PtcliError(f"explain needs a text classifier, a token classifier or a causal LM, but the model is a {shown}",
                     fix="Give model.path a `ptcli finetune` run (classification or token_classification) or a "
                         "causal LM (`ptcli pretrain`)")


@dataclass
class Target:
    """One thing explained: a class (of the text, or of the token at ``position``) or the next token."""

    index: int  # the class index, or the next token's id
    label: str
    position: int | None  # the logits' position (None: a sequence classifier's one row)
    probability: float | None
    ig: list | None = None  # per-token attributions (summed over the embedding's hidden dimension)
    delta: float | None = None  # captum's convergence delta: sum(ig) - (F(x) - F(baseline))
    f_x: float | None = None
    f_baseline: float | None = None
    rollout: list | None = None  # per-token relevance (its row of the rollout matrix; sums to 1)

    def record(self) -> dict:
        out = {"label": self.label, "probability": _round(self.probability)}
        if self.position is not None:
            out["position"] = self.position
        out |= {"ig": _round(self.ig), "delta": _round(self.delta, 8), "f_x": _round(self.f_x),
                "f_baseline": _round(self.f_baseline), "rollout": _round(self.rollout)}
        return {k: v for k, v in out.items() if v is not None}


@dataclass
class Explained:
    """One input's explanation: its tokens, what was explained (one target, or one per token for a tagger), the
    attention maps (layers x heads x tokens x tokens, a CPU tensor, or None) and the pictures drawn for it."""

    prompt: object
    tokens: list
    targets: list
    attentions: object = None
    pictures: dict = field(default_factory=dict)
    grid: bytes | None = None  # the attention grid's PNG, for the HTML page

    def record(self, kind: str) -> dict:
        out = {**self.prompt.fields, "input": self.prompt.text, "tokens": self.tokens}
        if kind == TOKEN:
            out["targets"] = [t.record() for t in self.targets]
        else:
            out |= self.targets[0].record()
        return out | ({"pictures": self.pictures} if self.pictures else {})


def _round(value, digits: int = 6):
    if value is None:
        return None
    if isinstance(value, list):
        return [round(float(v), digits) for v in value]
    return round(float(value), digits)


def rollout(attentions):
    """The rollout matrix (tokens x tokens, rows summing to 1) of attentions shaped layers x heads x T x T."""
    import torch

    size = attentions.shape[-1]
    eye = torch.eye(size, dtype=torch.float64)
    joint = eye.clone()
    for layer in attentions.double():
        mixed = layer.mean(0) + eye  # the heads' mean, plus the residual connection
        joint = (mixed / mixed.sum(-1, keepdim=True)) @ joint
    return joint.float()


class Explainer:
    """Integrated gradients and attention rollout for one model (``loaded``: inference.loading.Loaded, its
    attention switched to eager so that attention weights come back)."""

    def __init__(self, loaded, kind: str, method: str = "both", steps: int = 50, baseline: str = "pad",
                 target=None, batch_size: int = 25, log=print):
        self.loaded, self.kind, self.method, self.steps = loaded, kind, method, steps
        self.batch_size, self.target, self.log = batch_size, target, log
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.device = loaded.placement.device
        config = self.model.config
        self.max_len = min(loaded.context or 512, 512)
        self.names = [str(config.id2label.get(i, i)) for i in range(config.num_labels)] if kind != CAUSAL else []
        # kept in the baseline and never attributed or deleted; an unknown word ([UNK]) is part of the text
        self.special = set(self.tokenizer.all_special_ids) - {self.tokenizer.unk_token_id}
        reference = self.tokenizer.mask_token_id if baseline == "mask" else self.tokenizer.pad_token_id
        if reference is None:
            raise PtcliError(f"baseline={baseline}: the tokenizer has no {'[MASK]' if baseline == 'mask' else 'pad'} "
                             "token", fix=f"Use baseline={'pad' if baseline == 'mask' else 'mask'}")
        self.reference = reference
        from ptcli.models.families import ENCODERS

        # the token the head reads: an encoder's first ([CLS]); a decoder's last
        self.reads_first = kind != CAUSAL and getattr(config, "model_type", None) in ENCODERS

    # ---- encoding and forward passes
    def encode(self, text: str) -> list:
        ids = self.tokenizer(text, truncation=True, max_length=self.max_len)["input_ids"]
        if not any(i not in self.special for i in ids):
            raise NoTokens("the text has no tokens besides special ones")
        return list(ids)

    def logits(self, ids, attentions: bool = False):
        import torch

        batch = torch.as_tensor([ids], device=self.device)
        with torch.inference_mode():
            out = self.model(input_ids=batch, attention_mask=torch.ones_like(batch), output_attentions=attentions)
        return out

    def head_row(self, ids: list) -> int:
        return 0 if self.reads_first else len(ids) - 1

    def targets(self, ids: list, logits) -> list:
        """What to explain, from ``target`` (auto: the prediction) and the logits of one input."""
        logits = logits[0].float()
        if self.kind == CLASSIFY:
            probs = logits.softmax(-1)
            index = int(probs.argmax()) if self.target in (None, "auto") else self.label_index(self.target)
            return [Target(index, self.names[index], None, float(probs[index]))]
        if self.kind == CAUSAL:
            probs = logits[-1].softmax(-1)
            index = int(probs.argmax()) if self.target in (None, "auto") else self.token_index(self.target)
            return [Target(index, self.tokenizer.decode([index]), len(ids) - 1, float(probs[index]))]
        probs = logits.softmax(-1)
        if self.target in (None, "auto"):
            positions = [i for i, t in enumerate(ids) if t not in self.special]
        else:
            position = self.target if isinstance(self.target, int) else int(str(self.target)) \
                if str(self.target).lstrip("-").isdigit() else None
            if position is None or not 0 <= position < len(ids):
                raise PtcliError(f"target={self.target}: a token classifier's target is a token position from 0 to "
                                 f"{len(ids) - 1} (the tokens of the JSON output), or auto (each token's tag)")
            positions = [position]
        return [Target(int(probs[p].argmax()), self.names[int(probs[p].argmax())], p, float(probs[p].max()))
                for p in positions]

    def label_index(self, target) -> int:
        if isinstance(target, int) or str(target).isdigit():
            if 0 <= int(target) < len(self.names):
                return int(target)
        elif str(target) in self.names:
            return self.names.index(str(target))
        raise PtcliError(f"target={target} is not one of the model's labels ({', '.join(self.names)}) or an index "
                         f"from 0 to {len(self.names) - 1}", fix="Use target=auto (the predicted class)")

    def token_index(self, target) -> int:
        ids = self.tokenizer(str(target), add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise PtcliError(f"target={target!r} is {len(ids)} tokens; a causal LM's target is one next token",
                             fix="Use target=auto (the most likely next token) or a word that is one token")
        return ids[0]

    # ---- integrated gradients
    def forward(self, input_ids, attention_mask, target: Target):
        """F: the target's logit, for a batch of inputs (captum's interpolated ones among them)."""
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
        if self.kind == CLASSIFY:
            return logits[:, target.index]
        return logits[:, target.position, target.index]

    def baseline(self, ids: list) -> list:
        return [t if t in self.special else self.reference for t in ids]

    def integrated_gradients(self, ids: list, target: Target) -> None:
        """Fill ``target.ig``, ``delta``, ``f_x`` and ``f_baseline``."""
        import torch
        from captum.attr import LayerIntegratedGradients

        inputs = torch.as_tensor([ids], device=self.device)
        reference = torch.as_tensor([self.baseline(ids)], device=self.device)
        mask = torch.ones_like(inputs)
        layer = self.model.get_input_embeddings()  # word embeddings only: positions and token types not attributed
        ig = LayerIntegratedGradients(lambda i, m: self.forward(i, m, target), layer)
        attributions, delta = ig.attribute(inputs, baselines=reference, additional_forward_args=(mask,),
                                           n_steps=self.steps, internal_batch_size=self.batch_size,
                                           return_convergence_delta=True)
        with torch.no_grad():
            target.f_x = float(self.forward(inputs, mask, target)[0])
            target.f_baseline = float(self.forward(reference, mask, target)[0])
        target.ig = attributions.sum(-1)[0].detach().float().cpu().tolist()
        target.delta = float(delta.reshape(-1)[0])

    # ---- one input
    def explain(self, prompt) -> Explained:
        ids = self.encode(prompt.text)
        out = self.logits(ids, attentions=True)
        attentions = out.attentions
        if attentions is None or any(a is None for a in attentions):
            raise PtcliError("the model returned no attention weights (its attention is not eager)",
                             fix="Use a model whose attention transformers can switch to eager")
        import torch

        stacked = torch.stack([a[0].float().cpu() for a in attentions])  # layers x heads x T x T
        targets = self.targets(ids, out.logits)
        matrix = rollout(stacked) if self.method in ("rollout", "both") else None
        for target in targets:
            if self.method in ("ig", "both"):
                self.integrated_gradients(ids, target)
            if matrix is not None:
                row = target.position if self.kind == TOKEN else self.head_row(ids)
                target.rollout = matrix[row].tolist()
        tokens = self.tokenizer.convert_ids_to_tokens(ids)
        return Explained(prompt, [str(t) for t in tokens], targets, stacked)

    # ---- the deletion check
    def probability(self, ids: list, index: int) -> float:
        return float(self.logits(ids).logits[0].float().softmax(-1)[index])


def deletion_check(explainer: Explainer, texts: list, k: int = 3, seed: int = 0) -> dict:
    """How often deleting the ``k`` tokens with the highest attribution lowers the predicted class's probability
    more than deleting ``k`` random tokens (special tokens are never deleted; texts of ``k`` tokens or fewer are
    skipped, as are texts of special tokens only). A text classifier's check, on integrated gradients."""
    if explainer.kind != CLASSIFY:
        raise PtcliError("the deletion check needs a text classifier")
    rng = random.Random(seed)
    wins = counted = skipped = 0
    drops_top, drops_random = [], []
    for text in texts:
        try:
            ids = explainer.encode(text)
        except NoTokens:
            skipped += 1
            continue
        content = [i for i, t in enumerate(ids) if t not in explainer.special]
        if len(content) <= k:
            skipped += 1
            continue
        target = explainer.targets(ids, explainer.logits(ids).logits)[0]
        explainer.integrated_gradients(ids, target)
        top = set(sorted(content, key=lambda i: target.ig[i], reverse=True)[:k])
        chosen = set(rng.sample(content, k))
        p_top = explainer.probability([t for i, t in enumerate(ids) if i not in top], target.index)
        p_random = explainer.probability([t for i, t in enumerate(ids) if i not in chosen], target.index)
        drops_top.append(target.probability - p_top)
        drops_random.append(target.probability - p_random)
        wins += p_top < p_random
        counted += 1
    return {"fraction": wins / counted if counted else None, "counted": counted, "skipped": skipped, "k": k,
            "mean_drop_top": sum(drops_top) / counted if counted else None,
            "mean_drop_random": sum(drops_random) / counted if counted else None}
