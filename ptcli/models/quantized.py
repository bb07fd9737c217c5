"""Int8 models: quantize a model's Linear layers, save them as plain tensors, and rebuild them exactly.

Methods: ``dynamic-int8`` (torch's dynamic quantization: int8 weights, activations quantized on the fly, CPU),
``int8-weight`` and ``int8-dynamic`` (torchao's ``Int8WeightOnlyConfig`` / ``Int8DynamicActivationInt8WeightConfig``,
per-row int8 weights). GPT-2's ``Conv1D`` layers (Linear layers with the weight transposed) become ``nn.Linear``
first, so they are quantized too. A Linear whose weight is shared (an output layer tied to the token embeddings)
stays in fp32, tied.

A quantized module neither round-trips through ``save_pretrained`` nor loads safely with ``torch.load`` (packed
params are pickled objects), so a folder holds: ``model.safetensors`` with each quantized weight as its int8 values,
scale and zero point (``<module>.weight.int8|scale|zero_point`` for torch, ``<module>.weight.<part>`` for torchao's
tensor parts) and every other tensor in fp32; ``config.json``; ``ptcli_recipe.json`` naming the method and the
modules. ``load`` builds the model from its config, applies the same quantization to the same modules and then sets
every quantized weight from the stored tensors, so the reloaded model computes exactly what the saved one did.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

from ptcli.errors import PtcliError

METHODS = ("dynamic-int8", "int8-weight", "int8-dynamic")
TORCHAO_CONFIGS = {"int8-weight": "Int8WeightOnlyConfig", "int8-dynamic": "Int8DynamicActivationInt8WeightConfig"}
WEIGHTS = "model.safetensors"
TORCHAO_FIX = "pip install torchao (or pip install 'ptcli[quantize]'), or use method=dynamic-int8"


def quantize(model, method: str, log=None) -> dict:
    """Quantize ``model``'s Linear layers in place; returns what the recipe records (modules, linearized, kept)."""
    linearized = linearize(model)
    modules, kept = quantizable(model)
    if not modules:
        raise PtcliError(f"the model ({type(model).__name__}) has no Linear layers to quantize",
                         fix="Quantize a transformer model (BERT, GPT-2, Llama, ViT, ...)")
    apply(model, method, modules)
    if log is not None:
        log(f"{method}: {len(modules)} Linear layers in int8"
            + (f" ({len(linearized)} of them GPT-2 Conv1D layers, as Linear)" if linearized else "")
            + (f"; kept in fp32, tied to the embeddings: {', '.join(kept)}" if kept else ""))
    return {"modules": modules, "linearized": linearized, "kept": kept}


def torchao_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torchao") is not None


def quantizable(model) -> tuple[list[str], list[str]]:
    """(Linear layers to quantize, Linear layers left in fp32 because their weight is shared with another module)."""
    from collections import Counter

    import torch

    uses = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    modules, kept = [], []
    for name, module in model.named_modules():
        if type(module) is torch.nn.Linear:  # exactly Linear: subclasses (MultiheadAttention's) have no int8 form
            (kept if uses[id(module.weight)] > 1 else modules).append(name)
    return modules, kept


def linearize(model, only: list[str] | None = None) -> list[str]:
    """GPT-2's ``Conv1D`` layers (``x @ W + b``) replaced by the equivalent ``nn.Linear`` (weight ``W.T``); returns
    their names. ``only``: exactly these (a recipe's list)."""
    import torch

    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers without Conv1D
        Conv1D = ()
    done = []
    for name, module in list(model.named_modules()):
        if not isinstance(module, Conv1D) or (only is not None and name not in only):
            continue
        linear = torch.nn.Linear(module.nx, module.nf, device=module.weight.device, dtype=module.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(module.weight.T)
            linear.bias.copy_(module.bias)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, linear)
        done.append(name)
    if only is not None and sorted(done) != sorted(only):
        raise PtcliError(f"the model has no Conv1D layers named {sorted(set(only) - set(done))[:3]}",
                         fix="The folder's config.json and ptcli_recipe.json do not match; re-run ptcli quantize")
    return done


