"""``ptcli evaluate`` on fine-tuned models: the objective's own streaming metrics over labelled data.

The label map comes from the model (``id2label``): a label the model never learned is an error naming it.
Without ``dataset.val_files`` the data is the same fixed held-out slice that fine-tuning validated on.
"""

from __future__ import annotations


def evaluate_objective(cfg, model, tokenizer, placement, log) -> dict:
    """Metrics of ``cfg.objective`` for ``model`` on the dataset's validation split (streamed, batched)."""
    import torch

    from ptcli.config.build import build
    from ptcli.data.examples import carve_split, encode_all, example_batches
    from ptcli.data.records import read_records
    from ptcli.errors import PtcliError

    objective = build(cfg.objective, "objective")
    if not getattr(objective, "labelled", False):
        raise PtcliError(f"{cfg.objective._target_} is not a fine-tuning objective", fix="use objective=clm or mlm")
    objective.bind(tokenizer)
    objective.restore(cfg.dataset, model.config)
    data = cfg.dataset
    if data.val_files:
        records, where = list(read_records(data, "val", log)), "dataset.val_files"
    else:
        _, records = carve_split(list(read_records(data, "train", log)), data.val_fraction)
        where = f"the held-out dataset.val_fraction={data.val_fraction} of dataset.files"
    if not records:
        raise PtcliError("no evaluation rows", where=where,
                         fix="set dataset.val_files=[...] or a dataset.val_fraction above 0")
    examples, skipped = encode_all(objective, records, data.empty_rows)
    if hasattr(objective, "postprocess"):
        examples = objective.postprocess(examples)
    log(f"data: {len(examples)} examples from {where}" + (f" ({skipped} empty rows skipped)" if skipped else ""))
    evaluator = objective.evaluator()
    limit = cfg.get("max_batches")
    with torch.no_grad():
        for items in example_batches(examples, cfg.batch_size, limit):
            batch = {k: v.to(placement.device) for k, v in objective.collate(items).items()}
            with placement.autocast():
                evaluator.update(model, batch)
    return evaluator.compute() | {"examples": len(examples)}
