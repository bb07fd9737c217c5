"""What a compression report measures: parameters (and how many are zero), bytes on disk, CPU latency.

Latency is the median wall time of ``repeats`` forward passes after ``warmup`` passes, at a fixed batch size and
input length, with a fixed number of torch threads, under ``torch.inference_mode``: the same protocol for the model
before and after, so the ratio is the comparison (the absolute figure depends on the machine and its load).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path


def parameter_counts(model) -> dict:
    """Parameters (packed int8 weights of quantized layers included) and how many of them are exactly zero."""
    import torch

    total = zeros = 0
    seen = set()
    tensors = list(_weights(model))  # held: a quantized layer's weight() is a new tensor, whose id can be reused
    for tensor in tensors:
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        total += tensor.numel()
        subclass = type(tensor) not in (torch.Tensor, torch.nn.Parameter)  # torchao's int8 tensors
        values = tensor.dequantize() if tensor.is_quantized or (subclass and hasattr(tensor, "dequantize")) else tensor
        zeros += int((values == 0).sum()) if torch.is_floating_point(values) else 0
    return {"parameters": total, "zeros": zeros, "sparsity": round(zeros / total, 4) if total else 0.0}


def _weights(model):
    yield from model.parameters()
    for module in model.modules():  # torch's dynamically quantized Linear keeps its weight outside parameters()
        weight = getattr(module, "weight", None)
        if callable(weight) and hasattr(module, "_packed_params"):
            yield weight()
            bias = module.bias()
            if bias is not None:
                yield bias


def folder_bytes(folder: str | Path) -> int:
    """The bytes of the model's weight files (safetensors, bin, pt), the tokenizer and config excluded."""
    folder = Path(folder)
    return sum(p.stat().st_size for p in folder.iterdir()
               if p.is_file() and p.suffix in (".safetensors", ".bin", ".pt", ".pth"))


def example_inputs(model, batch: int, seq_len: int) -> dict:
    """Inputs of the right shape for ``model`` (token ids, pixels or a waveform), seeded so every call is the same."""
    import torch

    config = model.config
    generator = torch.Generator().manual_seed(0)
    if getattr(config, "model_type", "") in ("wav2vec2", "hubert", "wavlm"):
        samples = int(getattr(config, "sampling_rate", 16000) or 16000)
        return {"input_values": torch.randn(batch, samples, generator=generator)}
    if hasattr(config, "image_size") and hasattr(config, "num_channels"):
        size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        return {"pixel_values": torch.randn(batch, config.num_channels, size, size, generator=generator)}
    text = getattr(config, "text_config", None) or config
    vocab = int(getattr(text, "vocab_size", 1000))
    ids = torch.randint(min(5, vocab - 1), vocab, (batch, seq_len), generator=generator)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if getattr(config, "is_encoder_decoder", False):
        inputs["decoder_input_ids"] = ids[:, : max(1, seq_len // 4)]
    return inputs


def latency_ms(model, inputs: dict, repeats: int = 10, warmup: int = 2, threads: int | None = None) -> float:
    """Median milliseconds of one forward pass of ``model`` on ``inputs`` (CPU)."""
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        times = []
        with torch.inference_mode():
            for i in range(warmup + repeats):
                started = time.perf_counter()
                model(**inputs)
                if i >= warmup:
                    times.append((time.perf_counter() - started) * 1000)
        return round(statistics.median(times), 3)
    finally:
        torch.set_num_threads(previous)


def measure(model, folder: str | Path, batch_sizes, seq_len: int, repeats: int, warmup: int,
            threads: int | None = None) -> dict:
    """Everything the report shows about one model except the task metric."""
    model.eval()
    figures = {**parameter_counts(model), "file_bytes": folder_bytes(folder)}
    for batch in batch_sizes:
        figures[f"latency_ms_b{batch}"] = latency_ms(model, example_inputs(model, batch, seq_len), repeats, warmup,
                                                     threads)
    return figures
