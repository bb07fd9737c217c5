"""The denoising objectives (T5 span corruption, BART denoising): the length arithmetic, the noise's statistics over
10,000 blocks, collation as a pure function of the step's generator, fixed validation noise, and the settings'
pre-flight checks."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from ptcli.data.loader import step_generator  # noqa: E402
from ptcli.errors import PtcliError  # noqa: E402
from ptcli.objectives.denoising import Denoising, infill, permute_sentences  # noqa: E402
from ptcli.objectives.noising import add_special_tokens  # noqa: E402
from ptcli.objectives.span_corruption import SpanCorruption, input_and_target_lengths, lengths_of  # noqa: E402

TEXT = ["The cat sat on the mat. A dog ran to the park! Was it raining? The sun came out.",
        "Once upon a time, there was a little bird. It sang every day."] * 40


@pytest.fixture(scope="module")
def bpe():
    from ptcli.processing.tokenizers import train_tokenizer

    return train_tokenizer(TEXT, "bpe", 400)


def objective(cls, tokenizer, **settings):
    obj = cls(**settings)
    add_special_tokens(tokenizer, obj.special_tokens())
    obj.bind(tokenizer)
    return obj


def regular_blocks(rows, length, vocab=250, seed=0):
    return torch.randint(2, vocab, (rows, length), generator=torch.Generator().manual_seed(seed))


# ---- span corruption
def test_lengths_follow_t5s_random_spans_helper():
    assert input_and_target_lengths(512, 0.15, 3.0) == (568, 114)
    assert input_and_target_lengths(128, 0.15, 3.0)[0] > 128
    for seq_len in range(8, 600, 7):  # the raw length always noises to exactly seq_len: no padding
        raw, targets = input_and_target_lengths(seq_len, 0.15, 3.0)
        assert lengths_of(raw, 0.15, 3.0) == (seq_len, targets)


def test_span_corruption_statistics_over_10000_blocks(bpe):
    obj = objective(SpanCorruption, bpe)
    seq_len = 512
    raw = obj.block_len(seq_len)
    blocks = regular_blocks(10_000, raw)
    batch = obj.collate(blocks, step_generator(0, 0, 0, 0))
    inputs, targets = batch["input_ids"], batch["labels"]
    assert inputs.shape == (10_000, seq_len) and bool(batch["attention_mask"].all())  # no padding at all
    sentinels = torch.isin(targets, obj.sentinels)
    assert bool((targets[:, 0] == obj.sentinels[0]).all())  # every target starts with the first sentinel
    assert bool((targets[:, -1] == obj.eos_id).all()) and bool((inputs[:, -1] == obj.eos_id).all())
    noise_tokens = (~sentinels).sum(dim=1) - 1  # less the EOS
    spans = torch.isin(inputs, obj.sentinels).sum(dim=1)
    assert float(noise_tokens.sum() / (10_000 * raw)) == pytest.approx(0.15, abs=0.005)
    assert float(noise_tokens.sum() / spans.sum()) == pytest.approx(3.0, abs=0.1)
    # the spans really are random: their lengths vary, and where they start differs between blocks
    lengths = torch.diff(torch.nonzero(sentinels[0]).flatten())
    assert lengths.min() >= 2 and len(set(lengths.tolist())) > 1
    assert len({tuple(torch.isin(r, obj.sentinels).nonzero().flatten().tolist()) for r in inputs[:100]}) == 100


def test_span_corruption_targets_restore_the_block(bpe):
    obj = objective(SpanCorruption, bpe)
    blocks = regular_blocks(20, obj.block_len(64), seed=1)
    batch = obj.collate(blocks, step_generator(1, 2, 0, 0))
    sentinels = set(obj.sentinels.tolist())
    for block, inputs, targets in zip(blocks.tolist(), batch["input_ids"].tolist(), batch["labels"].tolist()):
        fills, current = {}, None
        for token in targets[:-1]:
            if token in sentinels:
                current = token
                fills[current] = []
            else:
                fills[current].append(token)
        restored = [t for token in inputs[:-1] for t in (fills[token] if token in sentinels else [token])]
        assert restored == block
        assert [t for t in inputs if t in sentinels] == obj.sentinels[:len(fills)].tolist()  # in order


@pytest.mark.parametrize("cls", [SpanCorruption, Denoising])
def test_a_micro_batch_is_a_pure_function_of_the_generator(bpe, cls):
    obj = objective(cls, bpe)
    blocks = regular_blocks(8, obj.block_len(48), seed=2)
    first = obj.collate(blocks, step_generator(3, 5, 1, 0))
    again = obj.collate(blocks.clone(), step_generator(3, 5, 1, 0))
    other = obj.collate(blocks, step_generator(3, 5, 1, 1))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["input_ids"], other["input_ids"])


@pytest.mark.parametrize("cls", [SpanCorruption, Denoising])
def test_validation_noise_is_fixed_per_block_whatever_the_batch(bpe, cls):
    obj = objective(cls, bpe)
    blocks = regular_blocks(6, obj.block_len(40), seed=3)
    whole = obj.eval_collate(blocks, step_generator(0, 0, 0, 0))
    alone = obj.eval_collate(blocks[4:5], step_generator(9, 9, 9, 9))
    width = alone["input_ids"].shape[1]
    assert torch.equal(whole["input_ids"][4, :width], alone["input_ids"][0])
    assert torch.equal(whole["labels"][4], alone["labels"][0])


# ---- BART denoising
def sentence_blocks(rows, length, full_stop, seed=0):
    """Blocks of regular tokens with a full stop every few tokens (several sentences per block)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(2, 250, size=(rows, length))
    blocks[blocks == full_stop] = 2
    stops = rng.random((rows, length)) < 0.12
    blocks[stops] = full_stop
    return blocks


