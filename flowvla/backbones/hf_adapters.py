"""Per-architecture facts that [`HFVisionLanguageBackbone`][flowvla.backbones.hf.HFVisionLanguageBackbone]
needs.

Everything that differs between ``transformers`` image-text-to-text families lives in one
[`HFAdapter`][flowvla.backbones.hf_adapters.HFAdapter] row, keyed by ``config.model_type``: where the vision
tower, the projector and the language model sit, the prompt layout, how pixels are packed for the model, which
extra text inputs it wants (positions, token types), how many LM tokens one image becomes, and how the
projector's input tokens map to the per-view patch grid the visual hook sees. The wrapper itself has no
per-architecture branches.

Prompt templates are ``str.format`` strings with ``{bos}`` (the tokenizer's BOS token, or ``""``),
``{images}`` (one ``view_prefix + <image> + view_suffix`` per view) and ``{instruction}``.

Legend: ``B`` batch, ``V`` views, ``N`` patches per view, ``P`` prefix (CLS) tokens per view, ``T``
tokens, ``Dv`` visual width.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from flowvla.geometry import PatchGrid
from flowvla.typing import Float, Int, Tensor, typechecked

__all__ = [
    "ADAPTERS",
    "HFAdapter",
    "adapter_for",
    "qwen2_5_vl_window_order",
    "qwen2_vl_patchify",
    "qwen2_vl_row_major",
]


@dataclass(frozen=True)
class HFAdapter:
    """How one VLM family is wired (see module docs).

    Attributes:
        name: short family name.
        model_types: the ``config.model_type`` values it serves.
        vision: dotted paths (from the inner model ``model.model``) of the vision-tower parts.
        projector: dotted path of the module mapping visual tokens into the LM (the hook point).
        language: dotted path of the decoder-only language model (with ``.layers``).
        prompt: default prompt template (see module docs).
        view_prefix: text before each view's image tokens.
        view_suffix: text after each view's image tokens.
        required_tokens: template tokens that must be single tokens of the tokenizer.
        image_size: ``config -> (H, W)`` the tower is built for, or ``None`` for native-resolution
            towers (the user then chooses it).
        tokens_per_image: ``(config, grid) ->`` LM tokens (image-token slots) per image.
        visual_dim: ``config -> Dv``, width of the projector's input tokens.
        pack_pixels: ``(pixels [B, V, 3, H, W] normalised, config) ->`` the model's pixel inputs.
        text_inputs: ``(input_ids, attention_mask, image_token_mask, config) ->`` further model
            inputs (position ids counted from the mask so left padding does not shift them, token
            types).
        to_grid: ``(projector input, B, V, grid, config) -> [B, V * N, Dv]`` patch tokens in view,
            row, column order (prefix tokens left out).
        from_grid: ``(projector input, fused [B, V * N, Dv], grid, config) ->`` the projector input
            with the patch tokens replaced.
    """

    name: str
    model_types: tuple[str, ...]
    vision: tuple[str, ...]
    projector: str
    language: str
    prompt: str
    view_prefix: str
    view_suffix: str
    required_tokens: tuple[str, ...]
    image_size: Callable[[Any], tuple[int, int] | None]
    tokens_per_image: Callable[[Any, PatchGrid], int]
    visual_dim: Callable[[Any], int]
    pack_pixels: Callable[[Tensor, Any], dict[str, Tensor]]
    text_inputs: Callable[[Tensor, Tensor, Tensor, Any], dict[str, Tensor]]
    to_grid: Callable[[Tensor, int, int, PatchGrid, Any], Tensor]
    from_grid: Callable[[Tensor, Tensor, PatchGrid, Any], Tensor]


# -- shared pieces -----------------------------------------------------------------------------------


def _square(config: Any) -> tuple[int, int]:
    return int(config.vision_config.image_size), int(config.vision_config.image_size)


def _flat_pixels(pixels: Tensor, config: Any) -> dict[str, Tensor]:
    return {"pixel_values": pixels.flatten(0, 1)}  # [B * V, 3, H, W]: image order = image-token order


def _positions_from(offset: int) -> Callable[[Tensor, Tensor, Tensor, Any], dict[str, Tensor]]:
    def text_inputs(input_ids: Tensor, attention_mask: Tensor, image_mask: Tensor, config: Any) -> dict:
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0) + offset
        return {"position_ids": positions}

    return text_inputs


def _image_blocks(prefix: Callable[[Any], int]):
    """``to_grid`` / ``from_grid`` for projector inputs ``[B * V, P + N, Dv]`` (one row per image)."""

    def to_grid(tokens: Tensor, batch: int, views: int, grid: PatchGrid, config: Any) -> Tensor:
        p, n = prefix(config), grid.num_patches
        if tokens.dim() != 3 or tuple(tokens.shape[:2]) != (batch * views, p + n):
            raise RuntimeError(
                f"projector input {tuple(tokens.shape)}, expected [{batch * views}, {p + n}, Dv] ({batch} x "
                f"{views} images of {p} prefix + {n} patch tokens); some models drop an image that is all "
                "zeros after normalisation"
            )
        return tokens[:, p:].reshape(batch, views * n, tokens.shape[-1])

    def from_grid(tokens: Tensor, fused: Tensor, grid: PatchGrid, config: Any) -> Tensor:
        p = prefix(config)
        fused = fused.reshape(tokens.shape[0], grid.num_patches, tokens.shape[-1]).to(tokens.dtype)
        return torch.cat([tokens[:, :p], fused], dim=1) if p else fused

    return to_grid, from_grid


# -- Qwen2-VL: native-resolution patches, packed in 2 x 2 merge windows --------------------------------


@typechecked
def qwen2_vl_patchify(
    pixels: Float[Tensor, "I C H W"], patch_size: int, merge_size: int, temporal_patch_size: int
) -> Float[Tensor, "P F"]:
    """Normalised images -> Qwen2-VL's flat patch rows, in the order its image processor makes them.

    Each image's patches are ordered by merge window (window row, window column), then by patch
    inside the window (row, column); each row is ``C x temporal x p x p`` with the still image
    repeated over the temporal patch.

    Args:
        pixels: ``[I, C, H, W]`` normalised images, ``H`` and ``W`` multiples of ``patch_size * merge_size``.
        patch_size: ViT patch size ``p``.
        merge_size: spatial merge size ``m`` (2 x 2 patches become one LM token).
        temporal_patch_size: frames per temporal patch.
    """
    i, c, h, w = pixels.shape
    gh, gw, p, m = h // patch_size, w // patch_size, patch_size, merge_size
    x = pixels.reshape(i, c, gh // m, m, p, gw // m, m, p)
    x = x.permute(0, 2, 5, 3, 6, 1, 4, 7)  # image, window row, window col, row, col, C, py, px
    x = x.unsqueeze(-3).expand(*x.shape[:6], temporal_patch_size, p, p)
    return x.reshape(i * gh * gw, c * temporal_patch_size * p * p)


@typechecked
def qwen2_vl_row_major(grid: PatchGrid, merge_size: int) -> Int[Tensor, " N"]:
    """``order[k]``: the merge-window-order index of row-major patch ``k`` of one image.

    Args:
        grid: the image's patch grid.
        merge_size: spatial merge size ``m``.
    """
    gh, gw = grid.grid_size
    m = merge_size
    rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    window = (rows // m) * (gw // m) + cols // m
    return (window * m * m + (rows % m) * m + cols % m).flatten()


@typechecked
def qwen2_5_vl_window_order(grid: PatchGrid, merge_size: int, window_units: int) -> Int[Tensor, " U"]:
    """``order[i]``: the merge unit (numbered row-major) that Qwen2.5-VL's tower puts at position ``i``.

    Its window attention regroups one image's merge units window by window (windows of
    ``window_units`` x ``window_units`` units, row-major, clipped at the image edge; row-major inside
    each window); the merger sees them in that order.

    Args:
        grid: the image's patch grid.
        merge_size: spatial merge size ``m``.
        window_units: window side in merge units (``window_size // (patch_size * m)``).
    """
    (gh, gw), w = grid.grid_size, window_units
    uh, uw = gh // merge_size, gw // merge_size
    wh, ww = -(-uh // w), -(-uw // w)
    padded = torch.full((wh * w, ww * w), -1, dtype=torch.long)
    padded[:uh, :uw] = torch.arange(uh * uw).view(uh, uw)
    order = padded.view(wh, w, ww, w).permute(0, 2, 1, 3).flatten()
    return order[order >= 0]


def _qwen2_vl_pixels(pixels: Tensor, config: Any) -> dict[str, Tensor]:
    vc = config.vision_config
    b, v, _, h, w = pixels.shape
    flat = qwen2_vl_patchify(
        pixels.flatten(0, 1), vc.patch_size, vc.spatial_merge_size, vc.temporal_patch_size
    )
    thw = torch.tensor([1, h // vc.patch_size, w // vc.patch_size], device=pixels.device)
    return {"pixel_values": flat, "image_grid_thw": thw.expand(b * v, 3)}


def _qwen2_vl_text(input_ids: Tensor, attention_mask: Tensor, image_mask: Tensor, config: Any) -> dict:
    # M-RoPE: the model numbers text and (t, h, w) image positions over the real tokens itself.
    return {"mm_token_type_ids": image_mask.int()}


def _qwen2_vl_to_grid(tokens: Tensor, batch: int, views: int, grid: PatchGrid, config: Any) -> Tensor:
    n = grid.num_patches
    if tuple(tokens.shape[:-1]) != (batch * views * n,):
        raise RuntimeError(f"merger input {tuple(tokens.shape)}, expected [{batch * views * n}, Dv]")
    order = qwen2_vl_row_major(grid, config.vision_config.spatial_merge_size).to(tokens.device)
    return tokens.reshape(batch * views, n, -1)[:, order].reshape(batch, views * n, -1)


def _qwen2_vl_from_grid(tokens: Tensor, fused: Tensor, grid: PatchGrid, config: Any) -> Tensor:
    n = grid.num_patches
    order = qwen2_vl_row_major(grid, config.vision_config.spatial_merge_size).to(tokens.device)
    out = torch.empty_like(tokens).reshape(-1, n, tokens.shape[-1])
    out[:, order] = fused.reshape(-1, n, tokens.shape[-1]).to(tokens.dtype)
    return out.reshape(tokens.shape)


def _qwen2_5_vl_windows(grid: PatchGrid, config: Any, device: torch.device) -> Tensor:
    vc = config.vision_config
    m = vc.spatial_merge_size
    return qwen2_5_vl_window_order(grid, m, vc.window_size // (vc.patch_size * m)).to(device)


def _qwen2_5_vl_to_grid(tokens: Tensor, batch: int, views: int, grid: PatchGrid, config: Any) -> Tensor:
    back = torch.argsort(_qwen2_5_vl_windows(grid, config, tokens.device))
    n, m2 = grid.num_patches, config.vision_config.spatial_merge_size**2
    if tuple(tokens.shape[:-1]) != (batch * views * n,):
        raise RuntimeError(f"merger input {tuple(tokens.shape)}, expected [{batch * views * n}, Dv]")
    units = tokens.reshape(batch * views, -1, m2, tokens.shape[-1])[:, back]  # undo the window grouping
    return _qwen2_vl_to_grid(units.reshape(tokens.shape), batch, views, grid, config)


def _qwen2_5_vl_from_grid(tokens: Tensor, fused: Tensor, grid: PatchGrid, config: Any) -> Tensor:
    order = _qwen2_5_vl_windows(grid, config, tokens.device)
    m2 = config.vision_config.spatial_merge_size**2
    units = _qwen2_vl_from_grid(tokens, fused, grid, config)
    return units.reshape(-1, len(order), m2, tokens.shape[-1])[:, order].reshape(tokens.shape)


def _llava_prefix(config: Any) -> int:
    # "default" drops CLIP's CLS before the projector; "full" keeps it in front of the patches.
    return 0 if config.vision_feature_select_strategy == "default" else 1


def _llava_dim(config: Any) -> int:
    layers = config.vision_feature_layer
    return config.vision_config.hidden_size * (1 if isinstance(layers, int) else len(layers))


_NO_PREFIX = _image_blocks(lambda config: 0)
_LLAVA = _image_blocks(_llava_prefix)

ADAPTERS: tuple[HFAdapter, ...] = (
    HFAdapter(
        name="paligemma",
        model_types=("paligemma",),
        vision=("vision_tower",),
        projector="multi_modal_projector",
        language="language_model",
        # PaliGemma's processor layout: images, BOS, prompt, newline.
        prompt="{images}{bos}{instruction}\n",
        view_prefix="",
        view_suffix="",
        required_tokens=(),
        image_size=_square,
        tokens_per_image=lambda config, grid: grid.num_patches,
        visual_dim=lambda config: config.vision_config.hidden_size,
        pack_pixels=_flat_pixels,
        # Positions count from 1 in PaliGemma; token type 0 everywhere = one bidirectional prefix.
        text_inputs=lambda ids, mask, image, config: {
            **_positions_from(1)(ids, mask, image, config),
            "token_type_ids": torch.zeros_like(ids),
        },
        to_grid=_NO_PREFIX[0],
        from_grid=_NO_PREFIX[1],
    ),
    HFAdapter(
        name="llava",
        model_types=("llava",),
        vision=("vision_tower",),
        projector="multi_modal_projector",
        language="language_model",
        # The llava-1.5 chat layout; all views sit at the one placeholder, back to back.
        prompt="{bos}USER: {images}\n{instruction} ASSISTANT:",
        view_prefix="",
        view_suffix="",
        required_tokens=(),
        image_size=_square,
        tokens_per_image=lambda config, grid: grid.num_patches + _llava_prefix(config),
        visual_dim=_llava_dim,
        pack_pixels=_flat_pixels,
        text_inputs=_positions_from(0),
        to_grid=_LLAVA[0],
        from_grid=_LLAVA[1],
    ),
    HFAdapter(
        name="idefics3",
        model_types=("idefics3", "smolvlm"),
        vision=("vision_model",),
        projector="connector",  # pixel shuffle + MLP: the hook runs before the shuffle
        language="text_model",
        # The Idefics3 / SmolVLM chat layout without image splitting (one global image per view).
        prompt="{bos}User:{images}{instruction}<end_of_utterance>\nAssistant:",
        view_prefix="<fake_token_around_image><global-img>",
        view_suffix="<fake_token_around_image>",
        required_tokens=("<fake_token_around_image>", "<global-img>", "<end_of_utterance>"),
        image_size=_square,
        tokens_per_image=lambda config, grid: grid.num_patches // config.scale_factor**2,
        visual_dim=lambda config: config.vision_config.hidden_size,
        pack_pixels=lambda pixels, config: {"pixel_values": pixels},  # [B, V, 3, H, W]
        text_inputs=_positions_from(0),
        to_grid=_NO_PREFIX[0],
        from_grid=_NO_PREFIX[1],
    ),
    HFAdapter(
        name="qwen2_vl",
        model_types=("qwen2_vl",),
        vision=("visual.patch_embed", "visual.blocks"),
        projector="visual.merger",  # layer norm + 2 x 2 merge + MLP
        language="language_model",
        prompt="{bos}<|im_start|>user\n{images}{instruction}<|im_end|>\n<|im_start|>assistant\n",
        view_prefix="<|vision_start|>",
        view_suffix="<|vision_end|>",
        required_tokens=("<|vision_start|>", "<|vision_end|>", "<|im_start|>", "<|im_end|>"),
        image_size=lambda config: None,
        tokens_per_image=lambda config, grid: grid.num_patches // config.vision_config.spatial_merge_size**2,
        visual_dim=lambda config: config.vision_config.embed_dim,
        pack_pixels=_qwen2_vl_pixels,
        text_inputs=_qwen2_vl_text,
        to_grid=_qwen2_vl_to_grid,
        from_grid=_qwen2_vl_from_grid,
    ),
    HFAdapter(
        name="qwen2_5_vl",
        model_types=("qwen2_5_vl",),
        vision=("visual.patch_embed", "visual.blocks"),
        projector="visual.merger",  # its input is grouped by attention window: undone for the hook
        language="language_model",
        prompt="{bos}<|im_start|>user\n{images}{instruction}<|im_end|>\n<|im_start|>assistant\n",
        view_prefix="<|vision_start|>",
        view_suffix="<|vision_end|>",
        required_tokens=("<|vision_start|>", "<|vision_end|>", "<|im_start|>", "<|im_end|>"),
        image_size=lambda config: None,
        tokens_per_image=lambda config, grid: grid.num_patches // config.vision_config.spatial_merge_size**2,
        visual_dim=lambda config: config.vision_config.hidden_size,
        pack_pixels=_qwen2_vl_pixels,
        text_inputs=_qwen2_vl_text,
        to_grid=_qwen2_5_vl_to_grid,
        from_grid=_qwen2_5_vl_from_grid,
    ),
)


def adapter_for(config: Any) -> HFAdapter:
    """The [`HFAdapter`][flowvla.backbones.hf_adapters.HFAdapter] serving ``config.model_type``.

    Args:
        config: a ``transformers`` VLM config.
    """
    model_type = getattr(config, "model_type", None)
    for adapter in ADAPTERS:
        if model_type in adapter.model_types:
            return adapter
    supported = sorted(t for a in ADAPTERS for t in a.model_types)
    raise ValueError(
        f"model: architecture {model_type!r} has no adapter; supported: {supported} "
        "(add an HFAdapter row to flowvla.backbones.hf_adapters.ADAPTERS)"
    )
