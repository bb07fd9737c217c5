"""Mean pooling for a BERT classifier, folded into the model as one more encoder block of ordinary weights.

Sentence encoders (all-MiniLM, all-mpnet, GTE, ...) are trained on the mean of their last layer's tokens, and their
[CLS] position carries much less of a sentence: a linear probe on all-MiniLM-L6-v2 reads SST-2 at 0.84 from the
mean and 0.79 from BERT's [CLS] pooler (docs/results.md). BERT's heads only ever read position 0, so the mean has to
reach position 0 inside the encoder for the saved folder to stay a plain ``BertForSequenceClassification`` that
transformers, its pipelines and every ptcli verb load without ptcli.

The extra block does exactly that with standard BERT weights: queries and keys are zero, so every position attends
uniformly to the unmasked tokens (padding is masked as always); values are the identity, so each position receives
the mean ``m``; the attention's output projection scales it by ``SCALE``, so its LayerNorm sees ``SCALE * m + h``
and returns LayerNorm(m) to within ``|h| / (SCALE |m|)`` (about 1e-4); the feed-forward weights are zero, so the
second LayerNorm passes that through. BERT's pooler then starts as tanh(x / 2) (the [CLS]-trained dense layer means
nothing for a mean), which passes the normalised mean almost unchanged to the classifier. The block is frozen and its
dropout off while ptcli trains: it is a pooling operation, not a layer to learn. ``config.ptcli_pooling`` records it,
so a model that already has it (a run fine-tuned further) is not folded twice.
"""

from __future__ import annotations

import copy

from ptcli.errors import PtcliError

SCALE = 1e4
# model types whose classifier reads position 0 through BERT's block layout (attention.self.query/key/value,
# attention.output.dense/LayerNorm, intermediate.dense, output.dense/LayerNorm) and a BertPooler
MEAN_POOLING_TYPES = ("bert",)


def mean_pooling_problem(model_type: str | None) -> str | None:
    """Why ``objective.pooling=mean`` cannot be used with this model type (None: it can, or the type is unknown)."""
    if model_type is None or model_type in MEAN_POOLING_TYPES:
        return None
    return (f"objective.pooling=mean folds mean pooling into a BERT encoder, but the model is '{model_type}'; "
            "use model=minilm, bert-tiny or another BERT model.path, or objective.pooling=model")


def fold_mean_pooling(model, log) -> bool:
    """Append the mean-pooling block to ``model`` (a ``BertForSequenceClassification``) in place; False when it
    already has one."""
    import torch

    config = model.config
    if getattr(config, "ptcli_pooling", None) == "mean":
        log("pooling: mean (already folded into this model)")
        return False
    problem = mean_pooling_problem(config.model_type)
    base = getattr(model, "base_model", None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    pooler = getattr(base, "pooler", None)
    if problem or layers is None or pooler is None:
        raise PtcliError(problem or "objective.pooling=mean needs a BERT encoder with a pooler (add_pooling_layer)",
                         fix="use objective.pooling=model, or a BERT model such as model=minilm")
    block = copy.deepcopy(layers[-1])
    width = config.hidden_size
    eye = torch.eye(width, dtype=block.attention.self.value.weight.dtype)
    with torch.no_grad():
        for param in block.parameters():
            param.zero_()
        block.attention.self.value.weight.copy_(eye)
        block.attention.output.dense.weight.copy_(SCALE * eye)
        for norm in (block.attention.output.LayerNorm, block.output.LayerNorm):
            norm.weight.fill_(1.0)
        pooler.dense.weight.copy_(0.5 * eye)
        pooler.dense.bias.zero_()
    for module in block.modules():  # a pooling operation: no token or feature dropout inside it
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    block.requires_grad_(False)
    layers.append(block)
    config.num_hidden_layers = len(layers)
    config.ptcli_pooling = "mean"
    log(f"pooling: mean of the last layer's tokens, folded in as encoder block {len(layers)} (frozen)")
    return True
