"""ptcli: pretrain, fine-tune, generate with and evaluate transformer models from the command line."""

import logging as _logging
import os as _os

__version__ = "0.1.0"

# Lines every run would print once torchao is installed (transformers imports it whenever it is): torchao failing to
# load its CUDA-only kernels (and finding no Triton) on a machine without CUDA, and torch deprecating the way torchao
# registers its enums.
# They say nothing a ptcli user can act on; only these messages are dropped (``--debug``/``PTCLI_DEBUG=1`` shows
# them), every other warning of these loggers still reaches stderr. Installed here, before anything imports torch.
_KNOWN_NOISE = {
    "torchao": lambda m: m.startswith("Failed to load ") and "torchao" in m and "_C" in m and ".so" in m and _cpu(),
    "torchao.kernel.intmm": lambda m: "Detected no triton" in m and _cpu(),
    "torch.utils._pytree": lambda m: "is an Enum subclass and is now natively supported by torch.compile" in m,
}


def _cpu() -> bool:
    """torch without CUDA: torchao's GPU kernels (and Triton) are of no use, so their absence is no news."""
    import sys

    torch = sys.modules.get("torch")
    try:
        return torch is not None and not torch.cuda.is_available()
    except Exception:
        return False


def _noise_filter(is_noise):
    def keep(record) -> bool:
        if _os.environ.get("PTCLI_DEBUG", "") not in ("", "0", "false", "no"):
            return True
        try:
            return not is_noise(record.getMessage())
        except Exception:  # a record whose message cannot be formatted is not ours to judge
            return True

    return keep


for _name, _is_noise in _KNOWN_NOISE.items():
    _logging.getLogger(_name).addFilter(_noise_filter(_is_noise))
