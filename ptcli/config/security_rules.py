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


PRIVATE_OBJECTIVES = ("classification", "token_classification")  # one example = one training row


def privacy_problems(cfg: dict, objective_cls) -> list[str]:
    """``+privacy=dp``: what DP-SGD can make private here, and what it cannot (refused before the run starts)."""
    p = cfg["privacy"]
    problems = []
    name = getattr(objective_cls, "name", None)
    if name is not None and name not in PRIVATE_OBJECTIVES:
        why = (" (it packs rows into blocks, so one gradient mixes several people's text)"
               if name in ("clm", "mlm", "sft", "span_corruption", "denoising", "electra") else "")
        problems.append(f"+privacy=dp protects the rows of a classifier's or tagger's training data; objective={name} "
                        f"is not supported{why}: use objective=classification or token_classification")
    if p.get("epsilon") is None and p.get("noise_multiplier") is None:
        problems.append("+privacy=dp needs privacy.epsilon (the budget) or privacy.noise_multiplier (the noise)")
    elif p.get("epsilon") is not None and p.get("noise_multiplier") is not None:
        problems.append("privacy.epsilon and privacy.noise_multiplier both set: the noise follows from the budget; "
                        "set privacy.epsilon=null to give the noise yourself")
    if p.get("epsilon") is not None and p["epsilon"] <= 0:
        problems.append(f"privacy.epsilon must be positive, got {p['epsilon']}")
    if p.get("noise_multiplier") is not None and p["noise_multiplier"] <= 0:
        problems.append(f"privacy.noise_multiplier must be positive, got {p['noise_multiplier']}")
    if not 0 < p["delta"] < 1:
        problems.append(f"privacy.delta is a probability in (0, 1), got {p['delta']}")
    if p["max_grad_norm"] <= 0:
        problems.append(f"privacy.max_grad_norm is each example's clipping norm and must be positive, "
                        f"got {p['max_grad_norm']}")
    train = cfg.get("train") or {}
    if not (train.get("max_steps") or train.get("epochs")):
        problems.append("+privacy=dp needs the planned steps to set the noise: give train.max_steps or train.epochs")
    device = cfg.get("device") or {}
    if device.get("strategy") in ("ddp", "fsdp"):
        problems.append(f"+privacy=dp with device.strategy={device['strategy']} is not supported: the noise must be "
                        "added once to the sum over all processes; train in one process (device.strategy=single)")
    if device.get("precision") == "fp16":
        problems.append("+privacy=dp with device.precision=fp16 is not supported (loss scaling would scale the "
                        "per-example norms that clipping bounds): use bf16 or fp32")
    if device.get("compile") is True:  # auto leaves it off under DP
        problems.append("+privacy=dp with device.compile=true is not supported (Opacus's per-example gradients come "
                        "from module hooks that compiled graphs skip): set device.compile=false")
    if cfg.get("adversarial") is not None:
        problems.append("+privacy=dp with +adversarial is not supported: the ascent steps would use each example's "
                        "gradient without clipping it, and that is not private")
    if (cfg.get("distill") or {}).get("teacher"):
        problems.append("+privacy=dp with distill.teacher is not supported: train one of them first")
    if train.get("group_by_length"):
        problems.append("+privacy=dp with train.group_by_length=true is not supported: DP-SGD's accounting needs "
                        "every example drawn independently (Poisson batches); set train.group_by_length=false")
    return problems
