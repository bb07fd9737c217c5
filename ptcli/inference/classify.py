"""What ``predict`` runs: a classifier (images, audio or text) over batches of inputs -> the top-k labels with their
probabilities, in input order. An input that cannot be used (a missing or unreadable image or WAV file) is reported,
and the rest of its batch still runs."""

from __future__ import annotations

from dataclasses import dataclass

from ptcli.errors import PtcliError
from ptcli.models.families import shape

IMAGE, AUDIO, TEXT = "image", "audio", "text"
AUTO_CLASSES = {IMAGE: "AutoModelForImageClassification", AUDIO: "AutoModelForAudioClassification",
                TEXT: "AutoModelForSequenceClassification"}


@dataclass
class Prediction:
    """One input's labels, best first: ``[{"label": name, "score": probability}, ...]``."""

    prompt: object  # the input (inference.prompts.Prompt: its text, where it came from, carried fields)
    labels: list  # empty for a regression model
    value: float | None = None  # a regression model's output

    def record(self) -> dict:
        """The JSON Lines object: carried fields, the input, then its label and score (or value) and the top-k."""
        out = {**self.prompt.fields, "input": self.prompt.text}
        if self.value is not None:
            return out | {"value": self.value}
        return out | {"label": self.labels[0]["label"], "score": self.labels[0]["score"], "top": self.labels}


def input_kind(config) -> str:
    """``image``, ``audio`` or ``text``: what the classifier at hand reads, from its config's architectures."""
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith("ForImageClassification") for a in archs):
        return IMAGE
    # wav2vec2's audio classifier is a Wav2Vec2ForSequenceClassification: the model type tells it from a text one
    if any(a.endswith(("ForAudioClassification", "ForSequenceClassification")) for a in archs) \
            and shape(getattr(config, "model_type", None)) == "audio":
        return AUDIO
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return TEXT
    shown = archs[0] if archs else getattr(config, "model_type", "unknown")
    raise PtcliError(f"the model is a {shown}, not a classifier of images, audio or texts",
                     fix="Give predict an image, audio or text classifier (a ptcli finetune run); "
                         "use `ptcli generate` for language models")


class Classifier:
    """Top-k labels for batches of inputs: image paths (read with Pillow), WAV paths (mono, resampled to the feature
    extractor's rate, whole: as transformers' pipeline reads them) or texts (tokenized, truncated)."""

    def __init__(self, loaded, kind: str, top_k: int, log):
        self.loaded, self.kind, self.log = loaded, kind, log
        config = loaded.model.config
        self.names = [str(config.id2label.get(i, i)) for i in range(config.num_labels)]
        self.top_k = min(top_k, len(self.names))
        self.regression = config.problem_type == "regression" or config.num_labels == 1
        self.max_len = min(loaded.context or 512, 512)

    def predict(self, batch: list) -> list:
        """Predictions (and ``BadPrompt``s for unusable inputs), in the batch's order."""
        from ptcli.inference.prompts import BadPrompt

        usable, out = [], {}
        if self.kind == IMAGE:
            from ptcli.processing.images import rgb

            images = []
            for prompt in batch:
                try:
                    images.append(rgb(prompt.text, prompt.where))
                    usable.append(prompt)
                except PtcliError as e:
                    out[prompt.index] = BadPrompt(prompt.where, e.what)
                except FileNotFoundError:
                    out[prompt.index] = BadPrompt(prompt.where, f"the image '{prompt.text}' does not exist")
            inputs = self.loaded.processors["image_processor"](images, return_tensors="pt") if images else None
        elif self.kind == AUDIO:
            usable, inputs = self.audio_inputs(batch, out)
        else:
            usable = list(batch)
            inputs = self.loaded.processors.tokenizer([p.text for p in batch], padding=True, truncation=True,
                                                      max_length=self.max_len, return_tensors="pt")
        if usable:
            for prompt, labels in zip(usable, self.top(inputs)):
                out[prompt.index] = (Prediction(prompt, [], labels) if self.regression
                                     else Prediction(prompt, labels))
        return [out[p.index] for p in batch]

    def audio_inputs(self, batch: list, out: dict):
        """The batch's readable WAV files as padded features (the others reported into ``out``)."""
        from ptcli.processing.audio import features

        extractor = self.loaded.processors["feature_extractor"]
        usable, clips = read_clips(batch, extractor.sampling_rate, out)
        return usable, features(extractor, clips) if clips else None

    def top(self, inputs) -> list:
        import torch

        device = self.loaded.placement.device
        with torch.inference_mode():
            logits = self.loaded.model(**{k: v.to(device) for k, v in inputs.items()}).logits.float()
        if self.regression:
            return [round(float(v), 6) for v in logits[:, 0].tolist()]
        if getattr(self.loaded.model.config, "problem_type", None) == "multi_label_classification":
            probs = logits.sigmoid()
        else:
            probs = logits.softmax(-1)
        scores, ids = probs.topk(self.top_k, dim=-1)
        return [[{"label": self.names[i], "score": round(float(s), 6)} for s, i in zip(row_s, row_i)]
                for row_s, row_i in zip(scores.tolist(), ids.tolist())]


def read_clips(batch: list, rate: int, out: dict) -> tuple[list, list]:
    """The prompts whose WAV file (their text) could be read, and its samples at ``rate`` Hz; a missing or
    unreadable file becomes a ``BadPrompt`` in ``out`` under the prompt's index."""
    from ptcli.inference.prompts import BadPrompt
    from ptcli.objectives.audio import load_audio

    usable, clips = [], []
    for prompt in batch:
        try:
            clips.append(load_audio(prompt.text, rate, prompt.where))
            usable.append(prompt)
        except PtcliError as e:
            out[prompt.index] = BadPrompt(prompt.where, e.what)
        except (FileNotFoundError, IsADirectoryError):
            out[prompt.index] = BadPrompt(prompt.where, f"the audio file '{prompt.text}' does not exist")
    return usable, clips
