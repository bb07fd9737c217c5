"""Labelled records, label maps, the fixed validation split and the fine-tuning objectives' encoding."""

from __future__ import annotations

import json

import pytest

from ptcli.data.sources.files import ConllFiles, CsvFiles, JsonlFiles
from ptcli.errors import PtcliError
from ptcli.objectives.labelled import carve_split
from ptcli.objectives.labels import LabelMap

SOURCES = {"csv": CsvFiles, "jsonl": JsonlFiles, "conll": ConllFiles}


def data_cfg(files, source="csv", **settings):
    """A data source as the dataset config builds it (labelled rows: a label column by default)."""
    settings = {"val_fraction": 0.1, "seq_len": 32, "label_column": "label", **settings}
    return SOURCES[source](files=[str(f) for f in files], **settings)


def read_records(source):
    return source.records("train", print)


def set_up(objective, source, tokenizer, rows=()):
    """What a training run does before encoding: the columns and tokenizer, then what the rows teach."""
    from ptcli.processing.loading import Processors

    processors = Processors(tokenizer=tokenizer)
    objective.use(source, processors)
    objective.check_processors(processors)
    objective.learn(list(rows), lambda _m: None)


def test_csv_tsv_jsonl_and_json_array_records(tmp_path):
    (tmp_path / "a.csv").write_text('text,label\n"hello, world",pos\nbye,neg\n')
    (tmp_path / "b.tsv").write_text('label\tsentence\n1\ta "quoted" phrase\n')
    (tmp_path / "c.jsonl").write_text('{"text": "x", "label": 1}\n\n{"text": "y", "label": 0}\n')
    (tmp_path / "d.json").write_text(json.dumps([{"instruction": "i", "output": "o"}]))
    rows = list(read_records(data_cfg([tmp_path / "a.csv"])))
    assert [r for _, r in rows] == [{"text": "hello, world", "label": "pos"}, {"text": "bye", "label": "neg"}]
    assert rows[1][0].endswith("a.csv:3")
    assert [r for _, r in read_records(data_cfg([tmp_path / "b.tsv"]))] == [
        {"label": "1", "sentence": 'a "quoted" phrase'}]  # GLUE TSVs: quotes are text, not quoting
    assert [r["label"] for _, r in read_records(data_cfg([tmp_path / "c.jsonl"], source="jsonl"))] == [1, 0]
    where, record = next(read_records(data_cfg([tmp_path / "d.json"], source="jsonl")))
    assert record == {"instruction": "i", "output": "o"} and where.endswith("d.json[0]")


