"""timm vision towers by name: families, layers, grids, prefix tokens, specs, local pretrained weights.

Real timm and torchvision, random init, tiny sizes. Skipped where timm is not installed (the main
venv): CI runs these in a second venv with the README's torch / torchvision pairing.
"""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

timm = pytest.importorskip("timm", reason="needs timm + a matching torchvision (pip install -e '.[timm]')")

from flowvla.backbones.timm_encoders import FusedTimmEncoder, TimmEncoder  # noqa: E402
from flowvla.typing import TypeCheckError  # noqa: E402

TINY_VIT = {"embed_dim": 32, "depth": 3, "num_heads": 2}
SIGLIP = "vit_base_patch16_siglip_224"
DINO = "vit_small_patch14_reg4_dinov2"
TEXTS = ["pick up the bowl", "open the drawer"]


def _siglip(**kw):
    return TimmEncoder(SIGLIP, image_size=32, **{**TINY_VIT, **kw}).eval()


def _dino(**kw):
    return TimmEncoder(DINO, image_size=28, **{**TINY_VIT, **kw}).eval()


def _resnet(**kw):
    return TimmEncoder("resnet18", image_size=64, norm_layer="groupnorm", **kw).eval()


# ---- families ----------------------------------------------------------------------------------


def test_siglip_style_vit_gives_one_token_per_patch_equal_to_forward_features():
    enc = _siglip()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = enc(x)
        reference = enc.model.forward_features(x)  # SigLIP has no prefix tokens
    assert enc.num_prefix_tokens == 0 and enc.patch_grid.grid_size == (2, 2)
    assert tokens.shape == (2, 4, 32) and enc.image_mean == (0.5, 0.5, 0.5)
    torch.testing.assert_close(tokens, reference)
    assert enc.model.attn_pool is None and isinstance(enc.model.head, torch.nn.Identity)  # MAP head pruned


def test_dinov2_registers_and_cls_stay_out_of_the_tokens():
    enc = _dino()
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        tokens = enc(x)
        full = enc.model.forward_features(x)  # [CLS, 4 registers, 4 patches]
    assert enc.num_prefix_tokens == 5 and full.shape[1] == 5 + 4
    assert tokens.shape == (2, 4, 32)
    torch.testing.assert_close(tokens, full[:, 5:])  # exactly the patch tokens, in order
    assert enc.image_mean == pytest.approx((0.485, 0.456, 0.406))  # DINOv2's ImageNet statistics


def test_resnet18_with_groupnorm_has_no_batchnorm_and_a_stride_grid():
    enc = _resnet()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in enc.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in enc.modules())
    assert enc.patch_grid.patch_size == (32, 32) and enc.patch_grid.grid_size == (2, 2)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tokens = enc(x)
        fmap = enc.model.forward_features(x)  # [B, 512, 2, 2]
    assert tokens.shape == (2, 4, 512) == (2, enc.patch_grid.num_patches, enc.num_features)
    torch.testing.assert_close(tokens, fmap.flatten(2).transpose(1, 2))  # row-major cells
    assert isinstance(enc.model.fc, torch.nn.Identity)


def test_a_cnn_token_sees_its_own_cell_more_than_a_far_one():
    """Row-major order is real: perturbing one corner changes the tokens at that corner most (its own
    cell or a neighbour: receptive fields overlap), and the far corner's hardly at all."""
    torch.manual_seed(0)  # random-init weights: without a seed the peak can land on any neighbour
    enc = TimmEncoder("resnet18", image_size=128, norm_layer="groupnorm", feature_layer=2).eval()  # stride 8
    x = torch.randn(1, 3, 128, 128)
    y = x.clone()
    y[..., :8, -8:] += 3.0  # the top-right cell: row 0, column 15
    with torch.no_grad():
        change = (enc(y) - enc(x)).norm(dim=-1)[0].view(16, 16)
    row, col = divmod(int(change.argmax()), 16)
    assert row <= 1 and col >= 14, (row, col)
    assert change[0, 15] > 10 * change[15, 0]


