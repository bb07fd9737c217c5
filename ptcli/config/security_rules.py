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


def attack_problems(cfg: dict, check_files: bool) -> list[str]:
    """``evaluate +attack=...``: its settings, and the masked LM bae needs."""
    from ptcli.config.paths import model_path_problem

    a = cfg["attack"]
    problems = []
    if a["examples"] is not None and a["examples"] < 1:
        problems.append(f"attack.examples must be at least 1 (or null: all of them), got {a['examples']}")
    if not 0 < a["max_fraction"] <= 1:
        problems.append(f"attack.max_fraction is the most words changed, a fraction in (0, 1]; got {a['max_fraction']}")
    if a["candidates"] < 1:
        problems.append(f"attack.candidates must be at least 1, got {a['candidates']}")
    mlm = a.get("mlm")
    if a["method"] == "bae" and not mlm:
        problems.append("attack=bae needs a masked LM to propose words: set attack.mlm=<a ptcli pretrain "
                        "+objective=mlm run, a model folder or a Hub name>")
    elif mlm and check_files and (where := model_path_problem(str(mlm))):
        problems.append(f"attack.mlm '{mlm}' {where}")
    return problems
