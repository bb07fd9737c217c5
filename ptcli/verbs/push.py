"""``ptcli push <run or folder> <repo id>``: publish a model folder to the Hugging Face Hub with a model card.

The card (``README.md`` in the folder that is uploaded) is made from what the run recorded: the model's family and
size from its config.json, the objective and data from the run's config.yaml, the metrics from summary.json and
the command that made it from Hydra's overrides. huggingface_hub writes the card's metadata (license, tags,
pipeline tag, ``model-index`` with the metrics) and does the upload. ``--dry-run`` writes the card and lists what
would be uploaded, without the network. Offline (``HF_HUB_OFFLINE=1``, or the Hub unreachable) it fails at once
with what to do. No torch here.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ptcli.errors import PtcliError, RunFailure

# The Hub's pipeline tag for a run's objective (its config's ``objective._target_`` class name).
PIPELINE_TAGS = {
    "CausalLM": "text-generation", "SFT": "text-generation", "MaskedLM": "fill-mask", "Electra": "fill-mask",
    "SequenceClassification": "text-classification", "TokenClassification": "token-classification",
    "Seq2Seq": "text2text-generation", "SpanCorruption": "text2text-generation", "Denoising": "text2text-generation",
    "ImageClassification": "image-classification", "MaskedAutoencoder": "image-feature-extraction",
    "AudioClassification": "audio-classification", "Contrastive": "zero-shot-image-classification",
    "CTC": "automatic-speech-recognition",
}
CARD = "README.md"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$|^[A-Za-z0-9][\w.-]*$")


def model_folder(target: str) -> tuple[Path, Path | None]:
    """(the folder to upload, the run directory or None) for a run directory or a model folder."""
    path = Path(target).expanduser()
    if not path.exists():
        raise PtcliError(f"'{target}' does not exist", fix="Give a run directory (outputs/finetune/latest) or a "
                                                             "Hugging Face model folder")
    run = path if (path / "summary.json").is_file() or (path / "config.yaml").is_file() else None
    folder = path / "model" if run is not None else path
    if not any((folder / f).is_file() for f in ("config.json", "adapter_config.json")):
        what = "the run has no final model folder (model/): did it finish?" if run is not None else \
            "it is not a model folder (no config.json or adapter_config.json)"
        raise PtcliError(f"cannot push '{target}': {what}",
                         fix="Push a finished run directory or a folder written by ptcli or save_pretrained")
    return folder.resolve(), (run.resolve() if run is not None else None)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def run_facts(folder: Path, run: Path | None) -> dict:
    """What the card says, from the files a run (or a bare model folder) carries."""
    import yaml

    config = _read_json(folder / "config.json")
    facts = {"arch": config.get("model_type"), "architectures": config.get("architectures") or [],
             "labels": sorted((config.get("id2label") or {}).values()) if config.get("id2label") else [],
             "summary": {}, "objective": None, "data": None, "command": None, "base": None}
    if config.get("model_type") is None and (folder / "adapter_config.json").is_file():
        adapter = _read_json(folder / "adapter_config.json")
        facts["arch"], facts["base"] = "LoRA adapter", adapter.get("base_model_name_or_path")
    if run is None:
        return facts
    facts["summary"] = _read_json(run / "summary.json")
    try:
        cfg = yaml.safe_load((run / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        cfg = {}
    target = (cfg.get("objective") or {}).get("_target_") or ""
    facts["objective"] = target.rsplit(".", 1)[-1] or None
    data = cfg.get("dataset") or {}
    files = [*(data.get("files") or []), *(data.get("val_files") or [])]
    facts["data"] = {"source": (data.get("_target_") or "").rsplit(".", 1)[-1] or None,
                     "files": [Path(f).name for f in files], "name": data.get("name")}
    facts["base"] = facts["base"] or (cfg.get("model") or {}).get("path")
    verb = run.parent.name if run.parent.name in ("pretrain", "finetune") else None
    try:
        overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()) or []
    except (OSError, yaml.YAMLError):
        overrides = None
    if verb and overrides is not None:
        import shlex

        facts["command"] = " ".join(["ptcli", verb, *(shlex.quote(str(o)) for o in overrides)])
    return facts


def _metrics(summary: dict) -> dict:
    """The numbers worth a card: the best evaluation's (or the last's), scalars only."""
    values = summary.get("best_val") or summary.get("final_val") or {}
    out = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if not out and isinstance(summary.get("final_val_loss"), (int, float)):
        out["loss"] = summary["final_val_loss"]
    return out


def model_card(repo_id: str, facts: dict, license: str):
    """A huggingface_hub ModelCard: metadata (license, tags, pipeline tag, model-index) and a readable body."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    name = repo_id.split("/")[-1]
    pipeline = PIPELINE_TAGS.get(facts["objective"] or "")
    data = facts["data"] or {}
    dataset_name = data.get("name") or ", ".join(data.get("files") or []) or "local data"
    metrics = _metrics(facts["summary"])
    results = [EvalResult(task_type=pipeline, dataset_type="local", dataset_name=dataset_name,
                          dataset_split="validation", metric_type=k, metric_value=round(float(v), 6))
               for k, v in metrics.items()] if pipeline and metrics else None
    card_data = ModelCardData(license=license, library_name="transformers", pipeline_tag=pipeline,
                              tags=["ptcli", *([facts["objective"]] if facts["objective"] else [])],
                              base_model=facts["base"] if facts["base"] and "/" in str(facts["base"])
                              and not Path(str(facts["base"])).exists() else None,
                              model_name=name, eval_results=results)
    summary = facts["summary"]
    lines = [f"# {name}", "",
             f"A {facts['arch'] or 'transformers'} model"
             + (f" ({', '.join(facts['architectures'])})" if facts["architectures"] else "")
             + (f", {summary['parameters'] / 1e6:.2f}M parameters" if summary.get("parameters") else "")
             + (f", trained with ptcli's {facts['objective']} objective" if facts["objective"] else "") + ".", ""]
    if facts["labels"]:
        lines += [f"Labels: {', '.join(map(str, facts['labels']))}.", ""]
    if facts["base"]:
        lines += [f"Started from: `{facts['base']}`.", ""]
    if data:
        lines += ["## Data", "", f"{data.get('source') or 'files'}: {dataset_name}.", ""]
    if metrics:
        lines += ["## Metrics (validation)", "", "| metric | value |", "|---|---|",
                  *(f"| {k} | {v:.4f} |" for k, v in metrics.items()), ""]
    training = [(k, summary[k]) for k in ("steps", "tokens", "examples", "images", "seconds", "train_seconds",
                                          "best_step") if summary.get(k) is not None]
    if training:
        lines += ["## Training", "", *(f"- {k.replace('_', ' ')}: {v:,}" if isinstance(v, int) else
                                      f"- {k.replace('_', ' ')}: {v}" for k, v in training), ""]
    if facts["command"]:
        lines += ["## How it was made", "", "```bash", facts["command"], "```", ""]
    lines += ["## Use", "", "```python", "from transformers import pipeline", "",
              f'pipe = pipeline("{pipeline or "feature-extraction"}", model="{repo_id}")', "```", ""]
    return ModelCard.from_template(card_data, template_str="---\n{{ card_data }}\n---\n\n" + "\n".join(lines))


