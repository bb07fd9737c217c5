"""Speech recognition in ``generate`` and ``predict``-style batches: WAV paths in, transcripts out.

A CTC model (``objective=ctc``, any ``AutoModelForCTC`` with its character tokenizer) decodes greedily: the best
token per frame, repeats merged, blanks dropped. A speech encoder-decoder (Whisper, ``ptcli convert``'s output)
generates from its log-mel features (``max_new_tokens``, ``num_beams``). Each file is read, mixed down to mono and
resampled to the feature extractor's rate; a missing or unreadable file is reported and the rest of its batch
still runs."""

from __future__ import annotations

from dataclasses import dataclass

from ptcli.inference.loading import is_ctc
from ptcli.inference.prompts import BadPrompt, Prompt


@dataclass
class Transcript:
    """One audio file's transcript and its length in seconds."""

    prompt: Prompt
    text: str
    seconds: float


class Transcriber:
    """Transcripts for batches of WAV paths (a CTC model, or a speech encoder-decoder that generates)."""

    def __init__(self, loaded, cfg, log):
        self.loaded, self.log = loaded, log
        self.extractor = loaded.processors.get("feature_extractor")
        if self.extractor is None:
            from ptcli.errors import PtcliError

            raise PtcliError(f"the speech model at '{loaded.path}' has no feature extractor "
                             "(preprocessor_config.json)", fix="Save the model's feature extractor in its folder")
        self.ctc = is_ctc(loaded.model.config)
        self.max_new_tokens, self.num_beams = cfg.max_new_tokens, cfg.get("num_beams", 1)

    def transcribe(self, prompts: list[Prompt]) -> list[Transcript | BadPrompt]:
        import torch

        from ptcli.inference.classify import read_clips

        rate = int(self.extractor.sampling_rate)
        out: dict = {}
        usable, clips = read_clips(prompts, rate, out)
        if usable:
            device, placement = self.loaded.placement.device, self.loaded.placement
            with torch.inference_mode(), placement.autocast():
                texts = self.ctc_texts(clips, rate, device) if self.ctc else self.generated(clips, rate, device)
            for prompt, clip, text in zip(usable, clips, texts):
                out[prompt.index] = Transcript(prompt, text.strip(), round(len(clip) / rate, 3))
        return [out[p.index] for p in prompts]

    def ctc_texts(self, clips, rate: int, device) -> list[str]:
        from ptcli.objectives.ctc import greedy_decode, valid_frames
        from ptcli.processing.audio import features

        inputs = {k: v.to(device) for k, v in features(self.extractor, clips, rate).items()}
        logits = self.loaded.model(**inputs).logits
        frames = valid_frames(self.loaded.model, inputs.get("attention_mask"), logits)
        return greedy_decode(self.loaded.tokenizer, logits, frames)

    def generated(self, clips, rate: int, device) -> list[str]:
        inputs = self.extractor(clips, sampling_rate=rate, return_tensors="pt")
        features = inputs["input_features"].to(device=device, dtype=next(self.loaded.model.parameters()).dtype)
        ids = self.loaded.model.generate(input_features=features, max_new_tokens=self.max_new_tokens,
                                         num_beams=self.num_beams, do_sample=False)
        return self.loaded.tokenizer.batch_decode(ids, skip_special_tokens=True)
