"""The checks of issue #17 for `ptcli explain` on a fine-tuned SST-2 classifier (MiniLM, say), for docs/results.md:

1. integrated gradients' convergence: |delta| (captum's sum(attributions) - (F(x) - F(baseline)), F the predicted
   class's logit) on 20 validation sentences, at --steps (50);
2. the deletion test: on the first 200 validation sentences of more than 3 words, how often deleting the 3 tokens
   with the highest attribution lowers the predicted class's probability more than deleting 3 random ones (the
   issue asks for at least 70%);
3. attention rows sum to 1 (every layer and head, eager attention), and rollout rows too.

The validation sentences are the run's own held-out rows (its dataset section, split as training split them), or,
for a model folder without a run, the fixed 5% of --tsv that experiment=bert-sst2 holds out.

Run: .venv/bin/ptcli finetune experiment=bert-sst2 model=minilm run.out_dir=outputs/sst2-minilm
     .venv/bin/python scripts/explain_sst2.py outputs/sst2-minilm/finetune/latest [--steps 50] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def validation_texts(model_path: str, tsv: str) -> tuple[list, str]:
    """The run's held-out texts (its dataset section and split), else the 5% of ``tsv`` bert-sst2 holds out."""
    from ptcli.config import plugins
    from ptcli.inference.loading import run_config
    from ptcli.objectives.labelled import carve_split

    run = run_config(model_path)
    dataset = (run or {}).get("dataset") or {}
    if dataset.get("_target_"):
        source = plugins.resolve(dataset["_target_"], "dataset")(
            **{k: v for k, v in dataset.items() if k not in plugins.HYDRA_KEYS})
        column = dataset.get("text_column") or "text"
        if dataset.get("val_files"):
            rows = list(source.records("val", lambda m: None))
        else:
            rows = carve_split(list(source.records("train", lambda m: None)), source.val_fraction)[1]
        return [r[1][column] for r in rows if isinstance(r[1].get(column), str)], "the run's validation split"
    with open(tsv, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [r["sentence"] for r in carve_split(rows, 0.05)[1]], f"the held-out 5% of {tsv}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a fine-tuned text classifier: a ptcli run directory or a model folder")
    parser.add_argument("--tsv", default="../shared/data/sst2/train.tsv", help="SST-2 (label, sentence), without a run")
    parser.add_argument("--steps", type=int, default=50, help="integrated gradients' n_steps")
    parser.add_argument("--deltas", type=int, default=20, help="sentences for the convergence check")
    parser.add_argument("--deletions", type=int, default=200, help="sentences for the deletion test")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    import torch
    from omegaconf import OmegaConf
    from transformers.utils import logging as hf_logging

    from ptcli.inference.explain import Explainer, deletion_check, explain_kind, rollout
    from ptcli.inference.loading import hf_config, load_for_inference
    from ptcli.inference.prompts import Prompt

    torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    if explain_kind(hf_config(args.model)) != "classify":
        sys.exit("explain_sst2.py needs a text classifier")
    model_cfg = OmegaConf.create({"path": args.model, "trust_remote_code": False})
    device_cfg = OmegaConf.create({"accelerator": "cpu", "precision": "fp32", "threads": args.threads})
    loaded = load_for_inference(model_cfg, device_cfg, "classify", lambda m: print(m, file=sys.stderr),
                                auto_class="AutoModelForSequenceClassification")
    loaded.model.set_attn_implementation("eager")
    explainer = Explainer(loaded, "classify", "both", args.steps)
    texts, where = validation_texts(args.model, args.tsv)
    print(f"{len(texts)} validation sentences ({where})", file=sys.stderr)

    started = time.perf_counter()
    deltas, gaps, worst_row = [], [], 0.0
    for i, text in enumerate(texts[:args.deltas]):
        explained = explainer.explain(Prompt(i, text, f"val:{i}"))
        target = explained.targets[0]
        deltas.append(abs(target.delta))
        gaps.append(abs(target.f_x - target.f_baseline))
        attentions = explained.attentions
        worst_row = max(worst_row, float((attentions.sum(-1) - 1).abs().max()),
                        float((rollout(attentions).sum(-1) - 1).abs().max()))
    delta_s = time.perf_counter() - started
    started = time.perf_counter()
    longer = [t for t in texts if len(t.split()) > 3]  # deleting 3 tokens of 3 or fewer leaves nothing to compare
    deletion = deletion_check(explainer, longer[:args.deletions], k=3, seed=0)
    results = {
        "model": args.model, "steps": args.steps, "baseline": "pad", "sentences": where,
        "delta": {"n": len(deltas), "max_abs": max(deltas), "mean_abs": sum(deltas) / len(deltas),
                  "mean_abs_f_gap": sum(gaps) / len(gaps), "passes": max(deltas) < 0.01,
                  "seconds": round(delta_s, 1)},
        "deletion": {**deletion, "n": min(args.deletions, len(longer)),
                     "passes": deletion["fraction"] is not None and deletion["fraction"] >= 0.7,
                     "seconds": round(time.perf_counter() - started, 1)},
        "max_row_sum_error": worst_row, "rows_pass": worst_row < 1e-4,
    }
    d, x = results["delta"], results["deletion"]
    print(f"convergence: max |delta| {d['max_abs']:.2e}, mean {d['mean_abs']:.2e} on {d['n']} sentences "
          f"({args.steps} steps; mean |F(x)-F(baseline)| {d['mean_abs_f_gap']:.3f}): "
          f"{'pass' if d['passes'] else 'FAIL'} (< 0.01)")
    print(f"deletion: top-3 beat random-3 on {x['fraction']:.1%} of {x['counted']} sentences ({x['skipped']} of "
          f"3 tokens or fewer skipped; mean drop {x['mean_drop_top']:.3f} vs {x['mean_drop_random']:.3f}): "
          f"{'pass' if x['passes'] else 'FAIL'} (>= 70%)")
    verdict = 'pass' if results['rows_pass'] else 'FAIL'
    print(f"attention and rollout rows: largest |sum - 1| {worst_row:.1e}: {verdict}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0 if d["passes"] and x["passes"] and results["rows_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
