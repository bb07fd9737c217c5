"""Distillation: the loss equals (1 - alpha) CE + alpha T^2 KL (+ the cosine term) computed by hand, on the targets the
task scores (examples, labelled tokens, shifted for causal LMs); teachers with other tokens or labels are refused;
a student made of every other teacher layer runs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import torch.nn.functional as F  # noqa: E402

from ptcli.errors import PtcliError  # noqa: E402
from ptcli.objectives.classification import SequenceClassification  # noqa: E402
from ptcli.objectives.clm import CausalLM  # noqa: E402
from ptcli.objectives.distill import distilled, keep_every_other_layer  # noqa: E402
from ptcli.objectives.labels import LabelMap  # noqa: E402

VOCAB = 50


def settings(**over):
    return SimpleNamespace(**({"teacher": "unused", "temperature": 2.0, "alpha": 0.3, "hidden_weight": 0.0,
                               "init_from_teacher": False} | over))


def bert(seed, hidden=32, layers=2, labels=3):
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=32,
                                     num_labels=labels)
    return transformers.BertForSequenceClassification(config).eval()


def llama(seed, layers=2):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=layers,
                                      num_attention_heads=2, intermediate_size=64, max_position_embeddings=32)
    return transformers.LlamaForCausalLM(config).eval()


def batch(rows=4, length=10, seed=0, labels=3):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(rows, length, dtype=torch.long)
    mask[0, 7:] = 0  # a padded row
    return {"input_ids": torch.randint(1, VOCAB, (rows, length), generator=g), "attention_mask": mask,
            "labels": torch.randint(0, labels, (rows,), generator=g)}


def kl(student, teacher, T):
    return F.kl_div(F.log_softmax(student / T, -1), F.softmax(teacher / T, -1), reduction="sum")


def test_classification_loss_is_the_weighted_sum_of_task_and_soft_terms():
    student, teacher = bert(0), bert(1)
    objective = distilled(SequenceClassification(num_labels=3), settings(alpha=0.3, temperature=2.0))
    objective.helpers = {"teacher": teacher}
    b = batch()
    out = objective.loss(student, b)
    inputs = {k: v for k, v in b.items() if k != "labels"}
    s, t = student(**inputs).logits, teacher(**inputs).logits
    ce = F.cross_entropy(s, b["labels"], reduction="sum")
    expected = 0.7 * ce + 0.3 * 4.0 * kl(s, t, 2.0)
    assert torch.allclose(out.sum, expected, atol=1e-5)
    assert int(out.count) == 4
    assert torch.allclose(out.logs["task_loss"][0], ce, atol=1e-5)
    assert torch.allclose(out.logs["kd_loss"][0], kl(s, t, 2.0), atol=1e-5)


def test_the_soft_term_is_zero_against_itself_and_gradients_reach_the_student_only():
    student = bert(0)
    objective = distilled(SequenceClassification(num_labels=3), settings(alpha=1.0))
    objective.helpers = {"teacher": bert(0).requires_grad_(False)}
    out = objective.loss(student.train(), batch())
    assert float(out.logs["kd_loss"][0]) < 1e-3 or student.training  # dropout on: only close
    out.sum.backward()
    assert all(p.grad is not None for p in student.classifier.parameters())
    assert all(p.grad is None for p in objective.helpers["teacher"].parameters())


def test_causal_lm_distils_every_predicted_token_shifted_by_one():
    student, teacher = llama(0), llama(1)
    objective = distilled(CausalLM(), settings(alpha=0.5, temperature=1.5))
    objective.helpers = {"teacher": teacher}
    ids = torch.randint(1, VOCAB, (2, 12), generator=torch.Generator().manual_seed(3))
    out = objective.loss(student, {"input_ids": ids})
    s, t = student(input_ids=ids).logits[:, :-1], teacher(input_ids=ids).logits[:, :-1]
    ce = F.cross_entropy(s.reshape(-1, VOCAB), ids[:, 1:].reshape(-1), reduction="sum")
    soft = kl(s.reshape(-1, VOCAB), t.reshape(-1, VOCAB), 1.5)
    assert int(out.count) == 2 * 11
    assert torch.allclose(out.sum, 0.5 * ce + 0.5 * 1.5 ** 2 * soft, atol=1e-4)


def test_the_hidden_state_term_is_one_minus_cosine_per_attended_token():
    student, teacher = bert(0), bert(1)
    objective = distilled(SequenceClassification(num_labels=3), settings(alpha=0.0, hidden_weight=2.0))
    objective.helpers = {"teacher": teacher}
    b = batch()
    out = objective.loss(student, b)
    inputs = {k: v for k, v in b.items() if k != "labels"}
    hs = student(**inputs, output_hidden_states=True).hidden_states[-1]
    ht = teacher(**inputs, output_hidden_states=True).hidden_states[-1]
    cos = (1 - F.cosine_similarity(hs, ht, dim=-1))[b["attention_mask"].bool()].mean() * 4
    ce = F.cross_entropy(student(**inputs).logits, b["labels"], reduction="sum")
    assert torch.allclose(out.logs["hidden_loss"][0], cos, atol=1e-5)
    assert torch.allclose(out.sum, ce + 2.0 * cos, atol=1e-4)


def test_a_teacher_of_another_width_cannot_give_hidden_states_to_compare():
    objective = distilled(SequenceClassification(num_labels=3), settings(hidden_weight=1.0))
    objective.helpers = {"teacher": bert(1, hidden=48)}
    with pytest.raises(PtcliError, match="wide"):
        objective.loss(bert(0), batch())


class Tokens:
    def __init__(self, tokens):
        self.tokens = tokens

    def __len__(self):
        return len(self.tokens)

    def convert_ids_to_tokens(self, ids):
        return [self.tokens[i] for i in ids]


def test_other_token_strings_are_refused_and_an_extended_vocabulary_is_cut(monkeypatch):
    import ptcli.processing.loading as loading

    teacher = Tokens(["[PAD]", "a", "b", "c"])
    monkeypatch.setattr(loading, "load_tokenizer", lambda path: teacher)
    objective = distilled(CausalLM(), settings())
    with pytest.raises(PtcliError, match="token id 2 is 'x'") as refused:
        objective._check_vocab(Tokens(["[PAD]", "a", "x", "c"]), print)
    assert "tokenizer.path=unused" in refused.value.fix
    said = []
    assert objective._check_vocab(Tokens(["[PAD]", "a", "b", "c", "d", "e"]), said.append) == 4
    assert "first 4 are the same" in said[0]
    assert objective._check_vocab(Tokens(["[PAD]", "a", "b", "c"]), said.append) is None


def test_the_soft_targets_use_only_the_shared_ids():
    objective = distilled(CausalLM(), settings(temperature=1.0))
    objective.shared_vocab = 4
    ids = torch.tensor([[1, 2, 3]])
    s, t = torch.randn(1, 3, 6), torch.randn(1, 3, 5)
    expected = kl(s[0, :2, :4], t[0, :2, :4], 1.0)
    assert torch.allclose(objective.soft_sum(s, t, {"input_ids": ids}), expected, atol=1e-5)


def test_a_teacher_with_other_labels_is_refused():
    objective = distilled(SequenceClassification(), settings())
    objective.labels = LabelMap(["neg", "pos"])
    config = SimpleNamespace(id2label={0: "pos", 1: "neg"})
    with pytest.raises(PtcliError, match="labels"):
        objective._check_labels(config)
    objective._check_labels(SimpleNamespace(id2label={0: "neg", 1: "pos"}))


@pytest.mark.parametrize("make", [lambda: bert(0, layers=5), lambda: llama(0, layers=5)])
def test_every_other_layer_makes_a_working_half_depth_student(make, tmp_path):
    model = make()
    assert keep_every_other_layer(model) == [0, 2, 4]
    assert model.config.num_hidden_layers == 3
    ids = torch.randint(1, VOCAB, (2, 8))
    before = model(input_ids=ids).logits
    model.save_pretrained(tmp_path)
    again = type(model).from_pretrained(tmp_path).eval()
    assert torch.allclose(again(input_ids=ids).logits, before, atol=1e-5)


def test_a_causal_lm_distils_chunked_as_the_plain_path_does_without_either_models_full_logits():
    """chunked_loss (the default): the same loss, logged terms and student gradients as the plain path, and neither
    model is asked for more than its last position's logits."""
    student, teacher = llama(0), llama(1)
    ids = torch.randint(1, VOCAB, (2, 12), generator=torch.Generator().manual_seed(5))
    results = {}
    for chunked in (True, False):
        student.zero_grad()
        objective = distilled(CausalLM(chunked_loss=chunked), settings(alpha=0.4, temperature=2.0))
        objective.helpers = {"teacher": teacher}
        widths = []
        hooks = [m.register_forward_hook(lambda mod, a, out, seen=widths: seen.append(out.logits.shape[1]))
                 for m in (student, teacher)]
        out = objective.loss(student, {"input_ids": ids})
        for hook in hooks:
            hook.remove()
        out.sum.backward()
        results[chunked] = (out, [p.grad.clone() for p in student.parameters()], widths)
    (fast, fast_grads, fast_widths), (plain, plain_grads, plain_widths) = results[True], results[False]
    assert fast_widths == [1, 1] and plain_widths == [12, 12]
    assert abs(fast.sum.item() - plain.sum.item()) <= 1e-6 * abs(plain.sum.item())
    assert int(fast.count) == int(plain.count) == 22
    for key in ("task_loss", "kd_loss"):
        assert fast.logs[key][0].item() == pytest.approx(plain.logs[key][0].item(), rel=1e-5)
    for mine, want in zip(fast_grads, plain_grads):
        torch.testing.assert_close(mine, want, rtol=1e-4, atol=1e-6)