@settings(deadline=None, max_examples=8)
@given(layer=st.integers(-5, 4), cells=st.integers(1, 3))
def test_any_resnet_layer_gives_its_own_grid(layer, cells):
    stride = [2, 4, 8, 16, 32][layer]
    enc = TimmEncoder("resnet18", image_size=32 * cells, norm_layer="groupnorm", feature_layer=layer)
    width = [64, 64, 128, 256, 512][layer]
    out = enc(torch.randn(1, 3, 32 * cells, 32 * cells))
    assert enc.patch_grid.patch_size == (stride, stride) and enc.num_features == width
    assert out.shape == (1, (32 * cells // stride) ** 2, width)


def test_feature_layer_of_a_vit_is_that_blocks_output_and_later_blocks_are_removed():
    enc = _siglip()
    early = TimmEncoder(SIGLIP, image_size=32, feature_layer=1, norm=False, **TINY_VIT).eval()
    early.model.load_state_dict(enc.model.state_dict(), strict=False)
    assert len(early.model.blocks) == 2 and len(enc.model.blocks) == 3
    assert isinstance(early.model.norm, torch.nn.Identity)  # norm=False prunes it
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        h = enc.model.patch_embed(x)
        h = enc.model._pos_embed(h)
        h = enc.model.blocks[1](enc.model.blocks[0](h))
        torch.testing.assert_close(early(x), h)
    early(x).sum().backward()
    assert all(p.grad is not None for p in early.parameters())  # nothing left without a gradient


def test_vit_drops_the_remainder_when_the_patch_does_not_divide_the_image():
    enc = TimmEncoder(SIGLIP, image_size=84, **TINY_VIT)  # 84 / 16 -> 5 patches, 4 px dropped
    assert enc.patch_grid.grid_size == (5, 5) and enc.patch_grid.covered_fraction == (80 / 84, 80 / 84)
    assert enc(torch.randn(1, 3, 84, 84)).shape == (1, 25, 32)


# ---- errors name the argument ------------------------------------------------------------------


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="image_size"):
        TimmEncoder("resnet18", image_size=84, norm_layer="groupnorm")  # stride 32
    with pytest.raises(ValueError, match="feature_layer"):
        TimmEncoder("resnet18", image_size=64, feature_layer=5)
    with pytest.raises(ValueError, match="model_name"):
        TimmEncoder("no_such_model_v9", image_size=64)
    with pytest.raises(ValueError, match=r"kwargs\['norm_layer'\]"):
        TimmEncoder("resnet18", image_size=64, norm_layer=torch.nn.GroupNorm)  # a class has no JSON form
    with pytest.raises(ValueError, match="image_size"):
        TimmEncoder(SIGLIP, img_size=32, **TINY_VIT)
    enc = _siglip()
    with pytest.raises((ValueError, TypeCheckError), match="images"):
        enc(torch.randn(1, 3, 48, 48))
    with pytest.raises(ValueError, match="encoders"):
        FusedTimmEncoder([_siglip(), _dino()])  # 2 x 2 grids, but 32 px / 16 vs 28 px / 14


# ---- spec round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("make", [_siglip, _dino, _resnet], ids=["siglip", "dinov2", "resnet18-gn"])
def test_config_is_json_and_rebuilds_bit_exactly(make):
    enc = make()
    config = json.loads(json.dumps(enc.config))
    assert config["model_type"] == "timm" and "pretrained" not in json.dumps(config)
    rebuilt = TimmEncoder.from_config(config).eval()
    rebuilt.load_state_dict(enc.state_dict(), strict=True)
    x = torch.randn(2, 3, *enc.patch_grid.image_size)
    with torch.no_grad():
        assert torch.equal(enc(x), rebuilt(x))
    assert rebuilt.config == enc.config


def _fused():
    return FusedTimmEncoder.dinosiglip(
        28, embed_dim=32, depth=3, num_heads=2, siglip_kwargs={"embed_dim": 48}
    )


def test_fused_featurizer_concatenates_each_towers_own_view():
    fused = _fused().eval()
    dino, siglip = fused.encoders
    assert fused.patch_grid.grid_size == (2, 2) and fused.num_features == 32 + 48
    assert (dino.feature_layer, siglip.feature_layer, dino.norm) == (1, 1, False)  # second-to-last block
    images = torch.rand(2, 3, 28, 28)
    with torch.no_grad():
        tokens = fused(images)
        mean, std = (torch.tensor(v).view(3, 1, 1) for v in (dino.image_mean, dino.image_std))
        d = dino((images - mean) / std)
        s = siglip((images - 0.5) / 0.5)
    assert tokens.shape == (2, 4, 80)
    torch.testing.assert_close(tokens, torch.cat([d, s], -1))
    assert dino.image_std != siglip.image_std  # two different normalisations really are applied


def test_fused_config_round_trips():
    fused = _fused().eval()
    rebuilt = FusedTimmEncoder.from_config(json.loads(json.dumps(fused.config))).eval()
    rebuilt.load_state_dict(fused.state_dict(), strict=True)
    images = torch.rand(1, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(fused(images), rebuilt(images))


# ---- pretrained weights from a local file ------------------------------------------------------


@pytest.mark.parametrize("suffix", ["safetensors", "pth"])
def test_pretrained_true_loads_a_local_file_through_timm(tmp_path, suffix):
    """timm's own pretrained path, pointed at a checkpoint the test writes (no network)."""
    source = timm.create_model(DINO, pretrained=False, img_size=28, **TINY_VIT)
    with torch.no_grad():
        for p in source.parameters():
            p.normal_()  # distinct from any fresh init
    path = tmp_path / f"weights.{suffix}"
    if suffix == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    else:
        torch.save(source.state_dict(), path)
    enc = TimmEncoder(
        DINO, image_size=28, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **TINY_VIT
    ).eval()
    source_sd = source.state_dict()
    for name, value in enc.model.state_dict().items():
        assert torch.equal(value, source_sd[name]), name
    assert "file" not in json.dumps(enc.config)  # where weights came from is not architecture
    x = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), source.eval().forward_features(x)[:, 5:])


