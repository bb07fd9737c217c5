"""Audio classification: the loss is the summed cross-entropy over clips (padding masked), the model's shape is checked
in pre-flight, and its FLOPs per second of audio are the convolutions' and the transformer's."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import torch.nn.functional as F  # noqa: E402

from ptcli.objectives.audio_classification import AudioClassification  # noqa: E402

GEN = torch.Generator().manual_seed(0)


def tiny_wav2vec2():
    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, conv_dim=(8, 8),
        conv_stride=(5, 4), conv_kernel=(10, 4), feat_extract_norm="layer", num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=2, apply_spec_augment=False, layerdrop=0.0, hidden_dropout=0.0,
        attention_dropout=0.0, activation_dropout=0.0, final_dropout=0.0, classifier_proj_size=8, num_labels=3)
    return transformers.Wav2Vec2ForSequenceClassification(config).eval()


def test_audio_classification_is_the_summed_cross_entropy_over_clips():
    model = tiny_wav2vec2()
    mask = torch.ones(3, 800, dtype=torch.long)
    mask[1, 500:] = 0  # a shorter clip, padded
    batch = {"input_values": torch.randn(3, 800, generator=GEN), "attention_mask": mask,
             "labels": torch.tensor([0, 2, 1]), "seconds": 0.2}
    out = AudioClassification().loss(model, batch)
    logits = model(input_values=batch["input_values"], attention_mask=mask).logits
    assert out.count.item() == 3
    assert out.sum.item() == pytest.approx(F.cross_entropy(logits, batch["labels"], reduction="sum").item(), rel=1e-6)
    assert AudioClassification().units(batch) == 0.2


def test_preflight_refuses_text_and_vision_models():
    ok = AudioClassification.config_problems({"model": {"arch": "wav2vec2"}}, None)
    bert = AudioClassification.config_problems({"model": {"arch": "bert"}}, None)
    vit = AudioClassification.config_problems({"model": {"path": "x"}}, {"model_type": "vit"})
    assert ok == [] and "needs an audio model" in bert[0] and "model=wav2vec2-tiny" in bert[0]
    assert "the model at model.path is a 'vit'" in vit[0]
    assert AudioClassification.config_problems({"model": {"path": "org/name"}}, None) == []


def test_settings_are_checked_when_built():
    from ptcli.errors import PtcliError

    for bad in ({"max_seconds": 0}, {"time_masks": -1}, {"sampling_rate": 16}):
        with pytest.raises(PtcliError):
            AudioClassification(**bad)


def test_flops_per_second_of_audio_count_the_convolutions():
    objective = AudioClassification(max_seconds=1.0)
    objective.processors = {"feature_extractor": transformers.Wav2Vec2FeatureExtractor(sampling_rate=16000)}
    flops = objective.flops_per_unit(tiny_wav2vec2(), 0)
    conv = 2 * 10 * 1 * 8 * 3200 + 2 * 4 * 8 * 8 * 800  # 3200 and 800 frames a second after each stride
    assert flops > 3 * conv