@contextlib.contextmanager
def _torch_deprecations():
    """torch deprecates its eager int8 quantization (``torch.ao.quantization``, qint8 tensors) but ships it; the
    method's documentation says so once instead of a screen of warnings per run."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel")
        yield


def torchao_config(method: str):
    if not torchao_available():
        raise PtcliError(f"method={method} needs torchao, which is not installed", fix=TORCHAO_FIX)
    import torchao.quantization as aoq

    return getattr(aoq, TORCHAO_CONFIGS[method])(set_inductor_config=False)  # leave torch.compile's settings alone


def apply(model, method: str, modules: list[str]) -> None:
    """The method's quantization of exactly ``modules`` (Linear layers), in place."""
    import torch

    if method not in METHODS:
        raise PtcliError(f"unknown quantization method {method!r}", fix=f"Use one of: {', '.join(METHODS)}")
    wanted = set(modules)
    linears = {name for name, m in model.named_modules() if type(m) is torch.nn.Linear}
    if wanted - linears:
        raise PtcliError(f"the model has no Linear layers named {sorted(wanted - linears)[:3]}",
                         fix="The folder's config.json and ptcli_recipe.json do not match; re-run ptcli quantize")
    if method == "dynamic-int8":
        with _torch_deprecations():
            # per-channel weight scales: one outlier row no longer coarsens a whole matrix (-1.2 points of SST-2
            # accuracy on MiniLM with per-tensor scales, docs/results.md)
            qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
            torch.ao.quantization.quantize_dynamic(model, {name: qconfig for name in wanted}, dtype=torch.qint8,
                                                   inplace=True)
        return
    from torchao.quantization import quantize_

    quantize_(model, torchao_config(method), filter_fn=lambda module, fqn: fqn in wanted)


# ---- saving


def quantized_tensors(model, method: str, modules: list[str]) -> dict:
    """Each quantized weight as plain tensors (int8 values, scales, zero points), plus torch's biases."""
    import torch

    out = {}
    for name in modules:
        module = model.get_submodule(name)
        if method == "dynamic-int8":
            weight, bias = module._packed_params._weight_bias()
            out[f"{name}.weight.int8"] = weight.int_repr()
            if weight.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
                out[f"{name}.weight.scale"] = torch.tensor(weight.q_scale(), dtype=torch.float64)
                out[f"{name}.weight.zero_point"] = torch.tensor(weight.q_zero_point(), dtype=torch.int64)
            else:
                if weight.q_per_channel_axis() != 0:
                    raise PtcliError(f"{name}: per-channel int8 weights along axis {weight.q_per_channel_axis()}",
                                     fix="Only axis 0 (output features) is supported")
                out[f"{name}.weight.scale"] = weight.q_per_channel_scales()
                out[f"{name}.weight.zero_point"] = weight.q_per_channel_zero_points()
            if bias is not None:
                out[f"{name}.bias"] = bias.detach()
        else:
            weight = module.weight
            for part in weight.__tensor_flatten__()[0]:
                out[f"{name}.weight.{part}"] = getattr(weight, part).detach()
    return {k: v.contiguous() for k, v in out.items()}


def rest_keys(model, method: str, modules: list[str]) -> list[str]:
    """The state_dict keys stored as they are (everything that is not a quantized weight)."""
    prefixes = tuple(f"{name}." for name in modules)
    quantized = {f"{name}.weight" for name in modules}
    keys = []
    for key in model.state_dict():
        if method == "dynamic-int8" and key.startswith(prefixes):
            continue  # packed params and the (unused) output scale of torch's dynamic Linear
        if method != "dynamic-int8" and key in quantized:
            continue
        keys.append(key)
    return keys


def save(model, folder: Path, method: str, details: dict) -> None:
    """``model.safetensors``, ``config.json`` (and the generation config) and ``ptcli_recipe.json``."""
    import torch
    from safetensors.torch import save_file

    from ptcli.models.restore import write_recipe

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    modules = details["modules"]
    tensors = quantized_tensors(model, method, modules)
    state = model.state_dict()
    seen: dict[tuple, str] = {}
    tied: dict[str, str] = {}
    for key in rest_keys(model, method, modules):
        tensor = state[key].detach()
        where = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
                 tuple(tensor.stride()), tensor.dtype)
        if tensor.numel() and where in seen:  # a tied weight: stored once, the recipe names its alias
            tied[key] = seen[where]
            continue
        seen[where] = key
        tensors[key] = tensor.contiguous()
    save_file(tensors, str(folder / WEIGHTS), metadata={"format": "pt", "ptcli": f"quantized {method}"})
    config = model.config
    config.architectures = [type(model).__name__]
    config.save_pretrained(folder)
    if getattr(model, "generation_config", None) is not None and model.can_generate():
        model.generation_config.save_pretrained(folder)
    recipe = {"kind": "quantized", "method": method, "modules": modules, "linearized": details["linearized"],
              "kept_fp32": details["kept"], "tied": tied, "torch": torch.__version__,
              "engine": torch.backends.quantized.engine if method == "dynamic-int8" else None}
    if method != "dynamic-int8":
        import torchao

        recipe["torchao"] = torchao.__version__
    write_recipe(folder, recipe)


# ---- loading


