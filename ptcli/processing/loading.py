"""Tokenizer and processor loading in one home: from a folder, a ptcli run directory or a Hub name, or trained on
the data; and the ``Processors`` a run saves beside its model."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from ptcli.config.paths import resolve_model_dir
from ptcli.errors import PtcliError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "spiece.model",
                   "tokenizer.model", "sentencepiece.bpe.model")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
RUN_FOLDERS = ("tokenizer", "processor")  # where a run directory keeps its processors


class Processors(dict):
    """The processors a model is used with, by role ('tokenizer', 'image_processor', 'feature_extractor'), saved
    together in one folder (``<run>/tokenizer/`` and inside ``model/``) so that transformers' pipelines find them."""

    @property
    def tokenizer(self):
        return self.get("tokenizer")

    def save_pretrained(self, folder) -> None:
        for processor in self.values():
            processor.save_pretrained(str(folder))

    @property
    def folder_name(self) -> str:
        """``tokenizer`` for text runs (as README documents), ``processor`` when there are others."""
        return "tokenizer" if set(self) == {"tokenizer"} else "processor"


def processor_folder(path: str, names=TOKENIZER_FILES) -> str:
    """Where the processor files are: the model folder, or a run directory's ``tokenizer/`` (or ``processor/``); a
    Hub name as is. transformers 5 quietly builds an empty tokenizer for a local folder that has none, so look."""
    folder = resolve_model_dir(path)
    if folder is None:
        return path
    candidates = [folder] + ([folder.parent / name for name in RUN_FOLDERS] if folder.name == "model" else [])
    for candidate in candidates:
        if any((candidate / name).is_file() for name in names):
            return str(candidate)
    raise PtcliError(f"no tokenizer in the model folder '{folder}'",
                     fix=f"Save one there (tokenizer.save_pretrained('{folder}')) or copy its tokenizer files "
                         "(tokenizer.json, tokenizer_config.json) into it")


def load_tokenizer(path: str):
    """The tokenizer saved in a folder or run dir (or a Hub name), with a clear error when there is none."""
    from transformers import AutoTokenizer

    from ptcli.config.paths import check_hub

    if resolve_model_dir(path) is None:
        check_hub(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(processor_folder(path), trust_remote_code=False)
    except (OSError, ValueError, TypeError) as e:
        if "trust_remote_code" in str(e):
            raise PtcliError(f"the tokenizer at '{path}' needs its own Python code, which ptcli does not run",
                             fix="Use a tokenizer transformers supports natively (tokenizer.json), or set "
                                 "tokenizer.path to one") from None
        raise PtcliError(f"no usable tokenizer at '{path}': {str(e).splitlines()[0]}",
                         fix="Save a tokenizer in that folder, or set tokenizer.path") from None
    if len(tokenizer) <= 1:  # transformers 5 builds an empty one for a folder without tokenizer files
        raise PtcliError(f"the tokenizer at '{path}' is empty", fix="Save the model's tokenizer in that folder")
    return tokenizer


def load_image_processor(path: str):
    """The image processor saved with a model (``preprocessor_config.json``), or a clear error."""
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(processor_folder(path, PROCESSOR_FILES))
    except (OSError, ValueError, TypeError) as e:
        raise PtcliError(f"no usable image processor at '{path}': {str(e).splitlines()[0]}",
                         fix="Save the model's image processor (preprocessor_config.json) in its folder") from None


def load_feature_extractor(path: str):
    """The audio feature extractor saved with a model (``preprocessor_config.json``), or a clear error."""
    from transformers import AutoFeatureExtractor

    try:
        return AutoFeatureExtractor.from_pretrained(processor_folder(path, PROCESSOR_FILES))
    except (OSError, ValueError, TypeError) as e:
        raise PtcliError(f"no usable feature extractor at '{path}': {str(e).splitlines()[0]}",
                         fix="Save the model's feature extractor (preprocessor_config.json) in its folder") from None


def is_feature_extractor(folder: str) -> bool:
    """True when the folder's preprocessor_config.json describes an audio feature extractor (not an image
    processor)."""
    import json

    config = Path(folder) / "preprocessor_config.json"
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    return "feature_extractor_type" in data and "image_processor_type" not in data


def load_processors(path: str) -> Processors:
    """Every processor saved with a model (its tokenizer, image processor or feature extractor, ...), found by their
    files."""
    found = Processors()
    for names, role, load in ((TOKENIZER_FILES, "tokenizer", load_tokenizer),
                              (PROCESSOR_FILES, "image_processor", load_image_processor)):
        try:
            folder = processor_folder(path, names)
        except PtcliError:
            continue
        if role == "image_processor" and is_feature_extractor(folder):
            role, load = "feature_extractor", load_feature_extractor
        found[role] = load(path)
    if not found:
        processor_folder(path)  # the error that names what is missing
    return found


def resolve_tokenizer(tokenizer_cfg, model_cfg, texts: Callable[[], Iterable[str]], fingerprint: str, kind: str,
                      cache: Path, dist, log):
    """``tokenizer.path``, else the model's own (``model.path``), else one trained on ``texts()`` (rank 0 first: it
    fills the cache the others read). ``kind``: the tokenizer trained when none is given (bpe or wordpiece)."""
    from ptcli.processing.tokenizers import load_or_train_tokenizer

    if tokenizer_cfg.path:
        return load_tokenizer(tokenizer_cfg.path)
    if model_cfg.path:
        return load_tokenizer(model_cfg.path)
    kind = kind if tokenizer_cfg.kind == "auto" else tokenizer_cfg.kind
    vocab = tokenizer_cfg.vocab_size or model_cfg.vocab_size

    def load():
        tokenizer, _ = load_or_train_tokenizer(texts, fingerprint, kind, vocab, cache,
                                               lowercase=tokenizer_cfg.lowercase, log=log)
        return tokenizer

    return rank0_first(dist, load)


def rank0_first(dist, fn):
    """Run ``fn`` on rank 0 first (it fills a cache), then on the others (they read it)."""
    if dist.is_rank0:
        result = fn()
        dist.barrier()
    else:
        dist.barrier()
        result = fn()
    return result