# ---- inside ComposedBackbone -------------------------------------------------------------------


@pytest.fixture(scope="module")
def composed_classes():
    pytest.importorskip("transformers")
    from flowvla.backbones.composed import ComposedBackbone

    return ComposedBackbone


@pytest.mark.parametrize(
    "make, size",
    [(_siglip, 32), (_dino, 28), (_resnet, 64), (_fused, 28)],
    ids=["siglip", "dinov2", "resnet18-gn", "dinosiglip"],
)
def test_composed_backbone_saves_and_rebuilds_timm_towers_bit_exactly(composed_classes, make, size, tmp_path):
    bb = composed_classes.tiny(TEXTS, vision=make(), lm_dim=32).eval()
    assert bb.vision_source == "timm" and bb.image_size == (size, size)
    assert bb.image_mean.flatten().tolist() == pytest.approx(list(bb.vision.image_mean))
    bb.save_tokenizer(tmp_path)
    spec = json.loads(json.dumps(bb.spec()))
    rebuilt = composed_classes.from_spec(spec, tmp_path).eval()
    rebuilt.load_state_dict(bb.state_dict(), strict=True)
    images = torch.randint(0, 256, (2, 2, 3, size, size), dtype=torch.uint8)
    seen = {}

    def hook(visual):
        seen["shape"] = tuple(visual.shape)
        return visual

    with torch.no_grad():
        a = bb(images, TEXTS, visual_hook=hook)
        b = rebuilt(images, TEXTS)
    n = bb.patch_grid.num_patches
    assert seen["shape"] == (2, 2 * n, bb.vision.num_features)  # patch tokens only, no prefix
    assert a.image_token_mask.sum(-1).tolist() == [2 * n, 2 * n]
    assert all(torch.equal(x, y) for x, y in zip(a.hidden_states, b.hidden_states, strict=True))


