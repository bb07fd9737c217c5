"""Reading raw documents: formats, file expansion, decoding, error messages, fingerprints and checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from ptcli.data import records
from ptcli.data.records import resolve_files
from ptcli.data.sources.embedded import EmbeddedCorpus
from ptcli.data.sources.files import CsvFiles, JsonlFiles, TextFiles
from ptcli.data.sources.hub import HFDataset
from ptcli.errors import PtcliError
from ptcli.objectives.lm import documents

SOURCES = {"text": TextFiles, "jsonl": JsonlFiles, "csv": CsvFiles, "embedded": EmbeddedCorpus, "hf": HFDataset}


def cfg(source="text", files=(), **settings):
    """A data source as the dataset config would build it."""
    if source != "embedded":
        settings["files"] = [str(f) for f in files]
    return SOURCES[source](**settings)


def read_documents(source, split="train", log=print):
    """What language-modelling objectives read: the texts of the source's records."""
    return documents(source, split, log)


def write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def error(fn, *args, **kwargs) -> str:
    with pytest.raises(PtcliError) as info:
        result = fn(*args, **kwargs)
        if hasattr(result, "__next__"):
            list(result)
    return info.value.message()


def test_text_document_modes(tmp_path):
    f = write(tmp_path / "a.txt", "one\ntwo\n\n\nthree\n  \nfour\nfive\n")
    assert list(read_documents(cfg(files=[f]))) == ["one\ntwo\n\n\nthree\n  \nfour\nfive"]
    assert list(read_documents(cfg(files=[f], document="line"))) == ["one", "two", "three", "four", "five"]
    assert list(read_documents(cfg(files=[f], document="paragraph"))) == ["one\ntwo", "three", "four\nfive"]


def test_bom_and_crlf_including_a_crlf_split_across_chunks(tmp_path, monkeypatch):
    f = write(tmp_path / "a.txt", b"\xef\xbb\xbfal\r\nbe\r\n\r\ngamma\r\n")
    assert list(read_documents(cfg(files=[f], document="paragraph"))) == ["al\nbe", "gamma"]
    monkeypatch.setattr(records, "CHUNK", 3)  # "\xef\xbb\xbf" | "al\r" | "\nbe" ...: CR and LF in two chunks
    assert list(read_documents(cfg(files=[f], document="line"))) == ["al", "be", "gamma"]


def test_multibyte_characters_split_across_chunks(tmp_path, monkeypatch):
    text = "héllo wörld — ünïcode ✓\n" * 50
    f = write(tmp_path / "u.txt", text)
    monkeypatch.setattr(records, "CHUNK", 7)
    assert list(read_documents(cfg(files=[f], document="line"))) == [text.splitlines()[0]] * 50


@pytest.mark.parametrize("chunk", [records.CHUNK, 1, 4, 17])  # 17: the bad byte ends a chunk, left pending
def test_invalid_utf8_fails_with_file_and_byte_offset(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(records, "CHUNK", chunk)
    f = write(tmp_path / "bad.txt", b"good line\n" * 3 + b"caf\xe9 x\n")  # latin-1 e-acute at offset 33
    message = error(read_documents, cfg(files=[f], document="line"))
    assert "invalid byte 0xe9 at byte offset 33" in message and str(f) in message
    assert "encoding_errors=skip" in message and "iconv" in message


def test_invalid_utf8_skip_drops_and_counts_once_per_file(tmp_path):
    f = write(tmp_path / "bad.txt", b"caf\xe9\n\xff\xfeok\nend \xc3")  # the last byte is a truncated sequence
    logs = []
    docs = list(read_documents(cfg(files=[f], document="line", encoding_errors="skip"), log=logs.append))
    assert docs == ["caf", "ok", "end "]
    assert len(logs) == 1 and "dropped 4 invalid UTF-8" in logs[0] and str(f) in logs[0]


def test_jsonl_reads_column_and_skips_blank_lines(tmp_path):
    f = write(tmp_path / "d.jsonl", '{"text": "a b"}\n\n{"text": "c", "id": 2}\n{"text": ""}\n')
    assert list(read_documents(cfg("jsonl", [f]))) == ["a b", "c"]


def test_jsonl_invalid_line_is_named(tmp_path):
    f = write(tmp_path / "d.jsonl", '{"text": "a"}\n\n{"text": oops}\n')
    message = error(read_documents, cfg("jsonl", [f]))
    assert f"{f}:3" in message and "invalid JSON" in message


def test_jsonl_missing_column_lists_keys_and_suggests(tmp_path):
    f = write(tmp_path / "d.jsonl", '{"txt": "a", "id": 1}\n')
    message = error(read_documents, cfg("jsonl", [f]))
    assert "column 'text' (dataset.text_column) is missing" in message and "txt, id" in message and f"{f}:1" in message
    assert "Did you mean dataset.text_column=txt" in message


def test_jsonl_non_string_value_is_an_error(tmp_path):
    f = write(tmp_path / "d.jsonl", '{"text": 5}\n')
    assert "holds a number (5), not text" in error(read_documents, cfg("jsonl", [f]))


def test_csv_and_tsv_with_quoted_multiline_and_huge_fields(tmp_path):
    big = "x" * 300_000  # over the csv module's default 128 KiB field limit
    c = write(tmp_path / "a.csv", f'id,body\n1,"line one\nline two"\n2,{big}\n')
    t = write(tmp_path / "b.tsv", "body\tlabel\nhello, world\t1\n")
    assert list(read_documents(cfg("csv", [c, t], text_column="body"))) == ["line one\nline two", big,
                                                                           "hello, world"]


def test_csv_missing_column_lists_columns_and_suggests(tmp_path):
    c = write(tmp_path / "a.csv", "label,sentence\n1,hi\n")
    message = error(read_documents, cfg("csv", [c], text_column="sentense"))
    assert "label, sentence" in message and "Did you mean dataset.text_column=sentence" in message


def test_globs_and_directories_expand_sorted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ["data/b.txt", "data/a.txt", "data/sub/c.txt", "data/notes.md"]:
        write(tmp_path / name, name)
    every = ["data/a.txt", "data/b.txt", "data/sub/c.txt"]
    assert [str(p) for p in resolve_files(["data"])] == every
    assert [str(p) for p in resolve_files(["data/*.txt", "data/a.txt"])] == every[:2]  # read once
    assert [str(p) for p in resolve_files(["data/**/*.txt"])] == every
    assert resolve_files([]) == []
    assert list(read_documents(cfg(files=["data"]))) == every


def test_missing_file_suggests_close_name_and_names_the_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "corpus.txt", "x")
    message = error(resolve_files, ["corpsu.txt"], key="dataset.val_files")
    assert "dataset.val_files: 'corpsu.txt' does not exist" in message
    assert "Did you mean 'corpus.txt'" in message
    assert "matches no files" in error(resolve_files, ["nothing/*.txt"])


