"""What ptcli knows about model families, by Hugging Face ``model_type`` (torch-free): the size keys of their
configs and which are encoders, decoders, encoder-decoders, vision or audio models. A new family is a line here (and
a YAML in configs/model/); see docs/architecture.md."""

from __future__ import annotations

ENCODERS = {"bert", "roberta", "distilbert", "electra", "deberta", "deberta-v2", "albert", "xlm-roberta", "modernbert",
            "camembert", "mpnet", "megatron-bert", "ernie"}
ENCODER_DECODERS = {"t5", "mt5", "umt5", "bart", "mbart", "pegasus", "marian", "led", "longt5"}
VISION = {"vit", "vit_mae", "deit", "beit", "swin", "convnext", "dinov2"}
# Audio encoders over raw waveforms with a convolutional feature encoder (a Wav2Vec2FeatureExtractor's input_values).
# Speech encoder-decoders over log-mel features: they transcribe (generate's kind=transcribe), not generate text; their
# shape is audio too (objective=audio_classification puts a head on Whisper's encoder: WhisperForAudioClassification).
SPEECH_SEQ2SEQ = {"whisper", "speech_to_text", "speecht5"}
AUDIO = {"wav2vec2", "wav2vec2-conformer", "hubert", "wavlm", "data2vec-audio", "unispeech", "unispeech-sat", "sew",
         "sew-d"}

# Our size names -> each architecture's Hugging Face config keys (a tuple sets several keys to one value).
ARCH_KEYS = {
    "gpt2": {"layers": "n_layer", "heads": "n_head", "hidden": "n_embd", "intermediate": "n_inner",
             "max_positions": "n_positions", "dropout": ("resid_pdrop", "embd_pdrop", "attn_pdrop")},
    "bert": {"layers": "num_hidden_layers", "heads": "num_attention_heads", "hidden": "hidden_size",
             "intermediate": "intermediate_size", "max_positions": "max_position_embeddings",
             "dropout": ("hidden_dropout_prob", "attention_probs_dropout_prob")},
    # T5 has relative positions: max_positions only bounds seq_len in validation.
    "t5": {"layers": ("num_layers", "num_decoder_layers"), "heads": "num_heads", "hidden": "d_model",
           "intermediate": "d_ff", "dropout": "dropout_rate"},
    "bart": {"layers": ("encoder_layers", "decoder_layers"),
             "heads": ("encoder_attention_heads", "decoder_attention_heads"), "hidden": "d_model",
             "intermediate": ("encoder_ffn_dim", "decoder_ffn_dim"), "max_positions": "max_position_embeddings",
             "dropout": "dropout"},
    "vit": {"layers": "num_hidden_layers", "heads": "num_attention_heads", "hidden": "hidden_size",
            "intermediate": "intermediate_size", "dropout": ("hidden_dropout_prob", "attention_probs_dropout_prob")},
    # the convolutional feature encoder's sizes (conv_dim, conv_stride, conv_kernel) go in model.extra
    "wav2vec2": {"layers": "num_hidden_layers", "heads": "num_attention_heads", "hidden": "hidden_size",
                 "intermediate": "intermediate_size",
                 "dropout": ("hidden_dropout", "attention_dropout", "activation_dropout", "final_dropout")},
}
ARCH_KEYS["hubert"] = ARCH_KEYS["wavlm"] = ARCH_KEYS["data2vec-audio"] = ARCH_KEYS["wav2vec2"]
ARCH_KEYS["electra"] = ARCH_KEYS["roberta"] = ARCH_KEYS["bert"]
ARCH_KEYS["vit_mae"] = ARCH_KEYS["vit"]
GENERIC_KEYS = {"layers": "num_hidden_layers", "heads": "num_attention_heads", "kv_heads": "num_key_value_heads",
                "hidden": "hidden_size", "intermediate": "intermediate_size",
                "max_positions": "max_position_embeddings", "dropout": "attention_dropout"}


def size_keys(arch: str | None) -> dict:
    """Our size names -> the family's config keys."""
    return ARCH_KEYS.get(arch or "", GENERIC_KEYS)


def is_ctc(architectures) -> bool:
    """A speech model with a CTC head (its ``architectures`` name a ``...ForCTC`` class): it transcribes frame by
    frame, where the speech encoder-decoders generate."""
    return any(str(a).endswith("ForCTC") for a in architectures or [])


def shape(arch: str | None) -> str | None:
    """'encoder', 'encoder-decoder', 'vision', 'audio' or 'decoder' for a known model_type (None: unknown before
    loading)."""
    if not arch:
        return None
    if arch in ENCODERS:
        return "encoder"
    if arch in ENCODER_DECODERS:
        return "encoder-decoder"
    if arch in VISION:
        return "vision"
    if arch in AUDIO or arch in SPEECH_SEQ2SEQ:
        return "audio"
    return "decoder"