def test_bart_noise_statistics_over_10000_blocks(bpe):
    obj = objective(Denoising, bpe)
    full_stop = bpe.convert_tokens_to_ids(".")
    assert obj.sentence_end[full_stop] and obj.sentence_end[obj.eos_id]
    blocks = sentence_blocks(10_000, 128, full_stop)
    rng = np.random.default_rng(0)
    hidden, masks = 0, 0
    for block in blocks:
        noised, n_hidden = obj.noise(block, rng)
        hidden += n_hidden
        masks += int((noised == obj.mask_id).sum())
    assert hidden / blocks.size == pytest.approx(0.30, abs=0.02)
    # one <mask> per span (mask_random=0.1 replaces a tenth of them): spans of Poisson(3.5) tokens on average
    assert hidden / (masks / 0.9) == pytest.approx(3.5, rel=0.1)
    # the batch: the decoder reconstructs the block, then EOS; shorter inputs are padded and masked
    batch = obj.collate(torch.from_numpy(blocks[:16]), step_generator(0, 0, 0, 0))
    assert torch.equal(batch["labels"][:, :-1], torch.from_numpy(blocks[:16]))
    assert bool((batch["labels"][:, -1] == obj.eos_id).all())
    assert batch["input_ids"].shape[1] < 128 and not bool(batch["attention_mask"].all())
    pads = batch["attention_mask"] == 0
    assert bool((batch["input_ids"][pads] == bpe.pad_token_id).all())


def is_concatenation(out: tuple, sentences: list) -> bool:
    """Whether ``out`` is the sentences in some order (greedy, longest first: a sentence is no prefix of another
    that ends in a full stop, so only the block's last, unterminated one could be)."""
    left = sorted(sentences, key=len, reverse=True)
    while out:
        match = next((s for s in left if out[:len(s)] == s), None)
        if match is None:
            return False
        left.remove(match)
        out = out[len(match):]
    return not left


