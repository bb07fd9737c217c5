"""What `ptcli generate` does with a model folder: the kind comes from the run's objective, else from the config;
speech models (a CTC head, Whisper) transcribe, and the models that do not generate are refused by name."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ptcli.errors import PtcliError
from ptcli.inference.loading import detect_kind, is_ctc


def config(**fields):
    return SimpleNamespace(**{"architectures": [], "model_type": "x", "is_encoder_decoder": False, **fields})


@pytest.mark.parametrize("fields, kind", [
    ({"architectures": ["Wav2Vec2ForCTC"], "model_type": "wav2vec2"}, "transcribe"),
    ({"architectures": ["WhisperForConditionalGeneration"], "model_type": "whisper", "is_encoder_decoder": True},
     "transcribe"),
    ({"architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "is_encoder_decoder": True}, "seq2seq"),
    ({"architectures": ["ElectraForPreTraining"]}, "replaced"),
    ({"architectures": ["BertForMaskedLM"]}, "fill-mask"),
    ({"architectures": ["LlamaForCausalLM"]}, "causal"),
])
def test_the_kind_follows_the_architecture(fields, kind):
    assert detect_kind(config(**fields)) == kind


def test_the_runs_objective_decides_before_the_architecture():
    ctc = {"objective": {"_target_": "ptcli.objectives.ctc.CTC"}}
    assert detect_kind(config(architectures=["Wav2Vec2ForMaskedLM"]), ctc) == "transcribe"
    classifier = {"objective": {"_target_": "ptcli.objectives.classification.SequenceClassification"}}
    with pytest.raises(PtcliError, match="classifier"):
        detect_kind(config(architectures=["BertForMaskedLM"]), classifier)


def test_only_ctc_heads_are_ctc():
    assert is_ctc(config(architectures=["HubertForCTC"]))
    assert not is_ctc(config(architectures=["WhisperForConditionalGeneration"])) and not is_ctc(object())
