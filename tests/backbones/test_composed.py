"""ComposedBackbone: vision + projector + causal LM, the visual hook, truncation, saving and loading."""

import json
import shutil

import pytest
import torch

pytest.importorskip("transformers")

import transformers

from flowvla.backbones.composed import ComposedBackbone
from flowvla.typing import TypeCheckError

TEXTS = ["pick up the bowl", "open the top drawer", "turn on the stove"]


@pytest.fixture(scope="module")
def backbone():
    return ComposedBackbone.tiny(
        TEXTS * 3, image_size=16, patch_size=8, vision_dim=16, lm_dim=32, lm_layers=3
    ).eval()


def _images(b=2, v=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, v, 3, 16, 16), generator=g, dtype=torch.uint8)


def test_outputs_every_layer_with_masks(backbone):
    out = backbone(_images(), ["pick up the bowl and open the top drawer", "pick up the bowl"])
    assert len(out.hidden_states) == backbone.num_hidden_states == 4
    b, _, d = out.hidden_states[0].shape
    assert (b, d) == (2, backbone.hidden_size)
    assert out.image_token_mask.sum(-1).tolist() == [2 * 4, 2 * 4]  # 2 views x (16/8)^2 patches
    assert out.attention_mask.dtype == torch.bool and out.attention_mask[0].all()
    assert not out.attention_mask[1].all() and out.padding_side == "right"  # shorter prompt is padded
    assert not (out.image_token_mask & ~out.attention_mask).any()


def test_identity_hook_changes_nothing_and_a_shift_acts_from_the_image_tokens_on(backbone):
    images = _images()
    plain = backbone(images, TEXTS[:2])
    same = backbone(images, TEXTS[:2], visual_hook=lambda v: v.clone())
    assert all(torch.equal(a, b) for a, b in zip(plain.hidden_states, same.hidden_states, strict=True))
    seen = {}

    def shift(v):
        seen["shape"] = v.shape
        return v + 1.0

    moved = backbone(images, TEXTS[:2], visual_hook=shift)
    assert seen["shape"] == (2, 2 * 4, backbone.visual_dim)
    first_image = int(plain.image_token_mask[0].nonzero()[0])
    # causal LM: tokens before the first image token cannot see the change, all later ones do
    for a, b in zip(plain.hidden_states[1:], moved.hidden_states[1:], strict=True):
        assert torch.equal(a[0, :first_image], b[0, :first_image])
        assert not torch.allclose(a[0, first_image:], b[0, first_image:])


def test_hook_must_keep_the_shape(backbone):
    with pytest.raises(ValueError, match="visual_hook"):
        backbone(_images(), TEXTS[:2], visual_hook=lambda v: v[:, :-1])


def test_padding_does_not_change_a_sample(backbone):
    images = _images()
    batch = backbone(images, [TEXTS[0], TEXTS[1] + " and then close it again"])
    alone = backbone(images[:1], [TEXTS[0]])
    n = int(alone.attention_mask[0].sum())
    for a, b in zip(batch.hidden_states, alone.hidden_states, strict=True):
        torch.testing.assert_close(a[0, :n], b[0, :n], rtol=1e-5, atol=1e-5)


def test_truncated_lm_gives_the_first_layers_of_the_full_one(backbone, tmp_path):
    with torch.no_grad():
        full = backbone(_images(), TEXTS[:2]).hidden_states  # 4 = embeddings + 3 layers
    backbone.save_tokenizer(tmp_path)
    copy = ComposedBackbone.from_spec(backbone.spec(), tmp_path)
    copy.load_state_dict(backbone.state_dict())
    trunc = ComposedBackbone(copy.vision, copy.language_model, copy.tokenizer, num_lm_layers=2).eval()
    trunc.projector.load_state_dict(backbone.projector.state_dict())
    with torch.no_grad():
        out = trunc(_images(), TEXTS[:2]).hidden_states
    assert len(out) == trunc.num_hidden_states == 3 and len(trunc.language_model.layers) == 2
    torch.testing.assert_close(out[:2], full[:2])
    # transformers returns the last hidden state after the final norm
    torch.testing.assert_close(out[2], trunc.language_model.norm(full[2]))


def test_spec_round_trip_rebuilds_the_same_architecture(backbone, tmp_path):
    backbone.save_tokenizer(tmp_path)
    rebuilt = ComposedBackbone.from_spec(backbone.spec(), tmp_path).eval()
    rebuilt.load_state_dict(backbone.state_dict(), strict=True)
    a = backbone(_images(), TEXTS[:2]).hidden_states[-1]
    b = rebuilt(_images(), TEXTS[:2]).hidden_states[-1]
    assert torch.equal(a, b)


@pytest.fixture(scope="module")
def checkpoints(backbone, tmp_path_factory):
    """The tiny backbone's vision and LM saved as transformers checkpoints (no processor file)."""
    root = tmp_path_factory.mktemp("checkpoints")
    backbone.vision.save_pretrained(root / "vision")
    backbone.language_model.save_pretrained(root / "lm")
    backbone.tokenizer.save_pretrained(root / "lm")
    return root


