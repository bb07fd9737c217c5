"""Every labelled objective's loss equals a manual computation from the model's outputs: a (sum, count) pair whose
ratio is the mean the textbook formula gives."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
F = torch.nn.functional

from ptcli.objectives.classification import SequenceClassification  # noqa: E402
from ptcli.objectives.denoising import Denoising  # noqa: E402
from ptcli.objectives.image_classification import ImageClassification  # noqa: E402
from ptcli.objectives.seq2seq import Seq2Seq  # noqa: E402
from ptcli.objectives.sft import SFT  # noqa: E402
from ptcli.objectives.span_corruption import SpanCorruption  # noqa: E402
from ptcli.objectives.token_classification import TokenClassification  # noqa: E402

GEN = torch.Generator().manual_seed(0)


def ids(rows=3, length=10, vocab=50):
    return torch.randint(1, vocab, (rows, length), generator=GEN)


def bert(cls, **kwargs):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                     **kwargs)
    return cls(config).eval()


def test_classification_is_the_summed_cross_entropy():
    model = bert(transformers.BertForSequenceClassification, num_labels=3)
    batch = {"input_ids": ids(), "attention_mask": torch.ones(3, 10, dtype=torch.long),
             "labels": torch.tensor([0, 2, 1])}
    out = SequenceClassification().loss(model, batch)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert out.count.item() == 3
    assert out.sum.item() == pytest.approx(F.cross_entropy(logits, batch["labels"], reduction="sum").item(), rel=1e-6)


def test_regression_is_the_summed_squared_error():
    model = bert(transformers.BertForSequenceClassification, num_labels=1)
    batch = {"input_ids": ids(), "attention_mask": torch.ones(3, 10, dtype=torch.long),
             "labels": torch.tensor([0.5, -1.0, 2.0])}
    out = SequenceClassification(num_labels=1).loss(model, batch)
    predictions = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
    assert out.count.item() == 3
    assert out.sum.item() == pytest.approx(((predictions - batch["labels"]) ** 2).sum().item(), rel=1e-6)


def test_token_classification_counts_only_labelled_pieces():
    model = bert(transformers.BertForTokenClassification, num_labels=4)
    labels = torch.randint(0, 4, (3, 10), generator=GEN)
    labels[:, 0] = labels[:, -1] = -100  # [CLS], [SEP]
    labels[0, 3:5] = -100  # continuation pieces
    batch = {"input_ids": ids(), "attention_mask": torch.ones(3, 10, dtype=torch.long), "labels": labels}
    out = TokenClassification().loss(model, batch)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    keep = labels != -100
    assert out.count.item() == int(keep.sum())
    assert out.sum.item() == pytest.approx(F.cross_entropy(logits[keep], labels[keep], reduction="sum").item(),
                                           rel=1e-6)


def test_seq2seq_is_the_cross_entropy_of_the_shifted_decoder():
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=50, d_model=16, d_ff=32, d_kv=8, num_layers=1, num_heads=2, dropout_rate=0.0,
        decoder_start_token_id=0, pad_token_id=0)).eval()
    labels = ids(3, 6)
    labels[1, 4:] = -100
    batch = {"input_ids": ids(), "attention_mask": torch.ones(3, 10, dtype=torch.long), "labels": labels}
    out = Seq2Seq().loss(model, batch)
    reference = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
    assert out.count.item() == int((labels != -100).sum())
    assert (out.sum / out.count).item() == pytest.approx(reference.item(), rel=1e-5)


@pytest.mark.parametrize(("cls", "arch"), [(SpanCorruption, "t5"), (Denoising, "bart")])
def test_denoising_objectives_are_the_cross_entropy_of_the_targets(cls, arch):
    """Targets padded with -100 are left out; the decoder reads the targets shifted right from its start token."""
    torch.manual_seed(0)
    if arch == "t5":
        model = transformers.T5ForConditionalGeneration(transformers.T5Config(
            vocab_size=50, d_model=16, d_ff=32, d_kv=8, num_layers=1, num_heads=2, dropout_rate=0.0,
            decoder_start_token_id=1, pad_token_id=1, eos_token_id=0))
    else:
        model = transformers.BartForConditionalGeneration(transformers.BartConfig(
            vocab_size=50, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32,
            dropout=0.0, pad_token_id=1, eos_token_id=0, bos_token_id=0, decoder_start_token_id=0))
    model.eval()
    labels = ids(3, 7)
    labels[2, 5:] = -100
    attention = torch.ones(3, 10, dtype=torch.long)
    attention[1, 8:] = 0
    batch = {"input_ids": ids(), "attention_mask": attention, "labels": labels}
    out = cls().loss(model, batch)
    start = model.config.decoder_start_token_id
    decoder_inputs = torch.cat([torch.full((3, 1), start), labels[:, :-1]], dim=1).masked_fill(
        torch.cat([torch.zeros(3, 1, dtype=torch.bool), labels[:, :-1] == -100], dim=1), 1)
    logits = model(input_ids=batch["input_ids"], attention_mask=attention, decoder_input_ids=decoder_inputs).logits
    keep = labels != -100
    manual = F.cross_entropy(logits[keep], labels[keep], reduction="sum")
    assert out.count.item() == int(keep.sum())
    assert out.sum.item() == pytest.approx(manual.item(), rel=1e-5)


def test_sft_predicts_each_response_token_from_the_one_before():
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=1, n_head=2, n_embd=16, n_positions=16, vocab_size=50, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0)).eval()
    input_ids = ids(2, 12)
    labels = input_ids.clone()
    labels[:, :5] = -100  # the prompt
    batch = {"input_ids": input_ids, "attention_mask": torch.ones(2, 12, dtype=torch.long), "labels": labels}
    out = SFT().loss(model, batch)
    logits = model(input_ids=input_ids).logits[:, :-1]
    targets = labels[:, 1:]
    keep = targets != -100
    assert out.count.item() == int(keep.sum()) == 2 * 7
    assert out.sum.item() == pytest.approx(F.cross_entropy(logits[keep], targets[keep], reduction="sum").item(),
                                           rel=1e-5)


def test_image_classification_is_the_summed_cross_entropy():
    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(transformers.ViTConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=8,
        patch_size=4, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)).eval()
    batch = {"pixel_values": torch.randn(4, 3, 8, 8, generator=GEN), "labels": torch.tensor([0, 1, 2, 1])}
    out = ImageClassification().loss(model, batch)
    logits = model(pixel_values=batch["pixel_values"]).logits
    assert out.count.item() == 4
    assert out.sum.item() == pytest.approx(F.cross_entropy(logits, batch["labels"], reduction="sum").item(), rel=1e-6)
