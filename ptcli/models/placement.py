"""Where a model runs and in which precision (from the ``device`` config): autocast context and loss scaler."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from ptcli.errors import PtcliError


@dataclass
class Placement:
    """Where the model runs and in which precision."""

    device: Any  # torch.device
    precision: str  # fp32 | bf16 | fp16

    @property
    def autocast_dtype(self):
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def autocast(self):
        """Mixed precision for the forward pass (weights stay fp32); a no-op in fp32."""
        import torch

        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def scaler(self):
        """A gradient scaler for fp16 (bf16 and fp32 need none)."""
        import torch

        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")


def resolve(device_cfg, local_rank: int = 0) -> Placement:
    """``auto`` means CUDA when present (bf16 if supported, else fp16), else the CPU in fp32: CPUs without
    native bf16 (AVX2 only) run bf16 matmuls far slower than fp32."""
    import torch

    accel = device_cfg.accelerator
    if accel == "auto":
        if torch.cuda.is_available():
            accel = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            accel = "mps"
        else:
            accel = "cpu"
    if accel == "cuda" and not torch.cuda.is_available():
        raise PtcliError("device.accelerator=cuda but no CUDA device is visible", fix="Use device=cpu or device=auto")
    device = torch.device(f"cuda:{local_rank}") if accel == "cuda" else torch.device(accel)
    precision = device_cfg.precision
    if precision == "auto":
        if accel == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"
    if device_cfg.threads:
        torch.set_num_threads(device_cfg.threads)
    if accel == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Placement(device, precision)
