"""objective.pooling=mean: the mean of the last layer's tokens reaches BERT's head through one folded block of
ordinary weights, so the saved folder is a plain BertForSequenceClassification."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

from ptcli.errors import PtcliError
from ptcli.models.pooling import fold_mean_pooling, mean_pooling_problem


def tiny_bert(**kw) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, num_labels=3, **kw)
    return BertForSequenceClassification(config).eval()


def pooler_input(model, ids, mask):
    seen = {}
    hook = model.bert.pooler.register_forward_hook(lambda m, args, out: seen.setdefault("x", args[0][:, 0]))
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    hook.remove()
    return seen["x"]


def last_hidden(model, ids, mask):
    with torch.no_grad():
        return model.bert(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_the_head_reads_the_normalised_masked_mean_of_the_last_layer(attn):
    model = tiny_bert(attn_implementation=attn)
    ids = torch.randint(5, 100, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # padded rows: the padding must not enter the mean
    mask[2, 2:] = 0
    before = last_hidden(model, ids, mask)
    assert fold_mean_pooling(model, log=lambda _: None)
    m = mask.unsqueeze(-1).float()
    mean = (before * m).sum(1) / m.sum(1)
    want = torch.nn.functional.layer_norm(mean, (32,))
    got = pooler_input(model, ids, mask)
    torch.testing.assert_close(got, want, atol=2e-3, rtol=0)
    assert not torch.allclose(got, torch.nn.functional.layer_norm(before[:, 0], (32,)), atol=1e-1)  # not [CLS]
    # the padded row's logits do not depend on what the padding holds
    other = ids.clone()
    other[1, 5:] = 7
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits[1],
                                   model(input_ids=other, attention_mask=mask).logits[1])


def test_the_block_is_frozen_without_dropout_and_the_folder_reloads_as_plain_bert(tmp_path):
    model = tiny_bert()
    logs = []
    fold_mean_pooling(model, logs.append)
    block = model.bert.encoder.layer[-1]
    assert model.config.num_hidden_layers == 3 and len(model.bert.encoder.layer) == 3
    assert not any(p.requires_grad for p in block.parameters())
    assert all(p.requires_grad for p in model.bert.encoder.layer[0].parameters())
    assert all(m.p == 0 for m in block.modules() if isinstance(m, torch.nn.Dropout))
    assert "block 3" in logs[0]
    ids, mask = torch.randint(5, 100, (2, 6)), torch.ones(2, 6, dtype=torch.long)
    inside = {id(m) for m in block.modules()}
    for m in model.modules():  # the rest of the model without dropout: what is left is the pooling block's
        if isinstance(m, torch.nn.Dropout) and id(m) not in inside:
            m.p = 0.0
    model.train()  # in training mode the pooled features are the same: no dropout inside the pooling block
    assert torch.equal(pooler_input(model, ids, mask), pooler_input(model.eval(), ids, mask))
    model.save_pretrained(tmp_path)
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(again) is BertForSequenceClassification and again.config.ptcli_pooling == "mean"
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids, attention_mask=mask).logits,
                                   model(input_ids=ids, attention_mask=mask).logits)
    assert not fold_mean_pooling(again, logs.append)  # fine-tuned further: not folded twice
    assert len(again.bert.encoder.layer) == 3 and "already" in logs[-1]


def test_other_architectures_are_refused_with_the_fix():
    assert mean_pooling_problem("bert") is None and mean_pooling_problem(None) is None
    assert "objective.pooling=model" in mean_pooling_problem("gpt2")
    from transformers import GPT2Config, GPT2ForSequenceClassification

    gpt = GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=16))
    with pytest.raises(PtcliError, match="folds mean pooling into a BERT encoder"):
        fold_mean_pooling(gpt, log=lambda _: None)
