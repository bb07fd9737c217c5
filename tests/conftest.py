"""Shared fixtures: an isolated cache per session, tiny models and data built once, a composed config, Slurm."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import sentiment_rows, slurm_missing, tiny_models


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Tokenizer and packed-corpus caches live in a per-session temp folder, never in the user's home."""
    os.environ["PTCLI_CACHE_DIR"] = str(tmp_path_factory.mktemp("ptcli-cache"))
    yield


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    """Tiny GPT-2, T5 and BERT folders with ptcli-trained tokenizers (and a GPT-2 without one), built once."""
    return tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def sentiment(tmp_path_factory) -> Path:
    """A CSV of 240 labelled sentences (pos/neg) a tiny classifier learns in a few steps."""
    path = tmp_path_factory.mktemp("data") / "train.csv"
    path.write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in sentiment_rows(240)))
    return path


@pytest.fixture(scope="session")
def tokenizer():
    """A byte-level BPE tokenizer (400 tokens) trained on a slice of the embedded corpus."""
    from ptcli.data.corpus import generate_corpus
    from ptcli.processing.tokenizers import train_tokenizer

    return train_tokenizer(generate_corpus(0, 60_000).documents, "bpe", 400)


@pytest.fixture
def composed():
    """``composed(verb, *overrides)``: the validated config a run would get (as attribute-access OmegaConf)."""
    from omegaconf import OmegaConf

    from ptcli.config.validate import validate
    from ptcli.launch.compose import compose
    from ptcli.launch.entry import prepare_args

    def make(verb: str, *overrides: str):
        args = prepare_args(verb, list(overrides))
        return OmegaConf.create(validate(verb, compose(verb, args)))

    return make


@pytest.fixture
def slurm():
    """Skips (or, under PTCLI_REQUIRE_SLURM=1, fails) without a Slurm cluster that can run jobs."""
    reason = slurm_missing()
    if reason:
        if os.environ.get("PTCLI_REQUIRE_SLURM") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`make test` runs `-n auto --dist loadgroup`) a test file runs on one worker, so that its
    module fixtures (a trained run, a server) are made once; the tests that submit Slurm jobs share one worker,
    whatever their file: the local cluster's one node runs one two-task job at a time."""
    for item in items:
        group = "slurm" if item.get_closest_marker("slurm") else item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))