def test_sentence_order_is_permuted_in_every_multi_sentence_block(bpe):
    obj = objective(Denoising, bpe)
    full_stop = bpe.convert_tokens_to_ids(".")
    blocks = sentence_blocks(10_000, 64, full_stop, seed=1)
    rng = np.random.default_rng(1)
    multi = 0
    for block in blocks:
        ends = obj.sentence_end[block]
        cuts = np.flatnonzero(ends[:-1]) + 1
        sentences = [tuple(s) for s in np.split(block, cuts)]
        out = permute_sentences(block, ends, rng, 1.0)
        assert is_concatenation(tuple(out), sentences)  # the same sentences...
        if len(set(sentences)) > 1:
            multi += 1
            assert not np.array_equal(out, block)  # ...in another order
    assert multi > 9_000


def test_infilling_inserts_one_mask_per_span_even_empty_ones():
    rng = np.random.default_rng(0)
    ids = np.arange(10, 110)
    out, hidden = infill(ids, 0.3, 3.5, 1, rng)
    assert hidden.sum() == 30 and (out != 1).sum() == 70
    assert list(out[out != 1]) == list(ids[~hidden])  # the kept tokens, in order
    out, hidden = infill(ids, 0.0, 3.5, 1, rng)
    assert np.array_equal(out, ids)


def test_rotation_and_deletion():
    rng = np.random.default_rng(0)
    obj = Denoising(mask=0.0, permute_sentences=0.0, rotate=1.0, delete=0.2)
    obj.sentence_end, obj.mask_id, obj.random_ids = np.zeros(300, dtype=bool), 1, np.arange(2, 300)
    out, _ = obj.noise(np.arange(2, 202), rng)
    assert 120 < len(out) < 190 and set(out) <= set(range(2, 202))
    assert not np.array_equal(np.sort(out), out)  # rotated


# ---- settings and pre-flight
@pytest.mark.parametrize(("cls", "settings"), [
    (SpanCorruption, {"noise_density": 0.0}), (SpanCorruption, {"noise_density": 1.0}),
    (SpanCorruption, {"mean_noise_span_length": 0.5}), (SpanCorruption, {"extra_ids": 0}),
    (Denoising, {"mask": 1.5}), (Denoising, {"poisson_lambda": 0.0}), (Denoising, {"delete": 1.0}),
    (Denoising, {"rotate": -0.1})])
def test_bad_settings_are_refused(cls, settings):
    with pytest.raises(PtcliError):
        cls(**settings)


@pytest.mark.parametrize("cls", [SpanCorruption, Denoising])
def test_decoder_only_and_vision_models_are_refused(cls):
    data = {"seq_len": 64}
    gpt2 = cls.config_problems({"model": {"arch": "gpt2", "vocab_size": 512, "max_positions": 128},
                                "dataset": data}, None)
    assert any("decoder-only" in p and "model=t5-tiny" in p for p in gpt2), gpt2
    vit = cls.config_problems({"model": {"arch": "vit", "vocab_size": 512, "max_positions": 128},
                               "dataset": data}, None)
    assert any("needs a text model" in p for p in vit), vit
    for arch in ("t5", "bart"):
        assert cls.config_problems({"model": {"arch": arch, "vocab_size": 512, "max_positions": 512},
                                    "dataset": data}, None) == []


def test_span_corruption_needs_enough_sentinels():
    problems = SpanCorruption.config_problems({"model": {"arch": "t5", "vocab_size": 512, "max_positions": 4096},
                                               "dataset": {"seq_len": 2048}}, None)
    assert any("objective.extra_ids=100" in p for p in problems), problems


def test_the_trained_tokenizer_needs_room_for_the_sentinels():
    problems = SpanCorruption.config_problems({"model": {"arch": "t5", "vocab_size": 300, "max_positions": 512},
                                               "dataset": {"seq_len": 64}}, None)
    assert any("needs 358 tokens or more" in p for p in problems), problems