def load(auto, folder: Path, recipe: dict, log=None):
    """The model saved in ``folder``: built from its config, quantized as the recipe says, its int8 weights set
    exactly from the stored tensors (``ptcli.models.restore`` calls this for ``{"kind": "quantized"}``)."""
    import torch
    import transformers
    from safetensors.torch import load_file

    folder = Path(folder)
    method, modules = recipe.get("method"), list(recipe.get("modules") or [])
    if method not in METHODS:
        raise PtcliError(f"{folder / 'ptcli_recipe.json'} names an unknown quantization method {method!r}",
                         fix=f"Known methods: {', '.join(METHODS)}; re-create the folder with ptcli quantize")
    if method != "dynamic-int8" and not torchao_available():
        raise PtcliError(f"the model at {folder} was quantized with torchao (method={method}), which is not "
                         "installed", fix="pip install torchao (or pip install 'ptcli[quantize]')")
    if not (folder / WEIGHTS).is_file():
        raise PtcliError(f"{folder} has a quantization recipe but no {WEIGHTS}", fix="Re-run ptcli quantize")
    config = transformers.AutoConfig.from_pretrained(str(folder))
    try:
        model = auto.from_config(config)
    except ValueError as e:
        raise PtcliError(f"the quantized model at {folder} cannot be built as {auto.__name__}: "
                         f"{str(e).splitlines()[0]}", fix="Load it with the head it was saved with") from None
    model.eval()
    linearize(model, list(recipe.get("linearized") or []))
    apply(model, method, modules)
    tensors = load_file(str(folder / WEIGHTS))
    set_quantized(model, method, modules, tensors, folder)
    tied = dict(recipe.get("tied") or {})
    expected = set(rest_keys(model, method, modules))
    rest = {k: tensors[k] for k in expected if k in tensors}
    rest |= {alias: tensors[source] for alias, source in tied.items() if source in tensors}
    missing = sorted(expected - set(rest))
    unexpected = sorted(set(tensors) - expected - set(quantized_keys(model, method, modules)))
    if missing or unexpected:
        raise PtcliError(f"the weights in {folder / WEIGHTS} do not fit a {type(model).__name__} built from its "
                         f"config (missing: {missing[:3]}, unexpected: {unexpected[:3]})",
                         fix="Load it with the head it was saved with, or re-run ptcli quantize")
    state = model.state_dict(keep_vars=True)  # (load_state_dict would ask the quantized modules for their keys)
    with torch.no_grad():
        for key, value in rest.items():
            if state[key].shape != value.shape:
                raise PtcliError(f"{key}: stored {tuple(value.shape)} does not fit {tuple(state[key].shape)}",
                                 fix="Load it with the head it was saved with, or re-run ptcli quantize")
            state[key].copy_(value)
    if (folder / "generation_config.json").is_file():
        model.generation_config = transformers.GenerationConfig.from_pretrained(str(folder))
    if log is not None:
        log(f"quantized model ({method}, {len(modules)} Linear layers in int8) rebuilt from {folder.name}/"
            f"ptcli_recipe.json (saved with torch {recipe.get('torch')})")
    model.ptcli_quantized = method
    return model


def quantized_keys(model, method: str, modules: list[str]) -> list[str]:
    """The stored keys of the quantized weights (their names only: built from the module list)."""
    keys = []
    for name in modules:
        if method == "dynamic-int8":
            keys += [f"{name}.weight.int8", f"{name}.weight.scale", f"{name}.weight.zero_point", f"{name}.bias"]
        else:
            keys += [f"{name}.weight.{part}" for part in model.get_submodule(name).weight.__tensor_flatten__()[0]]
    return keys


def set_quantized(model, method: str, modules: list[str], tensors: dict, folder: Path) -> None:
    """Every quantized weight set from its stored int8 values, scale and zero point (the same packing as saved)."""
    import torch

    def stored(key: str):
        if key not in tensors:
            raise PtcliError(f"{folder / WEIGHTS} lacks {key}", fix="Re-run ptcli quantize")
        return tensors[key]

    for name in modules:
        module = model.get_submodule(name)
        if method == "dynamic-int8":
            values, scale, zero = (stored(f"{name}.weight.{p}") for p in ("int8", "scale", "zero_point"))
            if tuple(values.shape) != (module.out_features, module.in_features):
                raise PtcliError(f"{name}: stored int8 weight {tuple(values.shape)} does not fit the layer "
                                 f"({module.out_features}, {module.in_features})", fix="Re-run ptcli quantize")
            with _torch_deprecations():
                if scale.dim() == 0:
                    weight = torch._make_per_tensor_quantized_tensor(values, float(scale), int(zero))
                else:
                    weight = torch._make_per_channel_quantized_tensor(values, scale, zero, 0)
                module.set_weight_bias(weight, tensors.get(f"{name}.bias"))
        else:
            weight = module.weight
            for part in weight.__tensor_flatten__()[0]:
                target, value = getattr(weight, part), stored(f"{name}.weight.{part}")
                if target.shape != value.shape or target.dtype != value.dtype:
                    raise PtcliError(f"{name}.weight.{part}: stored {tuple(value.shape)} {value.dtype} does not "
                                     f"fit {tuple(target.shape)} {target.dtype}", fix="Re-run ptcli quantize")
                with torch.no_grad():
                    target.copy_(value)