# Statistics unlike SigLIP's default, so reading them is visible.
PROCESSOR = {
    "image_processor_type": "SiglipImageProcessor",
    "image_mean": [0.1, 0.2, 0.3],
    "image_std": [0.4, 0.5, 0.6],
    "size": {"height": 16, "width": 16},
}


def _vision_with_processor(checkpoints, tmp_path):
    vision = tmp_path / "vision"
    shutil.copytree(checkpoints / "vision", vision)
    (vision / "preprocessor_config.json").write_text(json.dumps(PROCESSOR))
    return vision


def _stats(bb):
    return [*bb.image_mean.flatten().tolist(), *bb.image_std.flatten().tolist()]


def test_from_pretrained_reads_local_checkpoints(backbone, checkpoints):
    loaded = ComposedBackbone.from_pretrained(
        checkpoints / "vision", checkpoints / "lm", local_files_only=True
    ).eval()
    loaded.projector.load_state_dict(backbone.projector.state_dict())
    a = backbone(_images(), TEXTS[:2]).hidden_states[-1]
    b = loaded(_images(), TEXTS[:2]).hidden_states[-1]
    torch.testing.assert_close(a, b)
    assert _stats(loaded) == _stats(backbone)  # no processor file: SigLIP's (0.5, 0.5)


def test_from_pretrained_uses_the_image_processor_statistics(checkpoints, tmp_path):
    pytest.importorskip("PIL", reason="AutoImageProcessor needs pillow (the hf extra)")
    vision = _vision_with_processor(checkpoints, tmp_path)
    loaded = ComposedBackbone.from_pretrained(vision, checkpoints / "lm", local_files_only=True)
    assert _stats(loaded) == pytest.approx(PROCESSOR["image_mean"] + PROCESSOR["image_std"])


@pytest.mark.parametrize("with_file", [True, False])
def test_from_pretrained_without_the_processor_dependencies(checkpoints, tmp_path, monkeypatch, with_file):
    # What transformers raises when the processor class needs pillow / torchvision that are missing.
    def refuse(*args, **kwargs):
        raise ImportError("AutoImageProcessor requires the PIL library but it was not found")

    monkeypatch.setattr(transformers.AutoImageProcessor, "from_pretrained", refuse)
    vision = _vision_with_processor(checkpoints, tmp_path) if with_file else checkpoints / "vision"
    loaded = ComposedBackbone.from_pretrained(vision, checkpoints / "lm", local_files_only=True)
    # The statistics come from the processor file itself; without one, SigLIP's as documented.
    want = PROCESSOR["image_mean"] + PROCESSOR["image_std"] if with_file else [0.5] * 6
    assert _stats(loaded) == pytest.approx(want)


def test_freezing_parts(backbone):
    bb = ComposedBackbone.tiny(TEXTS, image_size=16, patch_size=8, vision_dim=16, lm_dim=32)
    bb.freeze("vision")
    bb(_images(), TEXTS[:2]).hidden_states[-1].sum().backward()
    assert all(p.grad is None for p in bb.vision.parameters())
    assert all(p.grad is not None for p in bb.projector.parameters())
    with pytest.raises(ValueError, match="part"):
        bb.freeze("eyes")


@pytest.mark.parametrize(
    "images, match",
    [
        (torch.zeros(2, 2, 3, 8, 8, dtype=torch.uint8), "images"),
        (torch.zeros(2, 2, 1, 16, 16, dtype=torch.uint8), "images"),
        (torch.full((2, 2, 3, 16, 16), 3.0), "images"),
        (torch.zeros(2, 2, 3, 16, 16, dtype=torch.int64), "images"),
    ],
)
def test_bad_images_are_rejected_naming_them(backbone, images, match):
    with pytest.raises((ValueError, TypeCheckError), match=match):
        backbone(images, TEXTS[:2])


def test_instruction_count_must_match(backbone):
    with pytest.raises(ValueError, match="instructions"):
        backbone(_images(), TEXTS[:1])


def test_reused_visual_features_equal_a_full_call_without_encoding_again(backbone):
    images, other = _images(), ["turn on the stove", "open the top drawer"]
    first = backbone(images, TEXTS[:2], visual_hook=lambda v: v + 0.5)
    calls = []
    handle = backbone.vision.register_forward_hook(lambda *_: calls.append(1))
    try:
        reread = backbone(images, other, visual_features=first.visual_features)
    finally:
        handle.remove()
    full = backbone(images, other, visual_hook=lambda v: v + 0.5)
    assert not calls
    assert all(torch.equal(a, b) for a, b in zip(full.hidden_states, reread.hidden_states, strict=True))
    assert torch.equal(reread.visual_features, first.visual_features)


def test_reused_visual_features_must_fit_and_come_without_a_hook(backbone):
    features = backbone(_images(), TEXTS[:2]).visual_features
    with pytest.raises(ValueError, match="visual_features: expected"):
        backbone(_images(), TEXTS[:2], visual_features=features[:, :-1])
    with pytest.raises(ValueError, match="visual_features: given together with a visual_hook"):
        backbone(_images(), TEXTS[:2], visual_features=features, visual_hook=lambda v: v)
