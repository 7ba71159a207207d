"""HFVisionLanguageBackbone on tiny random-init PaliGemma, LLaVA, Idefics3 and SmolVLM (no download).

Every model is built with ``from_config`` around a byte-level BPE trained in the test; nothing touches
the hub (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import copy
import json

import pytest

pytest.importorskip("transformers")

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import (
    CLIPImageProcessor,
    Idefics3Config,
    LlavaConfig,
    PaliGemmaConfig,
    Qwen2_5_VLConfig,
    Qwen2VLConfig,
    Qwen2VLImageProcessor,
    SiglipImageProcessor,
    SmolVLMConfig,
)

from flowvla.backbones.hf import HFVisionLanguageBackbone
from flowvla.backbones.hf_adapters import (
    adapter_for,
    qwen2_5_vl_window_order,
    qwen2_vl_patchify,
    qwen2_vl_row_major,
)
from flowvla.geometry import PatchGrid
from flowvla.typing import TypeCheckError
from tests.helpers_tokenizers import tiny_bpe

ARCHS = ("paligemma", "llava", "idefics3", "smolvlm", "qwen2_vl", "qwen2_5_vl")
SIZE, PATCH = 32, 8  # a 4 x 4 patch grid per view
# Native-resolution towers: any multiple of 16, here not square (Qwen2.5-VL: two attention windows).
IMAGE_SIZE = {"qwen2_vl": (32, 48), "qwen2_5_vl": (32, 48)}
SPECIAL = [
    "[UNK]", "[PAD]", "<bos>", "<eos>", "<image>",
    "<fake_token_around_image>", "<global-img>", "<end_of_utterance>",
    "<|image_pad|>", "<|vision_start|>", "<|vision_end|>", "<|im_start|>", "<|im_end|>",
]  # fmt: skip
WORDS = ["pick", "up", "the", "red", "mug", "and", "put", "it", "on", "plate", "open", "top", "drawer"]
CORPUS = [
    "pick up the red mug and put it on the plate",
    "open the top drawer and put the bowl inside",
    "put both the soup and the sauce in the basket",
    "USER: ASSISTANT: User: Assistant:",
] * 10
SHORT, LONG = "open the drawer", "pick up the red mug and put it on the top plate, then open the drawer"


@pytest.fixture(scope="module", autouse=True)
def offline():
    """No test here may reach the hub: offline mode on (env and the flag huggingface_hub read at import)."""
    import huggingface_hub.constants

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_bpe(CORPUS, SPECIAL, vocab_size=320, bos_token="<bos>", eos_token="<eos>")


def make_config(arch: str, tokenizer, *, layers: int = 2):
    """A tiny config of ``arch`` whose image token is the tokenizer's ``<image>``."""
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=SIZE,
        patch_size=PATCH,
    )  # fmt: skip
    text = dict(
        hidden_size=48, intermediate_size=96, num_hidden_layers=layers, num_attention_heads=2,
        num_key_value_heads=1, head_dim=24, vocab_size=len(tokenizer),
    )  # fmt: skip
    if arch == "paligemma":
        return PaliGemmaConfig(
            vision_config=dict(model_type="siglip_vision_model", projection_dim=48, **vision),
            text_config=dict(model_type="gemma", **text),
            image_token_id=image_token_id,
            projection_dim=48,
        )
    if arch == "llava":
        return LlavaConfig(
            vision_config=dict(model_type="clip_vision_model", **vision),
            text_config=dict(model_type="llama", **text),
            image_token_id=image_token_id,
            vision_feature_layer=-1,
        )
    if arch in ("qwen2_vl", "qwen2_5_vl"):
        vision = dict(num_heads=2, patch_size=PATCH, spatial_merge_size=2, temporal_patch_size=2)
        if arch == "qwen2_vl":
            vision.update(depth=1, embed_dim=32, hidden_size=48, mlp_ratio=2)
        else:  # window attention over 2 x 2 merge units (32 px), then one full-attention block
            vision.update(
                depth=2,
                hidden_size=32,
                intermediate_size=64,
                out_hidden_size=48,
                window_size=32,
                fullatt_block_indexes=[1],
            )
        return {"qwen2_vl": Qwen2VLConfig, "qwen2_5_vl": Qwen2_5_VLConfig}[arch](
            vision_config=vision,
            text_config=dict(
                rope_parameters={"rope_type": "default", "mrope_section": [4, 4, 4], "rope_theta": 1e4},
                bos_token_id=None, eos_token_id=tokenizer.eos_token_id, **text,
            ),
            image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
            vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
            vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        )  # fmt: skip
    cls = {"idefics3": Idefics3Config, "smolvlm": SmolVLMConfig}[arch]
    return cls(
        vision_config=vision,
        text_config=dict(model_type="llama", **text),
        image_token_id=image_token_id,
        scale_factor=2,
    )