def test_unreadable_file(tmp_path, monkeypatch):
    f = write(tmp_path / "secret.txt", "x")
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # chmod alone would not stop root
    message = error(resolve_files, [str(f)])
    assert "cannot read" in message and str(f) in message and "permissions" in message


def test_empty_dataset_is_an_error(tmp_path):
    f = write(tmp_path / "empty.txt", "\n  \n")
    message = error(read_documents, cfg(files=[f], document="line"))
    assert "dataset is empty" in message and str(f) in message and "dataset.text_column" in message
    c = write(tmp_path / "empty.csv", "")
    assert "dataset is empty" in error(read_documents, cfg("csv", [c]))
    assert "dataset.val_files lists no files" in error(read_documents, cfg(files=[f]), "val")


def test_val_split_reads_val_files(tmp_path):
    train, val = write(tmp_path / "t.txt", "train"), write(tmp_path / "v.txt", "val")
    assert list(read_documents(cfg(files=[train], val_files=[str(val)]), "val")) == ["val"]


def test_check_readable_collects_every_problem(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "ok.txt", "x")
    (tmp_path / "emptydir").mkdir()
    messages = cfg(files=["ok.txt", "missing.txt", "emptydir"], val_files=["v/*.txt"]).problems()
    assert len(messages) == 3, messages
    assert "dataset.val_files" in messages[0] and "missing.txt" in messages[1] and "emptydir" in messages[2]
    assert cfg(files=["ok.txt"]).problems() == []
    assert cfg("embedded").problems() == [] and cfg("hf", hf_name="wikitext").problems() == []
    assert "dataset.files lists no files" in cfg(files=[]).problems()[0]


def test_fingerprint_changes_with_the_file_and_is_stable_otherwise(tmp_path):
    f = write(tmp_path / "a.txt", "one")
    first = cfg(files=[f]).fingerprint()
    assert cfg(files=[f]).fingerprint() == first
    write(f, "one two three")
    assert cfg(files=[f]).fingerprint() != first
    assert cfg("embedded", embedded_seed=1).fingerprint() != cfg("embedded").fingerprint()
    assert cfg("hf", hf_name="a").fingerprint() != cfg("hf", hf_name="b").fingerprint()


def test_embedded_source_yields_generated_documents(monkeypatch):
    corpus = pytest.importorskip("ptcli.data.corpus")
    calls = []

    def fake(seed, target_bytes):
        calls.append((seed, target_bytes))
        return SimpleNamespace(documents=["story one.", "", "story two."], bits_per_char=1.0)

    monkeypatch.setattr(corpus, "generate_corpus", fake)
    assert list(read_documents(cfg("embedded", embedded_seed=7, embedded_bytes=500))) == ["story one.",
                                                                                         "story two."]
    assert calls == [(7, 500)]


def test_hf_json_builder_reads_local_files(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    f = write(tmp_path / "d.jsonl", "\n".join(json.dumps({"body": f"doc {i}"}) for i in range(3)) + "\n")
    docs = list(read_documents(cfg("hf", [f], hf_name="json", text_column="body"), log=lambda _: None))
    assert docs == ["doc 0", "doc 1", "doc 2"]
    assert "the columns are: body" in error(read_documents, cfg("hf", [f], hf_name="json"))


def test_hf_load_errors_become_ptcli_errors(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nobody/nothing' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    message = error(read_documents, cfg("hf", hf_name="nobody/nothing"))
    assert "nobody/nothing" in message and "ConnectionError" in message and "HF_DATASETS_OFFLINE=1" in message


def test_reading_files_imports_no_heavy_modules(tmp_path):
    f = write(tmp_path / "a.txt", "one\ntwo\n")
    code = ("import sys\nfrom ptcli.data.sources.files import TextFiles\n"
            "from ptcli.objectives.lm import documents\n"
            f"docs = list(documents(TextFiles(files=[{str(f)!r}], document='line'), 'train', print))\n"
            "assert docs == ['one', 'two'], docs\n"
            "print(sorted({'torch', 'transformers', 'datasets'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(records.__file__).parents[2])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
