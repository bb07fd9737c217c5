"""Pre-flight rules of distillation (``distill.*``) and the compression verbs (``prune``, ``quantize``): torch-free."""

from __future__ import annotations

import importlib.util

from ptcli.config.paths import model_path_problem


def distill_problems(cfg: dict, check_files: bool) -> list[str]:
    distill = cfg["distill"]
    problems = []
    if distill["temperature"] <= 0:
        problems.append(f"distill.temperature must be positive, got {distill['temperature']}")
    if not 0 <= distill["alpha"] <= 1:
        problems.append(f"distill.alpha is the weight of the soft loss, between 0 and 1; got {distill['alpha']}")
    if distill["hidden_weight"] < 0:
        problems.append(f"distill.hidden_weight must not be negative, got {distill['hidden_weight']}")
    teacher = distill.get("teacher")
    if not teacher:
        if distill["init_from_teacher"]:
            problems.append("distill.init_from_teacher=true needs distill.teacher=<the teacher's run or folder>")
        return problems
    where = model_path_problem(str(teacher)) if check_files else None
    if where:
        problems.append(f"distill.teacher '{teacher}' {where}")
    return problems


def quantized_folder(path: str) -> bool:
    import json

    from ptcli.config.paths import resolve_model_dir

    folder = resolve_model_dir(path)
    recipe = folder / "ptcli_recipe.json" if folder is not None else None
    try:
        return recipe is not None and recipe.is_file() and json.loads(recipe.read_text()).get("kind") == "quantized"
    except (OSError, ValueError, AttributeError):
        return False


def compress_problems(verb: str, cfg: dict, from_run: bool) -> list[str]:
    problems = [f"{key} must be at least 1, got {cfg[key]}" for key in ("batch_size",) if cfg[key] < 1]
    latency = cfg["latency"]
    problems += [f"latency.{key} must be at least 1, got {latency[key]}" for key in ("repeats",) if latency[key] < 1]
    if not latency["batch_sizes"] or any(b < 1 for b in latency["batch_sizes"]):
        problems.append(f"latency.batch_sizes must be positive batch sizes, got {latency['batch_sizes']}")
    if verb == "prune":
        if not 0 < cfg["amount"] < 1:
            problems.append(f"amount is the fraction to remove, between 0 and 1 (exclusive); got {cfg['amount']}")
        if cfg["importance_batches"] < 1:
            problems.append(f"importance_batches must be at least 1, got {cfg['importance_batches']}")
    if verb == "quantize" and cfg["method"] != "dynamic-int8" and importlib.util.find_spec("torchao") is None:
        problems.append(f"method={cfg['method']} needs torchao, which is not installed: pip install torchao "
                        "(or pip install 'ptcli[quantize]'), or use method=dynamic-int8 (torch's own)")
    needs_data = cfg["evaluate"] or (verb == "prune" and cfg["method"] != "magnitude"
                                     and cfg["importance"] == "gradient")
    if needs_data and not from_run and (cfg.get("objective") is None or cfg.get("dataset") is None):
        problems.append(f"model.path is not a ptcli run directory, so {verb} does not know the task: name it with "
                        "objective=... and dataset=... (the metric before and after"
                        + (", and the gradient importance" if verb == "prune" else "") + " use them), or set "
                        "evaluate=false" + (" importance=norm" if verb == "prune" else ""))
    return problems
