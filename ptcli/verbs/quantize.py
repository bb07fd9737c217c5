"""``quantize``: a trained model's Linear layers in int8 (``method=dynamic-int8``: torch's dynamic quantization;
``int8-weight`` / ``int8-dynamic``: torchao), with size, CPU latency and the task metric before and after
(``verbs/compress.py``). The methods and the folder format are in ``ptcli/models/quantized.py``; the result is a
ptcli run directory that evaluate, generate and predict load as it is (on the CPU)."""

from __future__ import annotations

from pathlib import Path


def run(cfg, run_dir: Path, stdout=None, stderr=None) -> dict:
    """Quantize as ``cfg`` says into ``run_dir``; returns the report (also ``compression.json``)."""
    from ptcli.verbs.compress import run_compression

    def compress(task, loaded, out: Path) -> dict:
        import torch

        from ptcli.models import quantized

        torch.manual_seed(cfg.seed)
        details = quantized.quantize(loaded.model, cfg.method, task.log)
        quantized.save(loaded.model, out, cfg.method, details)
        return {"method": cfg.method, "layers_quantized": len(details["modules"]),
                "layers_fp32": details["kept"],
                "engine": torch.backends.quantized.engine if cfg.method == "dynamic-int8" else "torchao"}

    return run_compression(cfg, run_dir, "quantize", compress, stdout, stderr)
