"""The fast half of the hostile-input cases (issue #12): the checks themselves, on plain values."""

from __future__ import annotations

import gzip
import json
import pickle

import pytest

from ptcli.errors import PtcliError


def test_binary_formats_are_recognised_and_text_is_not():
    from ptcli.data.binary import sniff

    assert sniff(gzip.compress(b"x"))[0] == "a gzip-compressed file"
    assert "PNG" in sniff(b"\x89PNG\r\n\x1a\n....")[0] and "pickle" in sniff(pickle.dumps({"a": 1}))[0]
    assert "NUL" in sniff(b"abc\x00def")[0] and "UTF-16" in sniff("hi".encode("utf-16"))[0]
    assert sniff("Once upon a time, café.\n".encode()) is None and sniff(b"") is None


@pytest.mark.parametrize(("names", "declared", "scheme"), [
    (["B-PER", "I-PER", "O"], "auto", "IOB"), (["I-PER", "O"], "auto", "IOB"),
    (["B-LOC", "E-LOC", "S-PER", "O"], "auto", "IOBES"), (["B-X", "L-X", "U-Y", "O"], "auto", "BILOU"),
    (["PER", "LOC", "O"], "IO", "IO"),
])
def test_tag_schemes_are_recognised(names, declared, scheme):
    from ptcli.objectives.tag_schemes import resolve

    assert resolve(names, declared) == scheme


@pytest.mark.parametrize(("names", "declared", "needle"), [
    (["PER", "LOC", "O"], "auto", "objective.tag_scheme=IO"),
    (["B-PER", "LOC", "O"], "auto", "Give every tag but O a prefix"),
    (["B-PER", "O"], "IO", "carry B-/I- style prefixes"),
    (["B-X", "U-X", "O"], "IOB", "(BILOU)"),
])
def test_tags_that_follow_no_scheme_or_not_the_declared_one_are_refused(names, declared, needle):
    from ptcli.objectives.tag_schemes import resolve

    with pytest.raises(PtcliError) as e:
        resolve(names, declared)
    assert needle in e.value.message()


def test_tags_are_read_by_the_entity_metric_as_their_scheme_means():
    from ptcli.metrics import _sentence_entities
    from ptcli.objectives.tag_schemes import for_metrics

    assert _sentence_entities(for_metrics(["PER", "PER", "O", "LOC"], "IO")) == {("PER", 0, 1), ("LOC", 3, 3)}
    assert _sentence_entities(for_metrics(["B-X", "L-X", "U-Y"], "BILOU")) == {("X", 0, 1), ("Y", 2, 2)}


def test_label_maps_refuse_one_class_and_mixed_kinds():
    from ptcli.objectives.labels import LabelMap

    with pytest.raises(PtcliError, match="a single label"):
        LabelMap.discover([({"label": "pos"}, "f:1"), ({"label": "pos"}, "f:2")])
    with pytest.raises(PtcliError, match=r"mix numbers \(0, 1\) and names \(neg\)"):
        LabelMap.discover([({"label": v}, "f:1") for v in (0, 1, "neg")])


@pytest.mark.parametrize(("arg", "fixed"), [
    ("dataset.files=[x=y.txt]", "dataset.files=['x=y.txt']"), ("prompt=it's", "prompt='it\\'s'"),
    ("dataset.files=[a.txt,b c.txt]", "dataset.files=['a.txt','b c.txt']"),
])
def test_a_corrected_override_quotes_its_value(arg, fixed):
    from ptcli.config.overrides import corrected, parse_problem

    assert corrected(arg) == fixed
    assert parse_problem([fixed]) is None, "the correction parses"


def test_a_checkpoints_damage_is_found_by_its_digests(tmp_path):
    from ptcli.training.integrity import DIGESTS, damage, file_digests

    (tmp_path / "weights.bin").write_bytes(b"0123456789")
    (tmp_path / "state.json").write_text(json.dumps({"step": 3, DIGESTS: file_digests(tmp_path, "state.json")}))
    assert damage(tmp_path, "state.json") is None
    (tmp_path / "weights.bin").write_bytes(b"0123456780")
    assert "does not match the digest" in damage(tmp_path, "state.json")
    (tmp_path / "weights.bin").write_bytes(b"01234")
    assert "is 5 bytes, 10 were written" in damage(tmp_path, "state.json")
    (tmp_path / "weights.bin").unlink()
    assert "missing" in damage(tmp_path, "state.json")
    (tmp_path / "state.json").write_text("{")
    assert "unreadable" in damage(tmp_path, "state.json")


def test_the_restricted_unpickler_builds_checkpoint_metadata_only():
    import io
    import os

    from ptcli.training.safe_dcp import load_metadata

    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    with pytest.raises(PtcliError, match="system"):
        load_metadata(io.BytesIO(pickle.dumps(Payload())), ".metadata")
    import torch

    assert load_metadata(io.BytesIO(pickle.dumps({"size": torch.Size([2, 3]), "dtype": torch.float16})), "x") == {
        "size": torch.Size([2, 3]), "dtype": torch.float16}
