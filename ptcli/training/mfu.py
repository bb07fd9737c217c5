"""The device's peak FLOP/s, for model FLOPs utilisation (MFU): published dense figures for known GPUs, and for a
CPU an assumption stated in the log (threads x clock x FLOP per cycle of its widest FMA unit)."""

from __future__ import annotations

# Dense tensor-core TFLOP/s by GPU name fragment: (bf16/fp16, tf32/fp32). From the vendors' data sheets.
GPU_PEAKS = {"H200": (989e12, 494e12), "H100": (989e12, 494e12), "A100": (312e12, 156e12), "L40S": (362e12, 183e12),
             "A10G": (70e12, 35e12), "L4": (121e12, 60e12), "V100": (125e12, 15.7e12), "T4": (65e12, 8.1e12)}


def peak_flops(placement) -> tuple[float | None, str]:
    """(peak FLOP/s or None, how it was found) for the run's device and precision."""
    import torch

    device = placement.device
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, (half, full) in GPU_PEAKS.items():
            if key in name:
                peak = half if placement.precision in ("bf16", "fp16") else full
                return peak, f"{name}: {peak / 1e12:.0f} TFLOP/s dense {placement.precision} (data sheet)"
        return None, f"{name}: peak unknown, MFU not reported"
    if device.type != "cpu":
        return None, f"{device.type}: peak unknown, MFU not reported"
    threads = torch.get_num_threads()
    ghz, per_cycle, isa = cpu_clock_ghz(), *cpu_flops_per_cycle()
    peak = threads * ghz * 1e9 * per_cycle
    return peak, (f"assumed CPU peak {peak / 1e9:.0f} GFLOP/s = {threads} threads x {ghz:.2f} GHz x {per_cycle} fp32 "
                  f"FLOP/cycle ({isa})")


def cpu_clock_ghz() -> float:
    """The CPU's clock from /proc/cpuinfo (its first 'cpu MHz'), 2.0 GHz when it cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return float(line.split(":")[1]) / 1000
    except (OSError, ValueError):
        pass
    return 2.0


def cpu_flops_per_cycle() -> tuple[int, str]:
    """fp32 FLOP per cycle and core of the widest fused multiply-add unit the CPU reports: two FMA units of 16
    (AVX-512) or 8 (AVX2) lanes, two FLOPs each."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        flags = []
    if "avx512f" in flags:
        return 64, "AVX-512 FMA"
    if "avx2" in flags and "fma" in flags:
        return 32, "AVX2 FMA"
    return 8, "SSE"
