"""CTC speech recognition: the loss is transformers' own CTC loss summed and counted in characters, clips too short
for their transcript are counted, greedy decoding merges repeats and drops blanks, the character vocabulary is a
Wav2Vec2CTCTokenizer, and the error rates equal jiwer's."""

from __future__ import annotations

import wave

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from ptcli.metrics.text import ErrorRates, edit_distance  # noqa: E402
from ptcli.objectives.ctc import CTC, character_tokenizer, ctc_summed  # noqa: E402


def tiny_ctc(vocab_size=8):
    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, conv_dim=(8, 8),
        conv_stride=(5, 4), conv_kernel=(10, 4), feat_extract_norm="layer", num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=2, apply_spec_augment=False, layerdrop=0.0, hidden_dropout=0.0,
        attention_dropout=0.0, activation_dropout=0.0, final_dropout=0.0, vocab_size=vocab_size, pad_token_id=0,
        ctc_loss_reduction="sum", ctc_zero_infinity=True)
    return transformers.Wav2Vec2ForCTC(config).eval()


def objective_with(tokenizer=None):
    from types import SimpleNamespace

    obj = CTC()
    tokenizer = tokenizer or character_tokenizer(["abcde"])
    obj.use(SimpleNamespace(seq_len=None, audio_column="audio", empty_rows="skip"),
            SimpleNamespace(tokenizer=tokenizer))
    return obj


def test_the_summed_ctc_loss_equals_transformers_own_over_padded_clips():
    model = tiny_ctc()
    values = torch.randn(3, 1600, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 1600, dtype=torch.long)
    mask[1, 1000:] = 0  # a shorter clip, padded
    values[1, 1000:] = 0
    labels = torch.tensor([[3, 4, 5, 5], [6, 7, -100, -100], [3, -100, -100, -100]])
    batch = {"input_values": values, "attention_mask": mask, "labels": labels}
    obj = objective_with()
    with torch.no_grad():
        ours = obj.loss(model, batch)
        theirs = model(input_values=values, attention_mask=mask, labels=labels).loss
    assert ours.count.item() == 7  # target characters, padding excluded
    assert ours.sum.item() == pytest.approx(theirs.item(), rel=1e-5)
    assert ours.logs["ctc_infeasible"][0].item() == 0


def test_a_clip_too_short_for_its_transcript_is_counted_and_adds_nothing_with_zero_infinity():
    logits = torch.randn(2, 4, 6)
    frames = torch.tensor([4, 4])
    # "aab" needs 4 frames (a, blank, a, b): feasible; "abcab" needs 5: not
    labels = torch.tensor([[3, 3, 4, -100, -100], [3, 4, 5, 3, 4]])
    out = ctc_summed(logits, frames, labels, blank=0, zero_infinity=True)
    assert out.logs["ctc_infeasible"][0].item() == 1
    only_first = ctc_summed(logits[:1], frames[:1], labels[:1, :3], blank=0)
    assert torch.isfinite(out.sum) and out.sum.item() == pytest.approx(only_first.sum.item(), rel=1e-6)
    assert torch.isinf(ctc_summed(logits, frames, labels, blank=0, zero_infinity=False).sum)


def test_the_character_vocabulary_puts_blank_unknown_and_delimiter_first_and_round_trips():
    tokenizer = character_tokenizer(["one two", "three", "zero"])
    vocab = tokenizer.get_vocab()
    assert (vocab["<pad>"], vocab["<unk>"], vocab["|"]) == (0, 1, 2)
    assert sorted(c for c in vocab if len(c) == 1 and c != "|") == sorted(set("onetwothreezero"))
    ids = tokenizer("two one")["input_ids"]
    assert ids[3] == 2  # the space became the word delimiter
    assert tokenizer.decode(ids, group_tokens=False) == "two one"
    assert tokenizer.decode(tokenizer("x")["input_ids"], group_tokens=False) == "<unk>"


def test_greedy_decoding_merges_repeats_and_drops_blanks_within_the_valid_frames():
    tokenizer = character_tokenizer(["ab"])  # a=3, b=4
    obj = objective_with(tokenizer)
    path = [3, 3, 0, 3, 2, 4, 4, 0, 4, 3]  # a a _ a | b b _ b, then a frame past the clip's end
    logits = torch.nn.functional.one_hot(torch.tensor([path]), 5).float()
    assert obj.decode(logits, torch.tensor([9])) == ["aa bb"]
    assert obj.decode(logits, torch.tensor([10])) == ["aa bba"]
    assert obj.decode(logits, torch.tensor([3])) == ["a"]


def test_error_rates_equal_jiwer_and_merge_like_one_stream():
    jiwer = pytest.importorskip("jiwer", reason="jiwer is the reference implementation (pip install jiwer)")
    references = ["one two three", "four", "five six", "seven  eight nine ten", "zero"]
    predictions = ["one too three", "", "five six seven", "seven eight nine ten", "o"]
    whole = ErrorRates()
    whole.update(predictions, references)
    split = ErrorRates()
    split.update(predictions[:2], references[:2])
    rest = ErrorRates()
    rest.update(predictions[2:], references[2:])
    split.merge(rest)
    for metric in (whole, split):
        result = metric.compute()
        normal = [" ".join(r.split()) for r in references]
        assert result["wer"] == pytest.approx(jiwer.wer(normal, [p or " " for p in predictions]))
        assert result["cer"] == pytest.approx(jiwer.cer(normal, [p or " " for p in predictions]))
        assert result["exact"] == pytest.approx(1 / 5) and result["count"] == 5


def test_edit_distance_counts_substitutions_insertions_and_deletions():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([], ["a", "b"]) == 2
    assert edit_distance(["a", "b"], ["a", "b"]) == 0


def test_an_empty_error_rate_state_is_undefined_not_perfect():
    result = ErrorRates().compute()
    assert result["count"] == 0 and all(result[k] != result[k] for k in ("wer", "cer", "exact"))


def test_a_dataset_without_transcripts_is_a_config_problem():
    problems = CTC.config_problems({"dataset": {"name": "audiofolder"}, "model": {}}, None)
    assert any("needs transcripts" in p and "transcript_column" in p for p in problems)
    empty = CTC.config_problems({"dataset": {"transcript_column": None}, "model": {}}, None)
    assert any("dataset.transcript_column" in p for p in empty)
    assert not [p for p in CTC.config_problems({"dataset": {"transcript_column": "text"}, "model": {}}, None)
                if "transcript" in p]


def test_empty_transcripts_are_skipped_and_text_is_normalised(tmp_path):
    clip = tmp_path / "x.wav"
    with wave.open(str(clip), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(8000)
        out.writeframes(b"\0\0" * 4000)
    obj = objective_with(character_tokenizer(["ab"]))
    encoded = obj.encode([{"audio": str(clip), "transcript": " A  B "}, {"audio": str(clip), "transcript": ""}],
                         ["row 1", "row 2"])
    assert encoded[1] is None
    assert encoded[0]["seconds"] == pytest.approx(0.5)
    assert obj.tokenizer.decode(encoded[0]["labels"], group_tokens=False) == "a b"
