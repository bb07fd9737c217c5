"""``ptcli evaluate +attack=chars|hotflip|bae``: how easily a text classifier is fooled (ptcli.inference.attacks).

The evaluation rows are the ones ``evaluate`` would score (a run's held-out slice, or the named data); the first
``attack.examples`` of them are attacked, one by one, deterministically for ``seed``. The metrics go where
evaluate's do (stdout, metrics.json); every attacked example goes to ``attacks.jsonl`` in the evaluation's run
directory, with its words changed.
"""

from __future__ import annotations

import json
from pathlib import Path


def attack(cfg, objective, loaded, ctx, run_dir: Path | None, stderr) -> dict:
    from omegaconf import OmegaConf

    from ptcli.data.records import text_field
    from ptcli.errors import PtcliError
    from ptcli.inference.attacks import Attack, Victim, summarize
    from ptcli.inference.loading import load_for_inference
    from ptcli.inference.output import Progress

    settings = cfg.attack
    if objective.name != "classification" or getattr(objective, "regression", False):
        raise PtcliError(f"+attack={settings.method} attacks a text classifier; this is a "
                         f"{'regression model' if getattr(objective, 'regression', False) else objective.name} run",
                         fix="Attack a model fine-tuned with objective=classification")
    rows, where = objective.evaluation_rows(ctx, loaded)
    if settings.method == "membership":
        return membership(cfg, objective, loaded, ctx, rows, where, run_dir)
    source = objective.data
    if source.text_pair_column:
        raise PtcliError("+attack attacks single sentences; this data has sentence pairs "
                         f"(dataset.text_pair_column={source.text_pair_column})",
                         fix="Attack a single-sentence classifier")
    examples = []
    for where_row, record in rows:
        text = text_field(record, source.text_column, "dataset.text_column", where_row)
        if text.strip():
            examples.append((text, objective._label(record, where_row)))
    if settings.examples:
        examples = examples[:settings.examples]
    ctx.log(f"attack: {settings.method} (importance {settings.importance}, at most {settings.max_fraction:g} of the "
            f"words, {settings.candidates} candidates per word) on {len(examples)} examples from {where}")
    mlm = None
    if settings.method == "bae" and settings.mlm:
        found = load_for_inference(OmegaConf.create({"path": str(settings.mlm)}), cfg.device, "fill-mask", ctx.log)
        mlm = (found.model, found.tokenizer)
    victim = Victim(loaded.model, loaded.tokenizer, loaded.placement.device, cfg.batch_size,
                    min(loaded.context or 512, source.seq_len or 512))
    attacker = Attack(settings, victim, mlm, seed=cfg.seed)
    names = [str(loaded.model.config.id2label.get(i, i)) for i in range(loaded.model.config.num_labels)]
    outcomes = []
    out = None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        out = open(run_dir / "attacks.jsonl", "w")
    try:
        with Progress(stderr, "examples") as progress:
            for i, (text, label) in enumerate(examples):
                outcome = attacker.run(i, text, label)
                outcomes.append(outcome)
                if out is not None:
                    out.write(json.dumps(outcome.record(names)) + "\n")
                progress.update(i + 1, len(examples))
    finally:
        if out is not None:
            out.close()
    metrics = {"attack": settings.method, **summarize(outcomes)}
    ctx.log(f"attack: clean accuracy {metrics['clean_accuracy']:.4f}, under attack {metrics['attacked_accuracy']:.4f}"
            f", success rate {metrics['attack_success_rate']:.4f}, {metrics['perturbed_word_fraction']:.1%} of the "
            f"words changed on success" + (f"; the examples in {run_dir / 'attacks.jsonl'}" if run_dir else ""))
    return metrics


def membership(cfg, objective, loaded, ctx, held_out: list, where: str, run_dir: Path | None) -> dict:
    """``+attack=membership``: the loss-threshold attack on up to ``attack.examples`` training rows (members) and
    as many held-out rows; the per-example losses go to ``membership.jsonl``."""
    import numpy as np

    from ptcli.data.records import text_field
    from ptcli.errors import PtcliError
    from ptcli.inference.attacks import Victim
    from ptcli.inference.membership import losses, summarize

    source = objective.data
    members, member_where = objective.training_rows(ctx)
    if not members or not held_out:
        raise PtcliError("+attack=membership needs training rows and held-out rows",
                         where=f"{member_where}; {where}", fix="Evaluate a run with dataset.val_fraction above 0 or "
                         "dataset.val_files")
    n = min(len(members), len(held_out), cfg.attack.examples or len(members) + len(held_out))
    rng = np.random.default_rng(cfg.seed)
    pick = [[rows[i] for i in sorted(rng.permutation(len(rows))[:n])] for rows in (members, held_out)]

    def texts_labels(rows):
        texts = []
        for where_row, record in rows:
            text = text_field(record, source.text_column, "dataset.text_column", where_row)
            if source.text_pair_column:
                text = (text, text_field(record, source.text_pair_column, "dataset.text_pair_column", where_row))
            texts.append(text)
        return texts, [objective._label(record, where_row) for where_row, record in rows]

    ctx.log(f"attack: membership inference by loss threshold on {n} of {member_where} and {n} of {where}")
    victim = Victim(loaded.model, loaded.tokenizer, loaded.placement.device, cfg.batch_size,
                    min(loaded.context or 512, source.seq_len or 512))
    found = [losses(victim, *texts_labels(rows)) for rows in pick]
    metrics = {"attack": "membership", **summarize(*found)}
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "membership.jsonl", "w") as out:
            for member, rows, values in ((True, pick[0], found[0]), (False, pick[1], found[1])):
                for (where_row, _), loss in zip(rows, values):
                    out.write(json.dumps({"where": str(where_row), "member": member, "loss": loss}) + "\n")
    ctx.log(f"attack: membership AUC {metrics['membership_auc']:.4f} (0.5: the loss tells nothing), advantage "
            f"{metrics['membership_advantage']:.4f}, TPR at 1% FPR {metrics['tpr_at_1pct_fpr']:.4f}; mean loss "
            f"{metrics['member_loss']:.4f} on members, {metrics['nonmember_loss']:.4f} on held-out rows")
    return metrics