def hub_unreachable(why: str) -> RunFailure:
    return RunFailure(f"cannot reach the Hugging Face Hub: {why}",
                      fix="Check the network (or HF_ENDPOINT), log in with `hf auth login` or set HF_TOKEN; "
                          "`ptcli push --dry-run` writes the card and lists the files without the network")


def push(target: str, repo_id: str, dry_run: bool = False, private: bool = False, license: str = "apache-2.0",
         log=print, stdout=print) -> dict:
    """Write the card into the model folder, then upload the folder (unless ``dry_run``); returns what was done."""
    if not REPO_ID.match(repo_id):
        raise PtcliError(f"'{repo_id}' is not a Hub repository id", fix="Use <user or organisation>/<name>, "
                                                                        "e.g. my-name/bert-sst2")
    folder, run = model_folder(target)
    card = model_card(repo_id, run_facts(folder, run), license)
    (folder / CARD).write_text(str(card))
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in files)
    result = {"repo_id": repo_id, "folder": str(folder), "card": str(folder / CARD), "files": len(files),
              "bytes": size, "dry_run": dry_run}
    log(f"ptcli push: model card written to {folder / CARD}")
    if dry_run:
        from huggingface_hub import constants

        log(f"ptcli push: dry run: would upload {len(files)} files ({size / 2**20:.1f} MiB) from {folder} to "
            f"{constants.ENDPOINT}/{repo_id}" + (" (private)" if private else ""))
        stdout(json.dumps(result))
        return result
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise hub_unreachable("HF_HUB_OFFLINE is set")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                                   commit_message="Upload with ptcli push")
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise RunFailure(f"the Hub refused the upload to {repo_id} ({status}: not logged in, or no write "
                             "access)", fix="Log in with `hf auth login` (a token with write access) or set "
                                            "HF_TOKEN") from None
        raise hub_unreachable(str(e).splitlines()[0]) from None
    except (OSError, ValueError) as e:  # connection refused, DNS, timeouts (httpx and requests errors are OSErrors)
        raise hub_unreachable(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no connection'}") \
            from None
    except Exception as e:  # noqa: BLE001 - httpx's ConnectError is not an OSError
        if "connect" in type(e).__name__.lower() or "timeout" in type(e).__name__.lower():
            raise hub_unreachable(f"{type(e).__name__}: {e}") from None
        raise
    result |= {"url": str(url), "commit": getattr(commit, "oid", None)}
    log(f"ptcli push: uploaded {len(files)} files to {url}")
    stdout(json.dumps(result))
    return result
