"""CTranslate2's model folders read without CTranslate2: its ``model.bin`` (with numpy, never pickle) and a Whisper
model's variables mapped onto ``transformers.WhisperForConditionalGeneration``'s parameters.

``model.bin`` (binary version 6, little-endian): ``u32 version``, ``string spec name``, ``u32 spec revision``,
``u32 n``, then n variables (``string name``, ``u8 rank``, ``rank x u32 dims``, ``u8 dtype id``, ``u32 n_bytes``,
the raw bytes), then ``u32 m`` aliases (``string alias``, ``string variable``), and nothing after. A string is
``u16 length`` (the NUL included), the UTF-8 bytes and a NUL. Dtype ids: CTranslate2's ``DataType`` enum."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ptcli.errors import PtcliError

MODEL_BIN = "model.bin"
BINARY_VERSIONS = (5, 6)  # the layout above; version 6 is what CTranslate2 4.x writes (and what was tested)
DTYPES = {0: np.dtype("<f4"), 1: np.dtype("i1"), 2: np.dtype("<i2"), 3: np.dtype("<i4"), 4: np.dtype("<f2"),
          5: "bfloat16"}  # bfloat16: read as uint16, widened to float32
WHISPER_SPEC = "WhisperSpec"
GELU = 3  # CTranslate2's ops::ActivationType::GELU (erf), Whisper's activation


@dataclass
class Ct2Model:
    """What a ``model.bin`` holds: its spec, the variables by name (numpy arrays; scalars are 0-d) and the aliases
    (a name that means another variable: a tied weight is stored once)."""

    version: int
    spec: str
    revision: int
    variables: dict[str, np.ndarray] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> np.ndarray:
        return self.variables[self.aliases.get(name, name)]


class _Reader:
    def __init__(self, data: bytes | memoryview, where: str):
        self.data, self.at, self.where = data, 0, where

    def take(self, n: int, what: str) -> memoryview:
        if self.at + n > len(self.data):
            raise PtcliError(f"'{self.where}' is cut short: {what} needs bytes {self.at}..{self.at + n}, the file has "
                             f"{len(self.data)}", fix="Copy or download the model folder again; a CTranslate2 "
                             "model.bin ends with its aliases")
        view = memoryview(self.data)[self.at:self.at + n]
        self.at += n
        return view

    def unpack(self, fmt: str, what: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.unpack("H", what)
        raw = bytes(self.take(n, what))
        if n == 0 or raw[-1] != 0:
            raise PtcliError(f"'{self.where}' is not a CTranslate2 model.bin: {what} at byte {self.at - n} is not a "
                             "NUL-terminated string", fix="Give a folder written by a CTranslate2 converter")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise PtcliError(f"'{self.where}' is not a CTranslate2 model.bin: {what} is not UTF-8",
                             fix="Give a folder written by a CTranslate2 converter") from None


def read_header(path: Path) -> tuple[int, str, int]:
    """(binary version, spec name, revision) from the first bytes of ``path``: cheap, before reading 100s of MB."""
    with open(path, "rb") as f:
        head = f.read(4 + 2 + 256 + 4)
    reader = _Reader(head, str(path))
    version = reader.unpack("I", "the binary version")
    if version not in BINARY_VERSIONS:
        raise PtcliError(f"'{path}' is not a CTranslate2 model.bin of a version ptcli reads (it starts with "
                         f"{version}; ptcli reads versions {', '.join(map(str, BINARY_VERSIONS))})",
                         fix="Give a folder written by CTranslate2 3.x or 4.x (ct2-transformers-converter)")
    return version, reader.string("the spec name"), reader.unpack("I", "the spec revision")


def read_model_bin(path: str | Path) -> Ct2Model:
    """Every variable and alias of a CTranslate2 ``model.bin``; every byte accounted for (a truncated file, a shape
    that disagrees with its byte count or trailing bytes are errors)."""
    path = Path(path)
    data = path.read_bytes()
    reader = _Reader(data, str(path))
    version, spec, revision = read_header(path)
    reader.unpack("I", "the binary version")
    reader.string("the spec name")
    reader.unpack("I", "the spec revision")
    model = Ct2Model(version, spec, revision)
    for i in range(reader.unpack("I", "the variable count")):
        name = reader.string(f"variable {i}'s name")
        shape = tuple(reader.unpack("I", f"{name}'s shape") for _ in range(reader.unpack("B", f"{name}'s rank")))
        type_id = reader.unpack("B", f"{name}'s dtype")
        if type_id not in DTYPES:
            raise PtcliError(f"'{path}': variable {name} has an unknown dtype id {type_id}",
                             fix="ptcli reads float32, float16, bfloat16, int8, int16 and int32 variables")
        n_bytes = reader.unpack("I", f"{name}'s size")
        dtype = DTYPES[type_id]
        itemsize = 2 if dtype == "bfloat16" else dtype.itemsize
        if n_bytes != int(np.prod(shape, dtype=np.int64)) * itemsize:
            raise PtcliError(f"'{path}': variable {name} of shape {list(shape)} says it has {n_bytes} bytes",
                             fix="The file is damaged; copy or download the model folder again")
        raw = reader.take(n_bytes, name)
        if dtype == "bfloat16":
            array = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            array = np.frombuffer(raw, dtype)
        model.variables[name] = array.reshape(shape)
    for i in range(reader.unpack("I", "the alias count")):
        alias = reader.string(f"alias {i}")
        model.aliases[alias] = reader.string(f"alias {alias}'s target")
        if model.aliases[alias] not in model.variables:
            raise PtcliError(f"'{path}': alias {alias} names a missing variable {model.aliases[alias]}",
                             fix="The file is damaged; copy or download the model folder again")
    if reader.at != len(data):
        raise PtcliError(f"'{path}' has {len(data) - reader.at} bytes after its last alias",
                         fix="The file is damaged or not a CTranslate2 model.bin")
    return model


def write_model_bin(path: str | Path, spec: str, revision: int, variables: dict[str, np.ndarray],
                    aliases: dict[str, str] | None = None, version: int = 6) -> None:
    """The inverse of :func:`read_model_bin` (float32/float16/int8/int16/int32 arrays): for tests and fixtures."""
    ids = {v: k for k, v in DTYPES.items() if k != 5}

    def string(text: str) -> bytes:
        raw = text.encode("utf-8") + b"\0"
        return struct.pack("<H", len(raw)) + raw

    out = [struct.pack("<I", version), string(spec), struct.pack("<II", revision, len(variables))]
    for name, value in sorted(variables.items()):
        value = np.asarray(value)
        dtype = value.dtype.newbyteorder("<") if value.dtype.itemsize > 1 else value.dtype
        out += [string(name), struct.pack("<B", value.ndim), *(struct.pack("<I", d) for d in value.shape),
                struct.pack("<BI", ids[np.dtype(dtype)], value.nbytes), value.astype(dtype).tobytes()]
    out.append(struct.pack("<I", len(aliases or {})))
    for alias, target in sorted((aliases or {}).items()):
        out += [string(alias), string(target)]
    Path(path).write_bytes(b"".join(out))


# ---- Whisper
def _count(model: Ct2Model, prefix: str) -> int:
    n = 0
    while any(k.startswith(f"{prefix}/layer_{n}/") for k in model.variables):
        n += 1
    return n


def whisper_state(model: Ct2Model, where: str = "model.bin") -> tuple[dict, dict[str, np.ndarray], list[str]]:
    """(WhisperConfig sizes, the ``WhisperForConditionalGeneration`` state dict as numpy arrays, notes on what was
    read but not copied) from a ``WhisperSpec`` model. Every variable is used or checked: a fused self-attention
    QKV is split into q/k/v, a fused cross-attention KV into k/v; Whisper's k projections have no bias, and the
    converter's (zero) k bias is dropped: a k bias adds the same q.b to every key's score, which softmax ignores.
    The output projection, stored as an alias of the token embedding, is tied to it."""
    if model.spec != WHISPER_SPEC:
        raise PtcliError(f"'{where}' is a CTranslate2 {model.spec}, and ptcli converts Whisper models only "
                         f"({WHISPER_SPEC})", fix="Give a CTranslate2 Whisper folder, e.g. ptcli convert "
                                                  "whisper-tiny.en <folder>")
    used: set[str] = set()
    notes: list[str] = []

    def var(name: str) -> np.ndarray:
        if name not in model.variables and name not in model.aliases:
            raise PtcliError(f"'{where}' lacks the Whisper variable {name}",
                             fix="The file is damaged or from an unknown converter")
        used.add(name)
        return model.get(name)

    def scalar(name: str, expected=None) -> int:
        value = int(var(name))
        if expected is not None and value != expected:
            raise PtcliError(f"'{where}': {name} is {value}, and ptcli converts Whisper models with {expected}",
                             fix="This Whisper variant has no transformers equivalent ptcli knows")
        return value

    for name, expected in (("decoder/activation", GELU), ("decoder/alibi", 0), ("decoder/pre_norm", 1),
                           ("decoder/scale_embeddings", 0), ("decoder/start_from_zero_embedding", 0)):
        if name in model.variables:
            scalar(name, expected)
    for name in ("decoder/alignment_heads", "decoder/alignment_layer"):
        if name in model.variables:
            used.add(name)  # cross-attention heads for word timing; generation_config takes them from config.json
    embed = var("decoder/embeddings/weight")
    d_model = embed.shape[1]
    enc_layers, dec_layers = _count(model, "encoder"), _count(model, "decoder")
    state: dict[str, np.ndarray] = {}

    def norm(src: str, dst: str) -> None:
        state[f"{dst}.weight"], state[f"{dst}.bias"] = var(f"{src}/gamma"), var(f"{src}/beta")

    def linear(src: str, dst: str, bias: bool = True) -> None:
        state[f"{dst}.weight"] = var(f"{src}/weight")
        if bias:
            state[f"{dst}.bias"] = var(f"{src}/bias")

    def split(src: str, dsts: list[str]) -> None:
        weight, bias = var(f"{src}/weight"), var(f"{src}/bias")
        if weight.shape[0] != len(dsts) * d_model:
            raise PtcliError(f"'{where}': {src}/weight has shape {list(weight.shape)}, not {len(dsts)} x {d_model} "
                             "rows", fix="The file is damaged or from an unknown converter")
        for i, dst in enumerate(dsts):
            rows = slice(i * d_model, (i + 1) * d_model)
            state[f"{dst}.weight"] = weight[rows]
            if dst.endswith("k_proj"):
                if np.any(bias[rows]):
                    notes.append(f"{src}: its k bias (max |b| {float(np.abs(bias[rows]).max()):.3g}) is dropped: "
                                 "softmax ignores it")
            else:
                state[f"{dst}.bias"] = bias[rows]

    for prefix, dst in (("encoder/conv1", "model.encoder.conv1"), ("encoder/conv2", "model.encoder.conv2")):
        linear(prefix, dst)
    state["model.encoder.embed_positions.weight"] = var("encoder/position_encodings/encodings")
    def block(src: str, dst: str, cross: bool) -> None:  # one layer: self-attention, cross-attention, FFN
        norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        split(f"{src}/self_attention/linear_0", [f"{dst}.self_attn.{p}_proj" for p in "qkv"])
        linear(f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
        if cross:
            norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
            linear(f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
            split(f"{src}/attention/linear_1", [f"{dst}.encoder_attn.{p}_proj" for p in "kv"])
            linear(f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
        norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
        linear(f"{src}/ffn/linear_0", f"{dst}.fc1")
        linear(f"{src}/ffn/linear_1", f"{dst}.fc2")

    for i in range(enc_layers):
        block(f"encoder/layer_{i}", f"model.encoder.layers.{i}", cross=False)
    norm("encoder/layer_norm", "model.encoder.layer_norm")
    state["model.decoder.embed_tokens.weight"] = embed
    state["model.decoder.embed_positions.weight"] = var("decoder/position_encodings/encodings")
    for i in range(dec_layers):
        block(f"decoder/layer_{i}", f"model.decoder.layers.{i}", cross=True)
    norm("decoder/layer_norm", "model.decoder.layer_norm")
    tied = True
    if "decoder/projection/weight" in model.aliases or "decoder/projection/weight" in model.variables:
        projection = var("decoder/projection/weight")
        tied = model.aliases.get("decoder/projection/weight") == "decoder/embeddings/weight" or (
            projection.shape == embed.shape and np.array_equal(projection, embed))
        if not tied:
            state["proj_out.weight"] = projection
    sizes = dict(vocab_size=embed.shape[0], d_model=d_model, encoder_layers=enc_layers, decoder_layers=dec_layers,
                 encoder_attention_heads=scalar("encoder/num_heads"),
                 decoder_attention_heads=scalar("decoder/num_heads"),
                 encoder_ffn_dim=var("encoder/layer_0/ffn/linear_0/weight").shape[0] if enc_layers else 4 * d_model,
                 decoder_ffn_dim=var("decoder/layer_0/ffn/linear_0/weight").shape[0] if dec_layers else 4 * d_model,
                 num_mel_bins=var("encoder/conv1/weight").shape[1],
                 max_source_positions=state["model.encoder.embed_positions.weight"].shape[0],
                 max_target_positions=state["model.decoder.embed_positions.weight"].shape[0],
                 tie_word_embeddings=tied)
    unused = sorted(set(model.variables) - used - set(model.aliases.values()))
    if unused:
        raise PtcliError(f"'{where}' has variables ptcli does not know how to map: {', '.join(unused[:4])}"
                         f"{' ...' if len(unused) > 4 else ''}", fix="This Whisper variant is not supported")
    return sizes, state, notes


def whisper_model(sizes: dict, state: dict[str, np.ndarray], dtype: str = "float32", **config):
    """A ``WhisperForConditionalGeneration`` with ``state`` as every one of its weights (an error names any the
    state leaves unset, or sets that the model lacks). ``config``: more WhisperConfig values (token ids, ...)."""
    import torch
    import transformers

    torch_dtype = {"float32": torch.float32, "float16": torch.float16}[dtype]
    cfg = transformers.WhisperConfig(**sizes, **config)
    with torch.device("meta"):
        model = transformers.WhisperForConditionalGeneration(cfg)
    expected = set(model.state_dict())
    if sizes.get("tie_word_embeddings", True):
        expected.discard("proj_out.weight")
    missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or extra:
        raise PtcliError(f"the Whisper weights do not fit transformers' WhisperForConditionalGeneration: "
                         f"{'missing ' + ', '.join(missing[:4]) if missing else ''}"
                         f"{'; unexpected ' + ', '.join(extra[:4]) if extra else ''}",
                         fix="This Whisper variant is not supported")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    wrong = [k for k, v in state.items() if tuple(v.shape) != shapes[k]]
    if wrong:
        raise PtcliError(f"the Whisper weights {', '.join(wrong[:4])} have shapes "
                         f"{[list(state[k].shape) for k in wrong[:4]]}, transformers expects "
                         f"{[list(shapes[k]) for k in wrong[:4]]}",
                         fix="The file is damaged or from an unknown converter")
    tensors = {k: torch.from_numpy(np.array(v, dtype=np.float32 if dtype == "float32" else np.float16))
               for k, v in state.items()}
    model.load_state_dict(tensors, strict=False, assign=True)
    if sizes.get("tie_word_embeddings", True):
        model.tie_weights()
    left = [n for n, p in [*model.named_parameters(), *model.named_buffers()] if p.is_meta]
    if left:
        raise PtcliError(f"the Whisper weights leave {', '.join(left[:4])} unset", fix="This is a bug in ptcli")
    model.config.dtype = torch_dtype
    return model.to(torch_dtype).eval()