def make_backbone(
    arch: str, tokenizer, *, seed: int = 0, layers: int = 2, **kwargs
) -> HFVisionLanguageBackbone:
    torch.manual_seed(seed)
    kwargs.setdefault("image_mean", 0.5)
    kwargs.setdefault("image_std", 0.5)
    if arch in IMAGE_SIZE:
        kwargs.setdefault("image_size", IMAGE_SIZE[arch])
    backbone = HFVisionLanguageBackbone.from_config(
        make_config(arch, tokenizer, layers=layers), tokenizer, **kwargs
    )
    return backbone.eval()


@pytest.fixture(scope="module")
def backbones(tokenizer):
    return {arch: make_backbone(arch, tokenizer) for arch in ARCHS}


def images(batch: int, views: int, seed: int = 0, size: tuple[int, int] = (SIZE, SIZE)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, views, 3, *size), generator=g, dtype=torch.uint8)


def run(backbone, imgs, texts, hook=None):
    with torch.no_grad():
        return backbone(imgs, texts, visual_hook=hook)


# -- shapes, masks, layout ---------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("views", [1, 2])
def test_shapes_masks_and_hook_tokens(backbones, arch, views):
    bb = backbones[arch]
    assert (
        bb.hidden_size == 48
        and bb.num_hidden_states == 3
        and bb.image_size == IMAGE_SIZE.get(arch, (SIZE, SIZE))
    )
    assert (
        bb.patch_grid.grid_size == (bb.image_size[0] // PATCH, bb.image_size[1] // PATCH)
        and bb.visual_dim == 32
    )
    seen = []
    out = run(
        bb, images(2, views, size=bb.image_size), [SHORT, LONG], hook=lambda x: seen.append(x.shape) or x
    )
    b, t = out.input_ids.shape
    assert len(out.hidden_states) == bb.num_hidden_states
    assert all(h.shape == (b, t, bb.hidden_size) and torch.isfinite(h).all() for h in out.hidden_states)
    assert out.attention_mask.dtype == torch.bool and out.image_token_mask.dtype == torch.bool
    assert torch.equal(out.image_token_mask, out.input_ids == bb.image_token_id)
    assert out.image_token_mask.sum(-1).tolist() == [views * bb.tokens_per_image] * 2
    assert not (out.image_token_mask & ~out.attention_mask).any()
    assert out.attention_mask.sum(-1).tolist()[0] < t  # the short prompt is padded ...
    assert out.padding_side == bb.padding_side == "right"
    assert not out.attention_mask[0, -1]  # ... on the right
    # The hook sees the patch tokens of every view, before the projector.
    assert seen == [(2, views * bb.patch_grid.num_patches, bb.visual_dim)]


def test_tokens_per_image_by_family(backbones):
    n = (SIZE // PATCH) ** 2
    assert backbones["paligemma"].tokens_per_image == n
    assert backbones["llava"].tokens_per_image == n  # "default" strategy: CLS dropped before projecting
    assert backbones["idefics3"].tokens_per_image == n // 4  # pixel shuffle, scale factor 2
    assert backbones["qwen2_vl"].tokens_per_image == (32 // PATCH) * (48 // PATCH) // 4  # 2 x 2 merge


def test_qwen2_vl_pixels_match_its_image_processor():
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.3, 0.4]
    proc = Qwen2VLImageProcessor(
        patch_size=PATCH, merge_size=2, temporal_patch_size=2, do_resize=False, image_mean=mean, image_std=std
    )
    imgs = images(2, 1, size=(32, 48))[:, 0]
    ref = proc(images=list(imgs.permute(0, 2, 3, 1).numpy()), return_tensors="pt")
    x = (imgs.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(qwen2_vl_patchify(x, PATCH, 2, 2), ref["pixel_values"])
    assert ref["image_grid_thw"].tolist() == [[1, 4, 6]] * 2


def test_qwen2_5_vl_window_order_matches_transformers():
    vision_utils = pytest.importorskip("transformers.vision_utils")  # where transformers 5.2x keeps it
    for size, window_units in [((32, 48), 2), ((64, 96), 2), ((112, 56), 3), ((32, 32), 1)]:
        grid = PatchGrid(size, PATCH)
        gh, gw = grid.grid_size
        ref, _ = vision_utils.get_vision_window_index(
            torch.tensor([[1, gh, gw]]),
            spatial_merge_size=2,
            window_size=window_units * 2 * PATCH,
            patch_size=PATCH,
        )
        assert torch.equal(qwen2_5_vl_window_order(grid, 2, window_units), ref)
    assert qwen2_5_vl_window_order(PatchGrid((32, 48), PATCH), 2, 2).tolist() == [0, 1, 3, 4, 2, 5]


def test_qwen2_vl_hook_tokens_are_row_major():
    """Qwen2-VL packs patches by 2 x 2 merge window; the hook must still see them row by row."""
    grid = PatchGrid((32, 48), PATCH)
    rows, cols = torch.meshgrid(torch.arange(32), torch.arange(48), indexing="ij")
    # Channel 0 holds each pixel's patch row, channel 1 its patch column.
    x = torch.stack([rows // PATCH, cols // PATCH, rows * 0]).float()[None]
    packed = qwen2_vl_patchify(x, PATCH, 2, 2).view(grid.num_patches, 3, -1)
    ordered = packed[qwen2_vl_row_major(grid, 2)]
    gh, gw = grid.grid_size
    assert torch.equal(ordered[:, 0, 0], torch.arange(gh).repeat_interleave(gw).float())
    assert torch.equal(ordered[:, 1, 0], torch.arange(gw).repeat(gh).float())


def test_idefics3_wraps_each_view(backbones, tokenizer):
    out = run(backbones["idefics3"], images(1, 3), [SHORT])
    ids = out.input_ids[0].tolist()
    assert ids.count(tokenizer.convert_tokens_to_ids("<fake_token_around_image>")) == 2 * 3
    assert ids.count(tokenizer.convert_tokens_to_ids("<global-img>")) == 3


@settings(max_examples=8)
@given(
    texts=st.lists(st.lists(st.sampled_from(WORDS), max_size=12).map(" ".join), min_size=1, max_size=3),
    views=st.integers(1, 3),
    arch=st.sampled_from(ARCHS),
)
def test_every_sample_gets_its_image_tokens(backbones, texts, views, arch):
    bb = backbones[arch]
    enc = bb.tokenize(texts, views)
    assert enc["image_token_mask"].sum(-1).tolist() == [views * bb.tokens_per_image] * len(texts)


@pytest.mark.parametrize("arch", ARCHS)
def test_hook_tokens_are_ordered_sample_view_and_per_view(backbones, arch):
    """Hook token block ``v`` of sample ``b`` is exactly what view ``(b, v)`` gives on its own."""
    bb = backbones[arch]
    imgs, n = images(2, 2, seed=3, size=bb.image_size), bb.patch_grid.num_patches
    grabbed = []
    run(bb, imgs, [SHORT, SHORT], hook=lambda x: grabbed.append(x) or x)
    for b in range(2):
        for v in range(2):
            run(bb, imgs[b : b + 1, v : v + 1], [SHORT], hook=lambda x: grabbed.append(x) or x)
            torch.testing.assert_close(
                grabbed[-1][0], grabbed[0][b, v * n : (v + 1) * n], rtol=1e-5, atol=1e-5
            )


@pytest.mark.parametrize("arch", ARCHS)
def test_hook_token_row_col_lands_in_its_lm_token(backbones, arch):
    """Nudging hook token (view, row, col) changes exactly the LM image token of that patch (or of the
    s x s block merged into one token), end to end through the projector: the hook's order is real."""
    bb = backbones[arch]
    (gh, gw), n = bb.patch_grid.grid_size, bb.patch_grid.num_patches
    s = round((n / bb.tokens_per_image) ** 0.5)  # patches per merged token side: 1, or the merge size
    imgs = images(1, 2, size=bb.image_size)
    plain = run(bb, imgs, [SHORT])
    slots = plain.image_token_mask[0].nonzero().flatten()
    for view, row, col in [(0, 0, gw - 1), (1, gh - 1, 1), (1, gh // 2, gw // 2)]:

        def nudge(x, k=view * n + row * gw + col):
            x = x.clone()
            x[:, k] += 1.0
            return x

        moved = (run(bb, imgs, [SHORT], hook=nudge).hidden_states[0][0] != plain.hidden_states[0][0]).any(-1)
        expected = view * bb.tokens_per_image + (row // s) * (gw // s) + col // s
        assert moved.nonzero().flatten().tolist() == [slots[expected].item()]


@pytest.mark.parametrize("arch", ARCHS)
def test_states_match_transformers_output_hidden_states(backbones, arch):
    """All but the last are transformers' ``output_hidden_states``; the last is it before the final norm."""
    bb = backbones[arch]
    captured = {}
    handle = bb._inner.register_forward_pre_hook(lambda m, a, kw: captured.update(kw), with_kwargs=True)
    try:
        out = run(bb, images(2, 2, size=bb.image_size), [SHORT, LONG])
    finally:
        handle.remove()
    with torch.no_grad():
        ref = bb._inner(**captured, output_hidden_states=True)
    mask = out.attention_mask
    assert len(ref.hidden_states) == len(out.hidden_states)
    for ours, theirs in zip(out.hidden_states[:-1], ref.hidden_states[:-1], strict=True):
        assert torch.equal(ours[mask], theirs[mask])
    final = bb._language.norm(out.hidden_states[-1])
    torch.testing.assert_close(final[mask], ref.last_hidden_state[mask])
    normed = copy.copy(bb)
    normed.final_norm = True
    assert torch.equal(
        run(normed, images(2, 2, size=bb.image_size), [SHORT, LONG]).hidden_states[-1][mask],
        ref.last_hidden_state[mask],
    )


# -- the visual hook ---------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_identity_hook_is_bitwise_and_a_shift_acts_from_the_image_tokens_on(backbones, arch):
    bb = backbones[arch]
    imgs, texts = images(2, 2, size=bb.image_size), [SHORT, LONG]
    plain = run(bb, imgs, texts)
    same = run(bb, imgs, texts, hook=lambda x: x)
    assert all(torch.equal(a, b) for a, b in zip(plain.hidden_states, same.hidden_states, strict=True))
    shifted = run(bb, imgs, texts, hook=lambda x: x + 1.0)
    image, real = plain.image_token_mask, plain.attention_mask
    first = image.int().argmax(-1)
    before = torch.arange(image.shape[1])[None] < first[:, None]
    # Embedding output: only the image slots move.
    moved = (shifted.hidden_states[0] != plain.hidden_states[0]).any(-1)
    assert torch.equal(moved, image)
    # Deeper: nothing before the first image token moves (causal, or nothing there for PaliGemma's
    # bidirectional prefix, whose images come first), every real token from it on does.
    for a, b in zip(plain.hidden_states[1:], shifted.hidden_states[1:], strict=True):
        moved = (a != b).any(-1)
        assert not moved[before].any()
        assert moved[~before & real].all()


@pytest.mark.parametrize("arch", ARCHS)
def test_given_visual_features_replace_the_towers_tokens(backbones, arch):
    bb = backbones[arch]
    imgs = images(2, 2, size=bb.image_size)
    seen = {}

    def keep(x):
        seen["tokens"] = x + 0.25
        return seen["tokens"]

    hooked = run(bb, imgs, [LONG, SHORT], hook=keep)
    with torch.no_grad():
        given = bb(imgs, [LONG, SHORT], visual_features=seen["tokens"])
    assert all(torch.equal(a, b) for a, b in zip(hooked.hidden_states, given.hidden_states, strict=True))
    with pytest.raises(ValueError, match="visual_features: expected"):
        bb(imgs, [LONG, SHORT], visual_features=seen["tokens"][:, :-1])


@pytest.mark.parametrize("arch", ["paligemma", "llava"])
def test_hook_gradients_flow_through_a_frozen_backbone(tokenizer, arch):
    bb = make_backbone(arch, tokenizer, freeze="all")
    assert not any(p.requires_grad for p in bb.parameters())
    scale = torch.nn.Parameter(torch.ones(()))
    out = bb(images(1, 2), [SHORT], visual_hook=lambda x: x * scale)
    out.hidden_states[-1].sum().backward()
    assert scale.grad is not None and scale.grad.abs() > 0
    assert all(p.grad is None for p in bb.parameters())


def test_llava_full_strategy_keeps_cls_out_of_the_hook(tokenizer):
    """With the "full" strategy and two feature layers, CLS reaches the projector but not the hook."""
    torch.manual_seed(0)
    config = make_config("llava", tokenizer)
    config.vision_feature_select_strategy, config.vision_feature_layer = "full", [-2, -1]
    bb = HFVisionLanguageBackbone.from_config(config, tokenizer, image_mean=0.5, image_std=0.5).eval()
    n = bb.patch_grid.num_patches
    assert bb.tokens_per_image == n + 1 and bb.visual_dim == 2 * 32
    seen = []
    imgs = images(2, 2)
    plain = run(bb, imgs, [SHORT, LONG])
    same = run(bb, imgs, [SHORT, LONG], hook=lambda x: seen.append(x.shape) or x)
    assert seen == [(2, 2 * n, 64)]
    assert plain.image_token_mask.sum(-1).tolist() == [2 * (n + 1)] * 2
    assert all(torch.equal(a, b) for a, b in zip(plain.hidden_states, same.hidden_states, strict=True))
    # The CLS slot of each view (the first of its n + 1 image tokens) is untouched by the hook.
    shifted = run(bb, imgs, [SHORT, LONG], hook=lambda x: x + 1.0)
    slots = plain.image_token_mask[0].nonzero().flatten()
    cls_slots, patch_slots = slots[:: n + 1], slots[torch.arange(len(slots)) % (n + 1) != 0]
    h0, s0 = plain.hidden_states[0][0], shifted.hidden_states[0][0]
    assert torch.equal(h0[cls_slots], s0[cls_slots]) and (h0[patch_slots] != s0[patch_slots]).any(-1).all()


def test_a_hook_of_the_wrong_shape_is_named(backbones):
    with pytest.raises(ValueError, match="visual_hook"):
        run(backbones["llava"], images(1, 1), [SHORT], hook=lambda x: x[:, 1:])


# -- options: truncation, freezing, padding, normalisation -------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_truncated_lm_returns_the_first_k_plus_one_states(tokenizer, arch):
    full = make_backbone(arch, tokenizer, layers=3)
    short = HFVisionLanguageBackbone(
        copy.deepcopy(full.model),
        tokenizer,
        image_mean=0.5,
        image_std=0.5,
        image_size=full.image_size,
        num_lm_layers=2,
    ).eval()
    assert short.num_hidden_states == 3 and len(short._language.layers) == 2
    assert short.model.config.get_text_config().num_hidden_layers == 2
    imgs, texts = images(2, 2, size=full.image_size), [SHORT, LONG]
    a, b = run(full, imgs, texts), run(short, imgs, texts)
    assert len(b.hidden_states) == 3
    assert all(torch.equal(x, y) for x, y in zip(a.hidden_states[:3], b.hidden_states, strict=True))


@pytest.mark.parametrize("k", [0, 3])
def test_truncation_out_of_range_is_named(tokenizer, k):
    with pytest.raises(ValueError, match="num_lm_layers"):
        make_backbone("llava", tokenizer, num_lm_layers=k)


@pytest.mark.parametrize("part", ["vision", "projector", "language"])
def test_frozen_parts_get_no_grad(tokenizer, part):
    bb = make_backbone("paligemma", tokenizer, freeze=part)
    groups = bb.parameter_groups()
    assert sorted(groups) == ["language", "projector", "vision"]
    out = bb(images(2, 1), [SHORT, LONG])
    out.hidden_states[-1][out.attention_mask].pow(2).mean().backward()
    for name, module in groups.items():
        grads = [p.grad for p in module.parameters()]
        if name == part:
            assert all(not p.requires_grad for p in module.parameters()) and all(g is None for g in grads)
        else:
            assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_unknown_part_is_named(backbones):
    with pytest.raises(ValueError, match="part"):
        copy.deepcopy(backbones["llava"]).freeze("decoder")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_does_not_change_a_samples_states(tokenizer, arch, side):
    bb = make_backbone(arch, tokenizer, padding_side=side)
    imgs = images(2, 2, seed=1, size=bb.image_size)
    batch = run(bb, imgs, [SHORT, LONG])
    alone = run(bb, imgs[:1], [SHORT])
    assert batch.padding_side == side
    pad = ~batch.attention_mask[0]
    assert pad.any() and bool(pad[0] if side == "left" else pad[-1])
    assert torch.equal(batch.input_ids[0][~pad], alone.input_ids[0])
    for hb, ha in zip(batch.hidden_states, alone.hidden_states, strict=True):
        torch.testing.assert_close(hb[0][~pad], ha[0], rtol=1e-5, atol=1e-5)
        assert not hb[0][pad].any()  # padding positions are zeroed


def test_activation_checkpointing_gives_the_same_gradients(tokenizer):
    """The hidden-state and visual hooks fire once per forward, also when layers are recomputed."""
    bb = make_backbone("qwen2_vl", tokenizer).train()
    imgs, texts = images(2, 2, size=bb.image_size), [SHORT, LONG]

    def grads():
        bb.zero_grad(set_to_none=True)
        out = bb(imgs, texts, visual_hook=lambda x: x * 1.5)
        out.hidden_states[-1].pow(2).mean().backward()
        return [p.grad.clone() for p in bb.parameters() if p.grad is not None]

    plain = grads()
    if hasattr(bb.model, "activation_checkpointing_enable"):  # the transformers 5 name
        bb.model.activation_checkpointing_enable()
    else:
        bb.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert bb._language.gradient_checkpointing
    checkpointed = grads()
    assert len(plain) == len(checkpointed) > 0
    for a, b in zip(plain, checkpointed, strict=True):
        torch.testing.assert_close(a, b)


def test_bfloat16_model(tokenizer):
    bb = make_backbone("paligemma", tokenizer).to(torch.bfloat16)
    seen = []
    out = run(bb, images(1, 2), [SHORT], hook=lambda x: seen.append(x.dtype) or x)
    assert seen == [torch.bfloat16] and out.hidden_states[-1].dtype == torch.bfloat16
    assert all(torch.isfinite(h.float()).all() for h in out.hidden_states)


def test_eval_is_deterministic(backbones):
    bb = backbones["paligemma"]
    a, b = run(bb, images(2, 2), [SHORT, LONG]), run(bb, images(2, 2), [SHORT, LONG])
    assert all(torch.equal(x, y) for x, y in zip(a.hidden_states, b.hidden_states, strict=True))


def test_uint8_and_float_images_agree_and_use_the_processor_normalisation(tokenizer):
    bb = make_backbone(
        "llava", tokenizer, image_mean=None, image_std=None, image_processor=CLIPImageProcessor()
    )
    torch.testing.assert_close(bb.pixel_mean.flatten(), torch.tensor(CLIPImageProcessor().image_mean))
    imgs = images(1, 2)
    a, b = run(bb, imgs, [SHORT]), run(bb, imgs.float() / 255, [SHORT])
    assert all(torch.equal(x, y) for x, y in zip(a.hidden_states, b.hidden_states, strict=True))


# -- errors ------------------------------------------------------------------------------------------


def test_bad_images_are_named(backbones):
    bb = backbones["llava"]
    with pytest.raises(ValueError, match="images: size"):
        bb(images(1, 1)[..., :16], [SHORT])
    with pytest.raises(ValueError, match="images: expected uint8 or float"):
        bb(images(1, 1).int(), [SHORT])
    with pytest.raises(ValueError, match="images: float images must lie in"):
        bb(images(1, 1).float(), [SHORT])
    with pytest.raises(TypeCheckError, match="images"):
        bb(images(1, 1)[:, 0], [SHORT])
    with pytest.raises(ValueError, match="instructions"):
        bb(images(2, 1), [SHORT])
    with pytest.raises(ValueError, match="instructions"):
        bb(images(1, 1), SHORT)


def test_bad_construction_is_named(tokenizer):
    config = make_config("llava", tokenizer)
    with pytest.raises(ValueError, match="image_processor"):
        HFVisionLanguageBackbone.from_config(config, tokenizer)
    with pytest.raises(ValueError, match="padding_side"):
        make_backbone("llava", tokenizer, padding_side="middle")
    with pytest.raises(ValueError, match="prompt_template"):
        make_backbone("llava", tokenizer, prompt_template="{bos}{instruction}")
    plain = tiny_bpe(CORPUS, ["[UNK]", "[PAD]", "<image>"], vocab_size=300)
    with pytest.raises(ValueError, match="prompt needs the token"):
        make_backbone("idefics3", plain)
    config.model_type = "not_a_vlm"
    with pytest.raises(ValueError, match="no adapter"):
        adapter_for(config)


# -- save / load -------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["paligemma", "llava", "smolvlm", "qwen2_vl", "qwen2_5_vl"])
def test_save_and_load_from_local_files(tokenizer, tmp_path, arch):
    kwargs = {
        "num_lm_layers": 1,
        "padding_side": "left",
        "prompt_template": "{bos}{images} task: {instruction}",
    }
    if arch == "paligemma":
        kwargs.update(image_mean=None, image_std=None, image_processor=SiglipImageProcessor())
    bb = make_backbone(arch, tokenizer, **kwargs)
    bb.save_pretrained(tmp_path)
    loaded = HFVisionLanguageBackbone.from_pretrained(tmp_path, local_files_only=True).eval()
    assert type(loaded.model) is type(bb.model)
    assert loaded.num_hidden_states == 2 and loaded.padding_side == "left"
    assert loaded.prompt_template == bb.prompt_template
    assert torch.equal(loaded.pixel_mean, bb.pixel_mean) and torch.equal(loaded.pixel_std, bb.pixel_std)
    imgs, texts = images(2, 2, size=bb.image_size), [SHORT, LONG]
    a, b = run(bb, imgs, texts), run(loaded, imgs, texts)
    assert torch.equal(a.input_ids, b.input_ids)
    assert all(torch.equal(x, y) for x, y in zip(a.hidden_states, b.hidden_states, strict=True))


def test_loading_with_num_lm_layers_builds_only_those_layers(tokenizer, tmp_path):
    full = make_backbone("smolvlm", tokenizer, layers=3)
    full.save_pretrained(tmp_path)
    loaded = HFVisionLanguageBackbone.from_pretrained(tmp_path, num_lm_layers=2, local_files_only=True).eval()
    assert len(loaded._language.layers) == 2 and loaded.model.config.get_text_config().num_hidden_layers == 2
    imgs, texts = images(2, 1), [SHORT, LONG]
    a, b = run(full, imgs, texts), run(loaded, imgs, texts)
    assert all(torch.equal(x, y) for x, y in zip(a.hidden_states[:3], b.hidden_states, strict=True))
    with pytest.raises(ValueError, match="num_lm_layers"):
        HFVisionLanguageBackbone.from_pretrained(tmp_path, num_lm_layers=4, local_files_only=True)


def test_a_given_image_processor_beats_saved_statistics(tokenizer, tmp_path):
    make_backbone("llava", tokenizer).save_pretrained(tmp_path)  # saved mean / std 0.5
    clip = CLIPImageProcessor()
    loaded = HFVisionLanguageBackbone.from_pretrained(tmp_path, image_processor=clip, local_files_only=True)
    torch.testing.assert_close(loaded.pixel_mean.flatten(), torch.tensor(clip.image_mean))


@pytest.mark.parametrize("arch", ARCHS)
def test_spec_rebuilds_the_architecture_for_policy_checkpoints(tokenizer, tmp_path, arch):
    """spec() is JSON, from_spec() rebuilds the same modules (random weights) from it and the saved
    tokenizer; with the state dict loaded, outputs match bit for bit."""
    bb = make_backbone(arch, tokenizer, layers=3, num_lm_layers=2, padding_side="left")
    spec = json.loads(json.dumps(bb.spec()))
    assert spec["kind"] == "hf"
    bb.save_tokenizer(tmp_path)
    rebuilt = HFVisionLanguageBackbone.from_spec(spec, tmp_path).eval()
    assert rebuilt.num_hidden_states == 3 and rebuilt.padding_side == "left"
    assert rebuilt.image_size == bb.image_size and torch.equal(rebuilt.pixel_mean, bb.pixel_mean)
    rebuilt.load_state_dict(bb.state_dict(), strict=True)
    imgs, texts = images(2, 2, size=bb.image_size), [SHORT, LONG]
    a, b = run(bb, imgs, texts), run(rebuilt, imgs, texts)
    assert all(torch.equal(x, y) for x, y in zip(a.hidden_states, b.hidden_states, strict=True))
