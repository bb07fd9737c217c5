"""Every shipped config composes and validates, for every verb, and every YAML matches its schema."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from ptcli.config import paths, plugins, schema
from ptcli.config.validate import validate
from ptcli.launch.compose import compose

CONFIGS = paths.packaged_config_dir()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A text file, a csv file and a model folder that the required values can point at."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "a.txt").write_text("hello world\n")
    (root / "a.csv").write_text("text,label\nhi,1\n")
    (root / "images" / "cat").mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (4, 4)).save(root / "images" / "cat" / "x.png")
    (root / "caps.jsonl").write_text(json.dumps({"image": "images/cat/x.png", "caption": "a cat"}) + "\n")
    (root / "audio" / "yes").mkdir(parents=True)
    import wave

    with wave.open(str(root / "audio" / "yes" / "1_x_0.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000), w.writeframes(bytes(200))
    (root / "clips.csv").write_text("audio,label\naudio/yes/1_x_0.wav,yes\n")
    (root / "classifier").mkdir()
    (root / "classifier" / "config.json").write_text(json.dumps(
        {"model_type": "vit", "architectures": ["ViTForImageClassification"], "num_hidden_layers": 1}))
    (root / "text-classifier").mkdir()
    (root / "text-classifier" / "config.json").write_text(json.dumps(
        {"model_type": "bert", "architectures": ["BertForSequenceClassification"], "num_hidden_layers": 1}))
    (root / "model").mkdir()
    (root / "model" / "config.json").write_text(json.dumps(
        {"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 2, "n_positions": 256, "vocab_size": 500}))
    return root


def required_values(verb: str, inputs, group: str | None = None, option: str | None = None) -> list[str]:
    """The overrides a composition needs for its required (???) values."""
    args = []
    chosen_dataset = option if group == "dataset" else ("csv" if verb == "finetune" else "tiny-corpus")
    if option in ("image_classification", "mae", "contrastive") and verb == "finetune":
        chosen_dataset = "digits"  # the image objectives select their dataset
    if option == "audio_classification" and verb == "finetune":
        chosen_dataset = "tones"
    if option == "ctc" and verb == "finetune":
        chosen_dataset = "tone-words"
    if chosen_dataset in ("text", "jsonl", "csv", "conll"):
        args.append(f"dataset.files=[{inputs / 'a.csv' if chosen_dataset == 'csv' else inputs / 'a.txt'}]")
    if chosen_dataset == "imagefolder":
        args.append(f"dataset.path={inputs / 'images'}")
    if chosen_dataset == "image-captions":
        args.append(f"dataset.files=[{inputs / 'caps.jsonl'}]")
    if chosen_dataset == "audiofolder":
        args.append(f"dataset.path={inputs / 'audio'}")
    if chosen_dataset == "audio-files":
        args.append(f"dataset.path={inputs / 'audio'}")
    if chosen_dataset == "audio-manifest":
        args.append(f"dataset.files=[{inputs / 'clips.csv'}]")
    if chosen_dataset == "hf":
        args.append("dataset.hf_name=some/dataset")
    if verb == "predict":  # a classifier (predict refuses language models)
        args.append(f"model.path={inputs / 'classifier'}")
    elif verb == "explain":  # a text classifier (explain refuses image classifiers and masked LMs)
        args.append(f"model.path={inputs / 'text-classifier'}")
    elif verb in ("generate", "chat", "serve", "evaluate", *COMPRESS) or option == "from-path":
        args.append(f"model.path={inputs / 'model'}")
    if verb in COMPRESS:  # a model folder, not a run: no task to measure unless named (the rule has its own test)
        args += ["evaluate=false"] + (["importance=norm"] if verb == "prune" else [])
    return args


COMPRESS = ("prune", "quantize")
GIVEN_A_MODEL = ("evaluate", *COMPRESS)  # verbs whose model is model.path, whatever objective is chosen


def points():
    """(verb, group, option) for every option of every group of every verb."""
    for verb in paths.VERBS:
        yield verb, None, None
        for group in paths.defaults_groups(verb):
            for option in paths.group_options(group):
                yield verb, group, option


# What each shipped model option is, as far as validation can tell before loading anything.
MODEL_KIND = {"gpt2-tiny": "decoder", "gpt2-small": "decoder", "llama-tiny": "decoder", "llama-small": "decoder",
              "bert-tiny": "encoder", "bert-small": "encoder", "minilm": "encoder", "t5-tiny": "seq2seq",
              "bart-tiny": "seq2seq",
              "vit-tiny": "vision", "vit-mini": "vision", "from-path": "decoder",  # the folder in `inputs` holds a gpt2
              "gpt2": "decoder", "bert-base": "hub",  # bert-base: arch unknown before the Hub load
              "wav2vec2-tiny": "audio"}
OBJECTIVE_NEEDS = {"clm": "decoder", "sft": "decoder", "mlm": "encoder", "electra": "encoder",
                   "seq2seq": "seq2seq", "span_corruption": "seq2seq", "denoising": "seq2seq",
                   "image_classification": "vision", "mae": "vision", "contrastive": "vision",
                   "audio_classification": "audio", "ctc": "audio"}
TEXT_OBJECTIVES = {"clm", "sft", "mlm", "electra", "seq2seq", "classification", "token_classification",
                   "span_corruption", "denoising"}
VERB_DEFAULTS = {"pretrain": ("gpt2-tiny", "clm"), "finetune": ("minilm", "classification"),
                 "evaluate": ("from-path", "clm"), "generate": ("from-path", None), "chat": ("from-path", None),
                 "serve": ("from-path", None),
                 "predict": ("from-path", None), "explain": ("from-path", None), "tokenizer": (None, None),
                 "prune": ("from-path", None), "quantize": ("from-path", None)}


def expected_invalid(verb: str, group: str | None, option: str | None) -> str | None:
    """Combinations the cross-field rules must reject (the message they must give), else None."""
    import importlib.util

    if (option in ("tensorboard", "mlflow", "wandb", "trackio") and group == "logger"
            and verb in ("pretrain", "finetune") and importlib.util.find_spec(option) is None):
        return f"needs the {option} package"
    if group == "recipe" and option.startswith("finetune_") and verb in ("pretrain", "finetune"):
        return "is not a validation metric of this objective"  # finetune_ctc on another objective: its best_metric
    model, objective = VERB_DEFAULTS[verb]
    # those always get model.path (a gpt2)
    if group == "model" and verb not in ("generate", "chat", "serve", "predict", "explain", *GIVEN_A_MODEL):
        model = option
    if group == "objective":
        objective = option
        if option in ("mlm", "electra") and verb not in GIVEN_A_MODEL:
            model = "bert-tiny"  # objective=mlm (and electra) selects an encoder unless a model is named
        if option in ("span_corruption", "denoising") and verb not in GIVEN_A_MODEL:
            model = "t5-tiny" if option == "span_corruption" else "bart-tiny"  # they select their model too
        if option in ("image_classification", "mae", "contrastive") and verb not in GIVEN_A_MODEL:
            model = "vit-tiny"
        if option in ("audio_classification", "ctc") and verb not in GIVEN_A_MODEL:
            model = "wav2vec2-tiny"
    need, kind = OBJECTIVE_NEEDS.get(objective), MODEL_KIND.get(model)
    if kind in ("vision", "audio") and (objective or "clm") in TEXT_OBJECTIVES:
        return "needs a text model"
    if need and kind not in (None, "hub", need):
        return f"objective {objective} needs"
    if objective in ("sft", "seq2seq") and verb != "finetune":  # their target column: no default dataset names one
        return f"objective={objective} needs the"
    return None


@pytest.mark.parametrize(("verb", "group", "option"), list(points()))
def test_every_option_composes_and_validates(verb, group, option, inputs):
    args = required_values(verb, inputs, group, option) + ([f"{group}={option}"] if group else [])
    cfg = compose(verb, args)
    bad = expected_invalid(verb, group, option)
    if bad:
        with pytest.raises(Exception, match=bad):
            validate(verb, cfg)
    else:
        data = validate(verb, cfg)
        if group and group not in ("experiment", "recipe"):  # options that set other sections (_global_)
            assert group in data


@pytest.mark.parametrize("model", [p.stem for p in (CONFIGS / "model").glob("*.yaml")])
@pytest.mark.parametrize("objective", ["clm", "mlm"])
def test_pretrain_model_objective_pairs(model, objective, inputs):
    args = [f"objective={objective}", f"model={model}"] + required_values("pretrain", inputs, "model", model)
    cfg = compose("pretrain", args)
    kind = MODEL_KIND[model]
    if kind == "hub" or kind == OBJECTIVE_NEEDS[objective]:
        validate("pretrain", cfg)
    else:
        with pytest.raises(Exception, match=f"objective {objective} needs"):
            validate("pretrain", cfg)


SECTION_SCHEMAS = {"model": schema.ModelConfig, "device": schema.DeviceConfig, "scheduler": schema.SchedulerConfig,
                   "logger": schema.LoggerConfig, "peft": schema.PeftConfig}


LAUNCHERS = {"submitit_slurm": "SlurmQueueConf", "submitit_local": "LocalQueueConf"}  # hydra/launcher/*.yaml


def declared(group: str, node: dict) -> dict:
    """The keys a group option may set and their defaults: its schema's fields, or its ``_target_`` class's."""
    if group in schema.PLUGIN_SECTIONS:
        cls = plugins.resolve(node["_target_"], group)
        if isinstance(cls, str):  # a torch optimizer: its keyword arguments are checked when it is built
            return {}
        return {name: plugins.default_of(f) for name, f in plugins.settings_of(cls).items()}
    return {f.name: plugins.default_of(f) for f in dataclasses.fields(SECTION_SCHEMAS[group])}


@pytest.mark.parametrize("path", sorted([*CONFIGS.glob("*/*.yaml"), *CONFIGS.glob("hydra/launcher/*.yaml")]),
                         ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_yaml_has_a_header_and_only_its_schema_keys_with_values_that_differ_from_the_defaults(path):
    """One default per knob: a YAML file states what differs from the schema (or class) it configures."""
    text = path.read_text()
    assert text.startswith("#"), "every YAML starts with a comment saying what it is"
    assert "Run:" in text, "every YAML shows a runnable example"
    data = yaml.safe_load(text) or {}
    group = path.parent.name
    if group in (*SECTION_SCHEMAS, *schema.PLUGIN_SECTIONS):
        node = data.get(group, data) if group == "objective" else data
        known = declared(group, node)
        settings = {k: v for k, v in node.items() if k not in plugins.HYDRA_KEYS and k != "defaults"}
        if known:
            assert set(settings) <= set(known), set(settings) - set(known)
            assert not [k for k, v in settings.items() if v == known[k] and v != "???"], "states a default"
    elif group == "launcher":  # ptcli's defaults for a launcher plugin's config: only keys the plugin has
        from hydra_plugins.hydra_submitit_launcher import config as plugin

        schema_cls = getattr(plugin, LAUNCHERS[path.stem])
        assert set(data) <= {f.name for f in dataclasses.fields(schema_cls)}
        assert data["_target_"] == schema_cls._target_


def test_each_primary_config_states_only_what_differs_from_the_schema():
    from ptcli.launch.compose import schema_defaults

    for verb in paths.VERBS:
        data = yaml.safe_load((CONFIGS / f"{verb}.yaml").read_text())
        defaults = schema_defaults(schema.VERB_SCHEMAS[verb])
        groups = paths.defaults_groups(verb)
        for section, node in data.items():
            if section in ("defaults", *groups) or not isinstance(node, dict) \
                    or not isinstance(defaults.get(section), dict):
                continue  # a group's option sets its own values; the primary config may change them
            same = [k for k, v in node.items() if defaults[section].get(k) == v]
            assert not same, f"{verb}.yaml restates the default of {section}.{same}"


@pytest.mark.parametrize("option", sorted(LAUNCHERS))
def test_launcher_configs_are_ptcli_defaults_on_the_plugins_config(option):
    """`hydra/launcher=submitit_slurm` gives configs/hydra/launcher/submitit_slurm.yaml merged onto the plugin's own
    config (every plugin key, typed), overridable from the command line, without Hydra's schema-matching notice."""
    import warnings

    from hydra_plugins.hydra_submitit_launcher import config as plugin
    from omegaconf import OmegaConf

    import ptcli.launch.launchers  # noqa: F401  (imported by every verb: silences that notice)

    ours = yaml.safe_load((CONFIGS / "hydra" / "launcher" / f"{option}.yaml").read_text())
    with warnings.catch_warnings(record=True) as caught:
        cfg = compose("pretrain", [f"hydra/launcher={option}", "hydra.launcher.nodes=1", "hydra.launcher.mem_gb=8"],
                      with_hydra=True)
    assert not [w for w in caught if "schema" in str(w.message)]
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert set(launcher) == {f.name for f in dataclasses.fields(getattr(plugin, LAUNCHERS[option]))}
    assert {k: v for k, v in launcher.items() if k in ours and k != "mem_gb"} == {
        k: v for k, v in ours.items() if k != "mem_gb"}
    assert launcher["mem_gb"] == 8
    if option == "submitit_slurm":
        assert (launcher["timeout_min"], launcher["signal_delay_s"], launcher["tasks_per_node"]) == (60, 120, 1)
    with pytest.raises(Exception, match="timeout_min"):  # typed by the plugin's schema
        compose("pretrain", [f"hydra/launcher={option}", "hydra.launcher.timeout_min=an-hour"], with_hydra=True)


def test_mlm_objective_selects_an_encoder_unless_a_model_is_named():
    assert compose("pretrain", ["objective=mlm"]).model.arch == "bert"
    assert compose("pretrain", ["objective=mlm", "model=bert-small"]).model.hidden == 512
    assert compose("pretrain", []).model.arch == "gpt2"
