"""Pre-flight rules of adversarial training (``+adversarial=...``): torch-free."""

from __future__ import annotations

ADVERSARIAL_OBJECTIVES = ("classification", "token_classification")  # ptcli.objectives.adversarial.SUPPORTED


def adversarial_problems(cfg: dict, objective_cls) -> list[str]:
    a = cfg["adversarial"]
    method = a["method"]
    problems = []
    name = getattr(objective_cls, "name", None)
    if name is not None and name not in ADVERSARIAL_OBJECTIVES:
        problems.append(f"+adversarial={method} perturbs the input embeddings of a classifier or tagger; "
                        f"objective={name} is neither (use objective=classification or token_classification)")
    if a["epsilon"] < 0 or (method in ("fgm", "pgd") and a["epsilon"] == 0):
        problems.append(f"adversarial.epsilon is the perturbation's size and must be positive for {method}, "
                        f"got {a['epsilon']}")
    if method != "fgm" and a["steps"] < 1:
        problems.append(f"adversarial.steps must be at least 1, got {a['steps']}")
    if method != "fgm" and a["step_size"] <= 0:
        problems.append(f"adversarial.step_size must be positive, got {a['step_size']}")
    if method == "freelb" and a["init_mag"] < 0:
        problems.append(f"adversarial.init_mag must not be negative, got {a['init_mag']}")
    if (cfg.get("distill") or {}).get("teacher"):
        problems.append("+adversarial with distill.teacher is not supported (the teacher would read other "
                        "embeddings than the student's perturbed ones): train one of them first")
    if (cfg.get("device") or {}).get("strategy") == "fsdp":
        problems.append("+adversarial with device.strategy=fsdp is not supported (the embedding layer runs outside "
                        "the sharded forward): use device.strategy=ddp")
    return problems
