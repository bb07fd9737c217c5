"""Pre-flight rules of ``explain``: torch-free (the model's config.json, the settings, the captum package)."""

from __future__ import annotations

import importlib.util

EXPLAINED = ("ForSequenceClassification", "ForTokenClassification", "ForCausalLM", "LMHeadModel")


def explain_problems(cfg: dict, loaded: dict | None) -> list[str]:
    problems = []
    if cfg["method"] in ("ig", "both") and importlib.util.find_spec("captum") is None:
        problems.append("explain's integrated gradients need the captum package: pip install 'ptcli[explain]' "
                        "(or method=rollout, which does without)")
    for key in ("steps", "batch_size"):
        if cfg[key] < 1:
            problems.append(f"{key} must be at least 1, got {cfg[key]}")
    if cfg["max_inputs"] is not None and cfg["max_inputs"] < 1:
        problems.append(f"max_inputs must be at least 1 (or null: all), got {cfg['max_inputs']}")
    if cfg["index"] < 0:
        problems.append(f"index must not be negative, got {cfg['index']}")
    archs = (loaded or {}).get("architectures") or []
    audio = (loaded or {}).get("model_type") in ("wav2vec2", "hubert", "wavlm", "whisper")
    if loaded is not None and (audio or not any(a.endswith(EXPLAINED) for a in archs)):
        shown = archs[0] if archs else loaded.get("model_type", "unknown")
        problems.append(f"explain needs a text classifier, a token classifier or a causal LM, but model.path holds a "
                        f"{shown}; give it a `ptcli finetune` run (classification, token_classification) or a "
                        "causal LM")
    return problems
