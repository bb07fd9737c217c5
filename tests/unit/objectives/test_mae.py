"""Masked-autoencoder pretraining: the loss equals a hand computation on a fixed mask and transformers' own loss,
masks are a pure function of the collate generator, bad settings are refused at pre-flight, a model built from
config has its sin-cos positions, and a fine-tuned ViT starts from the MAE's encoder exactly."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from omegaconf import OmegaConf  # noqa: E402

from ptcli.config.schema import ModelConfig  # noqa: E402
from ptcli.config.validate import validate  # noqa: E402
from ptcli.errors import PtcliError  # noqa: E402
from ptcli.launch.compose import compose  # noqa: E402
from ptcli.objectives.base import Context  # noqa: E402
from ptcli.objectives.mae import MaskedAutoencoder, patchify  # noqa: E402
from ptcli.processing.loading import Processors  # noqa: E402

IMAGE, PATCH, CHANNELS = 8, 4, 3  # 4 patches of 4x4x3 = 48 values


def mae(norm_pix_loss=True, mask_ratio=0.5, **sizes):
    torch.manual_seed(0)
    config = transformers.ViTMAEConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=IMAGE,
        patch_size=PATCH, num_channels=CHANNELS, decoder_hidden_size=8, decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2, decoder_intermediate_size=16, norm_pix_loss=norm_pix_loss,
        mask_ratio=mask_ratio, **sizes)
    return transformers.ViTMAEForPreTraining(config).eval()


def hand_loss(logits, pixels, noise, mask_ratio, norm_pix_loss):
    """Patch by patch, as the paper says: the masked patches are the ones whose noise is not among the lowest
    (1 - mask_ratio); each one's target is its pixels (row by row, channels innermost), optionally normalised."""
    total, count = 0.0, 0
    batch, patches = noise.shape
    keep = int(patches * (1 - mask_ratio))
    side = IMAGE // PATCH
    for b in range(batch):
        visible = set(noise[b].argsort()[:keep].tolist())
        for i in range(patches):
            if i in visible:
                continue
            row, col = divmod(i, side)
            target = pixels[b, :, row * PATCH:(row + 1) * PATCH, col * PATCH:(col + 1) * PATCH]
            target = target.permute(1, 2, 0).reshape(-1)
            if norm_pix_loss:
                mean = target.sum() / target.numel()
                var = ((target - mean) ** 2).sum() / (target.numel() - 1)
                target = (target - mean) / (var + 1e-6).sqrt()
            total += float(((logits[b, i] - target) ** 2).mean())
            count += 1
    return total, count


@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_loss_equals_a_hand_computation_on_a_fixed_mask_and_transformers_loss(norm_pix_loss):
    model = mae(norm_pix_loss)
    pixels = torch.randn(3, CHANNELS, IMAGE, IMAGE, generator=torch.Generator().manual_seed(1))
    noise = torch.tensor([[0.1, 0.9, 0.5, 0.3], [0.8, 0.2, 0.6, 0.4], [0.3, 0.1, 0.7, 0.9]])
    objective = MaskedAutoencoder(mask_ratio=0.5, norm_pix_loss=norm_pix_loss)
    with torch.no_grad():
        out = objective.loss(model, {"pixel_values": pixels, "noise": noise})
        reference = model(pixel_values=pixels, noise=noise)
    total, count = hand_loss(reference.logits, pixels, noise, 0.5, norm_pix_loss)
    assert out.count.item() == count == 6  # half of each image's 4 patches
    assert out.sum.item() == pytest.approx(total, rel=1e-5)
    assert (out.sum / out.count).item() == pytest.approx(reference.loss.item(), rel=1e-6)
    assert reference.mask.tolist() == [[0, 1, 1, 0], [1, 0, 1, 0], [0, 0, 1, 1]]  # 1: masked


def test_patchify_is_transformers_layout():
    model = mae()
    pixels = torch.randn(2, CHANNELS, IMAGE, IMAGE)
    assert torch.equal(patchify(pixels, PATCH), model.patchify(pixels))


def objective_with_processor(**settings):
    processor = transformers.ViTImageProcessor(size={"height": IMAGE, "width": IMAGE}, image_mean=[0.5] * 3,
                                               image_std=[0.5] * 3)
    objective = MaskedAutoencoder(**settings)
    objective.processors = Processors(image_processor=processor)
    objective.restore(mae().config)
    return objective