def test_conll_sentences_and_malformed_line(tmp_path):
    good = tmp_path / "ner.txt"
    good.write_text("-DOCSTART- -X- O O\n\nEU B-ORG\nrejects O\n\n\nPeter NNP B-NP B-PER\nBlackburn I-PER\n")
    cfg = data_cfg([good], source="conll", text_column="tokens", label_column="tags")
    rows = list(read_records(cfg))
    assert [r for _, r in rows] == [{"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]},
                                    {"tokens": ["Peter", "Blackburn"], "tags": ["B-PER", "I-PER"]}]
    assert rows[1][0].endswith("ner.txt:7")
    bad = tmp_path / "bad.txt"
    bad.write_text("EU B-ORG\nrejects\n")
    with pytest.raises(PtcliError) as e:
        list(read_records(data_cfg([bad], source="conll", text_column="tokens", label_column="tags")))
    assert "malformed CoNLL line" in e.value.what and e.value.where.endswith("bad.txt:2")


def test_label_map_orders_numbers_numerically_and_rejects_unseen_labels():
    labels = LabelMap.discover([({"label": v}, "f:1") for v in ["10", 2, "1", 2.0]], "label")
    assert labels.names == ["1", "2", "10"]
    assert LabelMap.discover([({"label": v}, "f:1") for v in ["pos", "neg"]], "label").names == ["neg", "pos"]
    with pytest.raises(PtcliError) as e:
        labels.id_of("7", "val.csv:3")
    assert "never seen in training" in e.value.what and "1, 2, 10" in e.value.what and e.value.where == "val.csv:3"
    with pytest.raises(PtcliError, match="num_labels=3 but the training data has 2"):
        LabelMap(["a", "b"]).check_count(3, "label")


def test_carved_validation_split_is_fixed_and_disjoint():
    records = [(f"f:{i}", {"i": i}) for i in range(100)]
    train, val = carve_split(records, 0.1)
    assert len(val) == 10 and len(train) == 90
    assert {r["i"] for _, r in train}.isdisjoint({r["i"] for _, r in val})
    assert carve_split(records, 0.1) == (train, val)
    assert [r for _, r in val] != [{"i": i} for i in range(90, 100)], "a shuffled slice, not the file's tail"


@pytest.fixture(scope="module")
def wordpiece():
    from ptcli.processing.tokenizers import train_tokenizer

    text = ["the movie was good", "the film was bad", "Peter Blackburn lives in London", "great fun"] * 20
    return train_tokenizer(iter(text), "wordpiece", 200)


def test_classification_encodes_pairs_and_skips_or_refuses_empty_rows(wordpiece):
    from ptcli.objectives.classification import SequenceClassification

    obj = SequenceClassification()
    rows = [("f:2", {"text": "the movie", "pair": "was good", "label": "pos"}),
            ("f:3", {"text": "  ", "pair": "x", "label": "neg"}),
            ("f:4", {"text": "the film", "pair": "was bad", "label": "neg"})]
    set_up(obj, data_cfg([], text_pair_column="pair"), wordpiece, rows)
    examples, skipped = obj.encode_all(rows)
    assert skipped == 1 and [e["label"] for e in examples] == [1, 0]
    assert set(examples[0]["token_type_ids"]) == {0, 1}, "the pair is the second segment"
    batch = obj.collate(examples)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["token_type_ids"].shape
    obj.data = data_cfg([], text_pair_column="pair", empty_rows="fail")
    with pytest.raises(PtcliError, match="empty text") as e:
        obj.encode_all(rows)
    assert e.value.where == "f:3"
    with pytest.raises(PtcliError) as e:
        obj.encode([{"sentence": "x", "label": "pos"}], ["f:9"])
    assert "column 'text'" in e.value.what and "sentence" in e.value.what and "label" in e.value.what


def test_token_classification_labels_first_piece_only(wordpiece):
    from ptcli.objectives.token_classification import TokenClassification

    rows = [("f:1", {"tokens": ["Blackburnish", "lives"], "tags": ["B-PER", "O"]})]
    obj = TokenClassification()
    set_up(obj, data_cfg([], text_column="tokens", label_column="tags"), wordpiece, rows)
    (example,) = obj.encode([rows[0][1]], ["f:1"])
    word_ids = wordpiece(["Blackburnish", "lives"], is_split_into_words=True).word_ids()
    assert word_ids.count(0) > 1, "the first word must split into several pieces for this test"
    expected = [-100 if w is None or (i and word_ids[i - 1] == w) else [0, 1][w] for i, w in enumerate(word_ids)]
    assert example["labels"] == expected  # B-PER=0, O=1 (sorted)
    assert sum(example["first"]) == 2 and example["word_tags"] == [0, 1]
    obj_all = TokenClassification(label_all_tokens=True)
    set_up(obj_all, data_cfg([], text_column="tokens", label_column="tags"), wordpiece, rows)
    (every,) = obj_all.encode([rows[0][1]], ["f:1"])
    assert every["labels"].count(0) == word_ids.count(0)
    with pytest.raises(PtcliError, match="2 tokens but 1 tags"):
        obj.encode([{"tokens": ["a", "b"], "tags": ["O"]}], ["f:5"])


@pytest.fixture(scope="module")
def bpe():
    from ptcli.processing.tokenizers import train_tokenizer

    return train_tokenizer(iter(["Write a poem about the sea. The sea is blue and deep."] * 30), "bpe", 300)


def test_sft_loss_covers_the_response_only(bpe):
    from ptcli.objectives.sft import SFT

    obj = SFT(prompt_template="{instruction}\n\n{input}")
    rows = [("f:1", {"instruction": "Write a poem", "input": "about the sea", "output": "The sea is blue"})]
    set_up(obj, data_cfg([], source="jsonl", label_column="output", seq_len=64), bpe, rows)
    (ex,) = obj.encode([rows[0][1]], ["f:1"])
    n_prompt = len(bpe("Write a poem\n\nabout the sea\n", add_special_tokens=False)["input_ids"])
    assert ex["labels"][:n_prompt] == [-100] * n_prompt
    assert ex["labels"][n_prompt:] == ex["input_ids"][n_prompt:] and ex["input_ids"][-1] == bpe.eos_token_id
    assert bpe.decode(ex["input_ids"][n_prompt:-1]) == "The sea is blue"
    with pytest.raises(PtcliError, match="names the field 'input'"):
        obj.encode([{"instruction": "x", "output": "y"}], ["f:2"])


def test_sft_chat_messages_train_on_assistant_turns(bpe):
    from ptcli.objectives.sft import DEFAULT_CHAT_TEMPLATE, SFT

    obj = SFT(messages_column="messages")
    set_up(obj, data_cfg([], source="jsonl", label_column=None, seq_len=256), bpe)
    assert bpe.chat_template == DEFAULT_CHAT_TEMPLATE, "a tokenizer without a template gets the default"
    messages = [{"role": "user", "content": "Write a poem"}, {"role": "assistant", "content": "The sea is blue"}]
    (ex,) = obj.encode([{"messages": messages}], ["f:1"])
    target = bpe.decode([t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab != -100])
    assert target == "The sea is blue<|im_end|>\n"
    assert bpe.decode(ex["input_ids"]).startswith("<|im_start|>user\nWrite a poem<|im_end|>\n<|im_start|>assistant\n")


def test_sft_packing_fills_sequences(bpe):
    from ptcli.objectives.sft import SFT

    obj = SFT(packing=True)
    obj.max_len = 10
    examples = [{"input_ids": [1] * 4, "labels": [1] * 4} for _ in range(5)]
    packed = obj.postprocess(examples)
    assert [len(p["input_ids"]) for p in packed] == [8, 8, 4]


@pytest.mark.parametrize(("rows", "fraction", "warned"), [(40, 0.02, True), (400, 0.1, False)])
def test_a_tiny_carved_validation_split_is_warned_about(wordpiece, tmp_path, rows, fraction, warned):
    from ptcli.objectives.base import Context
    from ptcli.objectives.classification import SequenceClassification
    from ptcli.processing.loading import Processors

    path = tmp_path / "train.csv"
    path.write_text("text,label\n" + "".join(f"row {i} was {'good' if i % 2 else 'bad'},{i % 2}\n"
                                             for i in range(rows)))
    said = []
    ctx = Context(cfg=None, source=data_cfg([path], val_fraction=fraction), cache=tmp_path, dist=None,
                  log=said.append)
    SequenceClassification().prepare(ctx, Processors(tokenizer=wordpiece))
    assert any("validation example(s)" in m and m.startswith("warning:") for m in said) == warned
