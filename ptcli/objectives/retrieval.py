"""What the contrastive objective measures: the symmetric InfoNCE loss, zero-shot classification and image<->text
recall@k, and the evaluator that streams them (torch-free at import; pre-flight reads the objective's module).

Keys say what matches what: items with the same key are each other's positives. With captions from the data, a key
is the caption's identity (two records with the same caption text share it); with captions built from class names
and templates, it is the class. Recall is over the distinct texts of the evaluated set: its distinct captions, or
every class prompt (each class x each template).
"""

from __future__ import annotations

import math

import numpy as np

from ptcli.objectives.base import Evaluator, LossOutput

LN100 = math.log(100.0)  # CLIP's cap on the learned logit scale (temperature >= 0.01)
KS = (1, 5)


def info_nce(logits_per_image, keys=None):
    """Symmetric InfoNCE over a batch of pairs: (CE(logits_per_image, arange) + CE(logits_per_text, arange)) / 2,
    where ``logits_per_image[i, j]`` scores image i against text j and pair i is (image i, text i).

    ``keys`` (one per pair): off-diagonal pairs with the same key are masked out, neither positives nor negatives
    (two images of one class against one templated caption are no contrast to learn). None: plain CLIP."""
    import torch
    import torch.nn.functional as F

    n = logits_per_image.shape[0]
    target = torch.arange(n, device=logits_per_image.device)
    if keys is not None:
        same = (keys[:, None] == keys[None, :]) & ~torch.eye(n, dtype=torch.bool, device=keys.device)
        logits_per_image = logits_per_image.masked_fill(same, float("-inf"))
    return (F.cross_entropy(logits_per_image, target) + F.cross_entropy(logits_per_image.T, target)) / 2


def recall_at_k(images, image_keys, texts, text_keys, ks=KS, chunk: int = 1024) -> dict:
    """``i2t_r{k}``: the share of images with a text of their own key among their k most similar texts;
    ``t2i_r{k}``: the share of texts with an image of their key among their k most similar images. Embeddings are
    L2-normalised rows (cosine similarity); ties go to the lower index. Computed in chunks of ``chunk`` queries."""
    images, texts = np.asarray(images, dtype=np.float32), np.asarray(texts, dtype=np.float32)
    image_keys, text_keys = np.asarray(image_keys), np.asarray(text_keys)
    out = {}
    for name, queries, query_keys, items, item_keys in (("i2t", images, image_keys, texts, text_keys),
                                                        ("t2i", texts, text_keys, images, image_keys)):
        hits = dict.fromkeys(ks, 0)
        top_k = min(max(ks), len(items))
        for start in range(0, len(queries), chunk):
            similarity = queries[start:start + chunk] @ items.T
            top = np.argsort(-similarity, axis=1, kind="stable")[:, :top_k]
            match = item_keys[top] == query_keys[start:start + chunk, None]
            for k in ks:
                hits[k] += int(match[:, :k].any(axis=1).sum())
        for k in ks:
            out[f"{name}_r{k}"] = hits[k] / max(len(queries), 1)
    return out


def class_embeddings(prompts, n_classes: int):
    """One embedding per class from its prompts (class-major: every template of class 0, then class 1, ...): the
    normalised mean of the normalised prompt embeddings (CLIP's prompt ensembling)."""
    import torch

    prompts = torch.nn.functional.normalize(prompts.float(), dim=-1)
    mean = prompts.reshape(n_classes, -1, prompts.shape[-1]).mean(1)
    return torch.nn.functional.normalize(mean, dim=-1)


def padded_concat(first, second, pad_id: int):
    """Two (ids, mask) pairs of token rows as one, right-padded to the wider of the two."""
    import torch

    (ids_a, mask_a), (ids_b, mask_b) = first, second
    width = max(ids_a.shape[1], ids_b.shape[1])

    def pad(t, value):
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

    return (torch.cat([pad(ids_a, pad_id), pad(ids_b.to(ids_a.device), pad_id)]),
            torch.cat([pad(mask_a, 0), pad(mask_b.to(mask_a.device), 0)]))


class ContrastiveEvaluator(Evaluator):
    """The loss, zero-shot accuracy (counts: each image against every class's prompts, in the same forward pass as
    the batch) and recall@1/5 both ways. Retrieval needs every embedding: the normalised image embeddings
    (N x projection_dim) and those of the distinct texts are kept, and gathered across processes by ``state``/
    ``merge``. With templated captions the texts are the class prompts, the same on every process."""

    def __init__(self, objective):
        super().__init__(objective)
        self.images: list = []  # float32 arrays, one per batch
        self.image_keys: list[int] = []
        self.texts: dict[int, np.ndarray] = {}  # caption key -> embedding (captions from the data)
        self.prompts = None  # class prompts' embeddings (class-major), when the objective has classes
        self.correct = self.classified = 0

    def update(self, model, batch) -> None:
        objective = self.objective
        n = batch["pixel_values"].shape[0]
        ids, mask = batch["input_ids"], batch["attention_mask"]
        prompts = objective.prompt_inputs()
        if prompts is not None:  # the class prompts ride along in the batch's forward pass (FSDP-safe)
            ids, mask = padded_concat((ids, mask), prompts, objective.tokenizer.pad_token_id)
        out = objective.forward(model, batch["pixel_values"], ids, mask)
        keys = batch["keys"]
        self.add_loss(objective.pair_loss(out.logits_per_image[:, :n].float(), keys))
        images, texts = out.image_embeds.float(), out.text_embeds.float()
        if prompts is not None:
            self.prompts = texts[n:].cpu().numpy()
            if "labels" in batch:
                classes = class_embeddings(texts[n:], len(objective.labels))
                predicted = (images @ classes.T).argmax(-1)
                self.correct += int((predicted == batch["labels"]).sum())
                self.classified += n
        self.images.append(images.cpu().numpy())
        self.image_keys += keys.tolist()
        if objective.caption_column:
            for key, embedding in zip(keys.tolist(), texts[:n].cpu().numpy()):
                self.texts.setdefault(key, embedding)

    def state(self) -> dict:
        return super().state() | {"images": self.images, "image_keys": self.image_keys, "texts": self.texts,
                                  "prompts": self.prompts, "correct": self.correct, "classified": self.classified}

    def merge(self, state: dict) -> None:
        super().merge(state)
        self.images += state["images"]
        self.image_keys += state["image_keys"]
        for key, embedding in state["texts"].items():
            self.texts.setdefault(key, embedding)
        if self.prompts is None:
            self.prompts = state["prompts"]
        self.correct += state["correct"]
        self.classified += state["classified"]

    def compute(self) -> dict:
        out = super().compute()
        if self.classified:
            out["zeroshot_accuracy"] = self.correct / self.classified
        if self.objective.caption_column:
            keys = sorted(self.texts)
            texts, text_keys = [self.texts[k] for k in keys], keys
        elif self.prompts is not None:
            classes = len(self.objective.labels)  # class-major prompts: each class's templates in a row
            texts, text_keys = self.prompts, np.repeat(np.arange(classes), len(self.prompts) // classes)
        else:
            texts, text_keys = [], []
        if self.images and len(texts):
            out |= recall_at_k(np.concatenate(self.images), self.image_keys, texts, text_keys)
        return out


def summed(mean, n: int) -> LossOutput:
    """A batch mean as the loop's (sum, count): the mean times the pairs it covers."""
    return LossOutput(mean * n, mean.new_tensor(float(n)))