def test_policy_with_a_cnn_tower_fuses_depth_on_its_grid_and_round_trips(composed_classes, tmp_path):
    """The ResNet grid (stride 32 -> 2 x 2 cells) drives depth fusion; the saved policy acts the same."""
    from flowvla.policy import FusionConfig, HeadConfig, PolicyConfig, VLAPolicy

    bb = composed_classes.tiny(TEXTS, vision=_resnet(), lm_dim=32)
    config = PolicyConfig(
        backbone=bb.spec(),
        horizon=4,
        action_dim=7,
        state_dim=8,
        num_views=1,
        action_normalization="none",
        state_normalization="none",
        head=HeadConfig(dim=32, depth=1, num_heads=2),
        fusion=FusionConfig(kind="gated", geo_dim=16, num_heads=2),
    )
    torch.manual_seed(0)
    policy = VLAPolicy(config, bb)
    g = torch.Generator().manual_seed(0)
    batch = {
        "images": torch.randint(0, 256, (2, 1, 3, 64, 64), generator=g, dtype=torch.uint8),
        "instruction": TEXTS,
        "state": torch.randn(2, 8, generator=g),
        "depth": torch.rand(2, 1, 64, 64, generator=g) + 0.5,
        "actions": torch.randn(2, 4, 7, generator=g),
    }
    assert torch.isfinite(policy(batch).loss)
    policy.eval().save_pretrained(tmp_path / "p")
    loaded = VLAPolicy.from_pretrained(tmp_path / "p").eval()
    a, _ = policy.predict_action(batch, steps=2, seed=0)
    b, _ = loaded.predict_action(batch, steps=2, seed=0)
    assert torch.equal(a, b)


def test_a_bare_timm_model_still_runs_but_cannot_be_saved(composed_classes):
    vit = timm.create_model(DINO, pretrained=False, img_size=28, num_classes=0, **TINY_VIT)
    bb = composed_classes.tiny(TEXTS, vision=vit, lm_dim=32)
    assert bb.num_prefix_tokens == 5 and bb.patch_grid.num_patches == 4
    bb(torch.zeros(1, 1, 3, 28, 28, dtype=torch.uint8), TEXTS[:1])
    with pytest.raises(NotImplementedError, match="TimmEncoder"):
        bb.spec()


def test_from_pretrained_takes_a_built_tower_and_its_normalisation(composed_classes, tmp_path):
    bb = composed_classes.tiny(TEXTS, vision=_resnet(), lm_dim=32)
    bb.language_model.save_pretrained(tmp_path / "lm")
    bb.tokenizer.save_pretrained(tmp_path / "lm")
    dino = _dino()
    loaded = composed_classes.from_pretrained(dino, tmp_path / "lm", local_files_only=True)
    assert loaded.vision is dino and loaded.patch_grid.grid_size == (2, 2)
    assert loaded.image_std.flatten().tolist() == pytest.approx([0.229, 0.224, 0.225])  # DINOv2's, not 0.5
    out = loaded(torch.zeros(1, 1, 3, 28, 28, dtype=torch.uint8), TEXTS[:1])
    assert out.image_token_mask.sum() == 4


def test_the_recipe_trains_a_policy_on_a_timm_resnet():
    """``RecipeConfig.vision="timm:resnet18"``: a random-init GroupNorm ResNet-18 per view, its stride-32
    feature map as the patch tokens and the keypoints' input."""
    pytest.importorskip("transformers")
    from flowvla.data.batch import collate
    from flowvla.data.dataset import ChunkDataset
    from flowvla.recipes.libero import build_policy, preset
    from tests.data.helpers import BlockSource

    cfg = preset("toy", vision="timm:resnet18", image_size=64, horizon=8)
    ds = ChunkDataset(BlockSource([6, 5], h=64, w=64), horizon=8)
    policy = build_policy(cfg, ds)
    encoder = policy.backbone.vision
    assert isinstance(encoder, TimmEncoder) and encoder.patch_grid.patch_size == (32, 32)
    assert any(isinstance(m, torch.nn.GroupNorm) for m in encoder.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in encoder.modules())
    batch = collate([ds[i] for i in (0, 4, 8)])
    loss = policy(batch).loss
    loss.backward()
    assert torch.isfinite(loss)
    actions, _ = policy.predict_action({k: batch[k] for k in ("images", "instruction", "state")}, seed=0)
    assert actions.shape == (3, 8, 7)
