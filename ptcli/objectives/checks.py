"""Pre-flight checks that text objectives share (torch-free): the model fits the data and the objective."""

from __future__ import annotations


def text_model_problems(cfg: dict, model_config: dict | None, shape: str | None, name: str) -> list[str]:
    """A text objective's model: sized with a vocabulary and positions, long enough for dataset.seq_len, and of the
    shape the objective trains (decoder, encoder, encoder-decoder)."""
    from ptcli.models.families import shape as shape_of

    problems = []
    model, data = cfg.get("model") or {}, cfg.get("dataset") or {}
    if not model.get("path"):
        for key in ("vocab_size", "max_positions"):
            if model.get(key) is None:
                problems.append(f"model.{key} is required when model.path is not set")
    limit = model.get("max_positions")
    if model_config:
        limit = (model_config.get("max_position_embeddings") or model_config.get("n_positions")
                 or model_config.get("n_ctx"))
    if limit and data.get("seq_len") and data["seq_len"] > limit:
        problems.append(f"dataset.seq_len ({data['seq_len']}) exceeds the model's maximum positions ({limit}); "
                        f"lower dataset.seq_len or raise model.max_positions")
    arch = (model_config or {}).get("model_type") or model.get("arch")
    found = shape_of(arch)
    if found in ("vision", "audio"):
        return [f"objective {name} needs a text model, but model.arch is '{arch}' (a{'n' if found == 'audio' else ''} "
                f"{found} model); use model=gpt2-tiny, bert-tiny, minilm or a text model's model.path"]
    if shape and found and found != shape:
        fix = {"decoder": "use model=gpt2-tiny or a causal model.path", "encoder": "use model=bert-tiny (or another "
               "encoder)", "encoder-decoder": "use model=t5-tiny or a T5/BART model.path"}[shape]
        problems.append(f"objective {name} needs {'an' if shape[0] in 'ae' else 'a'} {shape} model, "
                        f"but model.arch is '{arch}'; {fix}")
    return problems