def images(n):
    from PIL import Image

    return [{"image": Image.new("L", (5, 5), color=20 * i), "where": f"digits[{i}]"} for i in range(n)]


def test_masks_are_a_pure_function_of_the_generator_and_fixed_per_image_without_one():
    objective = objective_with_processor()
    examples = images(4)

    def noise(seed, rows=examples):
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        return objective.collate(rows, generator)["noise"]

    assert noise(1).shape == (4, (IMAGE // PATCH) ** 2)
    assert torch.equal(noise(1), noise(1)) and not torch.equal(noise(1), noise(2))
    assert torch.equal(noise(None), noise(None))  # evaluate: the same masks every time
    assert torch.equal(noise(None, examples[2:])[0], noise(None)[2]), "an image's mask does not depend on its batch"
    batch = objective.collate(examples, torch.Generator().manual_seed(3))
    assert batch["pixel_values"].shape == (4, 3, IMAGE, IMAGE) and objective.units(batch) == 4
    mask = mae(mask_ratio=0.75)(pixel_values=batch["pixel_values"], noise=batch["noise"]).mask
    assert mask.sum(-1).tolist() == [3.0] * 4


@pytest.mark.parametrize(("settings", "message"), [
    ({"mask_ratio": 1.5}, r"objective.mask_ratio must be in \(0, 1\), got 1.5"),
    ({"mask_ratio": 0.0}, r"objective.mask_ratio must be in \(0, 1\)"),
    ({"decoder_layers": 0}, "objective.decoder_layers=0"),
    ({"decoder_hidden": 66, "decoder_heads": 3}, "divisible by 4"),
    ({"decoder_hidden": 64, "decoder_heads": 3}, "divisible by objective.decoder_heads"),
])
def test_bad_settings_are_refused_by_the_class_and_at_preflight(settings, message):
    with pytest.raises(PtcliError, match=message):
        MaskedAutoencoder(**settings)
    args = ["objective=mae", *(f"objective.{k}={v}" for k, v in settings.items())]
    with pytest.raises(PtcliError, match=message):
        validate("pretrain", compose("pretrain", args))


def test_preflight_checks_the_model_and_accepts_the_defaults():
    data = validate("pretrain", compose("pretrain", ["objective=mae"]))
    assert data["objective"]["_target_"] == "ptcli.objectives.mae.MaskedAutoencoder"
    assert data["objective"]["mask_ratio"] == 0.75 and data["model"]["arch"] == "vit"
    with pytest.raises(PtcliError, match="objective mae needs a ViT"):
        validate("pretrain", compose("pretrain", ["objective=mae", "model=gpt2-tiny"]))
    with pytest.raises(PtcliError, match="hides every one of the 4 patches"):
        validate("pretrain", compose("pretrain", ["objective=mae", "objective.mask_ratio=0.8",
                                                  "model.extra.image_size=8"]))


def context(**model):
    cfg = OmegaConf.create({"model": OmegaConf.structured(ModelConfig(**model))})
    lines = []
    return Context(cfg, None, None, None, log=lines.append), lines


def test_a_model_from_config_has_sin_cos_positions_the_settings_and_survives_a_save(tmp_path):
    ctx, _ = context(arch="vit", layers=2, heads=4, hidden=32, intermediate=64, dropout=0.0,
                     extra={"image_size": 16, "patch_size": 4, "num_channels": 3})
    objective = MaskedAutoencoder(mask_ratio=0.6, decoder_layers=1, decoder_hidden=16, decoder_heads=2,
                                  decoder_intermediate=32)
    model = objective.build_model(ctx, None)
    config = model.config
    assert isinstance(model, transformers.ViTMAEForPreTraining) and objective.patch_size == 4
    assert (config.mask_ratio, config.norm_pix_loss, config.hidden_size, config.decoder_num_hidden_layers,
            config.decoder_hidden_size) == (0.6, True, 32, 1, 16)
    for positions in (model.vit.embeddings.position_embeddings, model.decoder.decoder_pos_embed):
        table = positions[0, 1:]
        assert not positions.requires_grad and positions[0, 0].abs().sum() == 0  # [CLS]: no position
        assert len({tuple(row.tolist()) for row in table}) == 16, "every patch has its own position"
        assert table.abs().max() <= 1.0
    model.save_pretrained(tmp_path)
    loaded = transformers.AutoModelForPreTraining.from_pretrained(tmp_path)
    assert torch.equal(loaded.vit.embeddings.position_embeddings, model.vit.embeddings.position_embeddings)
    assert torch.equal(loaded.decoder.decoder_pos_embed, model.decoder.decoder_pos_embed)
    assert objective.flops_per_unit(model, 0) > 0


def test_fine_tuning_starts_from_the_mae_encoder(tmp_path):
    from ptcli.models.build import build_model

    objective = MaskedAutoencoder(decoder_hidden=8, decoder_heads=2, decoder_layers=1, decoder_intermediate=16)
    ctx, _ = context(arch="vit", layers=1, heads=2, hidden=16, intermediate=32,
                     extra={"image_size": IMAGE, "patch_size": PATCH})
    source = objective.build_model(ctx, None)  # with its sin-cos positions
    source.save_pretrained(tmp_path / "mae")
    lines = []
    cfg = OmegaConf.structured(ModelConfig(path=str(tmp_path / "mae")))
    model = build_model(cfg, "AutoModelForImageClassification", None, log=lines.append, num_labels=3,
                        id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2})
    assert isinstance(model, transformers.ViTForImageClassification) and model.config.num_labels == 3
    ours, theirs = model.state_dict(), source.state_dict()
    encoder = [k for k in theirs if k.startswith("vit.")]
    assert encoder and all(torch.equal(ours[k], theirs[k]) for k in encoder)
    assert "vit.embeddings.patch_embeddings.projection.weight" in encoder and "vit.layernorm.weight" in encoder
    assert sorted(set(ours) - set(encoder)) == ["classifier.bias", "classifier.weight"]
    assert any("masked autoencoder" in line and "classifier.bias, classifier.weight" in line for line in lines)
    # unmasked (mask_ratio 0, patches in order), the MAE encoder computes exactly what the ViT's does
    source.config.mask_ratio = 0.0
    pixels = torch.randn(2, CHANNELS, IMAGE, IMAGE)
    in_order = torch.arange(4, dtype=torch.float).expand(2, 4)
    with torch.no_grad():
        expected = source.eval().vit(pixel_values=pixels, noise=in_order).last_hidden_state
        got = model.eval().vit(pixel_values=pixels).last_hidden_state
    assert got.shape == expected.shape == (2, 5, 16)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_a_presets_input_shape_does_not_reshape_a_trained_model(tmp_path):
    """objective=image_classification selects vit-tiny (16x16 images); given a 32x32 model.path, its image size wins
    (the position embeddings fix it) and the log says so; a different head size is re-initialised."""
    import json

    from omegaconf import OmegaConf

    from ptcli.models.build import pretrained_overrides

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit", "image_size": 32, "patch_size": 4,
                                                      "architectures": ["ViTForImageClassification"],
                                                      "id2label": {"0": "a", "1": "b"}}))
    lines = []
    cfg = OmegaConf.create({"path": str(tmp_path), "dropout": None,
                            "extra": {"image_size": 16, "patch_size": 4, "initializer_range": 0.1}})
    out = pretrained_overrides(cfg, {"num_labels": 3}, lines.append)
    assert "image_size" not in out and out["patch_size"] == 4 and out["initializer_range"] == 0.1
    assert out["ignore_mismatched_sizes"] is True
    assert any("image_size=16 left out" in line and "image_size=32" in line for line in lines)


def test_a_presets_extra_settings_for_another_family_are_left_out(tmp_path):
    """objective=audio_classification selects wav2vec2-tiny, whose model.extra (conv_dim, ...) a Whisper at
    model.path has no use for (its config class refuses them): left out, and the log says why."""
    import json

    from omegaconf import OmegaConf

    from ptcli.models.build import pretrained_overrides

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "whisper",
                                                      "architectures": ["WhisperForConditionalGeneration"]}))
    lines = []
    cfg = OmegaConf.create({"path": str(tmp_path), "dropout": None, "arch": "wav2vec2",
                            "extra": {"conv_dim": [32, 32], "layerdrop": 0.0}})
    out = pretrained_overrides(cfg, {"num_labels": 10}, lines.append)
    assert "conv_dim" not in out and "layerdrop" not in out
    assert any("model.extra left out" in line and "whisper" in line for line in lines)
    same = OmegaConf.create({"path": str(tmp_path), "dropout": None, "arch": "whisper", "extra": {"layerdrop": 0.0}})
    assert pretrained_overrides(same, {}, lines.append)["layerdrop"] == 0.0
